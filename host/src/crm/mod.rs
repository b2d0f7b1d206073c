//! CRM data for plugins, behind the `crm` import.
//!
//! A CRM *source* is a backend ([`embedded`]: a local store, loaded by
//! `enrichd crm import`; [`http`]: a REST CRM) with a cache in front
//! ([`cache`]): moka for fresh answers, the storage for last-known values, and a
//! fallback order that keeps the delivery's deadline: fresh cache → backend
//! (bounded by min(backend timeout, what is left of the budget)) →
//! last-known value → domain-level match → nothing. Plugins learn which one
//! answered (its provenance) and decide what to do with it.

pub mod cache;
pub mod embedded;
pub mod http;
pub mod import;

use std::collections::BTreeMap;
use std::sync::Arc;

// The longest address and domain a lookup accepts: a guest must not push
// arbitrary strings to the backend.
pub use crate::text::{MAX_ADDRESS_BYTES, MAX_DOMAIN_BYTES};

/// A CRM record: field name → value (claimNumber, policyNumber, region, tier…).
pub type Record = BTreeMap<String, String>;

/// Why a backend could not answer. Every case leads to the fallbacks; none
/// reaches the plugin as an error unless no fallback answers either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No answer within the time allowed.
    #[error("CRM backend timed out after {0} ms")]
    Timeout(u64),
    /// Down, refusing, or answering 5xx.
    #[error("CRM backend unavailable: {0}")]
    Unavailable(String),
    /// It answered, but not something a record can be read from.
    #[error("CRM backend answered something unusable: {0}")]
    Invalid(String),
}

/// A CRM backend.
pub enum Backend {
    /// The embedded store.
    Embedded(embedded::EmbeddedCrm),
    /// A REST CRM (boxed: its client is large beside the embedded handle).
    Http(Box<http::HttpCrm>),
}

impl Backend {
    /// The record of the customer with this email address.
    pub async fn by_email(&self, email: &str) -> Result<Option<Record>, BackendError> {
        match self {
            Backend::Embedded(crm) => crm
                .by_email(email)
                .map_err(|e| BackendError::Unavailable(e.to_string())),
            Backend::Http(crm) => crm.by_email(email).await,
        }
    }

    /// The record for a whole domain (a company-level match).
    pub async fn by_domain(&self, domain: &str) -> Result<Option<Record>, BackendError> {
        match self {
            Backend::Embedded(crm) => crm
                .by_domain(domain)
                .map_err(|e| BackendError::Unavailable(e.to_string())),
            Backend::Http(crm) => crm.by_domain(domain).await,
        }
    }

    /// A short name of the backend kind, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "embedded",
            Backend::Http(_) => "http",
        }
    }
}

/// The domain part of an email address, lower-cased; `None` when there is
/// no usable domain.
pub fn domain_of(email: &str) -> Option<String> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    (!domain.is_empty() && domain.contains('.')).then_some(domain)
}

/// "a string", "an object", …: what a JSON value is, for error messages
/// about CRM answers and import rows.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Email keys are compared case-insensitively.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Per CRM source: its backend kind and counters (for `GET /stats` and the
/// counters log line).
pub fn stats(sources: &[Arc<cache::CrmSource>]) -> serde_json::Value {
    sources
        .iter()
        .map(|s| {
            let mut v = s.stats().snapshot();
            v["backend"] = serde_json::json!(s.backend().kind());
            (s.name().to_owned(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lower_cased_and_must_look_like_domains() {
        assert_eq!(domain_of("A@Example.COM").as_deref(), Some("example.com"));
        assert_eq!(
            domain_of("a@b@corp.example.").as_deref(),
            Some("corp.example")
        );
        assert_eq!(domain_of("nobody"), None);
        assert_eq!(domain_of("x@localhost"), None);
    }
}
