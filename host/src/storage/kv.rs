//! The plugin key-value port: one namespace per plugin, behind the `kv`
//! import, each with a [`Quota`] of keys and bytes (keys plus values).
//!
//! This is how an EngageLab event plugin's records reach the plugins that
//! enrich later Emailgistics deliveries — with Redis, on every host. A
//! plugin must not be able to fill the disk (or Redis's memory): the quota
//! check and the write are one atomic step, so concurrent calls of one
//! plugin (on one host or several) cannot overshoot it together.
//! (Per-call budgets are the caller's: see `plugin::host`.)

use super::StorageError;

/// Longest key: keys are addresses or short identifiers; a bound keeps a
/// plugin from using keys as a second value channel.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value: plenty for a JSON record per address, small enough that a
/// plugin cannot balloon the store one write at a time.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a kv operation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// Key or value over its limit, or an empty key.
    #[error("{0}")]
    Refused(String),
    /// The namespace's quota would be exceeded.
    #[error("{message}")]
    OverLimit {
        /// The config key of the limit: `kv_max_keys` or `kv_max_bytes`.
        limit: &'static str,
        /// What happened, naming the limit and its value.
        message: String,
    },
    /// The store failed.
    #[error("kv store: {0}")]
    Storage(#[from] StorageError),
}

/// What one namespace may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most keys.
    pub max_keys: u64,
    /// Most bytes, keys plus values.
    pub max_bytes: u64,
}

impl Quota {
    /// No limit.
    pub const UNLIMITED: Quota = Quota {
        max_keys: u64::MAX,
        max_bytes: u64::MAX,
    };
}

/// What one namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys.
    pub keys: u64,
    /// Bytes, keys plus values.
    pub bytes: u64,
}

/// Whether `key` is within the size limits.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::Refused(format!(
            "keys must be 1 to {MAX_KEY_BYTES} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

/// Whether `key` and `value` are within the size limits.
pub fn check_entry(key: &str, value: &str) -> Result<(), KvError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Refused(format!(
            "values must be at most {MAX_VALUE_BYTES} bytes; this one is {}",
            value.len()
        )));
    }
    Ok(())
}

/// The refusal when a write would take a namespace past its quota, given
/// its usage before and after the write; `None` when the write fits.
/// Overwriting counts only the difference, so a full namespace can still
/// update its records in place; a write that shrinks the namespace is
/// always allowed. (One rule for every backend.)
pub fn over_quota(namespace: &str, quota: Quota, before: Usage, after: Usage) -> Option<KvError> {
    if after.keys > quota.max_keys && after.keys > before.keys {
        return Some(KvError::OverLimit {
            limit: "kv_max_keys",
            message: format!(
                "kv namespace {namespace:?} is full: kv_max_keys = {} keys",
                quota.max_keys
            ),
        });
    }
    if after.bytes > quota.max_bytes && after.bytes > before.bytes {
        return Some(KvError::OverLimit {
            limit: "kv_max_bytes",
            message: format!(
                "kv namespace {namespace:?} is full: kv_max_bytes = {} bytes ({} in use, this write needs {})",
                quota.max_bytes,
                before.bytes,
                after.bytes - before.bytes
            ),
        });
    }
    None
}

/// The plugins' namespaces. Keys and values are checked by the backends
/// with [`check_key`] and [`check_entry`].
#[async_trait::async_trait]
pub trait PluginKv: Send + Sync {
    /// The value of `key` in `namespace`.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, KvError>;

    /// Set `key` in `namespace`, unless the namespace would then hold more
    /// than `quota` allows (see [`over_quota`]).
    async fn set_within(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        quota: Quota,
    ) -> Result<(), KvError>;

    /// Remove `key` from `namespace`; absent is not an error.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError>;

    /// What `namespace` holds.
    async fn usage(&self, namespace: &str) -> Result<Usage, KvError>;
}
