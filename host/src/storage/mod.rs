//! Storage: every piece of state enrichd keeps, behind async ports named
//! after what the domain does with it, and the backends behind them.
//!
//! # Ports
//!
//! - [`AnswerStore`] ([`answers`]): answered deliveries. A copy of a
//!   delivery *claims* its key with a lease, the leader *completes* it with
//!   the answer (fenced by its lease token), later copies *get* it and
//!   replay it; *list* and *find* serve the delivery log.
//! - [`EventQueue`] ([`events`]): verified EngageLab callbacks. *Enqueue*
//!   unless seen, *lease* the oldest due one, *ack* it, or *retry* it at a
//!   later time.
//! - [`PluginKv`] ([`kv`]): the plugins' key-value namespaces, with quotas.
//! - [`CrmLastKnown`] ([`crm`]): the last value each CRM lookup returned,
//!   served when the backend fails.
//!
//! # Backends
//!
//! - [`sled`] (`kind = "sled"`, the default): one embedded database under
//!   the data directory; one host, nothing to set up. Leases live in the
//!   process (sled allows one process per database, so a lease held in
//!   memory is exactly as long-lived as the only host that could hold it).
//! - [`redis`] (`kind = "redis"`): several hosts share one Redis. Leases are
//!   `SET NX PX` keys, the event queue is a stream with a consumer group.
//!
//! Each backend owns its expiry: Redis keys carry TTLs; sled's is done by
//! [`Storage::sweep`], which the app's supervisor calls on a schedule.
//!
//! The ports never name a backend type: errors are [`StorageError`] (and the
//! port's own refusals), so callers above this module branch on what
//! happened (unavailable → answer 503), not on which database said it.

pub mod answers;
mod blocking;
pub mod codec;
#[cfg(test)]
pub(crate) mod conformance;
pub mod crm;
pub mod events;
pub mod kv;
pub mod redis;
pub mod sled;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// The embedded CRM's record trees (sled on every storage kind: see there).
pub use self::sled::crm_records;

pub use answers::{
    AnswerStore, Claimed, Completed, DeliveryKey, DeliverySummary, LeaseToken, StoredDelivery,
};
pub use blocking::{may_block, may_block_here};
pub use crm::CrmLastKnown;
pub use events::{Enqueued, EventQueue, Next, QueueError, QueuedEvent};
pub use kv::{KvError, PluginKv, Quota, Usage};

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend cannot be reached or failed (I/O, Redis down or timing
    /// out, a blocking task that ended). A retry later may succeed: callers
    /// answer 503 and keep nothing half-done.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored value cannot be decoded.
    #[error("storage: corrupt {what}: {detail}")]
    Corrupt {
        /// What was read (a key, an event id).
        what: String,
        /// Decoding error.
        detail: String,
    },
}

/// What a sweep of a backend did (sled removes expired answers and evicts
/// beyond `max_records`; Redis expires keys itself and reports zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Answers removed because they expired.
    pub expired: usize,
    /// Unexpired answers removed to respect `max_records`.
    pub evicted: usize,
    /// Answers left after the sweep.
    pub remaining: usize,
    /// Fingerprints of EngageLab callbacks forgotten (dedupe window over).
    pub seen_forgotten: usize,
    /// Last-known CRM values removed past their TTL (sled; Redis expires
    /// them itself).
    pub crm_expired: usize,
}

/// The backend-independent settings of the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long an answer is replayed and listed.
    pub retention: Duration,
    /// Most answers kept (sled; Redis relies on `retention` and its own
    /// `maxmemory` policy, see the README).
    pub max_records: usize,
    /// How long a callback's fingerprint suppresses copies.
    pub dedupe_window: Duration,
    /// Most callbacks queued at once.
    pub max_queued: usize,
}

/// When stored answers (and queued callbacks) reach sled's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushPolicy {
    /// Flush before `complete` returns: an answered delivery survives a crash.
    Always,
    /// Rely on sled's background flush (`flush_every_ms`): a crash loses at
    /// most that window.
    Periodic,
}

/// Flush policy by default: [`FlushPolicy::Always`]. An answer lost in a
/// crash turns a retry into a second run of the plugins, possibly with a
/// different answer; one fsync per delivery is a small price for that.
pub const DEFAULT_FLUSH: FlushPolicy = FlushPolicy::Always;

/// The embedded backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledSettings {
    /// The data directory; the database is `enrichd.sled` in it.
    pub data_dir: PathBuf,
    /// When answers reach the disk.
    pub flush: FlushPolicy,
    /// sled's background flush interval, ms.
    pub flush_every_ms: u64,
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
}

impl SledSettings {
    /// The database's path: `enrichd.sled` in the data directory.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(self::sled::DB_DIR)
    }
}

/// The Redis backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db` (or `rediss://`).
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
}

/// Which backend, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded sled (the default).
    Sled(SledSettings),
    /// A shared Redis.
    Redis(RedisSettings),
}

/// Everything [`open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The backend.
    pub backend: Backend,
    /// Bounds that hold whatever the backend.
    pub limits: Limits,
}

/// The storage could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the {backend} storage ({target}): {detail}")]
pub struct OpenError {
    /// `sled` or `redis`.
    pub backend: &'static str,
    /// The directory, or the Redis URL without its password.
    pub target: String,
    /// What went wrong (e.g. another enrichd holds the sled lock; Redis
    /// refused the connection).
    pub detail: String,
}

/// Open the configured backend and hand out its ports.
pub async fn open(settings: &Settings, clock: Clock) -> Result<Storage, OpenError> {
    match &settings.backend {
        Backend::Sled(s) => sled::open(s, &settings.limits, clock).await,
        Backend::Redis(r) => redis::open(r, &settings.limits, clock).await,
    }
}

/// [`open`], and when `crm_dir` is given (an embedded CRM source is
/// configured) the embedded CRM's database: with sled, the storage's own
/// database; with Redis, `enrichd.sled` in `crm_dir`, this host's own.
pub async fn open_with_crm(
    settings: &Settings,
    clock: Clock,
    crm_dir: Option<&std::path::Path>,
) -> Result<(Storage, Option<crm_records::CrmDb>), OpenError> {
    match &settings.backend {
        Backend::Sled(s) => {
            let (s, limits) = (s.clone(), settings.limits.clone());
            let want_crm = crm_dir.is_some();
            let (storage, db) =
                tokio::task::spawn_blocking(move || self::sled::open_blocking(&s, &limits, clock))
                    .await
                    .map_err(|e| OpenError {
                        backend: "sled",
                        target: String::new(),
                        detail: e.to_string(),
                    })??;
            Ok((storage, want_crm.then(|| crm_records::CrmDb(db))))
        }
        Backend::Redis(r) => {
            let storage = redis::open(r, &settings.limits, clock).await?;
            let crm = match crm_dir {
                Some(dir) => Some(crm_records::CrmDb::open_default(dir)?),
                None => None,
            };
            Ok((storage, crm))
        }
    }
}

/// The state of a running enrichd: one handle per port, all on one backend.
/// Cloning shares the backend.
#[derive(Clone)]
pub struct Storage {
    /// Answered deliveries.
    pub answers: Arc<dyn AnswerStore>,
    /// Queued EngageLab callbacks.
    pub events: Arc<dyn EventQueue>,
    /// Plugin key-value namespaces.
    pub kv: Arc<dyn PluginKv>,
    /// Last-known CRM values.
    pub crm: Arc<dyn CrmLastKnown>,
    /// Backend maintenance: expiry and bounds.
    pub maintenance: Arc<dyn Maintenance>,
    /// `"sled"` or `"redis"`, for logs and `/stats`.
    pub backend: &'static str,
}

impl Storage {
    /// Run the backend's sweep (see [`Maintenance`]).
    pub async fn sweep(&self) -> Result<SweepReport, StorageError> {
        self.maintenance.sweep().await
    }
}

/// What a backend does on a schedule to keep its bounds: remove expired
/// answers and fingerprints, evict beyond `max_records`, move due retries.
#[async_trait::async_trait]
pub trait Maintenance: Send + Sync {
    /// One pass; cheap when there is nothing to do.
    async fn sweep(&self) -> Result<SweepReport, StorageError>;
    /// Bytes the backend holds on this host's disk, if it knows (sled).
    async fn bytes_on_disk(&self) -> Option<u64>;
}
