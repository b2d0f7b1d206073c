//! The state the EngageLab receiver and worker share: the routes, the
//! queue port, the wake-up, the counters, the body limits and the services
//! lent to event plugins.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::http::BodyLimits;
use crate::plugin::{Plugin, Services};
use crate::storage::EventQueue;

use super::verify;

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
    /// Of those, the ones refused 401 (signature, app key or timestamp).
    pub unauthorized: AtomicU64,
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
    /// Queued callbacks dropped because a reload (or a restart) removed
    /// their route: logged at warn with the route and sequence number.
    pub route_gone: AtomicU64,
    /// The last [`RECENT_OUTCOMES`] things that happened to callbacks,
    /// oldest first (this process only).
    recent: Mutex<VecDeque<Outcome>>,
}

/// Callback outcomes kept for the Admin view: the last 200 (at most
/// [`MAX_OUTCOME_CHARS`] each, so under 200 KiB), a few minutes of a busy
/// route; older ones are in the log.
pub const RECENT_OUTCOMES: usize = 200;

/// Longest outcome text kept: a plugin's failure message can be long, and
/// the log has it whole.
pub const MAX_OUTCOME_CHARS: usize = 500;

/// One thing that happened to a callback: received (queued, duplicate or
/// refused) or processed (done, retried, postponed, dropped).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// When (Unix ms): the callback's arrival for what the receiver did
    /// (the worker may finish it before the receiver's note is made), the
    /// end of the attempt for what the worker did.
    pub at_ms: u64,
    /// The route path.
    pub route: String,
    /// The queue entry, once queued.
    pub seq: Option<String>,
    /// The processing attempt (1 = first), once taken from the queue.
    pub attempt: Option<u32>,
    /// What happened, e.g. `open 3f2a… processed`.
    pub outcome: String,
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
            "routeGone": get(&self.route_gone),
            "queued": queued,
            "maxQueued": max_queued,
        })
    }

    /// Keep `outcome` as the newest; the oldest goes past
    /// [`RECENT_OUTCOMES`].
    pub fn note(&self, mut outcome: Outcome) {
        if let Some((cut, _)) = outcome.outcome.char_indices().nth(MAX_OUTCOME_CHARS) {
            outcome.outcome.truncate(cut);
            outcome.outcome.push('…');
        }
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_OUTCOMES {
            recent.pop_front();
        }
        recent.push_back(outcome);
    }

    /// The outcomes kept, newest first by [`Outcome::at_ms`]; in the same
    /// millisecond, what the worker did after what the receiver did.
    pub fn recent(&self) -> Vec<Outcome> {
        let mut recent: Vec<Outcome> = {
            let kept = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            kept.iter().rev().cloned().collect()
        };
        // Stable: equal keys stay newest noted first.
        recent.sort_by_key(|o| std::cmp::Reverse((o.at_ms, o.attempt.is_some())));
        recent
    }
}

/// What the EngageLab handler and the event worker need, and nothing else.
pub struct EventState {
    /// EngageLab routes by path, as of the latest reload: the worker reads
    /// them once per callback (a queued callback runs on the chain its
    /// route has when it is taken, not when it arrived).
    pub routes: arc_swap::ArcSwap<Vec<EventRoute>>,
    /// The event queue, shared by every host on the backend.
    pub queue: Arc<dyn EventQueue>,
    /// How long the worker holds a callback before another worker may take
    /// it (`[storage] event_lease_ms`).
    pub lease: Duration,
    /// Attempts per callback before it is dropped (`[events] max_attempts`).
    pub max_attempts: u32,
    /// Wakes the worker when a callback is queued on this host.
    pub wakeup: Notify,
    /// Counters, shared with the admin listener.
    pub stats: Arc<EventStats>,
    /// What a callback's body may be; it is read within EngageLab's 3 s
    /// answer budget whatever the read timeout says.
    pub body: BodyLimits,
    /// The queue's clock (duplicate stamps, retry times).
    pub clock: Clock,
    /// Services lent to event plugins.
    pub services: Services,
}

impl EventState {
    /// The EngageLab routes now: one snapshot, kept while it is used.
    pub fn routes(&self) -> Arc<Vec<EventRoute>> {
        self.routes.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(n: usize, text: String) -> Outcome {
        Outcome {
            at_ms: n as u64,
            route: "/ev".into(),
            seq: None,
            attempt: None,
            outcome: text,
        }
    }

    #[test]
    fn issue_14_recent_outcomes_are_bounded_in_count_and_length() {
        let stats = EventStats::default();
        for n in 0..RECENT_OUTCOMES + 5 {
            stats.note(outcome(n, "x".repeat(n * 3)));
        }
        let recent = stats.recent();
        assert_eq!(recent.len(), RECENT_OUTCOMES);
        assert_eq!(
            recent[0].at_ms,
            (RECENT_OUTCOMES + 4) as u64,
            "newest first"
        );
        assert_eq!(recent.last().unwrap().at_ms, 5, "the oldest five are gone");
        assert_eq!(recent[0].outcome.chars().count(), MAX_OUTCOME_CHARS + 1);
        assert!(recent[0].outcome.ends_with('…'));
        assert_eq!(
            recent.last().unwrap().outcome.len(),
            15,
            "short ones are whole"
        );
    }

    /// The worker can finish a callback before the receiver notes that it
    /// queued it: the list still shows it queued, then processed.
    #[test]
    fn issue_14_a_callback_processed_before_its_queued_note_still_lists_in_order() {
        let stats = EventStats::default();
        stats.note(Outcome {
            attempt: Some(1),
            ..outcome(7, "processed".into())
        });
        stats.note(outcome(7, "queued".into()));
        stats.note(outcome(3, "earlier".into()));
        let listed: Vec<String> = stats.recent().into_iter().map(|o| o.outcome).collect();
        assert_eq!(listed, ["processed", "queued", "earlier"]);
    }
}
