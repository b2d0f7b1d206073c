//! A loopback REST CRM for the tests: real HTTP on `127.0.0.1:0`, whose
//! behaviour can be switched while it runs (normal, slow, failing, down),
//! and which counts the lookups it receives.
//!
//! `GET /customers?email=<email>` answers the customer's JSON object or 404;
//! `GET /companies?domain=<domain>` the same for domains.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

/// How the CRM behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers at once.
    Normal,
    /// Answers after this long.
    Slow(Duration),
    /// Answers 500.
    Failing,
    /// Closes every connection without answering.
    Down,
}

#[derive(Default)]
struct State {
    customers: HashMap<String, serde_json::Value>,
    companies: HashMap<String, serde_json::Value>,
}

/// A running loopback CRM.
pub struct FakeCrm {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    email_calls: Arc<AtomicU64>,
    domain_calls: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCrm {
    /// Start it on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> FakeCrm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let (email_calls, domain_calls) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let shared = (
            state.clone(),
            mode.clone(),
            email_calls.clone(),
            domain_calls.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, mode, emails, domains) = shared.clone();
                tokio::spawn(async move {
                    if *mode.lock().unwrap_or_else(PoisonError::into_inner) == Mode::Down {
                        return; // dropping the stream closes it unanswered
                    }
                    let service = hyper::service::service_fn(move |req| {
                        let (state, mode, emails, domains) =
                            (state.clone(), mode.clone(), emails.clone(), domains.clone());
                        async move {
                            Ok::<_, Infallible>(answer(req, &state, &mode, &emails, &domains).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeCrm {
            addr,
            state,
            mode,
            email_calls,
            domain_calls,
            task,
        }
    }

    /// Switch its behaviour.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Add a customer.
    pub fn add_customer(&self, email: &str, record: serde_json::Value) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .customers
            .insert(email.to_lowercase(), record);
    }

    /// Add a company (domain-level record).
    pub fn add_company(&self, domain: &str, record: serde_json::Value) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .companies
            .insert(domain.to_lowercase(), record);
    }

    /// Lookups by email received so far.
    pub fn email_calls(&self) -> u64 {
        self.email_calls.load(Ordering::SeqCst)
    }

    /// Lookups by domain received so far.
    pub fn domain_calls(&self) -> u64 {
        self.domain_calls.load(Ordering::SeqCst)
    }

    /// A `[[crm]]` table for enrichd pointing at this CRM; `extra` is more
    /// TOML for the table (e.g. `timeout_ms`), `cache` the `[crm.cache]` body.
    pub fn source_toml(&self, extra: &str, cache: &str) -> String {
        format!(
            "[[crm]]\nname = \"remote\"\nkind = \"http\"\n\
             email_url = \"http://{addr}/customers?email={{email}}\"\n\
             domain_url = \"http://{addr}/companies?domain={{domain}}\"\n\
             headers = [{{ name = \"Authorization\", value = \"Bearer test-token\" }}]\n{extra}\n[crm.cache]\n{cache}\n",
            addr = self.addr
        )
    }
}

impl Drop for FakeCrm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    mode: &Mutex<Mode>,
    email_calls: &AtomicU64,
    domain_calls: &AtomicU64,
) -> Response<Full<Bytes>> {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let found = {
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        match req.uri().path() {
            "/customers" => {
                email_calls.fetch_add(1, Ordering::SeqCst);
                query
                    .get("email")
                    .and_then(|e| state.customers.get(&e.to_lowercase()).cloned())
            }
            "/companies" => {
                domain_calls.fetch_add(1, Ordering::SeqCst);
                query
                    .get("domain")
                    .and_then(|d| state.companies.get(&d.to_lowercase()).cloned())
            }
            _ => None,
        }
    };
    let current = *mode.lock().unwrap_or_else(PoisonError::into_inner);
    match current {
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Failing => return status(StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"boom\"}"),
        Mode::Normal | Mode::Down => {}
    }
    match found {
        Some(record) => status(StatusCode::OK, &record.to_string()),
        None => status(StatusCode::NOT_FOUND, "{}"),
    }
}

fn status(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_owned())));
    *res.status_mut() = code;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    res
}
