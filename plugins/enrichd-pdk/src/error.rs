//! The crate's own error types: [`HostFailure`] (a host import failed) and
//! [`Failure`] (the plugin cannot do its work), mirrors of the WIT
//! `host-error` and `plugin-error` that plugin logic can build and match on
//! without the bindings.

use crate::bindings::delivery::enrichd::plugin::types::{HostError, PluginError};
use std::fmt;

/// Why a host import call failed (mirror of the WIT `host-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFailure {
    /// The capability (or the namespace) was not granted to this plugin.
    Denied(String),
    /// The backend could not answer (down, or out of time).
    Unavailable(String),
    /// The request was not acceptable (e.g. an empty key).
    Invalid(String),
    /// A host budget or quota of this plugin is used up.
    OverLimit(String),
}

impl HostFailure {
    /// `kind: reason`, for error messages (`unavailable: timeout`).
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for HostFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFailure::Denied(r) => write!(f, "denied: {r}"),
            HostFailure::Unavailable(r) => write!(f, "unavailable: {r}"),
            HostFailure::Invalid(r) => write!(f, "invalid: {r}"),
            HostFailure::OverLimit(r) => write!(f, "over limit: {r}"),
        }
    }
}

impl std::error::Error for HostFailure {}

impl From<HostError> for HostFailure {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Denied(r) => HostFailure::Denied(r),
            HostError::Unavailable(r) => HostFailure::Unavailable(r),
            HostError::Invalid(r) => HostFailure::Invalid(r),
            HostError::OverLimit(r) => HostFailure::OverLimit(r),
        }
    }
}

/// Why a plugin could not do its work (mirror of the WIT `plugin-error`).
/// The host skips the plugin's output and records the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The delivery cannot be handled, e.g. it has no sender address.
    InvalidDelivery(String),
    /// A host import failed, or the plugin's config is unusable.
    Dependency(String),
    /// A bug in the plugin.
    Internal(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::InvalidDelivery(m) => write!(f, "invalid delivery: {m}"),
            Failure::Dependency(m) => write!(f, "dependency: {m}"),
            Failure::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<Failure> for PluginError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::InvalidDelivery(m) => PluginError::InvalidDelivery(m),
            Failure::Dependency(m) => PluginError::Dependency(m),
            Failure::Internal(m) => PluginError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_failures_describe_kind_and_reason() {
        assert_eq!(HostFailure::Denied("no".into()).describe(), "denied: no");
        assert_eq!(
            HostFailure::Unavailable("down".into()).describe(),
            "unavailable: down"
        );
        assert_eq!(
            HostFailure::Invalid("bad".into()).describe(),
            "invalid: bad"
        );
        assert_eq!(
            HostFailure::OverLimit("quota".into()).describe(),
            "over limit: quota"
        );
    }

    #[test]
    fn conversions_keep_kind_and_text() {
        let f: HostFailure = HostError::OverLimit("kv bytes".into()).into();
        assert_eq!(f, HostFailure::OverLimit("kv bytes".into()));
        let e: PluginError = Failure::Dependency("crm down".into()).into();
        assert_eq!(e, PluginError::Dependency("crm down".into()));
    }
}
