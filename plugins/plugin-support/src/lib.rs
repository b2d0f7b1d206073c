//! # enrichd-plugin-support
//!
//! Plain-Rust helpers shared by the first-party enrichd plugins in
//! `plugins/`. The crate has no dependencies and never sees the generated
//! WIT bindings, so it builds for `wasm32-wasip2` and is unit-tested on the
//! host target.
//!
//! - [`HostFailure`] and [`Failure`] mirror the WIT `host-error` and
//!   `plugin-error`, so that a plugin's decisions can be written (and
//!   tested) without the bindings;
//! - [`host_failure_from!`] and [`plugin_error_from!`] write the
//!   conversions from and to a plugin's own generated types (every plugin's
//!   `wit_bindgen::generate!` makes its own `HostError` and `PluginError`);
//! - [`read_config`] reads optional config keys the way the delivery plugins
//!   do (unset keys keep their default, a denied `config` means defaults);
//! - [`split_list`] and [`candidate_emails`] parse config lists and pick
//!   the addresses to look a delivery's sender up by.

/// Why a host import call failed (mirror of the WIT `host-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFailure {
    /// The capability (or the namespace) was not granted to this plugin.
    Denied(String),
    /// The backend could not answer.
    Unavailable(String),
    /// The request was not acceptable.
    Invalid(String),
    /// A host budget or quota of this plugin is used up (WIT 0.2.0).
    OverLimit(String),
}

impl HostFailure {
    /// `kind: reason`, for error messages.
    pub fn describe(&self) -> String {
        match self {
            HostFailure::Denied(r) => format!("denied: {r}"),
            HostFailure::Unavailable(r) => format!("unavailable: {r}"),
            HostFailure::Invalid(r) => format!("invalid: {r}"),
            HostFailure::OverLimit(r) => format!("over limit: {r}"),
        }
    }
}

/// Why a plugin could not do its work (mirror of the WIT `plugin-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The delivery cannot be handled, e.g. it has no sender address.
    InvalidDelivery(String),
    /// A host import failed, or the plugin's config is unusable.
    Dependency(String),
    /// A bug in the plugin.
    Internal(String),
}

/// Implements `From<HostError> for` [`HostFailure`], where `HostError` is
/// the plugin's generated binding of the WIT `host-error`, named by a path:
/// `enrichd_plugin_support::host_failure_from!(HostError);` next to the
/// plugin's `wit_bindgen::generate!`.
#[macro_export]
macro_rules! host_failure_from {
    ($($host_error:ident)::+) => {
        impl ::core::convert::From<$($host_error)::+> for $crate::HostFailure {
            fn from(e: $($host_error)::+) -> Self {
                match e {
                    $($host_error)::+::Denied(r) => $crate::HostFailure::Denied(r),
                    $($host_error)::+::Unavailable(r) => $crate::HostFailure::Unavailable(r),
                    $($host_error)::+::Invalid(r) => $crate::HostFailure::Invalid(r),
                    $($host_error)::+::OverLimit(r) => $crate::HostFailure::OverLimit(r),
                }
            }
        }
    };
}

/// Implements `From<`[`Failure`]`> for PluginError`, where `PluginError` is
/// the plugin's generated binding of the WIT `plugin-error`, named by a path:
/// `enrichd_plugin_support::plugin_error_from!(PluginError);`.
#[macro_export]
macro_rules! plugin_error_from {
    ($($plugin_error:ident)::+) => {
        impl ::core::convert::From<$crate::Failure> for $($plugin_error)::+ {
            fn from(f: $crate::Failure) -> Self {
                match f {
                    $crate::Failure::InvalidDelivery(m) => $($plugin_error)::+::InvalidDelivery(m),
                    $crate::Failure::Dependency(m) => $($plugin_error)::+::Dependency(m),
                    $crate::Failure::Internal(m) => $($plugin_error)::+::Internal(m),
                }
            }
        }
    };
}

/// Reads the optional config `keys`, in order, through `get` (the
/// `config::get` import) into settings that start as `S::default()`.
///
/// Each set value is passed, untrimmed, to `apply` with its key; unset keys
/// keep their default. A denied `config` capability means all defaults
/// (whatever was applied before). Any other failure is a
/// [`Failure::Dependency`] with the text
/// ``<plugin> config: cannot read `<key>`: <kind>: <reason>``; an error from
/// `apply` is returned as it is. Either stops the reading.
pub fn read_config<S: Default>(
    plugin: &str,
    keys: &[&str],
    mut get: impl FnMut(&str) -> Result<Option<String>, HostFailure>,
    mut apply: impl FnMut(&mut S, &str, String) -> Result<(), Failure>,
) -> Result<S, Failure> {
    let mut settings = S::default();
    for &key in keys {
        match get(key) {
            Ok(Some(value)) => apply(&mut settings, key, value)?,
            Ok(None) => {}
            Err(HostFailure::Denied(_)) => return Ok(S::default()),
            Err(e) => {
                return Err(Failure::Dependency(format!(
                    "{plugin} config: cannot read `{key}`: {}",
                    e.describe()
                )))
            }
        }
    }
    Ok(settings)
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The addresses to look a delivery's sender up by, in order, trimmed:
/// `from`, then `sender` when it differs (ASCII case-insensitively).
/// Empty addresses are skipped.
pub fn candidate_emails(from: &str, sender: &str) -> Vec<String> {
    let mut out = Vec::new();
    let from = from.trim();
    let sender = sender.trim();
    if !from.is_empty() {
        out.push(from.to_string());
    }
    if !sender.is_empty() && !sender.eq_ignore_ascii_case(from) {
        out.push(sender.to_string());
    }
    out
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
    }

    #[test]
    fn split_list_trims_and_drops_empty() {
        assert_eq!(split_list(" a, b ,,c ,"), vec!["a", "b", "c"]);
        assert!(split_list("  ").is_empty());
    }

    #[test]
    fn candidates() {
        assert_eq!(candidate_emails("a@x.com", "a@x.com"), vec!["a@x.com"]);
        assert_eq!(candidate_emails("a@x.com", "A@X.com"), vec!["a@x.com"]);
        assert_eq!(
            candidate_emails("a@x.com", "b@x.com"),
            vec!["a@x.com", "b@x.com"]
        );
        assert_eq!(candidate_emails("", "b@x.com"), vec!["b@x.com"]);
        assert!(candidate_emails(" ", "").is_empty());
    }

    /// Applies `key=value` pairs to a list, rejecting the value `bad`.
    fn apply(seen: &mut Vec<String>, key: &str, value: String) -> Result<(), Failure> {
        if value == "bad" {
            return Err(Failure::Dependency(format!("`{key}` is bad")));
        }
        seen.push(format!("{key}={value}"));
        Ok(())
    }

    #[test]
    fn read_config_applies_set_keys_in_order() {
        let got = read_config(
            "p",
            &["a", "b", "c"],
            |k| Ok((k != "b").then(|| format!(" {k} "))),
            apply,
        );
        assert_eq!(got, Ok(vec!["a= a ".to_string(), "c= c ".to_string()]));
    }

    #[test]
    fn read_config_denied_means_defaults() {
        let got = read_config(
            "p",
            &["a", "b"],
            |k| match k {
                "a" => Ok(Some("1".to_string())),
                _ => Err(HostFailure::Denied("no config".into())),
            },
            apply,
        );
        assert_eq!(got, Ok(Vec::new()));
    }

    #[test]
    fn read_config_failures_stop_the_reading() {
        let mut asked = Vec::new();
        let got = read_config::<Vec<String>>(
            "p",
            &["a", "b"],
            |k| {
                asked.push(k.to_string());
                Err(HostFailure::Unavailable("down".into()))
            },
            apply,
        );
        assert_eq!(
            got,
            Err(Failure::Dependency(
                "p config: cannot read `a`: unavailable: down".into()
            ))
        );
        assert_eq!(asked, vec!["a"]);

        let got = read_config(
            "p",
            &["a", "b"],
            |k| Ok(Some(if k == "a" { "bad" } else { "x" }.to_string())),
            apply,
        );
        assert_eq!(got, Err(Failure::Dependency("`a` is bad".into())));
    }
}
