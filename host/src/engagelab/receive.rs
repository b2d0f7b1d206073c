//! Receiving an EngageLab callback: verify, read the body within
//! EngageLab's answer budget, check it parses, queue it durably, answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;
use tracing::Instrument;

use super::state::{EventRoute, EventState, Outcome};
use super::{event, verify};
use crate::http::{error, json, method_not_allowed, read_body, unauthorized, Body, Deadline};
use crate::storage::{Enqueued, QueueError};

/// EngageLab wants an answer within 3 seconds; reading the callback's body
/// must end within them (the rest of the path is a verify and a queue write).
pub const ANSWER_BUDGET: Duration = Duration::from_secs(3);

/// Answer one request to an EngageLab route that arrived at `arrived`,
/// inside its `callback` span (the route, and the message id once parsed).
pub async fn receive(
    state: &EventState,
    route: &EventRoute,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    // ERROR level: see `emailgistics::handler::handle`.
    let span = tracing::error_span!(
        "callback",
        route = %route.path,
        message_id = tracing::field::Empty
    );
    receive_in_span(state, route, req, arrived)
        .instrument(span)
        .await
}

async fn receive_in_span(
    state: &EventState,
    route: &EventRoute,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    // The replay window against the system clock as it is now (see
    // `verify::wall_clock_ms`); the dedupe stamp below uses the queue's clock.
    let wall_now = verify::wall_clock_ms();
    // Every note below is stamped with the arrival (see `Outcome::at_ms`).
    let arrived_ms = state.clock.now_ms();
    let note = |outcome: String| {
        state.stats.note(Outcome {
            at_ms: arrived_ms,
            route: route.path.clone(),
            seq: None,
            attempt: None,
            outcome,
        })
    };
    if let Err(e) = verify::verify(
        req.headers(),
        &route.app_keys,
        wall_now,
        route.replay_window,
    ) {
        state.stats.refused.fetch_add(1, Ordering::Relaxed);
        state.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %route.path, reason = %e, "EngageLab callback refused: 401");
        note(format!("refused 401: {e}"));
        return unauthorized(None);
    }
    // The body is read against EngageLab's answer budget, not the delivery
    // budget: a trickling callback must not hold the connection past it.
    let deadline = Deadline::after(arrived, ANSWER_BUDGET, "EngageLab's answer budget");
    let body = match read_body(req, &state.body, &deadline).await {
        Ok(body) => body,
        Err(res) => {
            note(format!(
                "refused {}: the body was not read",
                res.status().as_u16()
            ));
            return res;
        }
    };
    // Parsed only to refuse what could never be processed; the raw body is
    // what is queued, so fields this version does not know are kept.
    let checked = event::parse(&body)
        .map_err(|e| e.to_string())
        .and_then(|c| c.check_lengths().map(|()| c).map_err(|e| e.to_string()));
    let callback = match checked {
        Ok(callback) => callback,
        Err(e) => {
            state.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(route = %route.path, error = %e, "EngageLab callback refused: 400");
            note(format!("refused 400: {e}"));
            return error(StatusCode::BAD_REQUEST, &format!("invalid callback: {e}"));
        }
    };
    tracing::Span::current().record("message_id", callback.message_id.as_str());
    tracing::debug!(route = %route.path, kind = callback.kind.name(), message_id = %callback.message_id, "EngageLab callback");
    let label = format!("{} {}", callback.kind.name(), callback.message_id);
    let text = String::from_utf8_lossy(&body).into_owned();
    match state
        .queue
        .enqueue(&route.path, &text, state.clock.now_ms())
        .await
    {
        Ok(Enqueued::New) => {
            state.stats.received.fetch_add(1, Ordering::Relaxed);
            note(format!("{label} queued"));
            state.wakeup.notify_one();
            json(StatusCode::OK, r#"{"status":"accepted"}"#.into())
        }
        Ok(Enqueued::Duplicate) => {
            state.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            note(format!("{label}: a duplicate, not queued again"));
            json(StatusCode::OK, r#"{"status":"duplicate"}"#.into())
        }
        Err(e @ QueueError::Full(_)) => {
            // Not stored: EngageLab keeps it and sends it again later.
            state.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(route = %route.path, error = %e, "EngageLab callback refused: 503");
            note(format!("{label} refused 503: {e}"));
            let mut res = error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            res.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("60"));
            res
        }
        Err(e) => {
            // Not stored: EngageLab should send it again.
            tracing::error!(route = %route.path, error = %e, "cannot queue an EngageLab callback");
            note(format!("{label} refused 503: cannot queue it: {e}"));
            error(StatusCode::SERVICE_UNAVAILABLE, "cannot queue the callback")
        }
    }
}
