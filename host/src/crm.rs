//! The embedded CRM: customer records in a sled tree, keyed by lower-cased
//! email address, each a flat string map (claimNumber, policyNumber, region,
//! tier, …). Plugins reach it through the `crm` import.
//!
//! Records are loaded from JSON lines (one object per line, an `email` key
//! plus string fields) and upserted, so re-importing the same file is a
//! no-op and a changed record replaces the old one.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// sled tree holding the records.
const TREE: &str = "crm";

/// A customer record: field name → value.
pub type Record = BTreeMap<String, String>;

/// Why a CRM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The store failed.
    #[error("CRM store: {0}")]
    Store(#[from] sled::Error),
    /// A stored record could not be decoded (the store was written by
    /// something else, or is corrupt).
    #[error("CRM store: record for {email:?} is corrupt: {source}")]
    Corrupt {
        /// Key of the record.
        email: String,
        /// Decoding error.
        source: serde_json::Error,
    },
    /// The import file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// A line of the import file is not a valid record.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        /// File.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The embedded CRM store.
#[derive(Clone)]
pub struct CrmStore {
    tree: sled::Tree,
}

impl CrmStore {
    /// Open the CRM tree of a sled database.
    pub fn open(db: &sled::Db) -> Result<Self, CrmError> {
        Ok(CrmStore {
            tree: db.open_tree(TREE)?,
        })
    }

    /// The record for an email address (case-insensitive), if any.
    pub fn lookup_email(&self, email: &str) -> Result<Option<Record>, CrmError> {
        let key = normalize(email);
        match self.tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CrmError::Corrupt { email: key, source }),
        }
    }

    /// Insert or replace the record for `email`.
    pub fn upsert(&self, email: &str, record: &Record) -> Result<(), CrmError> {
        let bytes = serde_json::to_vec(record).map_err(|source| CrmError::Corrupt {
            email: email.to_owned(),
            source,
        })?;
        self.tree.insert(normalize(email).as_bytes(), bytes)?;
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Upsert every record of a JSON-lines file. Blank lines and lines
    /// starting with `#` are skipped. The whole file is checked before
    /// anything is written, so a bad row leaves the store as it was.
    pub fn import_jsonl(&self, path: &Path) -> Result<usize, CrmError> {
        let shown = path.display().to_string();
        let read_err = |source| CrmError::Read {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut rows = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(read_err)?;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |reason: String| CrmError::BadRow {
                path: shown.clone(),
                line: i + 1,
                reason,
            };
            let mut record: Record = serde_json::from_str(trimmed)
                .map_err(|e| bad(format!("not a flat JSON object of strings: {e}")))?;
            let email = record
                .remove("email")
                .filter(|e| e.contains('@'))
                .ok_or_else(|| bad("missing or invalid \"email\"".to_owned()))?;
            rows.push((email, record));
        }
        let mut batch = sled::Batch::default();
        for (email, record) in &rows {
            let bytes = serde_json::to_vec(record).map_err(|source| CrmError::Corrupt {
                email: email.clone(),
                source,
            })?;
            batch.insert(normalize(email).as_bytes(), bytes);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(rows.len())
    }
}

fn normalize(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, CrmStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        (dir, CrmStore::open(&db).unwrap())
    }

    #[test]
    fn import_upserts_and_lookup_ignores_case() {
        let (dir, crm) = store();
        let file = dir.path().join("crm.jsonl");
        std::fs::write(
            &file,
            "# sample\n{\"email\":\"A@X.com\",\"tier\":\"gold\"}\n\n{\"email\":\"b@x.com\",\"region\":\"EMEA\"}\n",
        )
        .unwrap();
        assert_eq!(crm.import_jsonl(&file).unwrap(), 2);
        assert_eq!(
            crm.import_jsonl(&file).unwrap(),
            2,
            "re-import is an upsert"
        );
        assert_eq!(crm.len(), 2);
        let a = crm.lookup_email(" a@x.COM ").unwrap().unwrap();
        assert_eq!(a.get("tier").map(String::as_str), Some("gold"));
        assert!(!a.contains_key("email"));
        assert!(crm.lookup_email("nobody@x.com").unwrap().is_none());
    }

    #[test]
    fn a_bad_row_is_reported_with_its_line_and_nothing_is_written() {
        let (dir, crm) = store();
        let file = dir.path().join("crm.jsonl");
        std::fs::write(
            &file,
            "{\"email\":\"a@x.com\"}\n{\"email\":\"b@x.com\",\"n\":1}\n",
        )
        .unwrap();
        let err = crm.import_jsonl(&file).unwrap_err().to_string();
        assert!(
            err.contains("crm.jsonl:2: not a flat JSON object of strings: invalid type: integer"),
            "{err}"
        );
        assert!(crm.is_empty());
        std::fs::write(&file, "{\"name\":\"no email\"}\n").unwrap();
        let err = crm.import_jsonl(&file).unwrap_err().to_string();
        assert!(err.contains(":1: missing or invalid \"email\""), "{err}");
    }
}
