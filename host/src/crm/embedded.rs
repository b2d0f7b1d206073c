//! The embedded CRM backend: customer records of one named source, in the
//! embedded database (`storage::crm_records`, on every storage kind).
//!
//! Each source has two trees:
//!
//! - `crm:{name}`: lower-cased email → the record, a JSON object of strings;
//! - `crm-domains:{name}`: `domain 0x00 email` → empty, so that a domain's
//!   records are one prefix scan away ([`EmbeddedCrm::by_domain`]). The
//!   `0x00` keeps `example.co` from matching `example.com`.
//!
//! A record's domain follows from its key, so replacing a record never moves
//! its index entry, and the index never needs a removal. Writes go to the
//! index first and the records second: a crash in between leaves an index
//! entry without a record, which [`EmbeddedCrm::by_domain`] skips, never a
//! record the domain match can't see.
//!
//! Records are loaded by [`EmbeddedCrm::import`] (CSV or JSON lines, see
//! [`super::import`]) or written one at a time by [`EmbeddedCrm::upsert`].

use std::path::PathBuf;

use super::{domain_of, normalize_email, Record};
use crate::storage::crm_records::{CrmDb, RecordBatch, RecordTrees};
use crate::storage::StorageError;

pub use super::import::{ImportOptions, ImportReport, RowError, MAX_REPORTED_ERRORS};

/// Errors of the embedded CRM and its importer.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The embedded database failed (I/O error, corrupt database, …).
    #[error("CRM store error: {0}")]
    Store(#[from] StorageError),
    /// A stored record could not be decoded: the tree was written by
    /// something else, or the database is damaged.
    #[error("CRM record for {email:?} is corrupt (not a JSON object of strings): {source}")]
    Corrupt {
        /// Key of the record.
        email: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// A record could not be encoded for storage.
    #[error("cannot encode the CRM record for {email:?}: {source}")]
    Encode {
        /// Key of the record.
        email: String,
        /// The encoding error.
        source: serde_json::Error,
    },
    /// The import file could not be opened or read.
    #[error("cannot read CRM import file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The import file as a whole is unusable: unknown extension, no header
    /// row, no `email` column, … The message names the file and the fix.
    #[error("{0}")]
    BadFormat(String),
    /// [`EmbeddedCrm::upsert`] was given an address that can't be a key.
    #[error("cannot store a CRM record under {email:?}: {reason}")]
    InvalidEmail {
        /// The address as given.
        email: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The embedded CRM of one source.
#[derive(Clone)]
pub struct EmbeddedCrm {
    /// Lower-cased email → JSON record; `domain 0x00 email` → empty.
    trees: RecordTrees,
}

/// Records a domain needs before it has a domain-level match (see
/// [`EmbeddedCrm::by_domain`]).
pub const MIN_DOMAIN_RECORDS: usize = 2;

impl EmbeddedCrm {
    /// Open the source named `name` in `db`: trees "crm:{name}" (email →
    /// JSON [`Record`]) and "crm-domains:{name}" (domain + 0x00 + email →
    /// empty). Both are created when missing.
    pub fn open(db: &CrmDb, name: &str) -> Result<Self, CrmError> {
        Ok(EmbeddedCrm {
            trees: db.source(name)?,
        })
    }

    /// The record of the customer with this email address; case-insensitive,
    /// surrounding whitespace ignored.
    pub fn by_email(&self, email: &str) -> Result<Option<Record>, CrmError> {
        let key = normalize_email(email);
        match self.trees.record(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
        }
    }

    /// A domain-level match: the fields whose value is the same in every
    /// record of that domain (region, company tier, …), or `None` when the
    /// domain has no records or they share no field.
    ///
    /// `domain` is compared as [`super::domain_of`] reads it: case-insensitive,
    /// a trailing dot ignored. A full address is accepted too (its domain is
    /// used). A domain needs at least [`MIN_DOMAIN_RECORDS`] records: one
    /// record's fields are that person's, not the company's. The cost is one
    /// read per record of the domain, cut short as soon as nothing is shared.
    pub fn by_domain(&self, domain: &str) -> Result<Option<Record>, CrmError> {
        // Reuse domain_of so callers and the index agree on what a domain is.
        let Some(domain) = domain_of(&format!("_@{domain}")) else {
            return Ok(None);
        };
        let prefix = index_prefix(&domain);
        let mut common: Option<Record> = None;
        let mut records = 0usize;
        for email in self.trees.index_suffixes(&prefix) {
            let email = email?;
            let Some(bytes) = self.trees.record(&email)? else {
                // Index written, record not (a crash between the two).
                continue;
            };
            let record = decode(&email, &bytes)?;
            records += 1;
            let shared = match common {
                None => record,
                Some(mut shared) => {
                    shared.retain(|field, value| record.get(field) == Some(value));
                    shared
                }
            };
            if shared.is_empty() {
                return Ok(None);
            }
            common = Some(shared);
        }
        // One record is one person, not a company: "what the domain shares"
        // would be that customer's own claim and policy numbers, handed to
        // anyone else writing from the same domain.
        if records < MIN_DOMAIN_RECORDS {
            return Ok(None);
        }
        Ok(common)
    }

    /// Insert or replace the record of `email` (case-insensitive), keeping
    /// the domain index right. Refuses an address without a usable domain,
    /// since the record could never be matched by domain.
    pub fn upsert(&self, email: &str, record: &Record) -> Result<(), CrmError> {
        let (key, domain) = check_email(email).map_err(|reason| CrmError::InvalidEmail {
            email: email.to_owned(),
            reason,
        })?;
        let mut staged = Staged::default();
        staged.add(&key, &domain, record)?;
        self.apply(staged)
    }

    /// Number of records. Counted by iterating, so this is O(records):
    /// for reports and tests, not for the delivery path.
    pub fn len(&self) -> usize {
        self.trees.len()
    }

    /// Whether the source holds no record.
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }

    /// Write staged rows: the index batch first, then the records (see the
    /// module docs for why this order).
    pub(super) fn apply(&self, staged: Staged) -> Result<(), CrmError> {
        self.trees.apply(staged.batch)?;
        Ok(())
    }

    /// Make everything written so far durable.
    pub(super) fn flush(&self) -> Result<(), CrmError> {
        self.trees.flush()?;
        Ok(())
    }
}

/// Rows ready to be written by [`EmbeddedCrm::apply`]: one batch per
/// tree. Within a batch a later row for the same key replaces an earlier one.
#[derive(Default)]
pub(super) struct Staged {
    batch: RecordBatch,
    rows: usize,
}

impl Staged {
    /// Stage one record under an already checked key (see [`check_email`]).
    pub(super) fn add(&mut self, key: &str, domain: &str, record: &Record) -> Result<(), CrmError> {
        let bytes = serde_json::to_vec(record).map_err(|source| CrmError::Encode {
            email: key.to_owned(),
            source,
        })?;
        let mut index_key = index_prefix(domain);
        index_key.extend_from_slice(key.as_bytes());
        self.batch.index(index_key);
        self.batch.record(key.as_bytes(), bytes);
        self.rows += 1;
        Ok(())
    }

    /// Rows staged so far (a repeated key counts each time).
    pub(super) fn rows(&self) -> usize {
        self.rows
    }
}

/// Check an address for use as a key: exactly one `@`, a non-empty local
/// part, no whitespace or control characters inside, and a domain that
/// [`super::domain_of`] accepts. Returns the key (lower-cased) and the domain,
/// or the reason, worded for an import report.
pub(super) fn check_email(raw: &str) -> Result<(String, String), String> {
    let key = normalize_email(raw);
    if key.is_empty() {
        return Err("missing email".to_owned());
    }
    let invalid = || format!("invalid email {:?}", raw.trim());
    let well_formed = key.matches('@').count() == 1
        && !key.starts_with('@')
        && !key.chars().any(|c| c.is_whitespace() || c.is_control());
    if !well_formed {
        return Err(invalid());
    }
    let domain = domain_of(&key).ok_or_else(invalid)?;
    Ok((key, domain))
}

/// `domain 0x00`: the prefix of a domain's index entries.
fn index_prefix(domain: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(domain.len() + 64);
    prefix.extend_from_slice(domain.as_bytes());
    prefix.push(0);
    prefix
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Record, CrmError> {
    serde_json::from_slice(bytes).map_err(|source| CrmError::Corrupt {
        email: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crm() -> EmbeddedCrm {
        let db = CrmDb::temporary().unwrap();
        EmbeddedCrm::open(&db, "test").unwrap()
    }

    fn rec(fields: &[(&str, &str)]) -> Record {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn lookup_by_email_ignores_case_and_whitespace() {
        let crm = crm();
        crm.upsert("Ren.Storrie@Pinnilly.COM", &rec(&[("tier", "gold")]))
            .unwrap();
        let found = crm.by_email("  ren.storrie@pinnilly.com ").unwrap();
        assert_eq!(found, Some(rec(&[("tier", "gold")])));
        assert_eq!(crm.by_email("REN.STORRIE@PINNILLY.COM").unwrap(), found);
        assert_eq!(crm.by_email("other@pinnilly.com").unwrap(), None);
        assert_eq!(crm.len(), 1);
        assert!(!crm.is_empty());
    }

    #[test]
    fn domain_match_keeps_only_the_fields_every_record_shares() {
        let crm = crm();
        let a = rec(&[("region", "EMEA"), ("tier", "gold"), ("name", "A")]);
        let b = rec(&[("region", "EMEA"), ("tier", "gold"), ("name", "B")]);
        let c = rec(&[("region", "EMEA"), ("tier", "silver")]);
        crm.upsert("a@pinnilly.com", &a).unwrap();
        crm.upsert("b@pinnilly.com", &b).unwrap();
        // Other domains, one a prefix of it, must not take part.
        crm.upsert("x@pinnilly.co", &rec(&[("region", "NA")]))
            .unwrap();
        crm.upsert("y@sub.pinnilly.com", &rec(&[("region", "NA")]))
            .unwrap();
        let shared = rec(&[("region", "EMEA"), ("tier", "gold")]);
        assert_eq!(crm.by_domain("pinnilly.com").unwrap(), Some(shared.clone()));
        assert_eq!(crm.by_domain(" Pinnilly.COM. ").unwrap(), Some(shared));
        crm.upsert("c@pinnilly.com", &c).unwrap();
        assert_eq!(
            crm.by_domain("pinnilly.com").unwrap(),
            Some(rec(&[("region", "EMEA")]))
        );
        // A lone record is a person, not a domain: no match.
        assert_eq!(crm.by_domain("pinnilly.co").unwrap(), None);
    }

    #[test]
    fn domain_match_is_none_when_nothing_is_shared_or_the_domain_is_unknown() {
        let crm = crm();
        crm.upsert("a@contoso.com", &rec(&[("region", "NA"), ("tier", "gold")]))
            .unwrap();
        crm.upsert("b@contoso.com", &rec(&[("region", "EMEA")]))
            .unwrap();
        crm.upsert("c@contoso.com", &rec(&[("region", "NA"), ("tier", "gold")]))
            .unwrap();
        assert_eq!(crm.by_domain("contoso.com").unwrap(), None);
        assert_eq!(crm.by_domain("unknown.example").unwrap(), None);
        // A lone customer's record is not handed out as its domain's.
        crm.upsert(
            "solo@tailspin.example",
            &rec(&[("claimNumber", "C-1"), ("region", "NA")]),
        )
        .unwrap();
        assert_eq!(crm.by_domain("tailspin.example").unwrap(), None);
        assert_eq!(crm.by_domain("localhost").unwrap(), None);
        assert_eq!(crm.by_domain("").unwrap(), None);
    }

    #[test]
    fn upsert_replaces_the_record_and_the_domain_match_follows() {
        let crm = crm();
        crm.upsert("a@fabrikam.com", &rec(&[("region", "APAC")]))
            .unwrap();
        crm.upsert("b@fabrikam.com", &rec(&[("region", "APAC")]))
            .unwrap();
        assert_eq!(
            crm.by_domain("fabrikam.com").unwrap(),
            Some(rec(&[("region", "APAC")]))
        );
        crm.upsert("B@fabrikam.com", &rec(&[("region", "EMEA")]))
            .unwrap();
        assert_eq!(crm.len(), 2, "same key, case aside");
        assert_eq!(
            crm.by_email("b@fabrikam.com").unwrap(),
            Some(rec(&[("region", "EMEA")]))
        );
        assert_eq!(crm.by_domain("fabrikam.com").unwrap(), None);
        crm.upsert("b@fabrikam.com", &rec(&[("region", "APAC"), ("x", "1")]))
            .unwrap();
        assert_eq!(
            crm.by_domain("fabrikam.com").unwrap(),
            Some(rec(&[("region", "APAC")]))
        );
        assert_eq!(crm.trees.index_len(), 2, "one index entry per record");
    }

    #[test]
    fn upsert_refuses_an_address_that_cannot_be_a_key() {
        let crm = crm();
        for bad in ["", "bob", "@x.com", "a@b@x.com", "a@localhost", "a b@x.com"] {
            let err = crm.upsert(bad, &Record::new()).unwrap_err();
            assert!(matches!(err, CrmError::InvalidEmail { .. }), "{bad}: {err}");
        }
        assert!(crm.is_empty());
        assert_eq!(crm.trees.index_len(), 0);
    }

    #[test]
    fn an_index_entry_without_its_record_is_skipped() {
        let crm = crm();
        crm.upsert("a@x.com", &rec(&[("region", "NA")])).unwrap();
        crm.upsert("b@x.com", &rec(&[("region", "NA")])).unwrap();
        let mut orphan = index_prefix("x.com");
        orphan.extend_from_slice(b"gone@x.com");
        let mut batch = RecordBatch::default();
        batch.index(orphan);
        crm.trees.apply(batch).unwrap();
        assert_eq!(
            crm.by_domain("x.com").unwrap(),
            Some(rec(&[("region", "NA")]))
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_email() {
        let crm = crm();
        crm.trees.put_raw(b"a@x.com", b"not json").unwrap();
        let err = crm.by_email("a@x.com").unwrap_err().to_string();
        assert!(err.contains("\"a@x.com\" is corrupt"), "{err}");
    }

    #[test]
    fn sources_are_kept_apart() {
        let db = CrmDb::temporary().unwrap();
        let one = EmbeddedCrm::open(&db, "one").unwrap();
        let two = EmbeddedCrm::open(&db, "two").unwrap();
        one.upsert("a@x.com", &rec(&[("tier", "gold")])).unwrap();
        assert_eq!(two.by_email("a@x.com").unwrap(), None);
        assert_eq!(two.by_domain("x.com").unwrap(), None);
        let again = EmbeddedCrm::open(&db, "one").unwrap();
        assert_eq!(again.len(), 1);
    }
}
