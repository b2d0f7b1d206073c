//! The last-known CRM values port on Redis: one string per (source, key),
//! `P crm:<source,key>`, so what one host looked up serves every host.

use std::time::Duration;

use super::{ms, pair, Redis};
use crate::storage::crm::CrmLastKnown;
use crate::storage::StorageError;

/// How long a last-known value is kept after its last successful lookup:
/// 30 days. The keys come from untrusted payloads (every address a sender
/// names), and Redis holds them in memory, so without an expiry they would
/// grow with every address ever seen; an address not looked up for a month
/// has a value too old to trust when the CRM is down, and is looked up
/// afresh when it comes back. (Each put renews the TTL.)
pub const LAST_KNOWN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

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
