//! The Redis backend of the storage ports: several enrichd hosts share one
//! Redis (`[storage] kind = "redis"`).
//!
//! # Keys
//!
//! Every key starts with `key_prefix` (`P`), so deployments sharing a Redis
//! never meet. A pair of free-form names (route and payload id, CRM source
//! and key) is written `<len of first>:<first>:<second>` so that no two
//! pairs share a key whatever bytes they hold.
//!
//! | key | type | what |
//! |---|---|---|
//! | `P answer:<route,id>` | string, TTL = what is left of `retention` | a stored answer, in the stored format of [`codec`](super::codec) (binary; JSON before it) |
//! | `P lease:<route,id>` | string, TTL = the lease | the lease token of the copy running the delivery |
//! | `P answers:by-time` | sorted set | `<route,id>` by `stored_at_ms`: the delivery log |
//! | `P answers:by-id:<id>` | set, TTL = `retention` | the routes that stored `id`: [`find`](super::AnswerStore::find) without a route |
//! | `P events:stream` | stream, group `enrichd` | callbacks due now, leased through the group |
//! | `P events:delayed` | sorted set | callbacks waiting for a retry, by not-before time |
//! | `P events:leases` | sorted set | leased callbacks' stream ids, by lease end |
//! | `P events:seen` | sorted set | callback fingerprints, by when first seen |
//! | `P kv:<ns>`, `P kv-usage:<ns>` | hashes | a plugin namespace and its usage (keys, bytes) |
//! | `P crm:<source,key>` | string, TTL 30 days (`storage::crm::LAST_KNOWN_TTL`) | a last-known CRM value |
//!
//! # Atomicity
//!
//! Every decision that must hold across hosts (claim, complete, release,
//! enqueue, lease, retry, the kv quota) is one Lua script: Redis runs a
//! script alone, so two hosts can never both pass the same check. One
//! script (complete, when it evicts beyond `max_records`) names keys it was
//! not passed, which a single Redis allows; Redis Cluster is not supported.
//!
//! # Redis unavailable
//!
//! Every call is bounded ([`CALL_TIMEOUT`]): when Redis is down or stalls, a
//! port call fails with [`StorageError::Unavailable`] (answered 503) within
//! about a second. The connection manager reconnects by itself on the next
//! call once Redis is back; nothing needs reopening.
//!
//! # Durability
//!
//! A write is acknowledged once Redis applied it in memory. The guarantees
//! (a 200 means the callback or answer survives) need Redis's append-only
//! file (`appendonly yes`) to survive a Redis restart, and `appendfsync
//! always` to survive a crash of its machine (with `everysec` up to a
//! second of writes is lost). Redis must not evict (`maxmemory-policy
//! noeviction`): an evicted lease, callback or kv entry breaks the
//! guarantees silently. [`open`] says when any of these is off.
//! Replication is asynchronous: a failover to a replica can lose the last
//! writes.

mod answers;
mod crm;
mod events;
mod kv;
mod maintenance;
#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisResult};
use sha2::{Digest, Sha256};

use super::{Limits, OpenError, RedisSettings, Storage, StorageError};
use crate::clock::Clock;

/// How long Redis may take to answer one command: 1 s. Every command here
/// touches a handful of keys and answers in well under a millisecond; a
/// second covers a busy Redis (or its fork for an AOF rewrite) while keeping
/// a delivery from waiting long before it is answered 503.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one connection attempt may take: 500 ms. Redis is on the local
/// network; a connection that takes longer is as good as down.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// Reconnection attempts per call, after the first (with 50–200 ms pauses):
/// 2. A restarting Redis gets a few chances within one call, and a call
/// while Redis is down still fails within [`CALL_TIMEOUT`]; the next call
/// tries again.
const RECONNECT_RETRIES: usize = 2;

/// The hard bound on one port call's wait for Redis: 1.5 s, a little more
/// than [`RESPONSE_TIMEOUT`] so the manager's own timeout answers first;
/// this one also covers its reconnection attempts.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The connection, key names and identity shared by every port.
#[derive(Clone)]
pub(crate) struct Redis {
    conn: ConnectionManager,
    prefix: String,
    /// Unique to this process: names its consumer and its lease tokens.
    host_id: Arc<str>,
    tokens: Arc<AtomicU64>,
    clock: Clock,
    limits: Limits,
}

impl Redis {
    /// `P name`.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A new lease token: the host id and a counter, so no two claims on
    /// any host ever share one.
    fn token(&self) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.host_id)
    }

    /// Run one command.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StorageError> {
        let mut conn = self.conn.clone();
        bounded(async move { cmd.query_async(&mut conn).await }).await
    }

    /// Run one command whose error replies the caller branches on (e.g.
    /// `NOGROUP`); only a timeout is mapped.
    async fn query_raw<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<RedisResult<T>, StorageError> {
        let mut conn = self.conn.clone();
        within_bound(async move { cmd.query_async(&mut conn).await }).await
    }

    /// Run a pipeline (atomic if it was built with `.atomic()`).
    async fn pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StorageError> {
        let mut conn = self.conn.clone();
        bounded(async move { pipe.query_async(&mut conn).await }).await
    }

    /// Run a script whose error replies the caller branches on.
    async fn script_raw<T: FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<RedisResult<T>, StorageError> {
        let mut conn = self.conn.clone();
        within_bound(async move { call.invoke_async(&mut conn).await }).await
    }

    /// Run a script (EVALSHA, loading it first if Redis does not have it).
    async fn script<T: FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn.clone();
        bounded(async move { call.invoke_async(&mut conn).await }).await
    }
}

/// `len:first:second`: a key part naming a pair of free-form strings,
/// distinct for distinct pairs.
fn pair(first: &str, second: &str) -> String {
    format!("{}:{first}:{second}", first.len())
}

/// Bound a Redis call by [`CALL_TIMEOUT`] and map its failure to
/// [`StorageError::Unavailable`].
async fn bounded<T>(call: impl Future<Output = RedisResult<T>>) -> Result<T, StorageError> {
    within_bound(call).await?.map_err(unavailable)
}

/// Redis failed or refused a command: retry later.
fn unavailable(e: redis::RedisError) -> StorageError {
    StorageError::Unavailable(format!("redis: {e}"))
}

/// Bound a Redis call by [`CALL_TIMEOUT`]: a timeout is
/// [`StorageError::Unavailable`], Redis's own answer is the caller's.
async fn within_bound<T>(
    call: impl Future<Output = RedisResult<T>>,
) -> Result<RedisResult<T>, StorageError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        StorageError::Unavailable(format!(
            "redis did not answer within {} ms",
            CALL_TIMEOUT.as_millis()
        ))
    })
}

/// A stored value could not be decoded.
fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// A duration in whole ms, at least 1 (`PX 0` is an error in Redis).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Open the Redis backend: connect, check Redis answers, create the event
/// group, and hand out the ports.
pub async fn open(
    settings: &RedisSettings,
    limits: &Limits,
    clock: Clock,
) -> Result<Storage, OpenError> {
    let redis = connect(settings, limits, clock).await?;
    warn_about_config(&redis).await;
    let events = events::RedisEvents::open(redis.clone())
        .await
        .map_err(|e| open_error(settings, detail(e)))?;
    Ok(Storage {
        answers: Arc::new(answers::RedisAnswers::new(redis.clone())),
        events: Arc::new(events),
        kv: Arc::new(kv::RedisKv::new(redis.clone())),
        crm: Arc::new(crm::RedisCrm::new(redis.clone())),
        maintenance: Arc::new(maintenance::RedisMaintenance::new(redis)),
        backend: "redis",
    })
}

/// Connect, with every call bounded, and check that Redis answers: a wrong
/// URL, password or database fails here, at start, not on the first
/// delivery.
async fn connect(
    settings: &RedisSettings,
    limits: &Limits,
    clock: Clock,
) -> Result<Redis, OpenError> {
    let client = redis::Client::open(settings.url.as_str())
        .map_err(|e| open_error(settings, format!("invalid url ({:?})", e.kind())))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    let conn = bounded(ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|e| open_error(settings, detail(e)))?;
    let redis = Redis {
        conn,
        prefix: settings.key_prefix.clone(),
        host_id: host_id().into(),
        tokens: Arc::new(AtomicU64::new(0)),
        clock,
        limits: limits.clone(),
    };
    redis
        .query::<String>(&redis::cmd("PING"))
        .await
        .map_err(|e| open_error(settings, detail(e)))?;
    Ok(redis)
}

fn open_error(settings: &RedisSettings, detail: String) -> OpenError {
    OpenError {
        backend: "redis",
        target: redact(&settings.url),
        detail,
    }
}

/// Say when Redis's set-up falls short of the guarantees: an evicting
/// `maxmemory-policy` may drop leases, callbacks or kv entries; without
/// `appendonly`, a Redis restart loses acknowledged callbacks and answers;
/// with `appendfsync` other than `always`, a crash of Redis's machine loses
/// the last second. (Managed Redis often refuses `CONFIG`; then nothing is
/// said.)
async fn warn_about_config(redis: &Redis) {
    let setting = |name: &'static str| async move {
        let reply: Result<Vec<String>, _> =
            redis.query(redis::cmd("CONFIG").arg("GET").arg(name)).await;
        reply.ok().and_then(|r| r.get(1).cloned())
    };
    if let Some(policy) = setting("maxmemory-policy")
        .await
        .filter(|p| p != "noeviction")
    {
        tracing::warn!(
            maxmemory_policy = %policy,
            "redis may evict keys when full, dropping leases, queued callbacks or kv data: set maxmemory-policy noeviction (see the README)"
        );
    }
    if setting("appendonly").await.as_deref() == Some("no") {
        tracing::warn!(
            "redis runs without appendonly: a Redis restart loses queued callbacks and stored answers (see the README: appendonly yes, appendfsync always)"
        );
    } else if let Some(fsync) = setting("appendfsync").await.filter(|f| f != "always") {
        tracing::info!(
            appendfsync = %fsync,
            "redis syncs its append-only file on its own schedule: a crash of its machine can lose the last second of callbacks and answers (appendfsync always closes that window)"
        );
    }
}

/// What went wrong, for an [`OpenError`] ("storage unavailable" would only
/// repeat "cannot open").
fn detail(e: StorageError) -> String {
    match e {
        StorageError::Unavailable(detail) => detail,
        other => other.to_string(),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// An id unique to this process among every host sharing the Redis: a hash
/// of the host name, the pid and the start time (a restarted process on the
/// same host gets a new one, so it never takes over its predecessor's
/// leases by name).
fn host_id() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Several backends opened in one process (tests) still differ.
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let n = OPENED.fetch_add(1, Ordering::Relaxed);
    let digest = Sha256::digest(format!(
        "{}\0{}\0{started}\0{n}",
        hostname.trim(),
        std::process::id()
    ));
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_password_never_reaches_a_message() {
        assert_eq!(
            redact("redis://user:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:p@h/"), "redis://***@h/");
        assert_eq!(redact("redis://h:6379/"), "redis://h:6379/");
    }

    #[test]
    fn pairs_are_distinct_whatever_they_hold() {
        assert_ne!(pair("a:b", "c"), pair("a", "b:c"));
        assert_eq!(pair("/r", "x"), "2:/r:x");
    }

    #[test]
    fn host_ids_differ_per_open() {
        assert_ne!(host_id(), host_id());
        assert_eq!(host_id().len(), 16);
    }
}
