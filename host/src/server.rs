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
use crate::idempotency::Answer;
use crate::singleflight::{self, Claim};
use crate::store::{StoreError, StoredDelivery};
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
    jobs.spawn("delivery store sweep", move || {
        sweep_periodically(swept.clone())
    });
    let swept = app.clone();
    jobs.spawn("EngageLab duplicate filter sweep", move || {
        sweep_seen_periodically(swept.clone())
    });
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

/// Sweep the EngageLab duplicate filter every [`SEEN_SWEEP_EVERY`] (on
/// tokio's clock), so it holds about one dedupe window of fingerprints
/// instead of growing forever.
///
/// [`SEEN_SWEEP_EVERY`]: crate::engagelab::queue::SEEN_SWEEP_EVERY
async fn sweep_seen_periodically(app: Arc<App>) {
    let mut every = tokio::time::interval(crate::engagelab::queue::SEEN_SWEEP_EVERY);
    // After a pause (a suspended VM), one sweep catches up; a burst would not.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let swept = app.clone();
        let now = app.clock.now_ms();
        match tokio::task::spawn_blocking(move || swept.events.sweep_seen(now)).await {
            Ok(Ok(removed)) if removed > 0 => {
                tracing::info!(removed, "EngageLab duplicate filter swept")
            }
            Ok(Ok(_)) => tracing::debug!("EngageLab duplicate filter swept; nothing expired"),
            Ok(Err(e)) => tracing::error!(error = %e, "EngageLab duplicate filter sweep failed"),
            Err(e) => tracing::error!(error = %e, "EngageLab duplicate filter sweep panicked"),
        }
    }
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
        let swept = app.clone();
        match tokio::task::spawn_blocking(move || swept.sweep_deliveries()).await {
            Ok(Ok(report)) => {
                let bytes = app.store.size_on_disk().unwrap_or(0);
                if report.expired + report.evicted > 0 {
                    tracing::info!(
                        expired = report.expired,
                        evicted = report.evicted,
                        stored = report.remaining,
                        bytes_on_disk = bytes,
                        "delivery store swept"
                    );
                } else {
                    tracing::debug!(
                        stored = report.remaining,
                        bytes_on_disk = bytes,
                        "delivery store swept"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "delivery store sweep failed"),
            Err(e) => tracing::error!(error = %e, "delivery store sweep panicked"),
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
    let key = (route.path.clone(), delivery.id.clone());
    // Each turn either answers or finds that the copy it followed went away
    // without an answer; then it tries again (and usually leads).
    loop {
        match stored_answer(app, route, &delivery.id) {
            Ok(Some(answer)) => return replay(&answer),
            Ok(None) => {}
            Err(e) => return store_unavailable(route, &delivery.id, e),
        }
        match app.inflight.claim(key.clone()) {
            Claim::Leader(leader) => {
                // Checked again now that this copy leads: the previous
                // leader may have stored its answer and left in between.
                match stored_answer(app, route, &delivery.id) {
                    Ok(Some(answer)) => {
                        leader.finish(answer.clone());
                        return replay(&answer);
                    }
                    Ok(None) => {}
                    Err(e) => return store_unavailable(route, &delivery.id, e),
                }
                let answer = Arc::new(run_and_store(app, route, &delivery, arrived).await);
                leader.finish(answer.clone());
                return respond(&answer, false);
            }
            Claim::Follower(slot) => {
                match tokio::time::timeout_at(budget_end, singleflight::follow(slot)).await {
                    Ok(Some(answer)) => return replay(&answer),
                    Ok(None) => continue,
                    Err(_) => {
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "an earlier copy of this delivery is still being processed",
                        )
                    }
                }
            }
        }
    }
}

/// The stored answer for this delivery, if any.
fn stored_answer(app: &App, route: &Route, id: &str) -> Result<Option<Arc<Answer>>, StoreError> {
    let found = app.store.get(&route.path, id, app.clock.now_ms())?;
    Ok(found.map(|s| {
        Arc::new(Answer {
            status: s.status,
            body: Bytes::from(s.body),
            answered_at_ms: s.stored_at_ms,
        })
    }))
}

/// A store that cannot be read answers 503: the sender retries, rather than
/// plugins running twice for one delivery.
fn store_unavailable(route: &Route, id: &str, e: StoreError) -> Response<Body> {
    tracing::error!(route = %route.path, delivery = %id, error = %e, "cannot read the delivery store");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "delivery store unavailable",
    )
}

/// Run the chain, record the outcome, and store the answer unless it is a
/// 5xx (those ask for a retry, which must run again).
async fn run_and_store(
    app: &App,
    route: &Route,
    delivery: &payload::Delivery,
    arrived: Instant,
) -> Answer {
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
    let mut answer = Answer {
        status: status.as_u16(),
        body,
        answered_at_ms: now,
    };
    if status.is_server_error() {
        return answer;
    }
    let stored = StoredDelivery {
        route: route.path.clone(),
        id: delivery.id.clone(),
        stored_at_ms: now,
        status: answer.status,
        body: String::from_utf8_lossy(&answer.body).into_owned(),
        record,
    };
    if let Err(e) = app.store.put(&stored).await {
        // Unstored, a retry would run the plugins again without this
        // answer to replay: ask for the retry now, before anything applies.
        tracing::error!(route = %route.path, delivery = %delivery.id, error = %e, "cannot store the answer; asking the sender to retry");
        let (status, body, ..) = error_parts(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot record the delivery; retry",
        );
        answer.status = status.as_u16();
        answer.body = body;
    }
    answer
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

fn replay(answer: &Answer) -> Response<Body> {
    respond(answer, true)
}

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
