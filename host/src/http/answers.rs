//! The answers every handler shares: JSON bodies, and the 401, 405, 413 and
//! over-capacity 503 answers with their headers.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Body;

/// A JSON answer with `status` and `body`.
pub fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Body::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A JSON error answer, `{"status":"error","message":…}`, so a human
/// reading it in a proxy log or a sender's test console sees the reason.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "status": "error", "message": message });
    json(status, body.to_string().into())
}

/// 401 with no body; `challenge` is the `WWW-Authenticate` value, if the
/// scheme has one (bearer secrets do; EngageLab's signature does not).
pub fn unauthorized(challenge: Option<&'static str>) -> Response<Body> {
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::UNAUTHORIZED;
    if let Some(challenge) = challenge {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    res
}

/// 413 for a body over `limit` bytes.
pub fn too_large(limit: usize) -> Response<Body> {
    let mut res = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body exceeds {limit} bytes"),
    );
    // The rest of the body is not read: the connection cannot be reused.
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// 405 naming the methods the path takes (`allow`, e.g. `"POST"`).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// The answer on a reserve connection to anything but `/healthz`.
pub(super) fn over_capacity() -> Response<Body> {
    let mut res = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many open connections (max_connections); retry later",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}
