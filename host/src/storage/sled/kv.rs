//! The plugin kv port on sled: per-plugin key-value namespaces.
//!
//! Each plugin owns the sled tree `kv:<plugin name>`; it may read another
//! plugin's tree only when its config grants it (`kv_read`). This is how an
//! EngageLab event plugin's records reach the plugins that enrich later
//! Emailgistics deliveries. Values are durable with the rest of the data
//! directory: the event queue flushes after each processed event.
//!
//! The kv shares the sled database with the idempotency store, so a plugin
//! must not be able to fill the disk: every namespace has a [`Quota`] of
//! keys and bytes (keys plus values). Its usage is counted from the tree
//! once, on first use after start, and then kept up to date from what sled
//! reports each write replaced or removed; the check and the write happen
//! under the namespace's lock, so concurrent calls of one plugin cannot
//! overshoot it together. (Per-call budgets are the caller's: see
//! `plugin::host`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::storage::kv::{check_entry, check_key, over_quota, KvError, PluginKv, Quota, Usage};

/// One namespace: its tree and, once counted, its usage. The usage lock is
/// also the namespace's write lock.
struct Namespace {
    tree: sled::Tree,
    usage: Mutex<Option<Usage>>,
}

impl Namespace {
    /// The usage lock, with the usage counted from the tree if this is the
    /// first write since start.
    fn lock(&self) -> Result<(MutexGuard<'_, Option<Usage>>, Usage), KvError> {
        let mut guard = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        let usage = match *guard {
            Some(u) => u,
            None => {
                let mut u = Usage::default();
                for entry in self.tree.iter() {
                    let (k, v) = entry?;
                    u.keys += 1;
                    u.bytes += (k.len() + v.len()) as u64;
                }
                *guard = Some(u);
                u
            }
        };
        Ok((guard, usage))
    }
}

/// The kv namespaces of every plugin.
#[derive(Clone)]
pub struct KvStore {
    db: sled::Db,
    namespaces: Arc<Mutex<HashMap<String, Arc<Namespace>>>>,
}

impl KvStore {
    /// The namespaces kept in `db`.
    pub fn new(db: &sled::Db) -> Self {
        KvStore {
            db: db.clone(),
            namespaces: Arc::default(),
        }
    }

    fn namespace(&self, namespace: &str) -> Result<Arc<Namespace>, KvError> {
        let mut map = self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(ns) = map.get(namespace) {
            return Ok(ns.clone());
        }
        let ns = Arc::new(Namespace {
            tree: self.db.open_tree(format!("kv:{namespace}"))?,
            usage: Mutex::new(None),
        });
        map.insert(namespace.to_owned(), ns.clone());
        Ok(ns)
    }

    /// The value of `key` in `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, KvError> {
        check_key(key)?;
        Ok(self
            .namespace(namespace)?
            .tree
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Set `key` in `namespace`, with no quota (the host's own writes; the
    /// usage is still counted).
    pub fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), KvError> {
        self.set_within(namespace, key, value, Quota::UNLIMITED)
    }

    /// Set `key` in `namespace`, unless the namespace would then hold more
    /// than `quota` allows. Overwriting counts only the difference, so a
    /// full namespace can still update its records in place.
    pub fn set_within(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        quota: Quota,
    ) -> Result<(), KvError> {
        check_entry(key, value)?;
        let ns = self.namespace(namespace)?;
        let (mut guard, usage) = ns.lock()?;
        let entry = (key.len() + value.len()) as u64;
        let old = ns.tree.get(key)?.map(|v| (key.len() + v.len()) as u64);
        let after = Usage {
            keys: usage.keys + u64::from(old.is_none()),
            bytes: usage.bytes - old.unwrap_or(0) + entry,
        };
        if let Some(refused) = over_quota(namespace, quota, usage, after) {
            return Err(refused);
        }
        // Usage follows what sled says was replaced, not the read above.
        let replaced = ns.tree.insert(key, value.as_bytes())?;
        let replaced = replaced.map(|v| (key.len() + v.len()) as u64);
        *guard = Some(Usage {
            keys: usage.keys + u64::from(replaced.is_none()),
            bytes: usage.bytes - replaced.unwrap_or(0) + entry,
        });
        Ok(())
    }

    /// Remove `key` from `namespace`.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        let ns = self.namespace(namespace)?;
        let (mut guard, usage) = ns.lock()?;
        if let Some(old) = ns.tree.remove(key)? {
            *guard = Some(Usage {
                keys: usage.keys - 1,
                bytes: usage.bytes - (key.len() + old.len()) as u64,
            });
        }
        Ok(())
    }

    /// What `namespace` holds now.
    pub fn usage(&self, namespace: &str) -> Result<Usage, KvError> {
        let ns = self.namespace(namespace)?;
        let (_guard, usage) = ns.lock()?;
        Ok(usage)
    }
}

/// The port: every call on tokio's blocking pool (see the backend's docs).
#[async_trait::async_trait]
impl PluginKv for KvStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, KvError> {
        let (kv, ns, key) = (self.clone(), namespace.to_owned(), key.to_owned());
        super::blocking(move || KvStore::get(&kv, &ns, &key)).await
    }

    async fn set_within(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        quota: Quota,
    ) -> Result<(), KvError> {
        // Refused before a thread is taken for it.
        check_entry(key, value)?;
        let (kv, ns, key, value) = (
            self.clone(),
            namespace.to_owned(),
            key.to_owned(),
            value.to_owned(),
        );
        super::blocking(move || KvStore::set_within(&kv, &ns, &key, &value, quota)).await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        let (kv, ns, key) = (self.clone(), namespace.to_owned(), key.to_owned());
        super::blocking(move || KvStore::delete(&kv, &ns, &key)).await
    }

    async fn usage(&self, namespace: &str) -> Result<Usage, KvError> {
        let (kv, ns) = (self.clone(), namespace.to_owned());
        super::blocking(move || KvStore::usage(&kv, &ns)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

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

    #[test]
    fn usage_is_counted_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            sled::Config::new()
                .path(dir.path().join("db"))
                .open()
                .unwrap()
        };
        let quota = Quota {
            max_keys: 10,
            max_bytes: 1000,
        };
        {
            let db = open();
            let kv = KvStore::new(&db);
            for i in 0..10 {
                kv.set_within("p", &format!("k{i}"), "value", quota)
                    .unwrap();
            }
            kv.delete("p", "k0").unwrap();
            kv.set_within("p", "k1", "v", quota).unwrap();
            db.flush().unwrap();
        }
        // sled lets go of its file lock a moment after the drop.
        let db = crate::storage::sled::test_util::reopen(&dir.path().join("db"));
        let kv = KvStore::new(&db);
        assert_eq!(
            kv.usage("p").unwrap(),
            Usage {
                keys: 9,
                bytes: 9 * 2 + 8 * 5 + 1
            }
        );
        kv.set_within("p", "k0", "value", quota).unwrap();
        assert!(matches!(
            kv.set_within("p", "new", "value", quota),
            Err(KvError::OverLimit { .. })
        ));
    }

    /// Issue 11: inside `may_block` (a plugin call, off the async workers)
    /// the kv's sled work runs on the calling thread, not on the blocking
    /// pool; elsewhere, and after `may_block` returns, on the pool.
    #[test]
    fn sled_work_runs_in_place_off_the_workers_and_on_the_pool_elsewhere() {
        use crate::storage::StorageError;
        use crate::storage::{may_block, sled::blocking};
        use std::thread::{current, ThreadId};
        let thread = || Ok::<ThreadId, StorageError>(current().id());
        let db = sled::Config::new().temporary(true).open().unwrap();
        let kv: Arc<dyn PluginKv> = Arc::new(KvStore::new(&db));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        rt.block_on(async move {
            tokio::spawn(async move {
                let worker = current().id();
                assert_ne!(blocking(thread).await.unwrap(), worker, "on a worker");
                let (caller, ran, read) = tokio::task::block_in_place(|| {
                    let handle = tokio::runtime::Handle::current();
                    may_block(|| {
                        handle.block_on(async {
                            // The port itself works in place too.
                            let q = Quota::UNLIMITED;
                            kv.set_within("p", "k", "v", q).await.unwrap();
                            let read = kv.get("p", "k").await.unwrap();
                            (current().id(), blocking(thread).await.unwrap(), read)
                        })
                    })
                });
                assert_eq!(ran, caller, "in place");
                assert_eq!(read.as_deref(), Some("v"));
                let after = blocking(thread).await.unwrap();
                assert_ne!(after, current().id(), "back on the pool");
            })
            .await
            .unwrap();
        });
    }

    #[test]
    fn concurrent_writers_of_one_namespace_never_overshoot_the_quota() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let kv = KvStore::new(&db);
        let quota = Quota {
            max_keys: 50,
            max_bytes: u64::MAX,
        };
        let written: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|t| {
                    let kv = kv.clone();
                    s.spawn(move || {
                        (0..20)
                            .filter(|i| {
                                kv.set_within("p", &format!("t{t}-{i}"), "v", quota).is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(written, 50);
        assert_eq!(kv.usage("p").unwrap().keys, 50);
        assert_eq!(db.open_tree("kv:p").unwrap().len(), 50);
    }
}
