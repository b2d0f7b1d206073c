//! The last-known CRM values port on sled: one tree per source,
//! `crm-last-known:<source>`, key the lookup key, value what the CRM
//! layer stored (opaque bytes here).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::blocking;
use crate::storage::{CrmLastKnown, StorageError};

/// [`CrmLastKnown`] on sled.
pub struct SledCrmLastKnown {
    db: sled::Db,
    trees: Mutex<HashMap<String, sled::Tree>>,
}

impl SledCrmLastKnown {
    /// The values kept in `db`.
    pub fn new(db: &sled::Db) -> Self {
        SledCrmLastKnown {
            db: db.clone(),
            trees: Mutex::default(),
        }
    }

    fn tree(&self, source: &str) -> Result<sled::Tree, StorageError> {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tree) = trees.get(source) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(format!("crm-last-known:{source}"))?;
        trees.insert(source.to_owned(), tree.clone());
        Ok(tree)
    }
}

#[async_trait::async_trait]
impl CrmLastKnown for SledCrmLastKnown {
    async fn get(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (tree, key) = (self.tree(source)?, key.to_owned());
        blocking(move || Ok(tree.get(key.as_bytes())?.map(|v| v.to_vec()))).await
    }

    async fn put(&self, source: &str, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let (tree, key, value) = (self.tree(source)?, key.to_owned(), value.to_vec());
        blocking(move || {
            tree.insert(key.as_bytes(), value)?;
            Ok(())
        })
        .await
    }
}
