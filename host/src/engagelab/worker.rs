//! The event worker: leases the oldest due callback from the queue (on any
//! host), runs its route's event plugins, then acknowledges it or puts it
//! back for a retry with a back-off.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::event::{self, Callback, Kind};
use super::state::EventState;
use crate::plugin::{CallLimit, Failure, OnError, WitEvent, WitEventKind};
use crate::storage::{Next, QueuedEvent};

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

/// Process queued callbacks until the task is dropped: always the oldest
/// that is due and not leased (by this host or another), so a callback
/// waiting for its retry never holds up others; sleeps only when nothing is
/// due (until the earliest not-before time, a local wake-up, or the
/// one-second idle poll that also finds callbacks queued by other hosts).
pub async fn work(state: Arc<EventState>) {
    loop {
        let now = state.clock.now_ms();
        match state.queue.lease_next(now, state.lease).await {
            Ok(Next::Leased(item)) => {
                // Every line about this callback (its plugins' included)
                // carries its route and queue sequence number; ERROR level
                // for the reason given in `emailgistics::handler::handle`.
                let span = tracing::error_span!("event", route = %item.route, seq = %item.id);
                process(&state, item).instrument(span).await
            }
            Ok(Next::Idle(earliest)) => {
                let wait = earliest.map_or(IDLE_POLL, |at| {
                    Duration::from_millis(at.saturating_sub(now)).min(IDLE_POLL)
                });
                tokio::select! {
                    () = state.wakeup.notified() => {}
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
async fn process(state: &EventState, item: QueuedEvent) {
    let seq = item.id.as_str();
    let finish = |outcome: &str| {
        tracing::info!(target: "enrichd::event", route = %item.route, seq, attempts = item.attempts + 1, "{outcome}");
    };
    let routes = state.routes();
    let Some(route) = routes.iter().find(|r| r.path == item.route) else {
        // Kept queued, it would wait for a route that may never return and
        // fill the queue; dropped, it is at least counted and logged.
        state.stats.route_gone.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "enrichd::event", route = %item.route, seq, attempts = item.attempts + 1, "dropped: the route is no longer configured");
        done(state, &item).await;
        return;
    };
    let callback = match event::parse(item.body.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            finish(&format!("dropped: cannot parse the stored callback: {e}"));
            done(state, &item).await;
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
        match plugin.call_event(&wit, &state.services, limit).await {
            Ok(()) => {}
            // The plugin never ran (no instance slot, or its breaker is
            // open and it asks for retries): put the callback back without
            // counting an attempt.
            Err(Failure::Busy(ms)) => {
                let why = format!("got no call permit within {ms} ms (busy)");
                return postpone(state, &item, &info.name, &why, BUSY_RETRY).await;
            }
            Err(Failure::Quarantined(left)) if info.on_error == OnError::Retry => {
                // Try again once the cool-down is over.
                let why = format!("is quarantined for {left} ms more");
                let wait = BUSY_RETRY.max(Duration::from_millis(left));
                return postpone(state, &item, &info.name, &why, wait).await;
            }
            Err(f) => {
                // A call its circuit breaker bypassed is no new failure.
                if !matches!(f, Failure::Quarantined(_)) {
                    state.stats.plugin_failures.fetch_add(1, Ordering::Relaxed);
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
    if retry && attempts < state.max_attempts {
        let at = retry_at(state.clock.now_ms(), attempts);
        finish(&format!(
            "{summary}; will retry in {} ms",
            at.saturating_sub(state.clock.now_ms())
        ));
        state.stats.retried.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = state.queue.retry_at(&item, attempts, at).await {
            tracing::error!(error = %e, seq, "cannot requeue an EngageLab callback");
        }
        return;
    }
    finish(&summary);
    state.stats.processed.fetch_add(1, Ordering::Relaxed);
    done(state, &item).await;
}

/// Put `item` back to be tried after `wait`, without counting an attempt:
/// `plugin` did not run (`why`). The rest of the chain runs on the next try
/// too, so plugins before it may run twice: at least once.
async fn postpone(state: &EventState, item: &QueuedEvent, plugin: &str, why: &str, wait: Duration) {
    tracing::info!(target: "enrichd::event", route = %item.route, seq = %item.id, attempts = item.attempts + 1, "postponed: plugin {plugin} {why}; not counted as an attempt");
    state.stats.postponed.fetch_add(1, Ordering::Relaxed);
    let at = state.clock.now_ms() + wait.as_millis() as u64;
    if let Err(e) = state.queue.retry_at(item, item.attempts, at).await {
        tracing::error!(error = %e, seq = %item.id, "cannot requeue an EngageLab callback");
    }
}

async fn done(state: &EventState, item: &QueuedEvent) {
    if let Err(e) = state.queue.ack(item).await {
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
