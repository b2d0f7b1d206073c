//! The event-queue port on Redis: a stream with one consumer group shared
//! by every host, a sorted set of callbacks waiting for a retry, and a
//! sorted set of fingerprints for the duplicate filter.
//!
//! - **Enqueue** is one script: a fingerprint (SHA-256 of route, NUL, body)
//!   first seen within the dedupe window → duplicate; the cap (stream length
//!   plus waiting retries ≥ `max_queued`) → full; else the fingerprint is
//!   recorded and the callback `XADD`ed.
//! - **Lease**: due retries are moved to the stream first (one script, so
//!   two hosts never move one twice); then an entry another host leased
//!   longer ago than the lease (`XAUTOCLAIM`: its host died) is taken over;
//!   else a new entry is read for this host (`XREADGROUP >`, not blocking:
//!   the connection is shared, and a blocked command would hold up every
//!   other call behind it).
//! - **Ack** is `XACK` + `XDEL`; **retry** acks and deletes the entry and
//!   adds it to the waiting set (one script; an entry no longer pending is
//!   not brought back).
//!
//! The fingerprints are a sorted set by first-seen time rather than one key
//! with a TTL each: `seen_len` is then one `ZCARD` (a counter cannot follow
//! keys that expire, and a `SCAN` walks the whole keyspace), and the window
//! is the same rule as sled's. Expired fingerprints are trimmed a few per
//! enqueue and in batches by the sweep.

use std::sync::LazyLock;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{Script, Value};
use sha2::{Digest, Sha256};

use super::{corrupt, ms, unavailable, Redis};
use crate::storage::events::{Enqueued, EventQueue, Next, QueueError, QueuedEvent};
use crate::storage::StorageError;

/// Duplicate → `duplicate`; over the cap → `full`; else queue it.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/enqueue.lua")));
/// Move due retries to the stream.
static PROMOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/promote.lua")));
/// Ack and delete a leased entry and put it in the waiting set.
static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/retry.lua")));

/// Forget consumers of processes long gone.
static FORGET_CONSUMERS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/forget_consumers.lua")));

/// How long a consumer holding nothing may stay idle before the sweep
/// forgets it: a day. Every process start adds a consumer (its host id), so
/// without this the group's list grows with every restart; a live host
/// polls every few seconds and is never that idle (and one forgotten
/// anyway is recreated by its next read, having held nothing).
pub(super) const CONSUMER_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// The consumer group every host reads through.
const GROUP: &str = "enrichd";

/// The stream's key (after the prefix).
const STREAM: &str = "events:stream";

/// The stream field holding an entry's JSON.
const FIELD: &str = "e";

/// Expired fingerprints trimmed per enqueue: more than the one it adds, so
/// the filter shrinks back to one window even if the sweep never runs,
/// while one enqueue stays a few microseconds of Redis time.
const TRIM_PER_ENQUEUE: usize = 8;

/// Due retries moved per lease call: they are moved in arrival order, so a
/// burst is spread over a few calls instead of one long script.
const PROMOTE_BATCH: usize = 100;

/// Most `XAUTOCLAIM` pages (each scans up to 10 pending entries) one lease
/// call walks: the pending list holds about one entry per host at work, so
/// this covers a thousand before the next call goes on.
const AUTOCLAIM_PAGES: usize = 100;

/// Corrupt entries dropped per lease call before it answers idle.
const CORRUPT_PER_CALL: usize = 100;

/// A callback as stored in the stream and in the waiting set.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    route: String,
    received_at_ms: u64,
    body: String,
    attempts: u32,
    not_before_ms: u64,
    /// The stream id it had before a retry: makes each waiting member
    /// distinct (the set would merge identical ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    was: Option<String>,
}

/// The event-queue port on a shared Redis.
pub(crate) struct RedisEvents {
    redis: Redis,
    stream: String,
    delayed: String,
    seen: String,
    dedupe_window_ms: u64,
}

impl RedisEvents {
    /// The port on `redis`, its consumer group created if missing. (The
    /// lease comes with each `lease_next` call, from `[storage]
    /// event_lease_ms`.)
    pub(crate) async fn open(redis: Redis) -> Result<Self, StorageError> {
        let events = RedisEvents {
            stream: redis.key(STREAM),
            delayed: redis.key("events:delayed"),
            seen: seen_key(&redis),
            dedupe_window_ms: ms(redis.limits.dedupe_window),
            redis,
        };
        events.create_group().await?;
        Ok(events)
    }

    /// Create the stream and its group (from the first entry, so entries
    /// added before a group was lost are still delivered); one that exists
    /// already is fine.
    async fn create_group(&self) -> Result<(), StorageError> {
        let created: redis::RedisResult<()> = self
            .redis
            .query_raw(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await?;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    /// Decode a stream entry; a corrupt one is acked, deleted and logged.
    async fn decode(&self, entry: &StreamId) -> Result<Option<QueuedEvent>, StorageError> {
        let decoded = match entry.map.get(FIELD) {
            Some(Value::BulkString(bytes)) => serde_json::from_slice::<Entry>(bytes)
                .map_err(|e| corrupt(format!("event {}", entry.id), e)),
            _ => Err(corrupt(format!("event {}", entry.id), "no entry field")),
        };
        match decoded {
            Ok(e) => Ok(Some(QueuedEvent {
                id: entry.id.clone(),
                route: e.route,
                received_at_ms: e.received_at_ms,
                body: e.body,
                attempts: e.attempts,
                not_before_ms: e.not_before_ms,
            })),
            Err(error) => {
                tracing::error!(%error, "dropping a corrupt queued callback");
                self.remove(&entry.id).await?;
                Ok(None)
            }
        }
    }

    /// `XACK` and `XDEL` in one transaction.
    async fn remove(&self, id: &str) -> Result<(), StorageError> {
        self.redis
            .pipe::<()>(
                redis::pipe()
                    .atomic()
                    .cmd("XACK")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(id)
                    .ignore()
                    .cmd("XDEL")
                    .arg(&self.stream)
                    .arg(id)
                    .ignore(),
            )
            .await
    }

    /// The next entry for this host: one another host leased longer than
    /// `lease` ago (its host died), else a new one. If the group is gone
    /// (the stream was deleted, or Redis restarted without its data), it is
    /// created again and the read tried once more.
    async fn next_entry(&self, lease: Duration) -> Result<Option<StreamId>, StorageError> {
        let taken = match self.take_over(lease).await? {
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("the event stream's consumer group was missing; created again");
                self.create_group().await?;
                self.take_over(lease).await?
            }
            other => other,
        };
        match taken.map_err(unavailable)? {
            Some(entry) => Ok(Some(entry)),
            None => self.read_new().await,
        }
    }

    /// An entry leased longer than `lease` ago by any host, now this one's
    /// (Redis's error reply is the caller's, to spot `NOGROUP`).
    async fn take_over(
        &self,
        lease: Duration,
    ) -> Result<redis::RedisResult<Option<StreamId>>, StorageError> {
        let mut cursor = "0-0".to_owned();
        for _ in 0..AUTOCLAIM_PAGES {
            let reply: StreamAutoClaimReply = match self
                .redis
                .query_raw(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&self.stream)
                        .arg(GROUP)
                        .arg(&*self.redis.host_id)
                        .arg(ms(lease))
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(1),
                )
                .await?
            {
                Ok(reply) => reply,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(entry) = reply.claimed.into_iter().next() {
                return Ok(Ok(Some(entry)));
            }
            if reply.next_stream_id == "0-0" {
                break;
            }
            cursor = reply.next_stream_id;
        }
        Ok(Ok(None))
    }

    /// A new entry for this host.
    async fn read_new(&self) -> Result<Option<StreamId>, StorageError> {
        let reply: Option<StreamReadReply> = self
            .redis
            .query(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&*self.redis.host_id)
                    .arg("COUNT")
                    .arg(1)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(">"),
            )
            .await?;
        Ok(reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next()))
    }
}

/// Forget the consumers holding nothing and idle longer than `idle` (the
/// sweep passes [`CONSUMER_IDLE`]); how many.
pub(super) async fn forget_idle_consumers(
    redis: &Redis,
    idle: Duration,
) -> Result<usize, StorageError> {
    redis
        .script(
            FORGET_CONSUMERS
                .key(redis.key(STREAM))
                .arg(GROUP)
                .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
                .arg(&*redis.host_id),
        )
        .await
}

/// The sorted set of fingerprints.
pub(super) fn seen_key(redis: &Redis) -> String {
    redis.key("events:seen")
}

/// The fingerprint of a callback: SHA-256 of route, NUL, body.
fn fingerprint(route: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

#[async_trait::async_trait]
impl EventQueue for RedisEvents {
    async fn enqueue(&self, route: &str, body: &str, now_ms: u64) -> Result<Enqueued, QueueError> {
        let entry = Entry {
            route: route.to_owned(),
            received_at_ms: now_ms,
            body: body.to_owned(),
            attempts: 0,
            not_before_ms: 0,
            was: None,
        };
        let json = serde_json::to_string(&entry).map_err(|e| corrupt("event", e))?;
        let verdict: String = self
            .redis
            .script(
                ENQUEUE
                    .key(&self.stream)
                    .key(&self.delayed)
                    .key(&self.seen)
                    .arg(fingerprint(route, body))
                    .arg(now_ms)
                    .arg(now_ms.saturating_sub(self.dedupe_window_ms))
                    .arg(self.redis.limits.max_queued)
                    .arg(json)
                    .arg(TRIM_PER_ENQUEUE),
            )
            .await?;
        match verdict.as_str() {
            "new" => Ok(Enqueued::New),
            "duplicate" => Ok(Enqueued::Duplicate),
            _ => Err(QueueError::Full(self.redis.limits.max_queued)),
        }
    }

    async fn lease_next(&self, now_ms: u64, lease: Duration) -> Result<Next, StorageError> {
        let _: i64 = self
            .redis
            .script(
                PROMOTE
                    .key(&self.delayed)
                    .key(&self.stream)
                    .arg(now_ms)
                    .arg(PROMOTE_BATCH),
            )
            .await?;
        for _ in 0..CORRUPT_PER_CALL {
            let Some(entry) = self.next_entry(lease).await? else {
                break;
            };
            if let Some(event) = self.decode(&entry).await? {
                return Ok(Next::Leased(event));
            }
        }
        let earliest: Vec<(String, u64)> = self
            .redis
            .query(
                redis::cmd("ZRANGE")
                    .arg(&self.delayed)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES"),
            )
            .await?;
        Ok(Next::Idle(earliest.first().map(|(_, at)| *at)))
    }

    async fn ack(&self, event: &QueuedEvent) -> Result<(), StorageError> {
        self.remove(&event.id).await
    }

    async fn retry_at(
        &self,
        event: &QueuedEvent,
        attempts: u32,
        not_before_ms: u64,
    ) -> Result<(), StorageError> {
        let entry = Entry {
            route: event.route.clone(),
            received_at_ms: event.received_at_ms,
            body: event.body.clone(),
            attempts,
            not_before_ms,
            was: Some(event.id.clone()),
        };
        let json = serde_json::to_string(&entry).map_err(|e| corrupt("event", e))?;
        let _: i64 = self
            .redis
            .script(
                RETRY
                    .key(&self.stream)
                    .key(&self.delayed)
                    .arg(GROUP)
                    .arg(&event.id)
                    .arg(json)
                    .arg(not_before_ms),
            )
            .await?;
        Ok(())
    }

    async fn len(&self) -> Result<usize, StorageError> {
        let (stream, delayed): (usize, usize) = self
            .redis
            .pipe(
                redis::pipe()
                    .cmd("XLEN")
                    .arg(&self.stream)
                    .cmd("ZCARD")
                    .arg(&self.delayed),
            )
            .await?;
        Ok(stream + delayed)
    }

    fn max_queued(&self) -> usize {
        self.redis.limits.max_queued
    }

    async fn seen_len(&self) -> Result<usize, StorageError> {
        self.redis.query(redis::cmd("ZCARD").arg(&self.seen)).await
    }
}
