//! The delivery handler: a POST to an Emailgistics route is authenticated,
//! its body read within the delivery budget, parsed, and answered once per
//! delivery (the idempotency protocol, [`crate::idempotency`]): the leader
//! runs the route's chain and stores the answer with its delivery record;
//! copies replay it, marked with [`REPLAY_HEADER`].
//!
//! Status codes follow the Emailgistics contract: 200 with an envelope for
//! everything that was processed (even when plugins failed), 401 for a bad
//! secret, other 4xx for requests that can never succeed (the sender does
//! not retry them), 5xx only when a retry could help.

use std::sync::Arc;
use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use super::auth::Secret;
use super::chain::{self, ChainEntry, Envelope, Verdict};
use super::payload::{self, Parsed};
use super::record::{Answered, DeliveryRecord, MAX_RECORD_BYTES};
use crate::clock::Clock;
use crate::http::{
    error, json, method_not_allowed, read_body, unauthorized, Body, BodyLimits, Deadline,
};
use crate::idempotency::{self, Answer, Inflight, Ran};
use crate::plugin::Services;
use crate::storage::{AnswerStore, DeliveryKey};

/// One Emailgistics webhook route, ready to serve.
pub struct Route {
    /// Request path.
    pub path: String,
    /// Accepted secrets.
    pub secrets: Vec<Secret>,
    /// Plugins in order.
    pub chain: Vec<ChainEntry>,
}

/// What the delivery handler needs, and nothing else. The routes are not
/// in it: they change on a reload, and a request gets its [`Route`] from
/// the generation it started on.
pub struct DeliveryState {
    /// Time allowed per delivery, from its arrival to its answer.
    pub budget: Duration,
    /// What a delivery's body may be (`max_body_bytes`,
    /// `body_read_timeout_ms`).
    pub body: BodyLimits,
    /// Stored answers, shared by every host on the backend.
    pub answers: Arc<dyn AnswerStore>,
    /// Deliveries being processed on this host right now.
    pub inflight: Arc<Inflight>,
    /// The clock answers are stamped with.
    pub clock: Clock,
    /// Services lent to plugins.
    pub services: Services,
    /// Where deliveries are counted.
    pub metrics: crate::metrics::Metrics,
}

/// Answer one request to `route` that arrived at `arrived` (its budget
/// counts from then), inside its `delivery` span: every line logged while
/// it is handled (plugin calls, their guest lines, the delivery record)
/// carries the route and, once the payload is parsed, the delivery id.
pub async fn handle(
    state: &DeliveryState,
    route: &Route,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    // At ERROR level, so a filter that lets any line through keeps the
    // span, and with it the line's delivery id (a span's level only says
    // when it is recorded; it marks nothing as an error).
    let span = tracing::error_span!(
        "delivery",
        route = %route.path,
        delivery = tracing::field::Empty
    );
    handle_in_span(state, route, req, arrived)
        .instrument(span)
        .await
}

async fn handle_in_span(
    state: &DeliveryState,
    route: &Route,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    if let Err(e) =
        super::auth::check_bearer(req.headers().get(header::AUTHORIZATION), &route.secrets)
    {
        tracing::warn!(route = %route.path, reason = %e, "delivery refused: 401");
        return unauthorized(Some("Bearer"));
    }
    let deadline = Deadline::after(arrived, state.budget, "the delivery budget");
    let body = match read_body(req, &state.body, &deadline).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    deliver(state, route, &body, arrived).await
}

async fn deliver(
    state: &DeliveryState,
    route: &Route,
    body: &[u8],
    arrived: Instant,
) -> Response<Body> {
    let delivery = match payload::parse(body) {
        Ok(Parsed::Received(d)) => {
            tracing::Span::current().record("delivery", d.id.as_str());
            d
        }
        Ok(Parsed::UnknownEvent(event)) => {
            tracing::info!(route = %route.path, %event, "unknown event ignored");
            return envelope(&Envelope::message_only("ignored"));
        }
        Err(e) => {
            tracing::warn!(route = %route.path, error = %e, "delivery refused: 400");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let budget_end = arrived + state.budget;
    let key = DeliveryKey::new(&route.path, &delivery.id);
    let lease = state.budget + idempotency::LEASE_MARGIN;
    let answered = idempotency::answer_once(
        &state.answers,
        &state.inflight,
        &key,
        lease,
        budget_end,
        || run_and_store(state, route, &delivery, arrived),
    )
    .await;
    match answered {
        Ok((answer, replayed)) => {
            if replayed {
                super::metrics::replayed(&state.metrics, &route.path, answer.status);
            }
            respond(&answer, replayed)
        }
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
    state: &DeliveryState,
    route: &Route,
    delivery: &payload::Delivery,
    arrived: Instant,
) -> Ran {
    let wit = crate::emailgistics::convert::delivery(delivery);
    let (verdict, records) =
        chain::run(&route.chain, &wit, &state.services, arrived, state.budget).await;
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
    let now = state.clock.now_ms();
    // One bounded record for both the log line and the store.
    let answered = Answered {
        verdict: &verdict,
        http_status: status.as_u16(),
        message: message.clone(),
        at_ms: now,
        elapsed_ms: arrived.elapsed().as_millis() as u64,
    };
    // Counted before the record's bound cuts the plugins' host calls.
    super::metrics::plugins(&state.metrics, &records);
    let record = DeliveryRecord::new(&route.path, delivery, answered, records);
    super::metrics::delivered(&state.metrics, &record);
    let record = record.bounded(MAX_RECORD_BYTES);
    tracing::info!(target: "enrichd::delivery", route = %route.path, delivery = %delivery.id, record = %super::record::for_log(&record), "{message}");
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
