//! Per-plugin key-value namespaces, behind the `kv` import.
//!
//! Each plugin owns the sled tree `kv:<plugin name>`; it may read another
//! plugin's tree only when its config grants it (`kv_read`). This is how an
//! EngageLab event plugin's records reach the plugins that enrich later
//! Emailgistics deliveries. Values are durable with the rest of the data
//! directory: the event queue flushes after each processed event.

/// Longest key: keys are addresses or short identifiers; a bound keeps a
/// plugin from using keys as a second value channel.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value: plenty for a JSON record per address, small enough that a
/// plugin cannot balloon the data directory one write at a time.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a kv operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Key or value over its limit, or an empty key.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("kv store: {0}")]
    Store(#[from] sled::Error),
}

/// The kv namespaces of every plugin.
#[derive(Clone)]
pub struct KvStore {
    db: sled::Db,
}

impl KvStore {
    /// The namespaces kept in `db`.
    pub fn new(db: &sled::Db) -> Self {
        KvStore { db: db.clone() }
    }

    fn tree(&self, namespace: &str) -> Result<sled::Tree, KvError> {
        Ok(self.db.open_tree(format!("kv:{namespace}"))?)
    }

    fn check_key(key: &str) -> Result<(), KvError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvError::Refused(format!(
                "keys must be 1 to {MAX_KEY_BYTES} bytes; this one is {}",
                key.len()
            )));
        }
        Ok(())
    }

    /// The value of `key` in `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, KvError> {
        Self::check_key(key)?;
        Ok(self
            .tree(namespace)?
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Set `key` in `namespace`.
    pub fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), KvError> {
        Self::check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::Refused(format!(
                "values must be at most {MAX_VALUE_BYTES} bytes; this one is {}",
                value.len()
            )));
        }
        self.tree(namespace)?.insert(key, value.as_bytes())?;
        Ok(())
    }

    /// Remove `key` from `namespace`.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        Self::check_key(key)?;
        self.tree(namespace)?.remove(key)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_separate_and_limits_are_enforced() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let kv = KvStore::new(&db);
        kv.set("a", "k", "1").unwrap();
        assert_eq!(kv.get("a", "k").unwrap().as_deref(), Some("1"));
        assert_eq!(kv.get("b", "k").unwrap(), None);
        kv.delete("a", "k").unwrap();
        assert_eq!(kv.get("a", "k").unwrap(), None);

        let at_limit = "x".repeat(MAX_VALUE_BYTES);
        kv.set("a", &"k".repeat(MAX_KEY_BYTES), &at_limit).unwrap();
        assert!(matches!(
            kv.set("a", "k", &format!("{at_limit}x")),
            Err(KvError::Refused(_))
        ));
        assert!(matches!(
            kv.set("a", &"k".repeat(MAX_KEY_BYTES + 1), "v"),
            Err(KvError::Refused(_))
        ));
        assert!(matches!(kv.get("a", ""), Err(KvError::Refused(_))));
    }
}
