//! The last-known CRM values port: every successful CRM lookup is kept, and
//! served (as stale, with its age) when the backend fails or is too slow.
//! With Redis, what one host looked up serves every host.

use super::StorageError;

/// Last-known CRM values, by source name and lookup key.
#[async_trait::async_trait]
pub trait CrmLastKnown: Send + Sync {
    /// The value kept for `key` of `source`.
    async fn get(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Keep `value` for `key` of `source`, replacing what was kept.
    async fn put(&self, source: &str, key: &str, value: &[u8]) -> Result<(), StorageError>;
}
