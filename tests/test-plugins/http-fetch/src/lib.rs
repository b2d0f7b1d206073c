//! # http-fetch (test plugin)
//!
//! Makes outbound HTTP requests through `wasi:http/outgoing-handler` and
//! turns what happened into one `set-custom-fields` action named "http",
//! so the integration tests can check the `http` capability end to end.
//!
//! Config keys (capability `config`; the requests need `http`):
//!
//! | key        | meaning                                                         |
//! |------------|-----------------------------------------------------------------|
//! | `url`      | `http://host:port/path?query` to fetch (required)               |
//! | `count`    | how many requests to make one after another (default 1)         |
//! | `parallel` | `yes`: start all `count` requests before waiting for any        |
//! | `post`     | a number of bytes: POST a body of that many `x` instead of GET  |
//! | `follow`   | `yes`: follow a redirect (3xx + `location`) with a new request  |
//!
//! Fields of the action, per request `i` (0-based): `r{i}` = `status=200
//! bytes=N`, then ` body-error=<code>` if reading the body failed, or
//! `error=<code>` when the request failed; `body` = the first 100
//! characters of the first body. The message is "http-fetch".

wit_bindgen::generate!({
    world: "delivery-plugin",
    path: "../../../wit",
});

use enrichd::plugin::config;
use enrichd::plugin::types::{Action, ActionValue, Delivery, PluginError, PluginOutput};
use exports::enrichd::plugin::handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// A URL taken apart: scheme, authority, path with query.
pub fn split_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let at = rest.find('/').unwrap_or(rest.len());
    let path = if at == rest.len() { "/" } else { &rest[at..] };
    Some((scheme, &rest[..at], path))
}

/// Start one request; `post` bytes of body when given.
fn start(url: &str, post: Option<usize>) -> Result<FutureIncomingResponse, String> {
    let (scheme, authority, path) = split_url(url).ok_or_else(|| format!("bad url {url:?}"))?;
    let request = OutgoingRequest::new(Fields::new());
    let set = |ok: Result<(), ()>, what: &str| ok.map_err(|()| format!("cannot set {what}"));
    set(
        request.set_method(if post.is_some() {
            &Method::Post
        } else {
            &Method::Get
        }),
        "method",
    )?;
    set(request.set_scheme(Some(&scheme)), "scheme")?;
    set(request.set_authority(Some(authority)), "authority")?;
    set(request.set_path_with_query(Some(path)), "path")?;
    let body = request.body().map_err(|()| "no body".to_string())?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("error={e:?}"))?;
    if let Some(n) = post {
        let stream = body.write().map_err(|()| "no body stream".to_string())?;
        let data = vec![b'x'; n];
        for chunk in data.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    // A failed finish shows in the response's error.
    let _ = OutgoingBody::finish(body, None);
    Ok(future)
}

/// Wait for a response.
fn wait(future: FutureIncomingResponse) -> Result<IncomingResponse, String> {
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(e))) => Err(format!("error={e:?}")),
        Some(Err(())) | None => Err("error=no response".into()),
    }
}

/// Read the whole body: its bytes, and the error that cut it, if any.
fn read_body(response: &IncomingResponse) -> (Vec<u8>, Option<String>) {
    let Ok(body) = response.consume() else {
        return (Vec::new(), Some("no body".into()));
    };
    let Ok(stream) = body.stream() else {
        return (Vec::new(), Some("no body stream".into()));
    };
    let mut bytes = Vec::new();
    let error = loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break None,
            Err(StreamError::LastOperationFailed(e)) => {
                break Some(match wasi::http::types::http_error_code(&e) {
                    Some(code) => format!("{code:?}"),
                    None => e.to_debug_string(),
                })
            }
        }
    };
    (bytes, error)
}

/// A redirect's target, when `response` is one.
fn redirect(response: &IncomingResponse) -> Option<String> {
    if !(300..400).contains(&response.status()) {
        return None;
    }
    let location = response.headers().get("location").into_iter().next()?;
    String::from_utf8(location).ok()
}

/// The outcome of one response, and its body text.
fn outcome(response: Result<IncomingResponse, String>) -> (String, String, Option<String>) {
    match response {
        Err(e) => (e, String::new(), None),
        Ok(response) => {
            let next = redirect(&response);
            let status = response.status();
            let (body, error) = read_body(&response);
            let mut text = format!("status={status} bytes={}", body.len());
            if let Some(e) = error {
                text.push_str(&format!(" body-error={e}"));
            }
            (text, String::from_utf8_lossy(&body).into_owned(), next)
        }
    }
}

fn get(key: &str) -> Option<String> {
    config::get(key).ok().flatten()
}

/// The plugin; exported as the `handler` interface.
struct HttpFetch;

impl Guest for HttpFetch {
    fn handle(_delivery: Delivery) -> Result<PluginOutput, PluginError> {
        let url = get("url").ok_or_else(|| PluginError::Internal("no url configured".into()))?;
        let count: usize = get("count").and_then(|c| c.parse().ok()).unwrap_or(1);
        let post: Option<usize> = get("post").and_then(|c| c.parse().ok());
        let follow = get("follow").as_deref() == Some("yes");
        let mut fields = Vec::new();
        let mut first_body = None;
        let mut record =
            |fields: &mut Vec<(String, String)>,
             (text, body, _): (String, String, Option<String>)| {
                fields.push((format!("r{}", fields.len()), text));
                // The host keeps 100 characters of a field value anyway.
                first_body.get_or_insert_with(|| body.chars().take(100).collect());
            };
        if get("parallel").as_deref() == Some("yes") {
            let started: Vec<_> = (0..count).map(|_| start(&url, post)).collect();
            for future in started {
                record(&mut fields, outcome(future.and_then(wait)));
            }
        } else {
            let mut next = Some(url);
            for _ in 0..count {
                let Some(url) = next.take() else { break };
                let result = outcome(start(&url, post).and_then(wait));
                next = if follow { result.2.clone() } else { Some(url) };
                record(&mut fields, result);
            }
        }
        fields.push(("body".into(), first_body.unwrap_or_default()));
        Ok(PluginOutput {
            actions: vec![Action {
                name: Some("http".to_string()),
                value: ActionValue::SetCustomFields(fields),
            }],
            message: Some("http-fetch".to_string()),
        })
    }
}

export!(HttpFetch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (s, a, p) = split_url("http://127.0.0.1:8089/score?x=1").unwrap();
        assert!(matches!(s, Scheme::Http));
        assert_eq!((a, p), ("127.0.0.1:8089", "/score?x=1"));
        let (_, a, p) = split_url("https://a.example").unwrap();
        assert_eq!((a, p), ("a.example", "/"));
        assert!(split_url("ftp://a").is_none());
    }
}
