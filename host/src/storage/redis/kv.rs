//! The plugin kv port on Redis: a hash per namespace, and a second hash
//! with its usage (keys, bytes), both changed by one Lua script that also
//! checks the quota, so concurrent writers on any number of hosts cannot
//! overshoot it together.
//!
//! The script applies the rule of [`over_quota`] (the one rule for every
//! backend) and returns the usage before and after the write; the refusal
//! itself (its limit and message) is then built by [`over_quota`] from
//! those numbers, and a test checks both sides agree case by case.

use std::sync::LazyLock;

use redis::Script;

use super::Redis;
use crate::storage::kv::{check_entry, check_key, over_quota, KvError, PluginKv, Quota, Usage};
use crate::storage::StorageError;

/// Check the quota and set, keeping the usage.
static SET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/kv_set.lua")));
/// Delete, keeping the usage.
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/kv_delete.lua")));

/// The plugin kv port on a shared Redis.
pub(crate) struct RedisKv {
    redis: Redis,
}

impl RedisKv {
    /// The port on `redis`.
    pub(crate) fn new(redis: Redis) -> Self {
        RedisKv { redis }
    }

    fn data_key(&self, namespace: &str) -> String {
        self.redis.key(&format!("kv:{namespace}"))
    }

    fn usage_key(&self, namespace: &str) -> String {
        self.redis.key(&format!("kv-usage:{namespace}"))
    }
}

/// What the set script decided, and the usage around the write.
type SetReply = (String, u64, u64, u64, u64);

#[async_trait::async_trait]
impl PluginKv for RedisKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, KvError> {
        check_key(key)?;
        Ok(self
            .redis
            .query(redis::cmd("HGET").arg(self.data_key(namespace)).arg(key))
            .await?)
    }

    async fn set_within(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        quota: Quota,
    ) -> Result<(), KvError> {
        check_entry(key, value)?;
        let (verdict, before_keys, before_bytes, after_keys, after_bytes): SetReply = self
            .redis
            .script(
                SET.key(self.data_key(namespace))
                    .key(self.usage_key(namespace))
                    .arg(key)
                    .arg(value)
                    .arg(quota.max_keys)
                    .arg(quota.max_bytes),
            )
            .await?;
        let before = Usage {
            keys: before_keys,
            bytes: before_bytes,
        };
        let after = Usage {
            keys: after_keys,
            bytes: after_bytes,
        };
        match (
            verdict.as_str(),
            over_quota(namespace, quota, before, after),
        ) {
            ("ok", None) => Ok(()),
            (_, Some(refusal)) if verdict != "ok" => Err(refusal),
            // The script and the rule disagree: a bug, never a silent pass.
            _ => Err(KvError::Storage(StorageError::Corrupt {
                what: format!("kv namespace {namespace:?}"),
                detail: format!(
                    "the quota script said {verdict} for {before:?} -> {after:?} under {quota:?}"
                ),
            })),
        }
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        let _: i64 = self
            .redis
            .script(
                DELETE
                    .key(self.data_key(namespace))
                    .key(self.usage_key(namespace))
                    .arg(key),
            )
            .await?;
        Ok(())
    }

    async fn usage(&self, namespace: &str) -> Result<Usage, KvError> {
        let (keys, bytes): (Option<u64>, Option<u64>) = self
            .redis
            .query(
                redis::cmd("HMGET")
                    .arg(self.usage_key(namespace))
                    .arg("keys")
                    .arg("bytes"),
            )
            .await?;
        Ok(Usage {
            keys: keys.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        })
    }
}
