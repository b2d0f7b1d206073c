//! Maintenance of the Redis backend. Answers, leases and last-known CRM
//! values expire by their TTLs; what is left is trimming the two sorted
//! sets whose members carry their own time: the delivery-log index (members
//! of expired answers) and the duplicate filter (fingerprints older than
//! the dedupe window), and forgetting the event consumers of processes
//! long gone.

use std::sync::LazyLock;

use redis::Script;

use super::{answers, events, ms, Redis};
use crate::storage::{Maintenance, StorageError, SweepReport};

/// Remove the members scored below a time, a bounded number at once.
static TRIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/trim.lua")));

/// Members removed per script call: about 10 ms of Redis time, so a sweep
/// after a long pause never stalls the other hosts' calls for long.
const TRIM_BATCH: usize = 10_000;

/// Maintenance of a shared Redis.
pub(crate) struct RedisMaintenance {
    redis: Redis,
}

impl RedisMaintenance {
    /// The maintenance of `redis`.
    pub(crate) fn new(redis: Redis) -> Self {
        RedisMaintenance { redis }
    }

    /// Remove every member of `set` scored below `below`, in batches.
    async fn trim(&self, set: &str, below: u64) -> Result<usize, StorageError> {
        let mut removed = 0;
        loop {
            let n: usize = self
                .redis
                .script(TRIM.key(set).arg(below).arg(TRIM_BATCH))
                .await?;
            removed += n;
            if n < TRIM_BATCH {
                return Ok(removed);
            }
        }
    }
}

#[async_trait::async_trait]
impl Maintenance for RedisMaintenance {
    async fn sweep(&self) -> Result<SweepReport, StorageError> {
        let index = answers::index_key(&self.redis);
        let expired = self.trim(&index, answers::live_from(&self.redis)).await?;
        // A fingerprint is live while first seen + window > now.
        let seen_from =
            (self.redis.clock.now_ms() + 1).saturating_sub(ms(self.redis.limits.dedupe_window));
        let seen_forgotten = self.trim(&events::seen_key(&self.redis), seen_from).await?;
        let consumers = events::forget_idle_consumers(&self.redis, events::CONSUMER_IDLE).await?;
        if consumers > 0 {
            tracing::info!(
                consumers,
                "forgot idle event consumers of enrichd processes gone"
            );
        }
        let remaining = self.redis.query(redis::cmd("ZCARD").arg(&index)).await?;
        Ok(SweepReport {
            expired,
            evicted: 0,
            remaining,
            seen_forgotten,
            crm_expired: 0,
        })
    }

    async fn bytes_on_disk(&self) -> Option<u64> {
        None
    }
}
