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
mod receive;
pub mod verify;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::http::BodyLimits;
use crate::plugin::{Plugin, Services};
use crate::storage::EventQueue;

pub use receive::receive;
pub use worker::{wit_event, work, BUSY_RETRY, MAX_RETRY_BACKOFF, RETRY_BACKOFF};

/// EngageLab wants an answer within 3 seconds; reading the callback's body
/// must end within them (the rest of the path is a verify and a queue write).
pub const ANSWER_BUDGET: Duration = Duration::from_secs(3);
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

/// What the EngageLab handler and the event worker need, and nothing else.
pub struct EventState {
    /// EngageLab routes by path.
    pub routes: Vec<EventRoute>,
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
    /// What a callback's body may be; it is read within [`ANSWER_BUDGET`]
    /// whatever the read timeout says.
    pub body: BodyLimits,
    /// The queue's clock (duplicate stamps, retry times).
    pub clock: Clock,
    /// Services lent to event plugins.
    pub services: Services,
}

impl EventState {
    /// The EngageLab route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&EventRoute> {
        self.routes.iter().find(|r| r.path == path)
    }
}
