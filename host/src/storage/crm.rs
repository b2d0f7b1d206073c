//! The last-known CRM values port: every successful CRM lookup is kept, and
//! served (as stale, with its age) when the backend fails or is too slow.
//! With Redis, what one host looked up serves every host.

use std::time::Duration;

use super::StorageError;

/// How long a last-known value is kept after its last successful lookup,
/// on every backend: 30 days. The keys come from untrusted payloads (every
/// address a sender names), so without an expiry they would grow with
/// every address ever seen; an address not looked up for a month has a
/// value too old to trust when the CRM is down, and is looked up afresh
/// when it comes back. (Each put renews it.)
pub const LAST_KNOWN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Last-known CRM values, by source name and lookup key.
#[async_trait::async_trait]
pub trait CrmLastKnown: Send + Sync {
    /// The value kept for `key` of `source`.
    async fn get(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Keep `value` for `key` of `source`, replacing what was kept.
    async fn put(&self, source: &str, key: &str, value: &[u8]) -> Result<(), StorageError>;
}
