//! The state the EngageLab receiver and worker share: the routes, the
//! queue port, the wake-up, the counters, the body limits and the services
//! lent to event plugins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
