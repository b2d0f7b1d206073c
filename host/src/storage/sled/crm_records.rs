//! The embedded CRM's records in sled: the trees and batches behind
//! `crm::embedded`, whatever the storage kind.
//!
//! The embedded CRM is a CRM backend seeded from a file, not shared state:
//! with `kind = "sled"` its trees live in the storage's database, with
//! `kind = "redis"` each host opens its own `enrichd.sled` in the data
//! directory for them ([`CrmDb::open_default`]) when an embedded source is
//! configured.
//!
//! Each source has two trees: `crm:{name}` (email → record bytes) and
//! `crm-domains:{name}` (index key → empty); what the keys mean is the
//! CRM's business.

use std::path::Path;

use crate::storage::{OpenError, StorageError};

/// The database holding the embedded CRM's records. Cheap to clone.
#[derive(Clone)]
pub struct CrmDb(pub(in crate::storage) sled::Db);

impl CrmDb {
    /// Open `enrichd.sled` in `data_dir` (creating it) with sled's
    /// defaults: the CLI's import, and the records of a host whose storage
    /// is not sled.
    pub fn open_default(data_dir: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|e| failed(data_dir, e.to_string()))?;
        sled::open(data_dir.join(super::DB_DIR))
            .map(CrmDb)
            .map_err(|e| failed(data_dir, e.to_string()))
    }

    /// A database that is removed when dropped (tests, benches).
    pub fn temporary() -> Result<Self, StorageError> {
        Ok(CrmDb(sled::Config::new().temporary(true).open()?))
    }

    /// The trees of the source named `name`, created when missing.
    pub fn source(&self, name: &str) -> Result<RecordTrees, StorageError> {
        Ok(RecordTrees {
            records: self.0.open_tree(format!("crm:{name}"))?,
            index: self.0.open_tree(format!("crm-domains:{name}"))?,
        })
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.0.flush()?;
        Ok(())
    }
}

fn failed(dir: &Path, detail: String) -> OpenError {
    OpenError {
        backend: "sled",
        target: dir.display().to_string(),
        detail,
    }
}

/// One source's records and index.
#[derive(Clone)]
pub struct RecordTrees {
    records: sled::Tree,
    index: sled::Tree,
}

impl RecordTrees {
    /// The record stored under `key`.
    pub fn record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.records.get(key)?.map(|v| v.to_vec()))
    }

    /// Index entries (tests).
    #[cfg(test)]
    pub fn index_len(&self) -> usize {
        self.index.len()
    }

    /// Store raw bytes as a record now (tests: a corrupt record).
    #[cfg(test)]
    pub fn put_raw(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.records.insert(key, value)?;
        Ok(())
    }

    /// The index keys starting with `prefix`, each without the prefix, in
    /// key order.
    pub fn index_suffixes<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<Vec<u8>, StorageError>> + 'a {
        self.index.scan_prefix(prefix).map(move |entry| {
            let (key, _) = entry?;
            Ok(key[prefix.len()..].to_vec())
        })
    }

    /// Write a batch: the index first, then the records (the CRM's docs say
    /// why this order).
    pub fn apply(&self, batch: RecordBatch) -> Result<(), StorageError> {
        self.index.apply_batch(batch.index)?;
        self.records.apply_batch(batch.records)?;
        Ok(())
    }

    /// Make everything written to these trees durable.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.index.flush()?;
        self.records.flush()?;
        Ok(())
    }

    /// Number of records (counted by iterating: O(records)).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Writes staged for [`RecordTrees::apply`]: one batch per tree; a later
/// write of a key replaces an earlier one.
#[derive(Default)]
pub struct RecordBatch {
    index: sled::Batch,
    records: sled::Batch,
}

impl RecordBatch {
    /// Stage an index entry (empty value).
    pub fn index(&mut self, key: Vec<u8>) {
        self.index.insert(key, Vec::new());
    }

    /// Stage a record.
    pub fn record(&mut self, key: &[u8], value: Vec<u8>) {
        self.records.insert(key, value);
    }
}
