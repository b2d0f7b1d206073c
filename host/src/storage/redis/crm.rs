//! The last-known CRM values port on Redis: one string per (source, key),
//! `P crm:<source,key>`, so what one host looked up serves every host.

use super::{ms, pair, Redis};
use crate::storage::crm::{CrmLastKnown, LAST_KNOWN_TTL};
use crate::storage::StorageError;

/// The last-known CRM values on a shared Redis.
pub(crate) struct RedisCrm {
    redis: Redis,
}

impl RedisCrm {
    /// The port on `redis`.
    pub(crate) fn new(redis: Redis) -> Self {
        RedisCrm { redis }
    }

    fn value_key(&self, source: &str, key: &str) -> String {
        self.redis.key(&format!("crm:{}", pair(source, key)))
    }
}

#[async_trait::async_trait]
impl CrmLastKnown for RedisCrm {
    async fn get(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.redis
            .query(redis::cmd("GET").arg(self.value_key(source, key)))
            .await
    }

    async fn put(&self, source: &str, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.redis
            .query(
                redis::cmd("SET")
                    .arg(self.value_key(source, key))
                    .arg(value)
                    .arg("PX")
                    .arg(ms(LAST_KNOWN_TTL)),
            )
            .await
    }
}
