//! The public server: runs the background jobs under one supervisor,
//! routes requests, authenticates, parses deliveries, runs the chain once
//! per delivery (idempotency) and answers with the envelope. The transport
//! under it is [`crate::http`].
//!
//! Status codes follow the Emailgistics contract: 200 with an envelope for
//! everything that was processed (even when plugins failed), 401 for a bad
//! secret, other 4xx for requests that can never succeed (the sender does
//! not retry them), 5xx only when a retry could help.
//!
//! What a sender can make the host hold is bounded by the transport
//! ([`crate::http`]): open connections (`max_connections`, plus a small
//! reserve that answers only `/healthz`), the time to send a request head
//! and a body (`body_read_timeout_ms`, 408), and the body's size
//! (`max_body_bytes`, 413).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::app::{App, Route};
use crate::emailgistics::chain::{self, Envelope, Verdict};
use crate::emailgistics::payload::{self, Parsed};
use crate::emailgistics::record::{Answered, DeliveryRecord, MAX_RECORD_BYTES};
use crate::http::{
    error, json, method_not_allowed, read_body, serve_capped, unauthorized, Body, BodyLimits,
    Deadline, HEALTHZ_PATH,
};
use crate::idempotency::{self, Answer, Ran};
use crate::storage::DeliveryKey;
use crate::supervisor::Supervisor;

/// How often expired answers are removed and the store's size reported.
/// Expired answers are already invisible to lookups; sweeping only
/// reclaims space, so once a minute is plenty.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Time the background jobs get to stop once the listener has drained.
/// They are dropped at their next await, so this only bounds a job stuck
/// in blocking work; a few seconds keep a shutdown prompt.
pub const JOBS_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serve `app`'s webhook routes on `listener` until `shutdown` resolves,
/// then stop accepting and let in-flight requests finish, for up to the
/// delivery budget (so no accepted delivery is cut short). Expired answers
/// and the EngageLab duplicate filter are swept in the background
/// meanwhile, the event worker runs and the CRM sources are refreshed, all
/// under one [`Supervisor`].
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let jobs = Supervisor::new();
    let swept = app.clone();
    jobs.spawn("storage sweep", move || sweep_periodically(swept.clone()));
    let worker = app.clone();
    jobs.spawn("EngageLab event worker", move || {
        crate::engagelab::work(worker.clone())
    });
    for source in &app.services.crm {
        let source = source.clone();
        jobs.spawn(format!("CRM refresh of {}", source.name()), move || {
            source.clone().refresh_periodically()
        });
    }
    let grace = app.delivery_budget;
    let cap = app.connections.clone();
    let result = serve_capped(listener, shutdown, grace, &cap, move |req| {
        let app = app.clone();
        async move { handle(&app, req).await }
    })
    .await;
    // The accept loop has drained; the jobs stop at their next await (the
    // event worker's callback in hand stays queued and is run again).
    jobs.shutdown(JOBS_SHUTDOWN_GRACE).await;
    result
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
    if let Err(e) = crate::emailgistics::auth::check_bearer(
        req.headers().get(header::AUTHORIZATION),
        &route.secrets,
    ) {
        tracing::warn!(route = %path, reason = %e, "delivery refused: 401");
        return unauthorized(Some("Bearer"));
    }
    let limits = BodyLimits {
        max_bytes: app.max_body_bytes,
        read_timeout: app.body_read_timeout,
    };
    let deadline = Deadline::after(arrived, app.delivery_budget, "the delivery budget");
    let body = match read_body(req, &limits, &deadline).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    deliver(app, route, &body, arrived).await
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
    let wit = crate::emailgistics::convert::delivery(delivery);
    let (verdict, records) = chain::run(
        &route.chain,
        &wit,
        &app.services,
        arrived,
        app.delivery_budget,
    )
    .await;
    let (status, body, message) = match &verdict {
        Verdict::Answer(env) => match serde_json::to_vec(env) {
            Ok(bytes) => (StatusCode::OK, Bytes::from(bytes), env.message.clone()),
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
    let record = DeliveryRecord::new(
        &route.path,
        delivery,
        Answered {
            verdict: &verdict,
            http_status: status.as_u16(),
            message: message.clone(),
            at_ms: now,
            elapsed_ms: arrived.elapsed().as_millis() as u64,
        },
        records,
    )
    .bounded(MAX_RECORD_BYTES);
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
fn error_parts(status: StatusCode, message: &str) -> (StatusCode, Bytes, String) {
    let message = crate::text::cut(
        message,
        MAX_ERROR_MESSAGE_BYTES,
        "the 5xx message limit",
        MAX_ERROR_MESSAGE_BYTES,
    );
    let body = serde_json::json!({ "status": "error", "message": message });
    (status, body.to_string().into(), message)
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
