//! The last-known CRM values port on sled: one tree per source,
//! `crm-last-known:<source>`, key the lookup key, value
//! `0x01 ++ stored_at_ms (u64 BE) ++` what the CRM layer stored (opaque
//! bytes here).
//!
//! The keys come from untrusted payloads (every address a sender names), so
//! the values expire as they do on Redis: [`LAST_KNOWN_TTL`] after their
//! last put, invisible at once and removed by [`sweep`] (run hourly by the
//! maintenance port). Without it a year-old appliance would keep every
//! address ever seen.
//!
//! A value written before values were stamped (no `0x01` tag: the CRM
//! layer's JSON starts with `{`) is served as it is and never expires by
//! itself; the next successful lookup of its key replaces it with a stamped
//! one, so only the keys never looked up again since the upgrade stay.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::blocking;
use crate::clock::Clock;
use crate::storage::crm::LAST_KNOWN_TTL;
use crate::storage::{CrmLastKnown, StorageError};

/// Prefix of every tree of last-known values.
const TREE_PREFIX: &str = "crm-last-known:";
/// First byte of a stamped value.
const STAMPED: u8 = 0x01;

/// [`CrmLastKnown`] on sled.
pub struct SledCrmLastKnown {
    db: sled::Db,
    clock: Clock,
    trees: Mutex<HashMap<String, sled::Tree>>,
}

impl SledCrmLastKnown {
    /// The values kept in `db`, expired by `clock`.
    pub fn new(db: &sled::Db, clock: Clock) -> Self {
        SledCrmLastKnown {
            db: db.clone(),
            clock,
            trees: Mutex::default(),
        }
    }

    fn tree(&self, source: &str) -> Result<sled::Tree, StorageError> {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tree) = trees.get(source) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{source}"))?;
        trees.insert(source.to_owned(), tree.clone());
        Ok(tree)
    }
}

/// `value` stamped with `now_ms`.
fn stamped(now_ms: u64, value: &[u8]) -> Vec<u8> {
    [&[STAMPED][..], &now_ms.to_be_bytes(), value].concat()
}

/// The stamp (`None` for a value from before stamps) and the value.
fn unstamp(stored: &[u8]) -> (Option<u64>, &[u8]) {
    match stored.split_first() {
        Some((&STAMPED, rest)) => match rest.split_first_chunk::<8>() {
            Some((stamp, value)) => (Some(u64::from_be_bytes(*stamp)), value),
            None => (Some(0), &[]), // cut short: expired, swept
        },
        _ => (None, stored),
    }
}

fn expired(stamp: Option<u64>, now_ms: u64) -> bool {
    let ttl = u64::try_from(LAST_KNOWN_TTL.as_millis()).unwrap_or(u64::MAX);
    stamp.is_some_and(|at| at.saturating_add(ttl) <= now_ms)
}

/// Remove every value of every source expired at `now_ms`; returns how
/// many. Walks every value once (they are small), so run it hourly, not per
/// request. A value put again since it was read is left alone.
pub fn sweep(db: &sled::Db, now_ms: u64) -> Result<usize, sled::Error> {
    let mut removed = 0;
    for name in db.tree_names() {
        if !name.starts_with(TREE_PREFIX.as_bytes()) {
            continue;
        }
        let tree = db.open_tree(name)?;
        for entry in tree.iter() {
            let (key, value) = entry?;
            if !expired(unstamp(&value).0, now_ms) {
                continue;
            }
            if tree
                .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)?
                .is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[async_trait::async_trait]
impl CrmLastKnown for SledCrmLastKnown {
    async fn get(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (tree, key, now) = (self.tree(source)?, key.to_owned(), self.clock.now_ms());
        blocking(move || {
            Ok(tree.get(key.as_bytes())?.and_then(|stored| {
                let (stamp, value) = unstamp(&stored);
                (!expired(stamp, now)).then(|| value.to_vec())
            }))
        })
        .await
    }

    async fn put(&self, source: &str, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let tree = self.tree(source)?;
        let (key, value) = (key.to_owned(), stamped(self.clock.now_ms(), value));
        blocking(move || {
            tree.insert(key.as_bytes(), value)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sled::test_util::temp_db;
    use std::time::Duration;

    /// Issue 17: last-known values expire on sled as on Redis, and the
    /// sweep removes them (a year of distinct senders does not pile up).
    #[tokio::test(start_paused = true)]
    async fn issue_17_values_expire_after_the_ttl_and_are_swept() {
        let (_dir, db) = temp_db();
        let clock = Clock::new();
        let crm = SledCrmLastKnown::new(&db, clock);
        crm.put("main", "old@example.com", b"{\"a\":1}")
            .await
            .unwrap();
        // A value from before stamps: served, never expired by itself.
        db.open_tree("crm-last-known:main")
            .unwrap()
            .insert("legacy@example.com", b"{\"l\":1}".as_slice())
            .unwrap();
        tokio::time::advance(LAST_KNOWN_TTL - Duration::from_secs(1)).await;
        crm.put("main", "new@example.com", b"{\"b\":2}")
            .await
            .unwrap();
        assert_eq!(
            crm.get("main", "old@example.com").await.unwrap().as_deref(),
            Some(b"{\"a\":1}".as_slice())
        );
        assert_eq!(sweep(&db, clock.now_ms()).unwrap(), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(crm.get("main", "old@example.com").await.unwrap(), None);
        assert_eq!(
            crm.get("main", "new@example.com").await.unwrap().as_deref(),
            Some(b"{\"b\":2}".as_slice())
        );
        assert_eq!(
            crm.get("main", "legacy@example.com")
                .await
                .unwrap()
                .as_deref(),
            Some(b"{\"l\":1}".as_slice())
        );
        assert_eq!(sweep(&db, clock.now_ms()).unwrap(), 1);
        assert_eq!(db.open_tree("crm-last-known:main").unwrap().len(), 2);
        // Put again: renewed.
        crm.put("main", "old@example.com", b"{\"a\":3}")
            .await
            .unwrap();
        tokio::time::advance(LAST_KNOWN_TTL - Duration::from_secs(1)).await;
        assert!(crm.get("main", "old@example.com").await.unwrap().is_some());
    }

    #[test]
    fn stamps_round_trip_and_odd_bytes_do_not_panic() {
        assert_eq!(unstamp(&stamped(42, b"v")), (Some(42), b"v".as_slice()));
        assert_eq!(unstamp(b"{}"), (None, b"{}".as_slice()));
        assert_eq!(unstamp(&[STAMPED, 1, 2]), (Some(0), b"".as_slice()));
        assert_eq!(unstamp(&[]), (None, b"".as_slice()));
    }
}
