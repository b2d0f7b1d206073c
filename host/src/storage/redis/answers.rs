//! The answers port on Redis: leases are `SET NX PX` keys, answers are
//! strings with a TTL, and the delivery log is a sorted set by stored time.
//!
//! An answer's value is binary: the stored format of
//! [`crate::storage::codec`] (JSON values of the previous version still
//! read). The Lua scripts pass values through untouched, and replies are
//! read as bytes, never as text.
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
use crate::storage::codec;
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

    /// Decode the answer stored under `key` (its key is `answer_key`);
    /// `None` if it expired by this host's clock.
    fn live(
        &self,
        key: &DeliveryKey,
        answer_key: &str,
        value: &[u8],
    ) -> Result<Option<StoredDelivery>, StorageError> {
        let answer = decode(key, answer_key, value)?;
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
pub(super) fn member(key: &DeliveryKey) -> String {
    pair(&key.route, &key.id)
}

/// The delivery key an index member names (the inverse of [`member`]).
fn key_of_member(member: &str) -> Option<DeliveryKey> {
    let (len, rest) = member.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let route = rest.get(..len)?;
    let id = rest.get(len..)?.strip_prefix(':')?;
    Some(DeliveryKey::new(route, id))
}

/// Decode the stored `value` of `key` (stored under `answer_key`).
fn decode(
    key: &DeliveryKey,
    answer_key: &str,
    value: &[u8],
) -> Result<StoredDelivery, StorageError> {
    codec::decode(&key.route, &key.id, value).map_err(|e| corrupt(answer_key, e))
}

/// The first element of a script's reply (its verdict word).
fn verdict(reply: &[Vec<u8>]) -> &[u8] {
    reply.first().map_or(&[], Vec::as_slice)
}

#[async_trait::async_trait]
impl AnswerStore for RedisAnswers {
    async fn get(&self, key: &DeliveryKey) -> Result<Option<StoredDelivery>, StorageError> {
        let answer_key = self.answer_key(key);
        let value: Option<Vec<u8>> = self.redis.query(redis::cmd("GET").arg(&answer_key)).await?;
        match value {
            Some(value) => self.live(key, &answer_key, &value),
            None => Ok(None),
        }
    }

    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claimed, StorageError> {
        let token = self.redis.token();
        let answer_key = self.answer_key(key);
        let reply: Vec<Vec<u8>> = self
            .redis
            .script(
                CLAIM
                    .key(&answer_key)
                    .key(self.lease_key(key))
                    .arg(&token)
                    .arg(ms(lease)),
            )
            .await?;
        match verdict(&reply) {
            b"leader" => Ok(Claimed::Leader(LeaseToken {
                key: key.clone(),
                token,
            })),
            b"answered" => {
                match self.live(key, &answer_key, reply.get(1).map_or(&[], Vec::as_slice))? {
                    Some(answer) => Ok(Claimed::Answered(answer)),
                    // Expired by this host's clock but not yet by Redis's (the
                    // clocks differ by a few ms): wait for Redis to remove it.
                    None => Ok(Claimed::Held),
                }
            }
            _ => Ok(Claimed::Held),
        }
    }

    async fn complete(
        &self,
        lease: &LeaseToken,
        answer: &StoredDelivery,
    ) -> Result<Completed, StorageError> {
        let value = codec::encode(answer);
        let retention = retention_ms(&self.redis);
        // The TTL ends when the answer expires by the port's rule.
        let ttl = answer
            .stored_at_ms
            .saturating_add(retention)
            .saturating_sub(self.redis.clock.now_ms())
            .max(1);
        let answer_key = self.answer_key(&lease.key);
        let reply: Vec<Vec<u8>> = self
            .redis
            .script(
                COMPLETE
                    .key(&answer_key)
                    .key(self.lease_key(&lease.key))
                    .key(index_key(&self.redis))
                    .key(self.by_id_key(&lease.key.id))
                    .arg(&lease.token)
                    .arg(value)
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
        match verdict(&reply) {
            b"stored" => Ok(Completed::Stored),
            b"superseded" => {
                let value = reply.get(1).map_or(&[][..], Vec::as_slice);
                Ok(Completed::Superseded(decode(
                    &lease.key,
                    &answer_key,
                    value,
                )?))
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
            let values: Vec<Option<Vec<u8>>> =
                self.redis.query(redis::cmd("MGET").arg(&keys)).await?;
            for ((member, answer_key), value) in members.iter().zip(&keys).zip(values) {
                let Some(value) = value else { continue };
                let Some(key) = key_of_member(member) else {
                    tracing::error!(%member, "skipping a malformed answer index member");
                    continue;
                };
                match self.live(&key, answer_key, &value) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_their_key_back() {
        for (route, id) in [
            ("/r", "x"),
            ("/r:x", "id:\0é"),
            ("", ""),
            ("/a", ":"),
            ("/é", "1:2:3"),
        ] {
            let key = DeliveryKey::new(route, id);
            assert_eq!(key_of_member(&member(&key)), Some(key));
        }
        for bad in ["", "x", "3:/r", "9:/r:x", "2:/rx", "-1::"] {
            assert_eq!(key_of_member(bad), None, "{bad:?}");
        }
    }
}
