//! EngageLab email callbacks: verified, queued durably, answered at once,
//! and handed to event plugins in the background.
//!
//! EngageLab wants an answer within 3 seconds, and plugins may take longer,
//! so a callback is only checked ([`verify`]: app key, signature, replay
//! window), parsed far enough to know it is one ([`event`]), and queued
//! durably (the storage's [`crate::storage::EventQueue`]) before the 200
//! goes out. A worker on each host then leases the oldest due callback, runs
//! the route's event plugins on it, and acknowledges it only afterwards:
//! delivery to plugins is at least once and survives restarts, crashes and
//! a host dying mid-processing. Identical callbacks (EngageLab retries) are
//! queued once.
//!
//! What a sender can make this path spend is bounded: the replay window is
//! judged against the system clock as it is now; keyed fields are
//! length-capped (400); the queue holds at most `[events] max_queued`
//! callbacks (beyond it 503, so EngageLab keeps the callback and retries). A
//! callback put back for a retry waits for its not-before time without
//! blocking the others, and event calls take permits from a pool of their
//! own: a call that got no permit in time never ran, so its callback is put
//! back without counting an attempt, whatever the plugin's `on_error`.

pub mod event;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::app::App;
use crate::http::{
    error, json, method_not_allowed, read_body, unauthorized, Body, BodyLimits, Deadline,
};
use crate::plugin::OnError;
use crate::plugin::{CallLimit, Failure, Plugin, WitEvent, WitEventKind};
use crate::storage::{Enqueued, Next, QueueError, QueuedEvent};
use event::{Callback, Kind};

/// EngageLab wants an answer within 3 seconds; reading the callback's body
/// must end within them (the rest of the path is a verify and a queue write).
pub const ANSWER_BUDGET: Duration = Duration::from_secs(3);
/// When nothing is due, the longest the worker waits before looking again
/// without being woken: enqueueing on this host wakes it at once, and this
/// poll finds what other hosts queued (or what a dead host's lease let go)
/// within a second.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Delay before a retried callback is due again, per failed attempt so far:
/// a plugin that asked for a retry is given time to recover, and an only
/// item is not spun on. Other callbacks are processed meanwhile.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between two attempts: with a high `max_attempts`, a
/// callback is still tried at least once a minute.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// Delay before a callback whose plugin call found no free call permit is
/// tried again. The plugin never ran, so this is not an attempt; a second
/// leaves the calls holding the permits time to finish.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// One EngageLab callback URL, ready to serve.
pub struct EventRoute {
    /// Request path.
    pub path: String,
    /// Accepted app keys.
    pub app_keys: Vec<verify::AppKey>,
    /// Accepted timestamp skew.
    pub replay_window: Duration,
    /// Event plugins, in order.
    pub chain: Vec<Arc<Plugin>>,
}

/// Counters of the EngageLab side, for logs and `GET /stats`.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Callbacks accepted and queued.
    pub received: AtomicU64,
    /// Callbacks recognised as duplicates (answered 200, not queued).
    pub duplicates: AtomicU64,
    /// Callbacks refused (401/400).
    pub refused: AtomicU64,
    /// Callbacks processed by their chain.
    pub processed: AtomicU64,
    /// Plugin calls on events that failed.
    pub plugin_failures: AtomicU64,
    /// Callbacks put back for another attempt.
    pub retried: AtomicU64,
    /// Callbacks put back because a plugin call got no call permit in time
    /// (not an attempt).
    pub postponed: AtomicU64,
    /// Callbacks answered 503 because the queue was full.
    pub queue_full: AtomicU64,
}

impl EventStats {
    /// A JSON snapshot, with the queue's length and cap.
    pub fn snapshot(&self, queued: usize, max_queued: usize) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "received": get(&self.received),
            "duplicates": get(&self.duplicates),
            "refused": get(&self.refused),
            "processed": get(&self.processed),
            "pluginFailures": get(&self.plugin_failures),
            "retried": get(&self.retried),
            "postponed": get(&self.postponed),
            "queueFull": get(&self.queue_full),
            "queued": queued,
            "maxQueued": max_queued,
        })
    }
}

/// Answer one request to an EngageLab route.
pub async fn receive(app: &App, route: &EventRoute, req: Request<Incoming>) -> Response<Body> {
    let arrived = Instant::now();
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    // The replay window against the system clock as it is now (see
    // `verify::wall_clock_ms`); the dedupe stamp below uses the queue's clock.
    let wall_now = verify::wall_clock_ms();
    if let Err(e) = verify::verify(
        req.headers(),
        &route.app_keys,
        wall_now,
        route.replay_window,
    ) {
        app.event_stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %route.path, reason = %e, "EngageLab callback refused: 401");
        return unauthorized(None);
    }
    // The body is read against EngageLab's answer budget, not the delivery
    // budget: a trickling callback must not hold the connection past it.
    let limits = BodyLimits {
        max_bytes: app.max_body_bytes,
        read_timeout: app.body_read_timeout,
    };
    let deadline = Deadline::after(arrived, ANSWER_BUDGET, "EngageLab's answer budget");
    let body = match read_body(req, &limits, &deadline).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    // Parsed only to refuse what could never be processed; the raw body is
    // what is queued, so fields this version does not know are kept.
    let text = match event::parse(&body) {
        Ok(callback) => {
            if let Err(e) = callback.check_lengths() {
                app.event_stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(route = %route.path, error = %e, "EngageLab callback refused: 400");
                return error(StatusCode::BAD_REQUEST, &format!("invalid callback: {e}"));
            }
            tracing::debug!(route = %route.path, kind = callback.kind.name(), message_id = %callback.message_id, "EngageLab callback");
            String::from_utf8_lossy(&body).into_owned()
        }
        Err(e) => {
            app.event_stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(route = %route.path, error = %e, "EngageLab callback refused: 400");
            return error(StatusCode::BAD_REQUEST, &format!("invalid callback: {e}"));
        }
    };
    match app
        .storage
        .events
        .enqueue(&route.path, &text, app.clock.now_ms())
        .await
    {
        Ok(Enqueued::New) => {
            app.event_stats.received.fetch_add(1, Ordering::Relaxed);
            app.event_wakeup.notify_one();
            json(StatusCode::OK, r#"{"status":"accepted"}"#.into())
        }
        Ok(Enqueued::Duplicate) => {
            app.event_stats.duplicates.fetch_add(1, Ordering::Relaxed);
            json(StatusCode::OK, r#"{"status":"duplicate"}"#.into())
        }
        Err(e @ QueueError::Full(_)) => {
            // Not stored: EngageLab keeps it and sends it again later.
            app.event_stats.queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(route = %route.path, error = %e, "EngageLab callback refused: 503");
            let mut res = error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            res.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("60"));
            res
        }
        Err(e) => {
            // Not stored: EngageLab should send it again.
            tracing::error!(route = %route.path, error = %e, "cannot queue an EngageLab callback");
            error(StatusCode::SERVICE_UNAVAILABLE, "cannot queue the callback")
        }
    }
}

/// Process queued callbacks until the task is dropped: always the oldest
/// that is due and not leased (by this host or another), so a callback
/// waiting for its retry never holds up others; sleeps only when nothing is
/// due (until the earliest not-before time, a local wake-up, or the
/// one-second idle poll that also finds callbacks queued by other hosts).
pub async fn work(app: Arc<App>) {
    loop {
        let now = app.clock.now_ms();
        match app.storage.events.lease_next(now, app.event_lease).await {
            Ok(Next::Leased(item)) => process(&app, item).await,
            Ok(Next::Idle(earliest)) => {
                let wait = earliest.map_or(IDLE_POLL, |at| {
                    Duration::from_millis(at.saturating_sub(now)).min(IDLE_POLL)
                });
                tokio::select! {
                    () = app.event_wakeup.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the EngageLab queue");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// When a callback that failed `attempts` times is due again.
fn retry_at(now_ms: u64, attempts: u32) -> u64 {
    let backoff = RETRY_BACKOFF
        .saturating_mul(attempts)
        .min(MAX_RETRY_BACKOFF);
    now_ms.saturating_add(backoff.as_millis() as u64)
}

/// Run one callback through its route's chain; remove it, or put it back:
/// for a later attempt when a plugin with `on_error = "retry"` failed and
/// attempts remain, and without counting an attempt (whatever `on_error`
/// says) when a plugin call got no call permit in time: that plugin never
/// ran, so the callback must not be dropped for it.
async fn process(app: &App, item: QueuedEvent) {
    let seq = item.id.as_str();
    let finish = |outcome: &str| {
        tracing::info!(target: "enrichd::event", route = %item.route, seq, attempts = item.attempts + 1, "{outcome}");
    };
    let Some(route) = app.event_route(&item.route) else {
        finish("dropped: the route is no longer configured");
        done(app, &item).await;
        return;
    };
    let callback = match event::parse(item.body.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            finish(&format!("dropped: cannot parse the stored callback: {e}"));
            done(app, &item).await;
            return;
        }
    };
    let wit = wit_event(&callback);
    let mut retry = false;
    let mut failures = Vec::new();
    for plugin in &route.chain {
        let info = plugin.info();
        let limit = CallLimit {
            deadline: Instant::now() + info.timeout,
            budget_bound: false,
        };
        match plugin.call_event(&wit, &app.services, limit).await {
            Ok(()) => {}
            // The plugin never ran (no instance slot, or its breaker is
            // open and it asks for retries): put the callback back without
            // counting an attempt.
            Err(Failure::Busy(ms)) => {
                let why = format!("got no call permit within {ms} ms (busy)");
                return postpone(app, &item, &info.name, &why, BUSY_RETRY).await;
            }
            Err(Failure::Quarantined(left)) if info.on_error == OnError::Retry => {
                // Try again once the cool-down is over.
                let why = format!("is quarantined for {left} ms more");
                let wait = BUSY_RETRY.max(Duration::from_millis(left));
                return postpone(app, &item, &info.name, &why, wait).await;
            }
            Err(f) => {
                // A call its circuit breaker bypassed is no new failure.
                if !matches!(f, Failure::Quarantined(_)) {
                    app.event_stats
                        .plugin_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                failures.push(format!("{} ({}): {f}", info.name, f.kind()));
                retry |= info.on_error == OnError::Retry;
            }
        }
    }
    let summary = if failures.is_empty() {
        format!("{} {} processed", callback.kind.name(), callback.message_id)
    } else {
        format!(
            "{} {} processed; failed: {}",
            callback.kind.name(),
            callback.message_id,
            failures.join("; ")
        )
    };
    let attempts = item.attempts + 1;
    if retry && attempts < app.event_settings.max_attempts {
        let at = retry_at(app.clock.now_ms(), attempts);
        finish(&format!(
            "{summary}; will retry in {} ms",
            at.saturating_sub(app.clock.now_ms())
        ));
        app.event_stats.retried.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = app.storage.events.retry_at(&item, attempts, at).await {
            tracing::error!(error = %e, seq, "cannot requeue an EngageLab callback");
        }
        return;
    }
    finish(&summary);
    app.event_stats.processed.fetch_add(1, Ordering::Relaxed);
    done(app, &item).await;
}

/// Put `item` back to be tried after `wait`, without counting an attempt:
/// `plugin` did not run (`why`). The rest of the chain runs on the next try
/// too, so plugins before it may run twice: at least once.
async fn postpone(app: &App, item: &QueuedEvent, plugin: &str, why: &str, wait: Duration) {
    tracing::info!(target: "enrichd::event", route = %item.route, seq = %item.id, attempts = item.attempts + 1, "postponed: plugin {plugin} {why}; not counted as an attempt");
    app.event_stats.postponed.fetch_add(1, Ordering::Relaxed);
    let at = app.clock.now_ms() + wait.as_millis() as u64;
    if let Err(e) = app.storage.events.retry_at(item, item.attempts, at).await {
        tracing::error!(error = %e, seq = %item.id, "cannot requeue an EngageLab callback");
    }
}

async fn done(app: &App, item: &QueuedEvent) {
    if let Err(e) = app.storage.events.ack(item).await {
        // It stays queued and is processed again: at least once.
        tracing::error!(error = %e, seq = %item.id, "cannot remove a processed EngageLab callback");
    }
}

/// The WIT record for a callback.
pub fn wit_event(c: &Callback) -> WitEvent {
    WitEvent {
        kind: match &c.kind {
            Kind::Target => WitEventKind::Target,
            Kind::Sent => WitEventKind::Sent,
            Kind::Delivered => WitEventKind::Delivered,
            Kind::InvalidEmail => WitEventKind::InvalidEmail,
            Kind::SoftBounce => WitEventKind::SoftBounce,
            Kind::Open => WitEventKind::Open,
            Kind::Click => WitEventKind::Click,
            Kind::Unsubscribe => WitEventKind::Unsubscribe,
            Kind::ReportSpam => WitEventKind::ReportSpam,
            Kind::Route => WitEventKind::Route,
            Kind::Other(_) => WitEventKind::Other,
        },
        kind_name: c.kind.name().to_owned(),
        message_id: c.message_id.clone(),
        address: c.address(),
        from: c.from.clone(),
        subject: c.subject.clone(),
        itime: c.itime,
        email_id: c.email_id.clone(),
        error_code: c.error_code,
        sub_stat: c.sub_stat,
        sub_stat_desc: c.sub_stat_desc.clone(),
        message: c.message.clone(),
        url: c.url.clone(),
        custom_args: c.custom_args.to_string(),
        raw_json: c.raw.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_per_attempt_up_to_a_cap() {
        assert_eq!(retry_at(1_000, 1), 2_000);
        assert_eq!(retry_at(1_000, 3), 4_000);
        assert_eq!(retry_at(1_000, 1_000), 1_000 + 60_000);
        assert_eq!(retry_at(u64::MAX, 2), u64::MAX);
    }
}
