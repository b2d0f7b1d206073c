//! Outbound HTTP for plugins (capability `http`): `wasi:http` 0.2
//! (wasmtime-wasi-http) is linked for every plugin, so a component that
//! imports it loads, but every request goes through [`HttpGate`], the
//! store's `WasiHttpHooks::send_request`:
//!
//! - denied (`http-request-denied`, never a trap) unless the plugin is
//!   granted `http` and the request's scheme, host and port are in its
//!   `allowed_hosts` (exactly: no wildcards). wasi-http never follows a
//!   redirect itself, so a guest that follows one makes a new request,
//!   checked the same way;
//! - bounded per call (`http_requests_per_call`) and per plugin
//!   (`http_connections` open at once, `connection-limit-reached` over it);
//! - bounded in time by the call's deadline (less the reserve every host
//!   call leaves the guest): connect, first-byte and between-bytes
//!   timeouts are clamped to it, and so is the whole exchange;
//! - bounded in bytes: a request body over `http_request_bytes` fails
//!   (`http-request-body-size`), a response body is cut at
//!   `http_response_bytes` (the guest reads up to the cap, then its stream
//!   fails with `http-response-body-size`); the host holds at most one
//!   frame of it at a time;
//! - recorded ([`HttpExchange`]): method, `scheme://authority/path` (no
//!   query: it may hold secrets), status or error, body bytes and time, for
//!   the delivery record;
//! - taped ([`super::http_tape`]): the answer the guest saw goes on the
//!   call's tape, and in replay the answer comes from the tape instead of
//!   the network, after the same checks.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::host_work_deadline;
use super::http_tape::{self, Capture, HttpAnswer, CALL};
use super::policy::Capability;
use super::recording::Tape;
use super::PluginInfo;

/// Requests of one call kept in its record. The default budget is 4 per
/// call; 16 also keeps the denied attempts of a plugin that loops, while a
/// record stays a few KiB however many it makes.
pub const MAX_RECORDED_REQUESTS: usize = 16;
/// Bytes kept of a recorded URL or error text: enough for a service's
/// endpoint, not for a path a plugin stuffs with data.
const MAX_RECORDED_TEXT_BYTES: usize = 256;

/// One outbound request of a plugin call, as the delivery record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpExchange {
    /// The method (`GET`, `POST`, …).
    pub method: String,
    /// `scheme://authority/path`, without the query string.
    pub url: String,
    /// The response status, when one arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the request (or its response body) failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Response body bytes the guest was given.
    pub response_bytes: u64,
    /// Milliseconds from the request to its last event (headers, last body
    /// frame, or failure).
    pub ms: u64,
}

#[derive(Debug, Default)]
struct Log {
    exchanges: Vec<HttpExchange>,
    hit: Vec<&'static str>,
    /// The call's tape, where answers go once their bodies end.
    tape: Tape,
    /// Answers being received (live), by request: their arguments on the
    /// tape and what the guest saw so far.
    captures: BTreeMap<u64, (Vec<String>, Capture)>,
    next_capture: u64,
}

/// What a call's requests did, shared by the gate, the requests in flight
/// and their response bodies (which outlive the hook call).
#[derive(Debug, Clone, Default)]
pub(super) struct HttpLog(Arc<Mutex<Log>>);

impl HttpLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock leaves a plain list behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a new request; `None` when the record is full.
    fn start(&self, request: &hyper::Request<WasiBody>) -> Entry {
        let mut log = self.lock();
        let capture = None;
        let index = (log.exchanges.len() < MAX_RECORDED_REQUESTS).then(|| {
            log.exchanges.push(HttpExchange {
                method: short(request.method().as_str()),
                url: short(&recorded_url(request.uri())),
                status: None,
                error: None,
                response_bytes: 0,
                ms: 0,
            });
            log.exchanges.len() - 1
        });
        Entry {
            log: self.clone(),
            index,
            capture,
            started: Instant::now(),
        }
    }

    /// The call's tape.
    fn tape(&self) -> Tape {
        self.lock().tape.clone()
    }

    /// Start taping the answer of request `args` (live only).
    fn capture(&self, args: Vec<String>) -> Option<u64> {
        let mut log = self.lock();
        if !log.tape.recording() {
            return None;
        }
        let id = log.next_capture;
        log.next_capture += 1;
        log.captures.insert(id, (args, Capture::default()));
        Some(id)
    }

    /// Put the answer of capture `id` on the tape, once.
    fn commit(&self, id: u64, unfinished: bool) {
        let (taken, tape) = {
            let mut log = self.lock();
            (log.captures.remove(&id), log.tape.clone())
        };
        let Some((args, capture)) = taken else { return };
        match capture.finish(unfinished) {
            Some(answer) => tape.record_call(CALL, args, &Ok(answer)),
            None => tape.record_too_big(),
        }
    }

    /// Put the answers still being received on the tape as they stand (the
    /// call is over: the guest reads no more).
    pub(super) fn flush(&self) {
        let open: Vec<u64> = self.lock().captures.keys().copied().collect();
        for id in open {
            self.commit(id, true);
        }
    }

    fn hit(&self, limit: &'static str) {
        let mut log = self.lock();
        if !log.hit.contains(&limit) {
            log.hit.push(limit);
        }
    }

    /// The call's requests so far and the limits they ran into.
    pub(super) fn snapshot(&self) -> (Vec<HttpExchange>, Vec<&'static str>) {
        let log = self.lock();
        (log.exchanges.clone(), log.hit.clone())
    }
}

/// One request's place in the log, and on the tape.
struct Entry {
    log: HttpLog,
    index: Option<usize>,
    capture: Option<u64>,
    started: Instant,
}

impl Entry {
    fn update(&self, f: impl FnOnce(&mut HttpExchange)) {
        let Some(i) = self.index else { return };
        let mut log = self.log.lock();
        if let Some(e) = log.exchanges.get_mut(i) {
            f(e);
            e.ms = self.started.elapsed().as_millis() as u64;
        }
    }

    fn fail(&self, why: impl std::fmt::Display) {
        let why = short(&why.to_string());
        self.update(|e| e.error = Some(why));
    }

    fn taped(&self, f: impl FnOnce(&mut Capture)) {
        let Some(id) = self.capture else { return };
        if let Some((_, c)) = self.log.lock().captures.get_mut(&id) {
            f(c);
        }
    }

    /// The answer is over (failed with `error`, or `unfinished`): on the
    /// tape with it.
    fn end(&self, error: Option<&HttpError>, unfinished: bool) {
        if let Some(e) = error {
            self.taped(|c| c.failed(e));
        }
        if let Some(id) = self.capture {
            self.log.commit(id, unfinished);
        }
    }

    /// Fail the request at once with `error`, recording `why`.
    fn deny(self, why: String, error: HttpError) -> SendFuture {
        self.fail(why);
        Box::new(async move { Err(error) })
    }
}

fn short(text: &str) -> String {
    crate::text::cut(
        text,
        MAX_RECORDED_TEXT_BYTES,
        "the record's text bound",
        MAX_RECORDED_TEXT_BYTES,
    )
}

/// `scheme://authority/path`: the query string may carry keys or
/// addresses, and the record is kept and shown.
fn recorded_url(uri: &hyper::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map_or("", |a| a.as_str()),
        uri.path()
    )
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
/// A response and the future that drives its connection.
type Sent = (hyper::Response<WasiBody>, IoFuture);
type SendFuture = Box<dyn Future<Output = Result<Sent, HttpError>> + Send>;

/// The `wasi:http` policy of one plugin call (see the module docs).
pub(super) struct HttpGate {
    plugin: Arc<PluginInfo>,
    /// The call's deadline.
    deadline: Instant,
    /// Requests made in this call, allowed or not.
    requests: usize,
    log: HttpLog,
}

impl HttpGate {
    /// The gate of a call of `plugin` that must be over by `deadline`,
    /// taping answers on `tape`.
    pub(super) fn new(plugin: Arc<PluginInfo>, deadline: Instant, tape: Tape) -> Self {
        let log = HttpLog::default();
        log.lock().tape = tape;
        HttpGate {
            plugin,
            deadline,
            requests: 0,
            log,
        }
    }

    /// What the call's requests did.
    pub(super) fn log(&self) -> &HttpLog {
        &self.log
    }

    /// The checks before a request goes out: grant, host, budgets. On
    /// success, the connection permit the request holds while it is open.
    fn admit(&mut self, uri: &hyper::Uri) -> Result<OwnedSemaphorePermit, (String, HttpError)> {
        let name = &self.plugin.name;
        if !self.plugin.grants.allows(Capability::Http) {
            return Err((
                format!("capability `http` is not granted to plugin {name:?}"),
                HttpError::HttpRequestDenied,
            ));
        }
        if !self.plugin.allowed_hosts.iter().any(|o| o.admits(uri)) {
            return Err((
                "not in the plugin's allowed_hosts".into(),
                HttpError::HttpRequestDenied,
            ));
        }
        let limits = &self.plugin.limits;
        self.requests += 1;
        if self.requests > limits.http_requests_per_call {
            self.log.hit("http_requests_per_call");
            return Err((
                format!(
                    "http_requests_per_call = {} requests are used up in this call",
                    limits.http_requests_per_call
                ),
                HttpError::HttpRequestDenied,
            ));
        }
        if Instant::now() >= host_work_deadline(self.deadline) {
            return Err((
                "the call's deadline has passed".into(),
                HttpError::ConnectionTimeout,
            ));
        }
        self.plugin
            .http_connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                self.log.hit("http_connections");
                (
                    format!(
                        "http_connections = {} connections of this plugin are open",
                        limits.http_connections
                    ),
                    HttpError::ConnectionLimitReached,
                )
            })
    }
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let mut entry = self.log.start(&request);
        let permit = match self.admit(request.uri()) {
            Ok(permit) => permit,
            Err((why, error)) => return entry.deny(why, error),
        };
        let limits = self.plugin.limits;
        if declared_length(&request).is_some_and(|n| n > limits.http_request_bytes) {
            self.log.hit("http_request_bytes");
            return entry.deny(
                format!(
                    "request body over http_request_bytes = {}",
                    limits.http_request_bytes
                ),
                HttpError::HttpRequestBodySize(Some(limits.http_request_bytes)),
            );
        }
        let deadline = host_work_deadline(self.deadline);
        let options = within(options, deadline.saturating_duration_since(Instant::now()));
        let args = vec![
            request.method().as_str().to_owned(),
            recorded_url(request.uri()),
        ];
        let tape = self.log.tape();
        let served = tape.serve::<HttpAnswer>(CALL, &args);
        if served.is_none() {
            entry.capture = self.log.capture(args.clone());
        }
        let over = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            CappedRequest {
                inner: body,
                left: limits.http_request_bytes,
                over: over.clone(),
            }
            .boxed_unsync()
        });
        let exchange: Pin<Box<dyn Future<Output = Result<Sent, HttpError>> + Send>> = match served {
            None => Box::pin(async move {
                let (response, io) =
                    wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
                Ok((
                    response.map(BodyExt::boxed_unsync),
                    Box::new(io) as IoFuture,
                ))
            }),
            // Replay: the request body is read (and capped) as a server
            // would read it, then the tape answers.
            Some(served) => Box::pin(async move {
                let mut body = request.into_body();
                while let Some(frame) = body.frame().await {
                    frame?;
                }
                let response = served
                    .map_err(http_tape::not_recorded)
                    .and_then(|answer| answer.replay(tape, args))?;
                Ok((response, Box::new(async { Ok(()) }) as IoFuture))
            }),
        };
        let log = self.log.clone();
        Box::new(async move {
            let (response, io) = match tokio::time::timeout_at(deadline, exchange).await {
                Ok(Ok(sent)) => sent,
                Ok(Err(e)) if over.load(Ordering::Relaxed) => {
                    log.hit("http_request_bytes");
                    entry.fail(format!(
                        "request body over http_request_bytes = {}",
                        limits.http_request_bytes
                    ));
                    drop(e);
                    let e = HttpError::HttpRequestBodySize(Some(limits.http_request_bytes));
                    entry.end(Some(&e), false);
                    return Err(e);
                }
                Ok(Err(e)) => {
                    entry.fail(&e);
                    entry.end(Some(&e), false);
                    return Err(e);
                }
                Err(_) => {
                    entry.fail("no response by the call's deadline");
                    let e = HttpError::HttpResponseTimeout;
                    entry.end(Some(&e), false);
                    return Err(e);
                }
            };
            entry.update(|e| e.status = Some(response.status().as_u16()));
            entry.taped(|c| c.response(&response));
            let response = response.map(|body| {
                CappedResponse {
                    inner: body,
                    left: limits.http_response_bytes,
                    cap: limits.http_response_bytes,
                    cut: false,
                    done: false,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    entry,
                    log,
                    _permit: permit,
                }
                .boxed_unsync()
            });
            Ok((response, io))
        })
    }
}

/// The request's `content-length`, when it declares one.
fn declared_length(request: &hyper::Request<WasiBody>) -> Option<u64> {
    request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The guest's timeouts, none later than `left` (wasi-http's defaults are
/// 600 s each).
fn within(options: Option<RequestOptions>, left: Duration) -> RequestOptions {
    let o = options.unwrap_or_default();
    let clamp = |t: Option<Duration>| Some(t.map_or(left, |t| t.min(left)));
    RequestOptions {
        connect_timeout: clamp(o.connect_timeout),
        first_byte_timeout: clamp(o.first_byte_timeout),
        between_bytes_timeout: clamp(o.between_bytes_timeout),
    }
}

/// A request body that fails once it has sent `left` bytes.
struct CappedRequest {
    inner: WasiBody,
    left: u64,
    over: Arc<AtomicBool>,
}

impl Body for CappedRequest {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let len = data.map_or(0, |d| d.len() as u64);
            if len > self.left {
                self.over.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(None))));
            }
            self.left -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body cut at `cap` bytes and at the call's deadline, keeping
/// its request's record and connection permit up to date until it ends.
struct CappedResponse {
    inner: WasiBody,
    left: u64,
    cap: u64,
    /// The last frame given was cut: the next poll fails.
    cut: bool,
    done: bool,
    deadline: Pin<Box<Sleep>>,
    entry: Entry,
    log: HttpLog,
    _permit: OwnedSemaphorePermit,
}

impl CappedResponse {
    fn fail(
        &mut self,
        why: String,
        error: HttpError,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        self.done = true;
        self.entry.fail(why);
        self.entry.end(Some(&error), false);
        Poll::Ready(Some(Err(error)))
    }
}

impl Drop for CappedResponse {
    fn drop(&mut self) {
        // Dropped unread, or read only in part: taped as far as the guest
        // read it.
        if !self.done {
            self.entry.end(None, true);
        }
    }
}

impl Body for CappedResponse {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.cut {
            this.log.hit("http_response_bytes");
            let why = format!("response body cut at http_response_bytes = {}", this.cap);
            return this.fail(why, HttpError::HttpResponseBodySize(Some(this.cap)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let why = "response body unfinished at the call's deadline".into();
            return this.fail(why, HttpError::HttpResponseTimeout);
        }
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => {
                this.done = true;
                this.entry.update(|_| {});
                this.entry.end(None, false);
                return Poll::Ready(None);
            }
            Some(Err(e)) => return this.fail(e.to_string(), e),
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                if data.len() as u64 > this.left {
                    data.truncate(this.left as usize);
                    this.cut = true;
                }
                this.left -= data.len() as u64;
                let n = data.len() as u64;
                this.entry.update(|e| e.response_bytes += n);
                this.entry.taped(|c| c.data(&data));
                Frame::data(data)
            }
            Err(trailers) => trailers,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done || (!self.cut && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if hint.lower() > self.left {
            // Not an exact length any more: the body will be cut.
            hint = SizeHint::new();
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::policy::HttpOrigin;

    #[test]
    fn issue_12_allowed_hosts_match_scheme_host_and_port_exactly() {
        let o = HttpOrigin::parse("https://Fraud.Example.com").unwrap();
        assert_eq!(
            (o.https, o.host.as_str(), o.port),
            (true, "fraud.example.com", 443)
        );
        let admits = |url: &str| o.admits(&url.parse().unwrap());
        assert!(admits("https://fraud.example.com/score?x=1"));
        assert!(admits("https://FRAUD.example.com:443/"));
        assert!(!admits("http://fraud.example.com/"), "scheme");
        assert!(!admits("https://fraud.example.com:8443/"), "port");
        assert!(!admits("https://evil.fraud.example.com/"), "subdomain");
        assert!(!admits("https://fraud.example.com.evil.net/"), "suffix");
        let local = HttpOrigin::parse("http://127.0.0.1:8089/").unwrap();
        assert!(local.admits(&"http://127.0.0.1:8089/x".parse().unwrap()));
        assert!(!local.admits(&"http://127.0.0.1:8090/x".parse().unwrap()));
        for bad in [
            "fraud.example.com",
            "ftp://fraud.example.com",
            "https://*.example.com",
            "*",
            "https://user:pw@fraud.example.com",
            "https://fraud.example.com/api",
            "https://fraud.example.com/?q=1",
            "",
        ] {
            assert!(HttpOrigin::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn issue_12_an_answer_still_open_when_the_call_ends_is_taped_once_as_unfinished() {
        let tape = Tape::record();
        let log = HttpLog::default();
        log.lock().tape = tape.clone();
        let args = vec!["GET".to_owned(), "http://a.example/x".to_owned()];
        let id = log.capture(args.clone()).unwrap();
        if let Some((_, c)) = log.lock().captures.get_mut(&id) {
            c.data(b"abc");
        }
        log.flush();
        // Its body dropped later: nothing twice.
        log.commit(id, false);
        let rec = tape.finish().unwrap();
        assert_eq!(rec.calls.len(), 1, "{rec:?}");
        assert_eq!(
            (rec.calls[0].call.as_str(), &rec.calls[0].args),
            (CALL, &args)
        );
        let crate::plugin::recording::Answer::Ok(answer) = &rec.calls[0].answer else {
            panic!("{rec:?}")
        };
        assert_eq!(answer["body"], "abc");
        assert_eq!(answer["unfinished"], true);
        // Nothing is captured when the tape does not record.
        let log = HttpLog::default();
        assert!(log.capture(args).is_none());
    }

    #[test]
    fn issue_12_recorded_urls_have_no_query_string() {
        let uri: hyper::Uri = "https://a.example:8443/v1/score?key=secret"
            .parse()
            .unwrap();
        assert_eq!(recorded_url(&uri), "https://a.example:8443/v1/score");
    }

    #[test]
    fn issue_12_guest_timeouts_are_clamped_to_the_deadline() {
        let left = Duration::from_millis(300);
        let o = within(None, left);
        assert_eq!(o.connect_timeout, Some(left));
        assert_eq!(o.first_byte_timeout, Some(left));
        assert_eq!(o.between_bytes_timeout, Some(left));
        let given = RequestOptions {
            connect_timeout: Some(Duration::from_millis(50)),
            first_byte_timeout: Some(Duration::from_secs(600)),
            between_bytes_timeout: None,
        };
        let o = within(Some(given), left);
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(50)));
        assert_eq!(o.first_byte_timeout, Some(left));
    }
}
