//! The HTTP server: accepts connections, routes requests, authenticates,
//! bounds and parses bodies, runs the chain and answers with the envelope.
//!
//! Status codes follow the Emailgistics contract: 200 with an envelope for
//! everything that was processed (even when plugins failed), 401 for a bad
//! secret, other 4xx for requests that can never succeed (the sender does
//! not retry them), 5xx only when a retry could help.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::{App, Route};
use crate::chain::{self, Envelope, Verdict};
use crate::payload::{self, Parsed};
use crate::plugin;

/// Liveness endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Time a client gets to send the request head; stops idle or slow-loris
/// connections from holding sockets.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

type Body = Full<Bytes>;

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting
/// and let in-flight requests finish, for up to the delivery budget (so no
/// accepted delivery is cut short).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let service = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, req).await) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.delivery_budget) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

/// Answer one request.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let arrived = Instant::now();
    let path = req.uri().path().to_owned();
    if path == HEALTHZ_PATH {
        return match *req.method() {
            Method::GET | Method::HEAD => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            _ => method_not_allowed("GET, HEAD"),
        };
    }
    let Some(route) = app.route(&path) else {
        return error(StatusCode::NOT_FOUND, "no such route");
    };
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    if let Err(e) =
        crate::auth::check_bearer(req.headers().get(header::AUTHORIZATION), &route.secrets)
    {
        tracing::warn!(route = %path, reason = %e, "delivery refused: 401");
        let mut res = Response::new(Body::default());
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    let body = match read_body(app, req, arrived).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    deliver(app, route, &body, arrived).await
}

/// Read the body within the size limit and the delivery's budget.
async fn read_body(
    app: &App,
    req: Request<Incoming>,
    arrived: Instant,
) -> Result<Bytes, Response<Body>> {
    let limit = app.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let left = app.delivery_budget.saturating_sub(arrived.elapsed());
    let collected =
        tokio::time::timeout(left, Limited::new(req.into_body(), limit).collect()).await;
    match collected {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read request body: {e}"),
        )),
    }
}

async fn deliver(app: &App, route: &Route, body: &[u8], arrived: Instant) -> Response<Body> {
    let delivery = match payload::parse(body) {
        Ok(Parsed::Received(d)) => d,
        Ok(Parsed::UnknownEvent(event)) => {
            tracing::info!(route = %route.path, %event, "unknown event ignored");
            return envelope(&Envelope::message_only("ignored"));
        }
        Err(e) => {
            tracing::warn!(route = %route.path, error = %e, "delivery refused: 400");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let wit = plugin::wit_delivery(&delivery);
    let (verdict, records) = chain::run(
        &route.chain,
        &wit,
        &app.services,
        arrived,
        app.delivery_budget,
    )
    .await;
    let (status, message) = match &verdict {
        Verdict::Answer(env) => (serde_json::json!(env.status), env.message.as_str()),
        Verdict::Retry(reason) => (serde_json::json!("retry"), reason.as_str()),
    };
    let record = serde_json::json!({
        "route": route.path,
        "delivery": delivery.id,
        "mailbox": delivery.mailbox,
        "conversationId": delivery.conversation_id,
        "elapsedMs": arrived.elapsed().as_millis() as u64,
        "status": status,
        "message": message,
        "plugins": records,
    });
    tracing::info!(target: "enrichd::delivery", route = %route.path, delivery = %delivery.id, record = %record, "{message}");
    match verdict {
        Verdict::Answer(env) => envelope(&env),
        Verdict::Retry(reason) => error(StatusCode::SERVICE_UNAVAILABLE, &reason),
    }
}

fn envelope(env: &Envelope) -> Response<Body> {
    match serde_json::to_vec(env) {
        Ok(bytes) => json(StatusCode::OK, bytes.into()),
        // Serializing plain strings and maps cannot fail; if it ever does,
        // a retry is the right answer.
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode envelope: {e}"),
        ),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A JSON error answer in the envelope's shape, so a human reading it in a
/// proxy log or Emailgistics' Test Webhook sees the reason.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "status": "error", "message": message });
    json(status, body.to_string().into())
}

fn too_large(limit: usize) -> Response<Body> {
    let mut res = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body exceeds {limit} bytes"),
    );
    // The rest of the body is not read: the connection cannot be reused.
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}
