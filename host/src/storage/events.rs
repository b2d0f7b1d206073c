//! The event-queue port: verified EngageLab callbacks, processed at least
//! once across hosts.
//!
//! The receiving handler [`EventQueue::enqueue`]s a callback (durably,
//! before it answers 200) unless an identical one was seen within the
//! dedupe window. Workers — one per host — [`EventQueue::lease_next`] the
//! oldest due callback for a lease; while leased, no other worker gets it.
//! The worker then [`EventQueue::ack`]s it (processed: removed) or
//! [`EventQueue::retry_at`]s it (back to the queue, due at a later time). A
//! worker that dies holding a lease loses it when the lease ends: another
//! worker gets the callback again (at least once).

use std::time::Duration;

use super::StorageError;

/// How long a callback's fingerprint is remembered to suppress duplicates by
/// default: 7 days. A resend only happens after an answer went missing, and
/// senders give up on a callback within hours to a few days; a week covers
/// that with a weekend's margin, and it dwarfs the verifier's 5 minute replay
/// window, so every replay the signature check lets through is caught here. A
/// fingerprint costs about 40 bytes plus the backend's overhead: a million
/// callbacks a day keep a few hundred MB of fingerprints.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// One queued callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedEvent {
    /// The backend's id of this queue entry (opaque; changes on retry).
    pub id: String,
    /// The route path the callback arrived on.
    pub route: String,
    /// Unix ms when it arrived (kept across retries).
    pub received_at_ms: u64,
    /// The body exactly as received.
    pub body: String,
    /// Failed processing attempts so far.
    pub attempts: u32,
    /// Not to be processed before this time (Unix ms); 0: at once.
    pub not_before_ms: u64,
}

/// What [`EventQueue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    New,
    /// The same callback (route and body) was seen within the dedupe
    /// window: not queued again.
    Duplicate,
}

/// What [`EventQueue::lease_next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The oldest due callback, leased to the caller.
    Leased(QueuedEvent),
    /// Nothing is due; the earliest not-before time of those waiting, if
    /// the backend knows it (`None`: poll again after the usual pause).
    Idle(Option<u64>),
}

/// Why a callback was not queued.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `max_queued` callbacks already (answered 503, so the
    /// sender keeps the callback and sends it again).
    #[error("the event queue is full ({0} callbacks, [events] max_queued)")]
    Full(usize),
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Queued EngageLab callbacks.
// `len` is for stats and tests; an `is_empty` would only be another
// round trip to the backend.
#[allow(clippy::len_without_is_empty)]
#[async_trait::async_trait]
pub trait EventQueue: Send + Sync {
    /// Queue a verified callback unless it is a duplicate; returns once it
    /// is durable (as the backend documents).
    async fn enqueue(&self, route: &str, body: &str, now_ms: u64) -> Result<Enqueued, QueueError>;

    /// Lease the oldest callback due at `now_ms` for `lease`.
    async fn lease_next(&self, now_ms: u64, lease: Duration) -> Result<Next, StorageError>;

    /// Remove a processed callback. Acknowledging one no longer queued is
    /// not an error.
    async fn ack(&self, event: &QueuedEvent) -> Result<(), StorageError>;

    /// Put a leased callback back, with `attempts`, due at `not_before_ms`.
    /// One no longer queued is not brought back.
    async fn retry_at(
        &self,
        event: &QueuedEvent,
        attempts: u32,
        not_before_ms: u64,
    ) -> Result<(), StorageError>;

    /// Callbacks queued (leased and waiting ones included).
    async fn len(&self) -> Result<usize, StorageError>;

    /// The most callbacks queued at once (`[events] max_queued`).
    fn max_queued(&self) -> usize;

    /// When the callback at the head of the queue arrived (Unix ms; `None`:
    /// the queue is empty). The head is the next in line, leased or not; a
    /// callback put back for a retry queues again at the tail, so this is
    /// how long the line has been waiting, read in one step (`/metrics`
    /// shows it as `enrichd_engagelab_queue_head_age_seconds`).
    async fn head_received_ms(&self) -> Result<Option<u64>, StorageError>;

    /// Fingerprints held by the duplicate filter (for stats and tests).
    async fn seen_len(&self) -> Result<usize, StorageError>;
}
