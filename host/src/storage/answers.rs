//! The answers port: idempotency for retried deliveries, across hosts, and
//! the delivery log.
//!
//! # The protocol
//!
//! Emailgistics retries a delivery on a 5xx or a connection error, on any
//! replica, so copies of one payload can arrive on several hosts at once.
//! For each copy the caller (see `crate::idempotency`):
//!
//! 1. [`AnswerStore::claim`]s the (route, payload id) key with a lease of
//!    about the delivery budget. It gets the stored answer
//!    ([`Claimed::Answered`]: replay it), the lead ([`Claimed::Leader`]: run
//!    the plugins), or learns that another copy holds a live lease
//!    ([`Claimed::Held`]: wait for that copy's answer with
//!    [`AnswerStore::get`], claiming again if its lease ends unanswered).
//! 2. As leader, [`AnswerStore::complete`]s the key with its answer. The
//!    store is fenced by the lease token: a leader whose lease expired and
//!    was taken by another copy ([`Completed::LeaseLost`]), or whose key was
//!    answered meanwhile ([`Completed::Superseded`]), does not overwrite
//!    anything and must not send its own answer.
//! 3. Or [`AnswerStore::release`]s the key without an answer (a 5xx asked
//!    for a retry): the next copy runs.
//!
//! A leader host that dies holds its lease until it expires; then a retry
//! anywhere runs the delivery.
//!
//! # Expiry
//!
//! An answer is live while `stored_at_ms + retention > now`; expired ones
//! are invisible to every read. Removing them is the backend's job.

use std::time::Duration;

use super::{FlushPolicy, StorageError};

/// Retention of stored answers: 72 h. Far longer than a sender keeps
/// retrying a delivery (so a late retry is still answered from the store),
/// and it leaves a weekend's worth of log for an operator to inspect.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(72 * 60 * 60);

/// Bound on the number of stored answers: 1 000 000. A stored answer of
/// the example chain takes about 1 KB of sled disk (format v1,
/// `storage::codec`; tens of KB at most for a record at its bound), so this
/// caps the store near 1 GB; it sustains about 3.9 deliveries/s over the
/// full 72 h before eviction starts shortening the effective window.
pub const DEFAULT_MAX_RECORDS: usize = 1_000_000;

/// How long answers live, how many are kept, and when they reach the disk
/// (the `[idempotency]` config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Age after which an answer is expired.
    pub retention: Duration,
    /// Most answers kept; the oldest beyond this are evicted by a sweep.
    pub max_records: usize,
    /// When `complete` makes an answer durable (sled).
    pub flush: FlushPolicy,
}

/// The idempotency key of a delivery: the route path and the payload id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    /// Route path, e.g. `/emailgistics-webhook` (never contains NUL).
    pub route: String,
    /// The payload id (any bytes of valid UTF-8, bounded by the payload
    /// parser).
    pub id: String,
}

impl DeliveryKey {
    /// The key of `id` on `route`.
    pub fn new(route: &str, id: &str) -> Self {
        DeliveryKey {
            route: route.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// A stored answer and its outcome record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDelivery {
    /// Route path, e.g. `/emailgistics-webhook`.
    pub route: String,
    /// The payload id.
    pub id: String,
    /// Unix time in ms when stored.
    pub stored_at_ms: u64,
    /// HTTP status answered (200 or 4xx; never 5xx, which the caller ensures).
    pub status: u16,
    /// The exact response body (JSON text), replayed byte for byte.
    pub body: String,
    /// The delivery record (per plugin actions, drops, errors, timings), as
    /// JSON. Opaque to storage but for its `message` string, which listings
    /// show.
    pub record: serde_json::Value,
}

impl StoredDelivery {
    /// The key it is stored under.
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey::new(&self.route, &self.id)
    }

    /// Its listing line.
    pub fn summary(&self) -> DeliverySummary {
        DeliverySummary {
            route: self.route.clone(),
            id: self.id.clone(),
            stored_at_ms: self.stored_at_ms,
            status: self.status,
            message: self
                .record
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySummary {
    /// Route path.
    pub route: String,
    /// The payload id.
    pub id: String,
    /// Unix time in ms when stored.
    pub stored_at_ms: u64,
    /// HTTP status answered.
    pub status: u16,
    /// `record["message"]` if it is a string, else empty.
    pub message: String,
}

/// Proof of a claim: the key, and a token no other claim of it ever gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    /// The claimed key.
    pub key: DeliveryKey,
    /// Unique to this claim (host id and a counter).
    pub token: String,
}

/// What [`AnswerStore::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// Nobody answered and no live lease is held: the caller runs the
    /// delivery and then completes or releases the key.
    Leader(LeaseToken),
    /// Answered already: replay this.
    Answered(StoredDelivery),
    /// Another copy holds a live lease and has not answered yet.
    Held,
}

/// What [`AnswerStore::complete`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Completed {
    /// Stored, durably (as the backend documents): later copies replay it.
    Stored,
    /// Another copy's answer was stored first (this lease had expired):
    /// nothing was written; send that answer instead of this one.
    Superseded(StoredDelivery),
    /// This lease expired and another copy holds the key, unanswered:
    /// nothing was written, and this answer must not be sent (answer 503;
    /// the sender's retry gets the other copy's answer).
    LeaseLost,
}

/// Answered deliveries: claims, answers, and the delivery log.
// `len` is for stats and tests; an `is_empty` would only be another
// round trip to the backend.
#[allow(clippy::len_without_is_empty)]
#[async_trait::async_trait]
pub trait AnswerStore: Send + Sync {
    /// The live stored answer for `key`, if any.
    async fn get(&self, key: &DeliveryKey) -> Result<Option<StoredDelivery>, StorageError>;

    /// Claim `key` for `lease` (see the module docs).
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claimed, StorageError>;

    /// Store the leader's answer, fenced by its lease, and end the lease.
    /// `answer.route` and `answer.id` are the lease's key.
    async fn complete(
        &self,
        lease: &LeaseToken,
        answer: &StoredDelivery,
    ) -> Result<Completed, StorageError>;

    /// End the lease without an answer, if it is still this one's.
    async fn release(&self, lease: &LeaseToken) -> Result<(), StorageError>;

    /// Live answers stored at or after `since_ms`, newest first, at most
    /// `limit`.
    async fn list(&self, since_ms: u64, limit: usize)
        -> Result<Vec<DeliverySummary>, StorageError>;

    /// Every live answer with this payload id (any route, newest first);
    /// with `route`, only that route's.
    async fn find(
        &self,
        id: &str,
        route: Option<&str>,
    ) -> Result<Vec<StoredDelivery>, StorageError>;

    /// Answers stored (expired ones included until the backend removes
    /// them).
    async fn len(&self) -> Result<usize, StorageError>;
}
