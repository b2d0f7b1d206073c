//! The answers port on Redis: leases are `SET NX PX` keys, answers are
//! strings with a TTL, and the delivery log is a sorted set by stored time.
//!
//! Claim, complete and release are each one Lua script, so the check and
//! the write are one step for every host: of concurrent claims exactly one
//! sets the lease, and a leader whose lease expired cannot overwrite an
//! answer or a lease another host now holds (the token fences it).
//!
//! An answer's TTL ends when `stored_at_ms + retention` passes; reads also
//! check that time, so an answer is invisible the moment it expires even if
//! Redis has not removed it yet. The index members of expired answers are
//! trimmed by `complete` and by the sweep; `max_records` is kept by
//! `complete` too (the oldest answers beyond it are removed), as with sled.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{corrupt, ms, pair, Redis};
use crate::storage::answers::{
    AnswerStore, Claimed, Completed, DeliveryKey, DeliverySummary, LeaseToken, StoredDelivery,
};
use crate::storage::StorageError;

/// Answer exists → `answered`; else set the lease if nobody holds one.
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));
/// Store the leader's answer unless answered or leased by another.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/complete.lua")));
/// Delete the lease only if it is still this token's.
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/release.lua")));

/// Most answers `complete` evicts in one call when over `max_records`
/// (normally one): a lowered `max_records` is reached over a few calls
/// instead of one long script that would stall Redis for every host.
const EVICT_BATCH: usize = 1000;

/// The answers port on a shared Redis.
pub(crate) struct RedisAnswers {
    redis: Redis,
}

impl RedisAnswers {
    /// The port on `redis`.
    pub(crate) fn new(redis: Redis) -> Self {
        RedisAnswers { redis }
    }

    fn answer_key(&self, key: &DeliveryKey) -> String {
        self.redis.key(&format!("answer:{}", member(key)))
    }

    fn lease_key(&self, key: &DeliveryKey) -> String {
        self.redis.key(&format!("lease:{}", member(key)))
    }

    fn by_id_key(&self, id: &str) -> String {
        self.redis.key(&format!("answers:by-id:{id}"))
    }

    /// Decode a stored answer; `None` if it expired by this host's clock.
    fn live(&self, what: &str, json: &str) -> Result<Option<StoredDelivery>, StorageError> {
        let answer: StoredDelivery = serde_json::from_str(json).map_err(|e| corrupt(what, e))?;
        let alive = answer
            .stored_at_ms
            .saturating_add(retention_ms(&self.redis))
            > self.redis.clock.now_ms();
        Ok(alive.then_some(answer))
    }

    /// The index members stored at or after `from`, newest first, from
    /// rank `offset`, at most `count`.
    async fn index_page(
        &self,
        from: u64,
        offset: usize,
        count: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.redis
            .query(
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(index_key(&self.redis))
                    .arg("+inf")
                    .arg(from)
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(count),
            )
            .await
    }
}

/// The sorted set of stored answers by time.
pub(super) fn index_key(redis: &Redis) -> String {
    redis.key("answers:by-time")
}

/// The first stored time still live: an answer is live while
/// `stored_at_ms + retention > now`.
pub(super) fn live_from(redis: &Redis) -> u64 {
    (redis.clock.now_ms() + 1).saturating_sub(retention_ms(redis))
}

fn retention_ms(redis: &Redis) -> u64 {
    ms(redis.limits.retention)
}

/// The index member (and key suffix) of a delivery key.
fn member(key: &DeliveryKey) -> String {
    pair(&key.route, &key.id)
}

#[async_trait::async_trait]
impl AnswerStore for RedisAnswers {
    async fn get(&self, key: &DeliveryKey) -> Result<Option<StoredDelivery>, StorageError> {
        let answer_key = self.answer_key(key);
        let json: Option<String> = self.redis.query(redis::cmd("GET").arg(&answer_key)).await?;
        match json {
            Some(json) => self.live(&answer_key, &json),
            None => Ok(None),
        }
    }

    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claimed, StorageError> {
        let token = self.redis.token();
        let answer_key = self.answer_key(key);
        let reply: Vec<String> = self
            .redis
            .script(
                CLAIM
                    .key(&answer_key)
                    .key(self.lease_key(key))
                    .arg(&token)
                    .arg(ms(lease)),
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("leader") => Ok(Claimed::Leader(LeaseToken {
                key: key.clone(),
                token,
            })),
            Some("answered") => match self.live(&answer_key, reply.get(1).map_or("", |s| s))? {
                Some(answer) => Ok(Claimed::Answered(answer)),
                // Expired by this host's clock but not yet by Redis's (the
                // clocks differ by a few ms): wait for Redis to remove it.
                None => Ok(Claimed::Held),
            },
            _ => Ok(Claimed::Held),
        }
    }

    async fn complete(
        &self,
        lease: &LeaseToken,
        answer: &StoredDelivery,
    ) -> Result<Completed, StorageError> {
        let json = serde_json::to_string(answer).map_err(|e| corrupt("answer", e))?;
        let retention = retention_ms(&self.redis);
        // The TTL ends when the answer expires by the port's rule.
        let ttl = answer
            .stored_at_ms
            .saturating_add(retention)
            .saturating_sub(self.redis.clock.now_ms())
            .max(1);
        let answer_key = self.answer_key(&lease.key);
        let reply: Vec<String> = self
            .redis
            .script(
                COMPLETE
                    .key(&answer_key)
                    .key(self.lease_key(&lease.key))
                    .key(index_key(&self.redis))
                    .key(self.by_id_key(&lease.key.id))
                    .arg(&lease.token)
                    .arg(json)
                    .arg(ttl)
                    .arg(answer.stored_at_ms)
                    .arg(member(&lease.key))
                    .arg(live_from(&self.redis))
                    .arg(self.redis.limits.max_records)
                    .arg(&lease.key.route)
                    .arg(retention)
                    .arg(self.redis.key("answer:"))
                    .arg(EVICT_BATCH),
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("stored") => Ok(Completed::Stored),
            Some("superseded") => {
                let json = reply.get(1).map_or("", |s| s);
                let stored: StoredDelivery =
                    serde_json::from_str(json).map_err(|e| corrupt(&answer_key, e))?;
                Ok(Completed::Superseded(stored))
            }
            _ => Ok(Completed::LeaseLost),
        }
    }

    async fn release(&self, lease: &LeaseToken) -> Result<(), StorageError> {
        let _: i64 = self
            .redis
            .script(RELEASE.key(self.lease_key(&lease.key)).arg(&lease.token))
            .await?;
        Ok(())
    }

    async fn list(
        &self,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliverySummary>, StorageError> {
        let from = since_ms.max(live_from(&self.redis));
        let mut out = Vec::new();
        let mut offset = 0;
        // Pages of the index until `limit` live answers are found: members
        // whose answer Redis already expired (or evicted) are skipped.
        while out.len() < limit {
            let want = limit - out.len();
            let members = self.index_page(from, offset, want).await?;
            if members.is_empty() {
                break;
            }
            offset += members.len();
            let keys: Vec<String> = members
                .iter()
                .map(|m| self.redis.key(&format!("answer:{m}")))
                .collect();
            let values: Vec<Option<String>> =
                self.redis.query(redis::cmd("MGET").arg(&keys)).await?;
            for (key, value) in keys.iter().zip(values) {
                let Some(json) = value else { continue };
                match self.live(key, &json) {
                    Ok(Some(answer)) if answer.stored_at_ms >= since_ms => {
                        out.push(answer.summary())
                    }
                    Ok(_) => {}
                    // One corrupt answer does not hide the log.
                    Err(e) => tracing::error!(error = %e, "skipping a corrupt stored answer"),
                }
            }
        }
        Ok(out)
    }

    async fn find(
        &self,
        id: &str,
        route: Option<&str>,
    ) -> Result<Vec<StoredDelivery>, StorageError> {
        // Without a route, the id's route set names every route that stored
        // it (a handful: the configured routes), so this is a few reads
        // rather than a scan of the log.
        let routes: Vec<String> = match route {
            Some(route) => vec![route.to_owned()],
            None => {
                self.redis
                    .query(redis::cmd("SMEMBERS").arg(self.by_id_key(id)))
                    .await?
            }
        };
        let mut found = Vec::new();
        for route in routes {
            if let Some(answer) = self.get(&DeliveryKey::new(&route, id)).await? {
                found.push(answer);
            }
        }
        found.sort_by_key(|d| std::cmp::Reverse(d.stored_at_ms));
        Ok(found)
    }

    async fn len(&self) -> Result<usize, StorageError> {
        self.redis
            .query(redis::cmd("ZCARD").arg(index_key(&self.redis)))
            .await
    }
}
