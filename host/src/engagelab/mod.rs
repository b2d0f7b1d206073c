//! EngageLab email callbacks: verified, queued durably, answered at once,
//! and handed to event plugins in the background.
//!
//! EngageLab wants an answer within 3 seconds, and plugins may take longer,
//! so a callback is only checked ([`verify`]: app key, signature, replay
//! window), parsed far enough to know it is one ([`event`]), and appended to
//! a sled queue ([`queue`]) that is flushed before the 200 goes out. A worker
//! then runs the route's event plugins on each queued callback, removing it
//! only afterwards: delivery to plugins is at least once and survives
//! restarts and crashes. Identical callbacks (EngageLab retries) are queued
//! once.

pub mod event;
pub mod queue;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::app::App;
use crate::config::OnError;
use crate::plugin::{CallLimit, Failure, Plugin, WitEvent, WitEventKind};
use crate::server::{error, json, Body};
use event::{Callback, Kind};
use queue::{Enqueued, Queued};

/// When the queue is empty, how often the worker looks again even without
/// being woken (a safety net; enqueueing wakes it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after a retried callback, per attempt so far: a plugin that asked
/// for a retry is given time to recover, and an only item is not spun on.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

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
}

impl EventStats {
    /// A JSON snapshot.
    pub fn snapshot(&self, queued: usize) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "received": get(&self.received),
            "duplicates": get(&self.duplicates),
            "refused": get(&self.refused),
            "processed": get(&self.processed),
            "pluginFailures": get(&self.plugin_failures),
            "retried": get(&self.retried),
            "queued": queued,
        })
    }
}

/// Answer one request to an EngageLab route.
pub async fn receive(app: &App, route: &EventRoute, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        res.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return res;
    }
    let now = app.clock.now_ms();
    if let Err(e) = verify::verify(req.headers(), &route.app_keys, now, route.replay_window) {
        app.event_stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %route.path, reason = %e, "EngageLab callback refused: 401");
        let mut res = Response::new(Body::default());
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return res;
    }
    let body = match crate::server::read_body(app, req, Instant::now()).await {
        Ok(body) => body,
        Err(res) => return res,
    };
    // Parsed only to refuse what could never be processed; the raw body is
    // what is queued, so fields this version does not know are kept.
    let text = match event::parse(&body) {
        Ok(callback) => {
            tracing::debug!(route = %route.path, kind = callback.kind.name(), message_id = %callback.message_id, "EngageLab callback");
            String::from_utf8_lossy(&body).into_owned()
        }
        Err(e) => {
            app.event_stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(route = %route.path, error = %e, "EngageLab callback refused: 400");
            return error(StatusCode::BAD_REQUEST, &format!("invalid callback: {e}"));
        }
    };
    match app.events.enqueue(&route.path, &text, now).await {
        Ok(Enqueued::New(_)) => {
            app.event_stats.received.fetch_add(1, Ordering::Relaxed);
            app.event_wakeup.notify_one();
            json(StatusCode::OK, r#"{"status":"accepted"}"#.into())
        }
        Ok(Enqueued::Duplicate) => {
            app.event_stats.duplicates.fetch_add(1, Ordering::Relaxed);
            json(StatusCode::OK, r#"{"status":"duplicate"}"#.into())
        }
        Err(e) => {
            // Not stored: EngageLab should send it again.
            tracing::error!(route = %route.path, error = %e, "cannot queue an EngageLab callback");
            error(StatusCode::SERVICE_UNAVAILABLE, "cannot queue the callback")
        }
    }
}

/// Process queued callbacks until the task is dropped.
pub async fn work(app: Arc<App>) {
    loop {
        match app.events.peek() {
            Ok(Some(item)) => {
                let attempts = process(&app, item).await;
                if attempts > 0 {
                    tokio::time::sleep(RETRY_PAUSE * attempts).await;
                }
            }
            Ok(None) => {
                tokio::select! {
                    () = app.event_wakeup.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
            Err(queue::QueueError::Corrupt { seq, detail }) => {
                // Left in place it would block every callback behind it.
                tracing::error!(seq, %detail, "dropping an unreadable queued EngageLab callback");
                done(&app, seq).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the EngageLab queue");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// Run one callback through its route's chain; remove it, or put it back
/// when a plugin with `on_error = "retry"` failed and attempts remain.
/// Returns the attempts made so far when it was put back, else 0.
async fn process(app: &App, item: Queued) -> u32 {
    let seq = item.seq;
    let finish = |outcome: &str| {
        tracing::info!(target: "enrichd::event", route = %item.route, seq, attempts = item.attempts + 1, "{outcome}");
    };
    let Some(route) = app.event_route(&item.route) else {
        finish("dropped: the route is no longer configured");
        done(app, seq).await;
        return 0;
    };
    let callback = match event::parse(item.body.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            finish(&format!("dropped: cannot parse the stored callback: {e}"));
            done(app, seq).await;
            return 0;
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
        if let Err(f) = plugin.call_event(&wit, &app.services, limit).await {
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
        finish(&format!("{summary}; will retry"));
        app.event_stats.retried.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = app.events.retry_later(&item).await {
            tracing::error!(error = %e, seq, "cannot requeue an EngageLab callback");
        }
        return attempts;
    }
    finish(&summary);
    app.event_stats.processed.fetch_add(1, Ordering::Relaxed);
    done(app, seq).await;
    0
}

async fn done(app: &App, seq: u64) {
    if let Err(e) = app.events.done(seq).await {
        // It stays queued and is processed again: at least once.
        tracing::error!(error = %e, seq, "cannot remove a processed EngageLab callback");
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
