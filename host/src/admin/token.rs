//! The admin token (`admin_token`): when configured, every admin request but
//! `/healthz` must carry it, compared in constant time
//! ([`crate::emailgistics::auth::matches`]).
//!
//! - Scripts send `Authorization: Bearer <token>`.
//! - A browser opens `/ui/?token=<token>` once: the answer is a `303` to
//!   the same page without the token in its address, setting an `HttpOnly`,
//!   `SameSite=Strict` cookie scoped to `/ui` that carries it from then on
//!   (so the token stays out of history, bookmarks and `Referer`).
//!
//! A refusal is a `401` that says how to get in, never whether a token was
//! close.

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

use super::view::{is_ui, UI_PREFIX};
use crate::emailgistics::auth::{check_bearer, matches, Secret};
use crate::http::{error, Body};

/// The cookie that carries the token in a browser.
pub const COOKIE: &str = "enrichd_admin_token";
/// The query parameter a browser signs in with, on any `/ui` page.
pub const QUERY_PARAM: &str = "token";

/// `None` when `req` may go on; otherwise the answer to send instead (a
/// `401`, or the `303` that turns `?token=` into the cookie).
pub fn admit<B>(token: Option<&Secret>, req: &Request<B>) -> Option<Response<Body>> {
    let token = std::slice::from_ref(token?);
    let path = req.uri().path();
    if path == "/healthz" {
        return None;
    }
    let bearer = req.headers().get(header::AUTHORIZATION);
    if bearer.is_some() && check_bearer(bearer, token).is_ok() {
        return None;
    }
    let in_ui = is_ui(path);
    if in_ui && cookie(req).is_some_and(|c| matches(c.as_bytes(), token)) {
        return None;
    }
    let query = req.uri().query().unwrap_or_default();
    let mut given = None;
    let rest: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, v)| {
            let ours = *k == QUERY_PARAM;
            if ours {
                given = Some(v.clone());
            }
            !ours
        })
        .collect();
    match given {
        Some(given) if in_ui && matches(given.as_bytes(), token) => {
            Some(sign_in(path, &rest, &given))
        }
        _ => {
            tracing::warn!(path, "admin: request without a valid admin token refused");
            let mut res = error(
                StatusCode::UNAUTHORIZED,
                "this admin listener needs its admin_token: `Authorization: Bearer <token>`, \
                 or open /ui/?token=<token> in a browser",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(res)
        }
    }
}

/// The token in the request's cookie, if any.
fn cookie<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
}

/// `303` to `path` with the rest of its query, setting the cookie.
fn sign_in(path: &str, rest: &[(String, String)], token: &str) -> Response<Body> {
    let mut location = path.to_owned();
    if !rest.is_empty() {
        location.push('?');
        location.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(rest)
                .finish(),
        );
    }
    let cookie = format!(
        "{COOKIE}={}; Path={UI_PREFIX}; HttpOnly; SameSite=Strict",
        utf8_percent_encode(token, NON_ALPHANUMERIC)
    );
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SEE_OTHER;
    // Both were built from a valid URI path and query, and an encoded token.
    if let (Ok(location), Ok(cookie)) = (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&cookie),
    ) {
        res.headers_mut().insert(header::LOCATION, location);
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn issue_14_no_token_configured_lets_everything_in() {
        assert!(admit(None, &req("/deliveries", &[])).is_none());
    }

    #[test]
    fn issue_14_bearer_cookie_and_query_sign_in() {
        let s = Secret::new("t0k en/=");
        let s = Some(&s);
        assert!(admit(s, &req("/healthz", &[])).is_none());
        let no = admit(s, &req("/deliveries", &[])).unwrap();
        assert_eq!(no.status(), StatusCode::UNAUTHORIZED);
        let wrong = [("authorization", "Bearer t0k")];
        assert!(admit(s, &req("/stats", &wrong)).is_some());
        let right = [("authorization", "Bearer t0k en/=")];
        assert!(admit(s, &req("/stats", &right)).is_none());
        // The cookie only counts under /ui.
        let c = format!(
            "a=b; {COOKIE}={}",
            utf8_percent_encode("t0k en/=", NON_ALPHANUMERIC)
        );
        assert!(admit(s, &req("/ui/plugins", &[("cookie", &c)])).is_none());
        assert!(admit(s, &req("/deliveries", &[("cookie", &c)])).is_some());
        let bad = format!("{COOKIE}=t0k");
        assert!(admit(s, &req("/ui/", &[("cookie", &bad)])).is_some());
        // ?token= becomes the cookie, the rest of the query stays.
        let res = admit(s, &req("/ui/deliveries?route=%2Fh&token=t0k+en%2F%3D", &[])).unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[header::LOCATION], "/ui/deliveries?route=%2Fh");
        let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(
            set,
            format!("{c}; Path=/ui; HttpOnly; SameSite=Strict").trim_start_matches("a=b; ")
        );
        let res = admit(s, &req("/ui/?token=nope", &[])).unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // Not outside /ui: JSON clients send the header.
        let res = admit(s, &req("/deliveries?token=t0k+en%2F%3D", &[])).unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}
