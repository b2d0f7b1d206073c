//! The event-queue port on Redis: a stream with one consumer group shared
//! by every host, a sorted set of callbacks waiting for a retry, and a
//! sorted set of fingerprints for the duplicate filter.
//!
//! - **Enqueue** is one script: a fingerprint (SHA-256 of route, NUL, body)
//!   first seen within the dedupe window → duplicate; the cap (stream length
//!   plus waiting retries ≥ `max_queued`) → full; else the fingerprint is
//!   recorded and the callback `XADD`ed.
//! - **Lease** is one script: due retries are moved to the stream (so two
//!   hosts never move one twice); then a callback whose lease ended is
//!   claimed (`XCLAIM`: its host died or stalled), else a new one is read
//!   (`XREADGROUP >`); its lease end goes into a sorted set. The lease is
//!   the one the leasing host asked for (each `lease_next` names it), so
//!   the end is recorded rather than read from the entry's idle time,
//!   which only the claiming host's lease could measure. Lease ends are
//!   times of the hosts' clocks ([`Clock`](crate::clock::Clock), not the
//!   caller's `now_ms`, which only says which retries are due): hosts need
//!   clocks within a small part of the lease (NTP gives milliseconds;
//!   leases are minutes).
//! - **Ack** is `XACK` + `XDEL` (and the lease forgotten); **retry** does
//!   the same and adds the callback to the waiting set (one script; one no
//!   longer pending is not brought back).
//!
//! Nothing here blocks: a blocking `XREADGROUP` would hold the shared
//! connection, and every other call behind it; the worker polls instead.
//!
//! The fingerprints are a sorted set by first-seen time rather than one key
//! with a TTL each: `seen_len` is then one `ZCARD` (a counter cannot follow
//! keys that expire, and a `SCAN` walks the whole keyspace), and the window
//! is the same rule as sled's. Expired fingerprints are trimmed a few per
//! enqueue and in batches by the sweep.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use super::{corrupt, ms, unavailable, Redis};
use crate::storage::events::{Enqueued, EventQueue, Next, QueueError, QueuedEvent};
use crate::storage::StorageError;

/// Duplicate → `duplicate`; over the cap → `full`; else queue it.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/enqueue.lua")));
/// Move due retries, then lease an ended lease's callback or a new one.
static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lease.lua")));
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

/// Expired fingerprints trimmed per enqueue: more than the one it adds, so
/// the filter shrinks back to one window even if the sweep never runs,
/// while one enqueue stays a few microseconds of Redis time.
const TRIM_PER_ENQUEUE: usize = 8;

/// Due retries moved per lease call: they are moved in arrival order, so a
/// burst is spread over a few calls instead of one long script.
const PROMOTE_BATCH: usize = 100;

/// Ended leases one lease call looks at whose entry is gone (acked by a
/// slow holder meanwhile): each is forgotten, so a few suffice.
const ENDED_PER_CALL: usize = 10;

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
    leases: String,
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
            leases: redis.key("events:leases"),
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

    /// Decode a leased entry; a corrupt one is removed and logged.
    async fn decode(&self, id: String, json: &str) -> Result<Option<QueuedEvent>, StorageError> {
        match serde_json::from_str::<Entry>(json) {
            Ok(e) => Ok(Some(QueuedEvent {
                id,
                route: e.route,
                received_at_ms: e.received_at_ms,
                body: e.body,
                attempts: e.attempts,
                not_before_ms: e.not_before_ms,
            })),
            Err(e) => {
                let error = corrupt(format!("event {id}"), e);
                tracing::error!(%error, "dropping a corrupt queued callback");
                self.remove(&id).await?;
                Ok(None)
            }
        }
    }

    /// `XACK`, `XDEL` and forget the lease, in one transaction.
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
                    .ignore()
                    .cmd("ZREM")
                    .arg(&self.leases)
                    .arg(id)
                    .ignore(),
            )
            .await
    }

    /// Run the lease script: the id and JSON of the entry now leased. If
    /// the group is gone (the stream was deleted, or Redis restarted
    /// without its data), it is created again and the lease tried once
    /// more.
    async fn lease_entry(
        &self,
        now_ms: u64,
        lease: Duration,
    ) -> Result<Option<(String, String)>, StorageError> {
        // Leases run on the host's clock (like sled's, in real time), while
        // `now_ms` says which retries are due.
        let clock_ms = self.redis.clock.now_ms();
        let run = || async {
            let mut call = LEASE.prepare_invoke();
            call.key(&self.stream)
                .key(&self.delayed)
                .key(&self.leases)
                .arg(GROUP)
                .arg(&*self.redis.host_id)
                .arg(now_ms)
                .arg(clock_ms)
                .arg(clock_ms.saturating_add(ms(lease)))
                .arg(PROMOTE_BATCH)
                .arg(ENDED_PER_CALL);
            self.redis.script_raw(&call).await
        };
        match run().await? {
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("the event stream's consumer group was missing; created again");
                self.create_group().await?;
                run().await?.map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
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
        for _ in 0..CORRUPT_PER_CALL {
            let Some((id, json)) = self.lease_entry(now_ms, lease).await? else {
                break;
            };
            if let Some(event) = self.decode(id, &json).await? {
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
                    .key(&self.leases)
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

    /// The stream's first entry; with the stream empty, the first retry
    /// waiting to go back in (sled keeps both in one line). A corrupt head
    /// is passed over: the next lease drops and logs it.
    async fn head_received_ms(&self) -> Result<Option<u64>, StorageError> {
        let (head, waiting): (Vec<(String, Vec<(String, String)>)>, Vec<String>) = self
            .redis
            .pipe(
                redis::pipe()
                    .cmd("XRANGE")
                    .arg(&self.stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("ZRANGE")
                    .arg(&self.delayed)
                    .arg(0)
                    .arg(0),
            )
            .await?;
        let entry = head
            .into_iter()
            .flat_map(|(_, fields)| fields.into_iter().map(|(_, json)| json))
            .chain(waiting)
            .next();
        Ok(entry
            .and_then(|json| serde_json::from_str::<Entry>(&json).ok())
            .map(|e| e.received_at_ms))
    }

    async fn seen_len(&self) -> Result<usize, StorageError> {
        self.redis.query(redis::cmd("ZCARD").arg(&self.seen)).await
    }
}
