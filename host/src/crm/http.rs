//! A REST CRM, queried per lookup over HTTP or HTTPS.
//!
//! Each lookup fills a URL template (`{email}` or `{domain}`, percent-encoded),
//! sends a `GET` with the configured headers and reads a record out of the
//! JSON answer through RFC 6901 pointers. The whole lookup (waiting for a
//! concurrency slot, connecting, the answer and its body) is bounded by one
//! timeout, and the body by [`MAX_BODY_BYTES`]. Connections are pooled.
//!
//! HTTPS uses rustls (ring) with the system CA store: on-prem installs often
//! run their CRM behind an internal CA that is only in the system store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{normalize_email, BackendError, Record};

/// Largest answer body read. A CRM record is a few KiB at most; 1 MiB leaves
/// room for verbose APIs (a list with the match first) while a misbehaving
/// CRM cannot make the host buffer without bound, once per lookup in flight.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long an idle pooled connection is kept. Below the usual 60 s of
/// server-side keep-alive, so we rarely reuse a connection the CRM is closing.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Everything but the RFC 3986 unreserved characters is percent-encoded, so
/// `+`, `@`, `/`, `?`, `#` and `%` in a key cannot change the URL's meaning.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A validated REST CRM source.
#[derive(Clone, PartialEq)]
pub struct HttpSettings {
    /// URL template for a lookup by email; `{email}` is replaced by the
    /// URL-encoded (percent-encoded, RFC 3986 unreserved kept) address.
    /// http:// or https://.
    pub email_url: String,
    /// URL template for a lookup by domain (`{domain}`); None: domain
    /// lookups answer Ok(None).
    pub domain_url: Option<String>,
    /// Extra request headers, e.g. ("Authorization", "Bearer s3cr3t"). Values
    /// are secrets: never logged, and redacted by `Debug`.
    pub headers: Vec<(String, String)>,
    /// Field mapping: (record field name, RFC 6901 JSON pointer into the
    /// answer), e.g. ("claimNumber", "/claims/0/number"). Empty: every
    /// top-level scalar of the answer object becomes a field.
    pub fields: Vec<(String, String)>,
    /// Per-request timeout (connect + answer + body).
    pub timeout: Duration,
    /// Requests in flight at once to this backend; more wait (their wait
    /// counts against the timeout).
    pub max_concurrency: usize,
}

// By hand: a derived Debug would print the header values (API keys).
impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("HttpSettings")
            .field("email_url", &shown(&self.email_url))
            .field("domain_url", &self.domain_url.as_deref().map(shown))
            .field("headers", &headers)
            .field("fields", &self.fields)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// A REST CRM backend: a pooled HTTP(S) client, the settings and a
/// semaphore that caps the requests in flight.
pub struct HttpCrm {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    settings: HttpSettings,
    headers: HeaderMap,
    permits: Semaphore,
}

impl fmt::Debug for HttpCrm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCrm")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HttpCrm {
    /// Checks the settings and builds the client. `Invalid` when a template
    /// lacks its placeholder or is not an http(s) URL, a header or pointer is
    /// malformed, or https is asked for and no system CA certificate loads.
    pub fn new(settings: HttpSettings) -> Result<Self, BackendError> {
        let https = [Some(&settings.email_url), settings.domain_url.as_ref()]
            .into_iter()
            .flatten()
            .any(|url| {
                url.get(..8)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
            });
        // Only an https template needs the system store: an http-only
        // install must not fail on a machine without CA certificates.
        let tls = if https {
            HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| BackendError::Invalid(format!("https: system CA store: {e}")))?
        } else {
            HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(rustls::RootCertStore::empty())?)
        };
        Self::build(settings, tls)
    }

    fn build(
        settings: HttpSettings,
        tls: HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
    ) -> Result<Self, BackendError> {
        check_template(&settings.email_url, "{email}")?;
        if let Some(url) = &settings.domain_url {
            check_template(url, "{domain}")?;
        }
        for (name, pointer) in &settings.fields {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(invalid(format!(
                    "field {name}: {pointer:?} is not a JSON pointer (RFC 6901: starts with /)"
                )));
            }
        }
        if settings.max_concurrency == 0 {
            return Err(invalid("max_concurrency must be at least 1".into()));
        }
        if settings.timeout.is_zero() {
            return Err(invalid("timeout must be more than 0".into()));
        }

        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("header name {name:?} is not valid")))?;
            // The value is a secret: the error names the header only.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("header {name}: value is not valid")))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        // Defaults only where the settings did not set them.
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static("enrichd"));

        let mut http = HttpConnector::new();
        http.enforce_http(false); // the TLS layer above handles https://
        http.set_nodelay(true);
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(settings.max_concurrency)
            .build(connector);
        let permits = Semaphore::new(settings.max_concurrency.min(Semaphore::MAX_PERMITS));
        Ok(HttpCrm {
            client,
            settings,
            headers,
            permits,
        })
    }

    /// The record of the customer with this email address (trimmed and
    /// lower-cased first, as everywhere in enrichd).
    pub async fn by_email(&self, email: &str) -> Result<Option<Record>, BackendError> {
        let email = normalize_email(email);
        if email.is_empty() {
            return Ok(None);
        }
        self.lookup(&self.settings.email_url, "{email}", &email)
            .await
    }

    /// The record for a whole domain; Ok(None) without a domain template.
    pub async fn by_domain(&self, domain: &str) -> Result<Option<Record>, BackendError> {
        let Some(template) = &self.settings.domain_url else {
            return Ok(None);
        };
        let domain = domain.trim().trim_end_matches('.').to_lowercase();
        if domain.is_empty() {
            return Ok(None);
        }
        self.lookup(template, "{domain}", &domain).await
    }

    async fn lookup(
        &self,
        template: &str,
        placeholder: &str,
        key: &str,
    ) -> Result<Option<Record>, BackendError> {
        let url = template.replace(placeholder, &utf8_percent_encode(key, KEY).to_string());
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("lookup URL does not parse: {e}")))?;
        match tokio::time::timeout(self.settings.timeout, self.fetch(uri)).await {
            Ok(answer) => answer,
            Err(_) => Err(BackendError::Timeout(
                u64::try_from(self.settings.timeout.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }

    async fn fetch(&self, uri: Uri) -> Result<Option<Record>, BackendError> {
        // Held until the body is read: the CRM sees at most max_concurrency.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| BackendError::Unavailable("backend closed".into()))?;
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| BackendError::Unavailable(crate::http::error_chain(&e)))?;
        let status = response.status();
        let declared_len = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = read_body(response.into_body(), declared_len).await;

        match status {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => return Ok(None),
            s if s.is_success() => {}
            // Rate limiting is a transient refusal, like a 503.
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(BackendError::Unavailable(status_text(s)));
            }
            s if s.is_redirection() => {
                return Err(invalid(format!(
                    "{} (redirects are not followed)",
                    status_text(s)
                )));
            }
            s => return Err(invalid(status_text(s))),
        }
        let answer: Value = serde_json::from_slice(&body?)
            .map_err(|e| invalid(format!("answer is not JSON: {e}")))?;
        record_from(answer, &self.settings.fields)
    }
}

/// Reads at most [`MAX_BODY_BYTES`]. Read for every status: a fully read
/// body lets the pooled connection be reused (404s are common).
async fn read_body(
    body: hyper::body::Incoming,
    declared_len: Option<u64>,
) -> Result<Bytes, BackendError> {
    let too_big = || invalid(format!("answer is larger than {MAX_BODY_BYTES} bytes"));
    // A declared oversize body is refused without reading it.
    if declared_len.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_big());
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_big()),
        Err(e) => Err(BackendError::Unavailable(format!(
            "reading the answer: {}",
            crate::http::error_chain(e.as_ref())
        ))),
    }
}

/// The record in an answer: an object, or the first element of an array.
fn record_from(answer: Value, fields: &[(String, String)]) -> Result<Option<Record>, BackendError> {
    let item = match answer {
        Value::Array(items) => items.into_iter().next().unwrap_or(Value::Null),
        other => other,
    };
    let object = match item {
        Value::Null => return Ok(None),
        Value::Object(object) => object,
        other => {
            return Err(invalid(format!(
                "expected a JSON object, got {}",
                super::json_kind(&other)
            )))
        }
    };
    let record: Record = if fields.is_empty() {
        object
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), scalar(value)?)))
            .collect()
    } else {
        let item = Value::Object(object);
        fields
            .iter()
            .filter_map(|(name, pointer)| Some((name.clone(), scalar(item.pointer(pointer)?)?)))
            .collect()
    };
    // A record with no field tells the plugin nothing a miss would not, and
    // an empty Some would stop the fallbacks (last-known, domain) from
    // answering: treat it as not found.
    Ok((!record.is_empty()).then_some(record))
}

/// A field value; None for null, objects and arrays (the field is left out).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

fn invalid(message: String) -> BackendError {
    BackendError::Invalid(message)
}

fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, BackendError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(format!("https: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The template must be an absolute http(s) URL with its placeholder; the
/// check fills the placeholder to parse the URL as a lookup would.
fn check_template(template: &str, placeholder: &str) -> Result<(), BackendError> {
    if !template.contains(placeholder) {
        return Err(invalid(format!(
            "URL template {:?} has no {placeholder}",
            shown(template)
        )));
    }
    let uri: Uri = template
        .replace(placeholder, "x")
        .parse()
        .map_err(|e| invalid(format!("URL template {:?}: {e}", shown(template))))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(()),
        _ => Err(invalid(format!(
            "URL template {:?}: must be an http:// or https:// URL",
            shown(template)
        ))),
    }
}

/// A URL template as errors and `Debug` show it: the values of its query
/// string (where CRMs often take their API key) redacted, all but the
/// placeholders.
fn shown(template: &str) -> String {
    let Some((base, query)) = template.split_once('?') else {
        return template.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, value)) if !value.starts_with('{') => format!("{name}=<redacted>"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use hyper::body::{Frame, SizeHint};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::Response;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    /// What the test CRM answers next.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        body: Vec<u8>,
        /// Held this long before answering.
        delay: Duration,
        /// Without a Content-Length (chunked), so only the read limit stops it.
        chunked: bool,
    }

    impl Reply {
        fn json(status: u16, body: &str) -> Self {
            Reply {
                status,
                body: body.as_bytes().to_vec(),
                delay: Duration::ZERO,
                chunked: false,
            }
        }
    }

    /// A request as the test CRM saw it.
    struct Seen {
        target: String,
        headers: HeaderMap,
    }

    /// A loopback CRM whose answer can be switched between lookups.
    struct TestCrm {
        addr: SocketAddr,
        reply: Mutex<Reply>,
        seen: Mutex<Vec<Seen>>,
        connections: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl TestCrm {
        async fn start(reply: Reply) -> Arc<TestCrm> {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let crm = Arc::new(TestCrm {
                addr: listener.local_addr().unwrap(),
                reply: Mutex::new(reply),
                seen: Mutex::new(Vec::new()),
                connections: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            });
            let server = crm.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    server.connections.fetch_add(1, Ordering::SeqCst);
                    let crm = server.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| crm.clone().answer(req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            crm
        }

        async fn answer(
            self: Arc<Self>,
            req: Request<hyper::body::Incoming>,
        ) -> Result<Response<Chunks>, std::convert::Infallible> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            // Decrements even when the client gives up and the future is dropped.
            let _guard = InFlight(&self.in_flight);
            self.seen.lock().unwrap().push(Seen {
                target: req.uri().to_string(),
                headers: req.headers().clone(),
            });
            let reply = self.reply.lock().unwrap().clone();
            tokio::time::sleep(reply.delay).await;
            let len = (!reply.chunked).then_some(reply.body.len() as u64);
            let chunks = reply.body.chunks(64 * 1024).map(Bytes::copy_from_slice);
            let body = Chunks {
                chunks: chunks.collect(),
                len,
            };
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
            Ok(response)
        }

        fn set(&self, reply: Reply) {
            *self.reply.lock().unwrap() = reply;
        }

        fn requests(&self) -> usize {
            self.seen.lock().unwrap().len()
        }

        fn last_target(&self) -> String {
            self.seen.lock().unwrap().last().unwrap().target.clone()
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    struct InFlight<'a>(&'a AtomicUsize);

    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A response body sent in chunks; with `len: None` hyper sends it
    /// chunked, without a Content-Length.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        len: Option<u64>,
    }

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
        }

        fn is_end_stream(&self) -> bool {
            self.chunks.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            self.len.map(SizeHint::with_exact).unwrap_or_default()
        }
    }

    fn settings(email_url: String) -> HttpSettings {
        HttpSettings {
            email_url,
            domain_url: None,
            headers: Vec::new(),
            fields: Vec::new(),
            timeout: Duration::from_secs(5),
            max_concurrency: 4,
        }
    }

    fn mapping(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn record(pairs: &[(&str, &str)]) -> Record {
        mapping(pairs).into_iter().collect()
    }

    const CONTACT: &str = r#"{
        "id": 42, "name": "Ann", "vip": true, "note": null, "tags": ["a"], "owner": {"id": 1},
        "claims": [{"number": "CLM-556677"}], "policy": {"id": 889900, "region": "EMEA"}
    }"#;

    #[tokio::test]
    async fn email_lookup_maps_fields_through_pointers_and_encodes_the_address() {
        let crm = TestCrm::start(Reply::json(200, CONTACT)).await;
        let mut s = settings(crm.url("/contacts?email={email}&v=1"));
        s.fields = mapping(&[
            ("claimNumber", "/claims/0/number"),
            ("policyNumber", "/policy/id"),
            ("region", "/policy/region"),
            ("vip", "/vip"),
            ("missing", "/claims/1/number"),
            ("note", "/note"),
            ("owner", "/owner"),
            ("tags", "/tags"),
        ]);
        let http = HttpCrm::new(s).unwrap();
        let got = http.by_email(" A+B@X.com ").await.unwrap();
        assert_eq!(
            got,
            Some(record(&[
                ("claimNumber", "CLM-556677"),
                ("policyNumber", "889900"),
                ("region", "EMEA"),
                ("vip", "true"),
            ]))
        );
        assert_eq!(crm.last_target(), "/contacts?email=a%2Bb%40x.com&v=1");
    }

    #[tokio::test]
    async fn configured_headers_are_sent_and_redacted_in_debug() {
        let crm = TestCrm::start(Reply::json(200, CONTACT)).await;
        let mut s = settings(crm.url("/c/{email}"));
        s.headers = mapping(&[("Authorization", "Bearer s3cr3t"), ("X-Tenant", "acme")]);
        let http = HttpCrm::new(s).unwrap();
        http.by_email("a@x.com").await.unwrap();
        let seen = crm.seen.lock().unwrap();
        let headers = &seen[0].headers;
        assert_eq!(headers["authorization"], "Bearer s3cr3t");
        assert_eq!(headers["x-tenant"], "acme");
        assert_eq!(headers["accept"], "application/json");
        let debug = format!("{http:?}");
        assert!(
            debug.contains("Authorization") && !debug.contains("s3cr3t"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn empty_field_mapping_takes_top_level_scalars() {
        let crm = TestCrm::start(Reply::json(200, CONTACT)).await;
        let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
        let got = http.by_email("a@x.com").await.unwrap();
        assert_eq!(
            got,
            Some(record(&[("id", "42"), ("name", "Ann"), ("vip", "true")]))
        );
    }

    #[tokio::test]
    async fn array_answer_takes_the_first_element() {
        let crm = TestCrm::start(Reply::json(200, r#"[{"tier":"gold"},{"tier":"silver"}]"#)).await;
        let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
        let got = http.by_email("a@x.com").await.unwrap();
        assert_eq!(got, Some(record(&[("tier", "gold")])));
    }

    #[tokio::test]
    async fn not_found_null_empty_array_and_empty_record_are_none() {
        let crm = TestCrm::start(Reply::json(404, r#"{"error":"no such contact"}"#)).await;
        let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
        for reply in [
            Reply::json(404, r#"{"error":"no such contact"}"#),
            Reply::json(200, "null"),
            Reply::json(200, "[]"),
            Reply::json(200, r#"{"nested":{"a":1},"nothing":null}"#),
            Reply::json(204, ""),
        ] {
            crm.set(reply);
            assert_eq!(http.by_email("a@x.com").await, Ok(None));
        }
        assert_eq!(crm.requests(), 5);
        // Bodies are read to the end, so the pooled connection is reused.
        assert_eq!(crm.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn server_errors_are_unavailable_and_client_errors_invalid() {
        let crm = TestCrm::start(Reply::json(500, "oops")).await;
        let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
        let err = http.by_email("a@x.com").await.unwrap_err();
        assert_eq!(
            err,
            BackendError::Unavailable("HTTP 500 Internal Server Error".into())
        );
        crm.set(Reply::json(403, ""));
        let err = http.by_email("a@x.com").await.unwrap_err();
        assert_eq!(err, BackendError::Invalid("HTTP 403 Forbidden".into()));
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let http = HttpCrm::new(settings(format!("http://{addr}/c/{{email}}"))).unwrap();
        let err = http.by_email("a@x.com").await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Unavailable(m) if m.contains("onnect")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_backend_times_out_within_the_timeout() {
        let mut reply = Reply::json(200, CONTACT);
        reply.delay = Duration::from_secs(10);
        let crm = TestCrm::start(reply).await;
        let mut s = settings(crm.url("/c/{email}"));
        s.timeout = Duration::from_millis(300);
        let http = HttpCrm::new(s).unwrap();
        let started = Instant::now();
        assert_eq!(
            http.by_email("a@x.com").await,
            Err(BackendError::Timeout(300))
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1300), "{took:?}");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_json_or_not_an_object_is_invalid() {
        let crm = TestCrm::start(Reply::json(200, "<html>hello</html>")).await;
        let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
        let err = http.by_email("a@x.com").await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Invalid(m) if m.contains("not JSON")),
            "{err:?}"
        );
        crm.set(Reply::json(200, r#""a string""#));
        let err = http.by_email("a@x.com").await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Invalid(m) if m.contains("a string")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_answer_is_invalid_with_or_without_a_length() {
        let mut body = br#"{"x":""#.to_vec();
        body.resize(MAX_BODY_BYTES + 10, b'a');
        body.extend_from_slice(br#""}"#);
        for chunked in [false, true] {
            let mut reply = Reply::json(200, "");
            reply.body = body.clone();
            reply.chunked = chunked;
            let crm = TestCrm::start(reply).await;
            let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
            let err = http.by_email("a@x.com").await.unwrap_err();
            assert!(
                matches!(&err, BackendError::Invalid(m) if m.contains("larger than")),
                "chunked {chunked}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn domain_lookups_use_the_domain_template_or_answer_none() {
        let crm = TestCrm::start(Reply::json(200, r#"{"account":"Acme"}"#)).await;
        let http = HttpCrm::new(settings(crm.url("/c/{email}"))).unwrap();
        assert_eq!(http.by_domain("acme.example").await, Ok(None));
        assert_eq!(crm.requests(), 0);

        let mut s = settings(crm.url("/c/{email}"));
        s.domain_url = Some(crm.url("/accounts?domain={domain}"));
        let http = HttpCrm::new(s).unwrap();
        let got = http.by_domain("Acme.Example.").await.unwrap();
        assert_eq!(got, Some(record(&[("account", "Acme")])));
        assert_eq!(crm.last_target(), "/accounts?domain=acme.example");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_than_max_concurrency_requests_are_in_flight() {
        let mut reply = Reply::json(200, CONTACT);
        reply.delay = Duration::from_millis(300);
        let crm = TestCrm::start(reply).await;
        let mut s = settings(crm.url("/c/{email}"));
        s.max_concurrency = 2;
        let http = Arc::new(HttpCrm::new(s).unwrap());
        let started = Instant::now();
        let lookups: Vec<_> = (0..6)
            .map(|i| {
                let http = http.clone();
                tokio::spawn(async move { http.by_email(&format!("u{i}@x.com")).await })
            })
            .collect();
        for lookup in lookups {
            assert!(lookup.await.unwrap().unwrap().is_some());
        }
        assert_eq!(crm.requests(), 6);
        assert_eq!(crm.max_in_flight.load(Ordering::SeqCst), 2);
        // Three waves of 300 ms.
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn waiting_for_a_slot_counts_against_the_timeout() {
        let mut reply = Reply::json(200, CONTACT);
        reply.delay = Duration::from_millis(400);
        let crm = TestCrm::start(reply).await;
        let mut s = settings(crm.url("/c/{email}"));
        s.max_concurrency = 1;
        s.timeout = Duration::from_millis(600);
        let http = HttpCrm::new(s).unwrap();
        let (first, second) = tokio::join!(http.by_email("a@x.com"), http.by_email("b@x.com"));
        assert!(first.unwrap().is_some());
        assert_eq!(second, Err(BackendError::Timeout(600)));
    }

    #[tokio::test]
    async fn https_is_spoken_to_https_urls() {
        // A plain-HTTP port: the TLS handshake fails, so the request was TLS.
        let crm = TestCrm::start(Reply::json(200, CONTACT)).await;
        let url = format!("https://{}/c/{{email}}", crm.addr);
        let tls = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(rustls::RootCertStore::empty()).unwrap());
        let http = HttpCrm::build(settings(url), tls).unwrap();
        let err = http.by_email("a@x.com").await.unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
        assert_eq!(crm.requests(), 0);
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = || settings("http://127.0.0.1:1/c/{email}".into());
        let mut cases = Vec::new();
        cases.push(settings("http://127.0.0.1:1/c".into()));
        cases.push(settings("ftp://127.0.0.1:1/{email}".into()));
        cases.push(settings("/c/{email}".into()));
        let mut s = ok();
        s.domain_url = Some("http://127.0.0.1:1/d/{email}".into());
        cases.push(s);
        let mut s = ok();
        s.headers = mapping(&[("Bad Name", "x")]);
        cases.push(s);
        let mut s = ok();
        s.headers = mapping(&[("Authorization", "line\nbreak s3cr3t")]);
        cases.push(s);
        let mut s = ok();
        s.fields = mapping(&[("claim", "claims/0")]);
        cases.push(s);
        let mut s = ok();
        s.max_concurrency = 0;
        cases.push(s);
        let mut s = ok();
        s.timeout = Duration::ZERO;
        cases.push(s);
        for case in cases {
            let shown = format!("{case:?}");
            match HttpCrm::new(case) {
                Err(BackendError::Invalid(m)) => assert!(!m.contains("s3cr3t"), "{m}"),
                other => panic!("{shown}: {other:?}"),
            }
        }
    }

    /// Issue 14: an API key in a URL template's query string appears in
    /// neither the settings' `Debug` nor the refusal of a bad template.
    #[test]
    fn issue_14_query_string_keys_are_never_shown() {
        let bad = [
            "http://127.0.0.1:1/c?api_key=s3cr3t",
            "ftp://127.0.0.1:1/c?email={email}&api_key=s3cr3t",
            "/c?api_key=s3cr3t&email={email}",
        ];
        for template in bad {
            let case = settings(template.into());
            let debug = format!("{case:?}");
            assert!(
                !debug.contains("s3cr3t") && debug.contains("api_key"),
                "{debug}"
            );
            match HttpCrm::new(case) {
                Err(BackendError::Invalid(m)) => {
                    assert!(
                        !m.contains("s3cr3t") && m.contains("api_key=<redacted>"),
                        "{m}"
                    );
                }
                other => panic!("{template}: {other:?}"),
            }
        }
        let mut ok = settings("http://127.0.0.1:1/c?email={email}&key=s3cr3t".into());
        ok.domain_url = Some("http://127.0.0.1:1/d?key=s3cr3t&domain={domain}".into());
        let debug = format!("{:?}", HttpCrm::new(ok).expect("valid"));
        assert!(
            !debug.contains("s3cr3t") && debug.contains("email={email}"),
            "{debug}"
        );
    }
}
