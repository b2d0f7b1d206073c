//! Outbound HTTP on the call's tape ([`super::recording`]), so a replay
//! answers a plugin's requests as the live delivery was answered, without
//! the network.
//!
//! Live, each request the gate let out is one host call
//! `outgoing-handler.handle(METHOD, URL)` — the URL without its query
//! string, as in [`super::http::HttpExchange`] (it may hold secrets, and
//! the record is kept and shown) — answered by what the guest saw
//! ([`HttpAnswer`]): the status, the headers in [`RECORDED_HEADERS`], the
//! body bytes it was given and how the body ended (complete, the error
//! that cut it, or unfinished: the guest stopped reading), or the error
//! that failed the request. It is recorded when the body ends, fails or is
//! dropped, and at the end of the call for a body still open. Its bytes
//! count against the recording's bounds like any answer: one that does not
//! fit truncates the recording from it on, never cut silently (a body is
//! held only up to the per-call bound while it is read).
//!
//! In replay, the k-th request with the same method and URL (query
//! excluded) gets the k-th recorded answer; a request the recording does
//! not hold fails with `internal-error("not recorded: …")` and is listed
//! among the replay's unrecorded calls, and so is a read past the end of a
//! body recorded unfinished.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::bindings::enrichd::plugin::types::HostError;
use super::recording::{Tape, Taped, MAX_RECORDING_BYTES_PER_CALL};

/// The name of a request on the tape.
pub(super) const CALL: &str = "outgoing-handler.handle";

/// Response headers recorded with the body: those that say how to read it
/// (type, encoding, language) and where to go next (a redirect, a retry).
/// Others are left out: `set-cookie` and the like may carry credentials,
/// and the record is kept and shown.
pub const RECORDED_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-language",
    "location",
    "retry-after",
];

/// What a request answered, as the tape keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct HttpAnswer {
    /// The response status; absent when the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// The [`RECORDED_HEADERS`] it had, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    /// The body bytes the guest was given, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    /// The body bytes the guest was given, in hex, when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_hex: Option<String>,
    /// What failed the request (no status) or cut its body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Failure>,
    /// The guest stopped reading the body before its end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unfinished: bool,
}

/// A `wasi:http` error as recorded: its code as the guest sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Failure {
    /// The error-code's name (`ConnectionRefused`, …).
    code: String,
    /// Its text.
    message: String,
    /// The limit of a body-size error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
}

impl Taped for HttpAnswer {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn from_json(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// A response being recorded while the guest reads it, held up to
/// [`MAX_RECORDING_BYTES_PER_CALL`]: more could never be kept.
#[derive(Debug, Default)]
pub(super) struct Capture {
    answer: HttpAnswer,
    body: Vec<u8>,
    bytes: usize,
    over: bool,
}

impl Capture {
    /// Note `n` more bytes held; past the bound, drop the body.
    fn hold(&mut self, n: usize) -> bool {
        self.bytes += n;
        if self.bytes > MAX_RECORDING_BYTES_PER_CALL {
            self.over = true;
            self.body = Vec::new();
        }
        !self.over
    }

    /// The response's status and recorded headers arrived.
    pub(super) fn response<B>(&mut self, response: &hyper::Response<B>) {
        self.answer.status = Some(response.status().as_u16());
        for name in RECORDED_HEADERS {
            for value in response.headers().get_all(name) {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                if self.hold(name.len() + value.len()) {
                    self.answer.headers.push((name.to_owned(), value));
                }
            }
        }
    }

    /// The guest was given `data`.
    pub(super) fn data(&mut self, data: &[u8]) {
        if self.hold(data.len()) {
            self.body.extend_from_slice(data);
        }
    }

    /// The request or its body failed with `error`.
    pub(super) fn failed(&mut self, error: &HttpError) {
        let (code, limit) = match error {
            HttpError::Hyper(_) => ("HttpProtocolError".to_owned(), None),
            HttpError::Connect(_) => ("ConnectionRefused".to_owned(), None),
            HttpError::Tls(_) => ("TlsProtocolError".to_owned(), None),
            HttpError::HttpResponseBodySize(n) => ("HttpResponseBodySize".to_owned(), *n),
            HttpError::HttpRequestBodySize(n) => ("HttpRequestBodySize".to_owned(), *n),
            e => (format!("{e:?}"), None),
        };
        let message = error.to_string();
        if self.hold(code.len() + message.len()) {
            self.answer.error = Some(Failure {
                code,
                message,
                limit,
            });
        }
    }

    /// The answer to record (`unfinished` when the guest stopped reading
    /// first); `None` when it outgrew the per-call bound.
    pub(super) fn finish(mut self, unfinished: bool) -> Option<HttpAnswer> {
        if self.over {
            return None;
        }
        self.answer.unfinished = unfinished;
        match String::from_utf8(self.body) {
            Ok(text) if text.is_empty() => {}
            Ok(text) => self.answer.body = Some(text),
            Err(e) => self.answer.body_hex = Some(hex::encode(e.as_bytes())),
        }
        Some(self.answer)
    }
}

/// The errors replay gives back by their code; any other comes back as
/// `internal-error` with its recorded text.
fn replayable() -> [HttpError; 16] {
    [
        HttpError::ConnectionRefused,
        HttpError::ConnectionTerminated,
        HttpError::ConnectionTimeout,
        HttpError::ConnectionReadTimeout,
        HttpError::ConnectionWriteTimeout,
        HttpError::ConnectionLimitReached,
        HttpError::DnsTimeout,
        HttpError::DestinationNotFound,
        HttpError::DestinationUnavailable,
        HttpError::TlsProtocolError,
        HttpError::TlsCertificateError,
        HttpError::HttpRequestDenied,
        HttpError::HttpResponseIncomplete,
        HttpError::HttpResponseTimeout,
        HttpError::HttpProtocolError,
        HttpError::LoopDetected,
    ]
}

impl Failure {
    fn error(&self) -> HttpError {
        match self.code.as_str() {
            "HttpResponseBodySize" => HttpError::HttpResponseBodySize(self.limit),
            "HttpRequestBodySize" => HttpError::HttpRequestBodySize(self.limit),
            code => replayable()
                .into_iter()
                .find(|e| format!("{e:?}") == code)
                .unwrap_or_else(|| HttpError::InternalError(Some(self.message.clone()))),
        }
    }
}

impl HttpAnswer {
    /// The recorded outcome of request `args`: the response, its body
    /// served from the tape, or the request's error.
    pub(super) fn replay(
        self,
        tape: Tape,
        args: Vec<String>,
    ) -> Result<hyper::Response<WasiBody>, HttpError> {
        let Some(status) = self.status else {
            return Err(self.error.map_or(
                HttpError::InternalError(Some(
                    "not recorded: the recorded call ended before this response came".into(),
                )),
                |f| f.error(),
            ));
        };
        let data = match (self.body, self.body_hex) {
            (Some(text), _) => Bytes::from(text),
            (None, Some(hex)) => Bytes::from(hex::decode(hex).map_err(|e| {
                HttpError::InternalError(Some(format!("not recorded: a bad body_hex: {e}")))
            })?),
            (None, None) => Bytes::new(),
        };
        let end = match (self.error, self.unfinished) {
            (Some(f), _) => End::Error(f.error()),
            (None, true) => End::Unfinished(data.len()),
            (None, false) => End::Complete,
        };
        let mut response = hyper::Response::builder().status(status);
        for (name, value) in &self.headers {
            response = response.header(name, value);
        }
        let body = Replayed {
            data: (!data.is_empty()).then_some(data),
            end: Some(end),
            tape,
            args,
        };
        response
            .body(body.boxed_unsync())
            .map_err(|e| HttpError::InternalError(Some(format!("not recorded: {e}"))))
    }
}

/// The error a request gets in replay when the tape has no answer for it
/// (the tape says why, and lists it as unrecorded).
pub(super) fn not_recorded(e: HostError) -> HttpError {
    let (HostError::Denied(why)
    | HostError::Unavailable(why)
    | HostError::Invalid(why)
    | HostError::OverLimit(why)) = e;
    HttpError::InternalError(Some(why))
}

/// How a replayed body ends.
enum End {
    Complete,
    Error(HttpError),
    /// The recording ends after this many bytes: the live guest read no
    /// further.
    Unfinished(usize),
}

/// A response body served from the tape.
struct Replayed {
    data: Option<Bytes>,
    /// Taken when given.
    end: Option<End>,
    tape: Tape,
    args: Vec<String>,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(match self.end.take() {
            None | Some(End::Complete) => None,
            Some(End::Error(e)) => Some(Err(e)),
            Some(End::Unfinished(n)) => {
                self.tape.not_recorded(CALL, &self.args);
                Some(Err(HttpError::InternalError(Some(format!(
                    "not recorded: {CALL}({}): the recorded delivery read {n} bytes of this body and no more",
                    self.args.join(", ")
                )))))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && matches!(self.end, None | Some(End::Complete))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(response: hyper::Response<WasiBody>) -> (Vec<u8>, Option<String>) {
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes.extend_from_slice(f.data_ref().map_or(&[][..], |d| d)),
                Err(e) => return (bytes, Some(format!("{e:?}"))),
            }
        }
        (bytes, None)
    }

    fn captured(body: &[u8], error: Option<HttpError>, unfinished: bool) -> HttpAnswer {
        let mut c = Capture::default();
        let response = hyper::Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("set-cookie", "session=secret")
            .body(())
            .unwrap();
        c.response(&response);
        c.data(body);
        if let Some(e) = error {
            c.failed(&e);
        }
        c.finish(unfinished).unwrap()
    }

    #[tokio::test]
    async fn issue_12_a_captured_answer_round_trips_through_json_and_replays() {
        let args = vec!["GET".to_owned(), "http://a.example/x".to_owned()];
        let answer = captured(br#"{"score":42}"#, None, false);
        let json = answer.to_json();
        assert_eq!(json["status"], 201);
        assert_eq!(json["body"], r#"{"score":42}"#);
        assert_eq!(
            json["headers"],
            serde_json::json!([["content-type", "application/json"]]),
            "only the recorded headers"
        );
        let back = HttpAnswer::from_json(&json).unwrap();
        let response = back.replay(Tape::off(), args.clone()).unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(read(response).await, (br#"{"score":42}"#.to_vec(), None));

        let binary = captured(&[0xff, 0, 1], None, false);
        assert_eq!(binary.to_json()["body_hex"], "ff0001");
        let response = binary.replay(Tape::off(), args.clone()).unwrap();
        assert_eq!(read(response).await.0, [0xff, 0, 1]);
    }

    #[tokio::test]
    async fn issue_12_errors_and_unfinished_bodies_replay_as_recorded() {
        let args = vec!["GET".to_owned(), "http://a.example/x".to_owned()];
        let cut = captured(
            b"abc",
            Some(HttpError::HttpResponseBodySize(Some(3))),
            false,
        );
        let response = cut.replay(Tape::off(), args.clone()).unwrap();
        let (bytes, error) = read(response).await;
        assert_eq!(bytes, b"abc");
        assert_eq!(error.as_deref(), Some("HttpResponseBodySize(Some(3))"));

        let mut refused = Capture::default();
        refused.failed(&HttpError::ConnectionRefused);
        let refused = refused.finish(false).unwrap();
        assert_eq!(refused.to_json()["error"]["code"], "ConnectionRefused");
        let e = refused.replay(Tape::off(), args.clone()).unwrap_err();
        assert!(matches!(e, HttpError::ConnectionRefused), "{e:?}");

        let unfinished = captured(b"abc", None, true);
        let (bytes, error) = read(unfinished.replay(Tape::off(), args).unwrap()).await;
        assert_eq!(bytes, b"abc");
        assert!(
            error.is_some_and(|e| e.contains("read 3 bytes of this body and no more")),
            "a read past the recorded end fails"
        );
    }

    #[test]
    fn issue_12_a_body_over_the_per_call_bound_is_not_held() {
        let mut c = Capture::default();
        c.data(&vec![b'a'; MAX_RECORDING_BYTES_PER_CALL]);
        assert!(!c.over);
        c.data(b"a");
        assert!(c.body.is_empty(), "the body is dropped once over");
        assert!(c.finish(false).is_none());
    }
}
