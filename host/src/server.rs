//! The HTTP server: accepts connections, routes requests, authenticates,
//! bounds and parses bodies, runs the chain and answers with the envelope.
//!
//! Status codes follow the Emailgistics contract: 200 with an envelope for
//! everything that was processed (even when plugins failed), 401 for a bad
//! secret, other 4xx for requests that can never succeed (the sender does
//! not retry them), 5xx only when a retry could help.
//!
//! What a sender can make the host hold is bounded here: open connections
//! (`max_connections`, plus a small reserve that answers only `/healthz`,
//! see [`ConnectionCap`]), the time to send a request head
//! ([`HEADER_READ_TIMEOUT`]) and a body (`body_read_timeout_ms`, 408), and
//! the body's size (`max_body_bytes`, 413).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::{App, Route};
use crate::chain::{self, Envelope, Verdict};
use crate::idempotency::{self, Answer, Ran};
use crate::payload::{self, Parsed};
use crate::plugin;
use crate::storage::DeliveryKey;

/// Liveness endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Time a client gets to send the request head; stops idle or slow-loris
/// connections from holding sockets.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections accepted beyond `max_connections` that may still ask for
/// `/healthz` (everything else on them is answered 503). A load balancer
/// and a monitor probe a couple at a time; 8 covers them with margin for
/// 8 more descriptors. Beyond the reserve too, a connection is closed at
/// once.
pub const HEALTH_RESERVE_CONNECTIONS: usize = 8;
/// Time a reserve connection gets to send its request head: a probe sends
/// it at once, and a slow one must not keep the small reserve full.
pub const RESERVE_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) type Body = Full<Bytes>;

/// How often expired answers are removed and the store's size reported.
/// Expired answers are already invisible to lookups; sweeping only
/// reclaims space, so once a minute is plenty.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Serve `app`'s webhook routes on `listener` until `shutdown` resolves,
/// then stop accepting and let in-flight requests finish, for up to the
/// delivery budget (so no accepted delivery is cut short). The storage is
/// swept in the background meanwhile (expired answers; the EngageLab
/// duplicate filter, hourly), and the event worker runs.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let sweeper = tokio::spawn(sweep_periodically(app.clone()));
    let event_worker = tokio::spawn(crate::engagelab::work(app.clone()));
    let refreshers: Vec<_> = app
        .services
        .crm
        .iter()
        .map(|s| tokio::spawn(s.clone().refresh_periodically()))
        .collect();
    let grace = app.delivery_budget;
    let cap = app.connections.clone();
    let result = serve_capped(listener, shutdown, grace, &cap, move |req| {
        let app = app.clone();
        async move { handle(&app, req).await }
    })
    .await;
    sweeper.abort();
    event_worker.abort();
    refreshers.iter().for_each(|r| r.abort());
    result
}

/// The cap on open connections of a listener: `max` ordinary slots, then
/// [`HEALTH_RESERVE_CONNECTIONS`] that answer only `/healthz` (a saturated
/// host still reports itself alive, and its senders get a clean 503), then
/// connections are closed as soon as they are accepted. Accepting and
/// closing (rather than not accepting) keeps the kernel's backlog from
/// holding connections that would only time out, and keeps the accept loop
/// free to serve the reserve. Cloning shares the counts.
#[derive(Clone)]
pub struct ConnectionCap {
    max: usize,
    slots: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl ConnectionCap {
    /// A cap of `max` connections plus the health reserve.
    pub fn new(max: usize) -> Self {
        ConnectionCap {
            max,
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            reserve: Arc::new(Semaphore::new(HEALTH_RESERVE_CONNECTIONS)),
            refused: Arc::default(),
        }
    }

    /// The configured cap (`max_connections`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now, reserve ones included.
    pub fn open(&self) -> usize {
        let slots = self.max.min(Semaphore::MAX_PERMITS) - self.slots.available_permits();
        slots + HEALTH_RESERVE_CONNECTIONS - self.reserve.available_permits()
    }

    /// Connections closed at once because the cap and the reserve were full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A slot for a new connection: `(permit, false)` for an ordinary one,
    /// `(permit, true)` for a reserve one, `None` when all are taken.
    fn admit(&self) -> Option<(OwnedSemaphorePermit, bool)> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some((permit, false));
        }
        if let Ok(permit) = self.reserve.clone().try_acquire_owned() {
            return Some((permit, true));
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Accept HTTP/1 connections on `listener` and answer each request with
/// `handler` until `shutdown`, then wait up to `grace` for open connections.
/// No connection cap (the admin listener is loopback-only by default).
pub async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    handler: F,
) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let cap = ConnectionCap::new(Semaphore::MAX_PERMITS);
    serve_capped(listener, shutdown, grace, &cap, handler).await
}

/// [`serve`], with at most `cap` connections open (see [`ConnectionCap`]).
pub async fn serve_capped<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    cap: &ConnectionCap,
    handler: F,
) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Reserve connections answer one request and close, quickly.
    let mut reserve_http = http.clone();
    reserve_http
        .keep_alive(false)
        .header_read_timeout(RESERVE_HEADER_READ_TIMEOUT);
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
                let Some((permit, reserve)) = cap.admit() else {
                    // Dropping the stream closes it: the descriptor is back at once.
                    tracing::debug!(%peer, max_connections = cap.max(), "connection refused: max_connections and the health reserve are full");
                    continue;
                };
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let fut = (!reserve || req.uri().path() == HEALTHZ_PATH).then(|| handler(req));
                    async move {
                        Ok::<_, Infallible>(match fut {
                            Some(fut) => fut.await,
                            None => over_capacity(),
                        })
                    }
                });
                let builder = if reserve { &reserve_http } else { &http };
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

/// The answer on a reserve connection to anything but `/healthz`.
fn over_capacity() -> Response<Body> {
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

async fn sweep_periodically(app: Arc<App>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Counters are logged when they moved, not every minute of an idle day.
    let mut crm_logged = crate::admin::crm_stats(&app);
    loop {
        every.tick().await;
        let crm = crate::admin::crm_stats(&app);
        if crm != crm_logged {
            tracing::info!(crm = %crm, "CRM counters");
            crm_logged = crm;
        }
        match app.storage.sweep().await {
            Ok(report) => {
                let bytes = app.storage.maintenance.bytes_on_disk().await.unwrap_or(0);
                if report.expired + report.evicted + report.seen_forgotten > 0 {
                    tracing::info!(
                        expired = report.expired,
                        evicted = report.evicted,
                        stored = report.remaining,
                        seen_forgotten = report.seen_forgotten,
                        bytes_on_disk = bytes,
                        "storage swept"
                    );
                } else {
                    tracing::debug!(
                        stored = report.remaining,
                        bytes_on_disk = bytes,
                        "storage swept"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "storage sweep failed"),
        }
    }
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
    if let Some(route) = app.event_route(&path) {
        return crate::engagelab::receive(app, route, req).await;
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

/// Read the body within the size limit, within `body_read_timeout_ms` from
/// now (so a trickling body cannot hold the connection for the whole
/// delivery budget) and within the delivery's budget (counted from
/// `arrived`), whichever ends first.
pub(crate) async fn read_body(
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
    let body_end = Instant::now() + app.body_read_timeout;
    let budget_end = arrived + app.delivery_budget;
    let collected = tokio::time::timeout_at(
        body_end.min(budget_end),
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    match collected {
        Err(_) => {
            let which = if body_end <= budget_end {
                format!(
                    "body_read_timeout_ms = {}",
                    app.body_read_timeout.as_millis()
                )
            } else {
                format!(
                    "the delivery budget of {} ms",
                    app.delivery_budget.as_millis()
                )
            };
            let mut res = error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("request body not received in time ({which})"),
            );
            // The rest of the body is not read: the connection cannot be reused.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(res)
        }
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
    let budget_end = arrived + app.delivery_budget;
    let key = DeliveryKey::new(&route.path, &delivery.id);
    let lease = app.delivery_budget + idempotency::LEASE_MARGIN;
    let answered = idempotency::answer_once(
        &app.storage.answers,
        &app.inflight,
        &key,
        lease,
        budget_end,
        || run_and_store(app, route, &delivery, arrived),
    )
    .await;
    match answered {
        Ok((answer, replayed)) => respond(&answer, replayed),
        Err(e) => store_unavailable(route, &delivery.id, e),
    }
}

/// A copy that got no answer to send answers 503: the sender retries,
/// rather than plugins running twice for one delivery.
fn store_unavailable(route: &Route, id: &str, e: idempotency::Unanswered) -> Response<Body> {
    use idempotency::Unanswered;
    let message = match &e {
        Unanswered::Store(_) => {
            tracing::error!(route = %route.path, delivery = %id, error = %e, "delivery store unavailable; asking the sender to retry");
            "delivery store unavailable"
        }
        Unanswered::StillRunning => "an earlier copy of this delivery is still being processed",
        Unanswered::LeaseLost => {
            tracing::warn!(route = %route.path, delivery = %id, "{e}");
            "cannot record the delivery; retry"
        }
    };
    error(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// Run the chain and record the outcome (the idempotency protocol stores
/// it unless it is a 5xx: those ask for a retry, which must run again).
async fn run_and_store(
    app: &App,
    route: &Route,
    delivery: &payload::Delivery,
    arrived: Instant,
) -> Ran {
    let wit = plugin::wit_delivery(delivery);
    let (verdict, records) = chain::run(
        &route.chain,
        &wit,
        &app.services,
        arrived,
        app.delivery_budget,
    )
    .await;
    let (status, body, env_status, message) = match &verdict {
        Verdict::Answer(env) => match serde_json::to_vec(env) {
            Ok(bytes) => (
                StatusCode::OK,
                Bytes::from(bytes),
                serde_json::json!(env.status),
                env.message.clone(),
            ),
            // Serializing strings and maps cannot fail; if it ever does, a
            // retry is the right answer.
            Err(e) => error_parts(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode envelope: {e}"),
            ),
        },
        Verdict::Retry(reason) => error_parts(StatusCode::SERVICE_UNAVAILABLE, reason),
    };
    let now = app.clock.now_ms();
    // One bounded record for both the log line and the store.
    let record = serde_json::json!({
        "route": route.path,
        "delivery": delivery.id,
        "mailbox": delivery.mailbox,
        "conversationId": delivery.conversation_id,
        "subject": delivery.subject,
        "answeredAtMs": now,
        "elapsedMs": arrived.elapsed().as_millis() as u64,
        "httpStatus": status.as_u16(),
        "status": env_status,
        "message": message,
        "plugins": records,
    });
    let record = crate::record::bound(record, crate::record::MAX_RECORD_BYTES);
    tracing::info!(target: "enrichd::delivery", route = %route.path, delivery = %delivery.id, record = %record, "{message}");
    Ran {
        answer: Answer {
            status: status.as_u16(),
            body,
            answered_at_ms: now,
        },
        record,
    }
}

/// A 5xx answer's parts. The message may carry a plugin's text: it is
/// bounded by the chain already, and cut here again so no path can put an
/// unbounded reason into a 503 body.
fn error_parts(
    status: StatusCode,
    message: &str,
) -> (StatusCode, Bytes, serde_json::Value, String) {
    let message = crate::text::cut(
        message,
        MAX_ERROR_MESSAGE_BYTES,
        "the 5xx message limit",
        MAX_ERROR_MESSAGE_BYTES,
    );
    let body = serde_json::json!({ "status": "error", "message": message });
    (
        status,
        body.to_string().into(),
        serde_json::json!("retry"),
        message,
    )
}

/// Most bytes of the message of a 5xx body: the chain's reasons are one
/// line of at most [`chain::MAX_MESSAGE_CHARS`] characters (up to 4 bytes
/// each); this is the backstop.
const MAX_ERROR_MESSAGE_BYTES: usize = 4 * chain::MAX_MESSAGE_CHARS + 64;

/// Header marking an answer replayed from the store (or from the copy in
/// flight): no plugin ran for this request.
pub const REPLAY_HEADER: &str = "x-enrichd-replay";
/// Header giving when a replayed answer was first given (unix ms).
pub const ANSWERED_AT_HEADER: &str = "x-enrichd-answered-at";

fn respond(answer: &Answer, replayed: bool) -> Response<Body> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = json(status, answer.body.clone());
    if replayed {
        res.headers_mut()
            .insert(REPLAY_HEADER, HeaderValue::from_static("true"));
        res.headers_mut()
            .insert(ANSWERED_AT_HEADER, HeaderValue::from(answer.answered_at_ms));
    }
    res
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

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<Body> {
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
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
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
