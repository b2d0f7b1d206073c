//! The [`Host`] trait: everything a plugin can ask of enrichd (`log`,
//! `config`, `crm`, `kv`), so that plugin logic written against it runs on
//! the real imports in wasm ([`Imports`]) and on
//! [`FakeHost`](crate::testing::FakeHost) in a plain `cargo test`.
//!
//! [`Config`] reads typed settings on top of it.

use crate::bindings::delivery::enrichd::plugin::{config, crm, kv, log};
use crate::{CrmAnswer, Failure, HostFailure, Level};
use std::fmt::Display;
use std::str::FromStr;

/// The host's imports. Every call can fail with a [`HostFailure`] (never a
/// trap): `Denied` when the capability was not granted in the host config.
pub trait Host {
    /// Writes one log line (capability `log`).
    fn log(&self, level: Level, message: &str) -> Result<(), HostFailure>;
    /// The config value of `key`, `None` when unset (capability `config`).
    fn config_get(&self, key: &str) -> Result<Option<String>, HostFailure>;
    /// Every config key and value, sorted by key.
    fn config_get_all(&self) -> Result<Vec<(String, String)>, HostFailure>;
    /// The CRM record of an email address, with its provenance: `Fresh`,
    /// `Stale` (with `age_ms`), or `Domain` when only the address's domain
    /// has a record (capability `crm`).
    fn crm_lookup_email(&self, email: &str) -> Result<Option<CrmAnswer>, HostFailure>;
    /// The CRM record of a domain (`pinnilly.com`).
    fn crm_lookup_domain(&self, domain: &str) -> Result<Option<CrmAnswer>, HostFailure>;
    /// The value of `key` in this plugin's kv namespace (capability `kv`).
    fn kv_get(&self, key: &str) -> Result<Option<String>, HostFailure>;
    /// Sets `key` (≤ 256 bytes) to `value` (≤ 64 KiB) in this plugin's namespace.
    fn kv_set(&self, key: &str, value: &str) -> Result<(), HostFailure>;
    /// Removes `key` from this plugin's namespace.
    fn kv_delete(&self, key: &str) -> Result<(), HostFailure>;
    /// The value of `key` in another plugin's namespace (needs a grant).
    fn kv_get_from(&self, namespace: &str, key: &str) -> Result<Option<String>, HostFailure>;

    /// A debug line, best effort: a denied `log` capability is fine.
    fn debug(&self, message: &str) {
        let _ = self.log(Level::Debug, message);
    }
    /// A warning line, best effort.
    fn warn(&self, message: &str) {
        let _ = self.log(Level::Warn, message);
    }
}

/// The real host: the component's imports. Only usable inside wasm; on
/// another target every call panics (use
/// [`FakeHost`](crate::testing::FakeHost) in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Imports;

impl Host for Imports {
    fn log(&self, level: Level, message: &str) -> Result<(), HostFailure> {
        Ok(log::log(level, message)?)
    }
    fn config_get(&self, key: &str) -> Result<Option<String>, HostFailure> {
        Ok(config::get(key)?)
    }
    fn config_get_all(&self) -> Result<Vec<(String, String)>, HostFailure> {
        Ok(config::get_all()?)
    }
    fn crm_lookup_email(&self, email: &str) -> Result<Option<CrmAnswer>, HostFailure> {
        Ok(crm::lookup_email(email)?)
    }
    fn crm_lookup_domain(&self, domain: &str) -> Result<Option<CrmAnswer>, HostFailure> {
        Ok(crm::lookup_domain(domain)?)
    }
    fn kv_get(&self, key: &str) -> Result<Option<String>, HostFailure> {
        Ok(kv::get(key)?)
    }
    fn kv_set(&self, key: &str, value: &str) -> Result<(), HostFailure> {
        Ok(kv::set(key, value)?)
    }
    fn kv_delete(&self, key: &str) -> Result<(), HostFailure> {
        Ok(kv::delete(key)?)
    }
    fn kv_get_from(&self, namespace: &str, key: &str) -> Result<Option<String>, HostFailure> {
        Ok(kv::get_from(namespace, key)?)
    }
}

/// Typed reading of the plugin's `[plugin.config]` table.
///
/// Optional keys: unset means the default, and so does a denied `config`
/// capability (the operator gave none). Any other host failure, an empty
/// value or one that does not parse is a [`Failure::Dependency`] whose text
/// starts with `<plugin> config: `.
#[derive(Debug, Clone, Copy)]
pub struct Config<'h, H: ?Sized> {
    host: &'h H,
    plugin: &'h str,
}

impl<'h, H: Host + ?Sized> Config<'h, H> {
    /// Reads through `host`; `plugin` names the plugin in error texts.
    pub fn new(host: &'h H, plugin: &'h str) -> Self {
        Config { host, plugin }
    }

    /// A [`Failure::Dependency`] `<plugin> config: <problem>`.
    pub fn error(&self, problem: impl Display) -> Failure {
        Failure::Dependency(format!("{} config: {problem}", self.plugin))
    }

    /// The raw value of an optional key; `None` when unset or denied.
    pub fn get(&self, key: &str) -> Result<Option<String>, Failure> {
        match self.host.config_get(key) {
            Ok(value) => Ok(value),
            Err(HostFailure::Denied(_)) => Ok(None),
            Err(e) => Err(self.error(format_args!("cannot read `{key}`: {e}"))),
        }
    }

    /// The value of a required key: unset, or any host failure (denied
    /// included), is an error.
    pub fn require(&self, key: &str) -> Result<String, Failure> {
        match self.host.config_get(key) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self.error(format_args!("missing required key `{key}`"))),
            Err(e) => Err(self.error(format_args!("cannot read `{key}`: {e}"))),
        }
    }

    /// The trimmed value of `key` parsed as `T`, or `default` when unset.
    /// A blank value is an error (`` `key` is empty ``), as is one that does
    /// not parse.
    pub fn get_or<T>(&self, key: &str, default: T) -> Result<T, Failure>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(value) = self.get(key)? else {
            return Ok(default);
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(self.error(format_args!("`{key}` is empty")));
        }
        value
            .parse()
            .map_err(|e| self.error(format_args!("`{key}` cannot be `{value}`: {e}")))
    }

    /// A comma-separated list ([`split_list`]); `default` is parsed the same
    /// way when the key is unset. A blank value is the empty list.
    pub fn list(&self, key: &str, default: &str) -> Result<Vec<String>, Failure> {
        Ok(split_list(self.get(key)?.as_deref().unwrap_or(default)))
    }
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

impl CrmAnswer {
    /// The value of `key` in the record (first occurrence, exact key).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn split_list_trims_and_drops_empty() {
        assert_eq!(split_list(" a, b ,,c ,"), vec!["a", "b", "c"]);
        assert!(split_list("  ").is_empty());
    }

    #[test]
    fn config_reads_typed_values_with_defaults() {
        let host = FakeHost::new()
            .config("n", " 7 ")
            .config("tiers", "Gold, vip,")
            .config("blank", " ");
        let c = Config::new(&host, "p");
        assert_eq!(c.get_or("n", 1u32), Ok(7));
        assert_eq!(c.get_or("unset", 1u32), Ok(1));
        assert_eq!(c.list("tiers", "x"), Ok(vec!["Gold".into(), "vip".into()]));
        assert_eq!(c.list("unset", "a,b"), Ok(vec!["a".into(), "b".into()]));
        assert!(c.list("blank", "a").unwrap().is_empty());
        assert_eq!(
            c.get_or("blank", String::new()),
            Err(Failure::Dependency("p config: `blank` is empty".into()))
        );
        let bad = c.get_or("tiers", 0u32).unwrap_err();
        assert!(
            matches!(bad, Failure::Dependency(m) if m.starts_with("p config: `tiers` cannot be `Gold, vip,`"))
        );
        assert_eq!(
            c.require("unset"),
            Err(Failure::Dependency(
                "p config: missing required key `unset`".into()
            ))
        );
    }

    #[test]
    fn denied_config_means_defaults_but_other_failures_are_errors() {
        let denied = FakeHost::new()
            .config("n", "7")
            .fail("config", HostFailure::Denied("not granted".into()));
        let c = Config::new(&denied, "p");
        assert_eq!(c.get_or("n", 1u32), Ok(1));
        assert_eq!(
            c.require("n"),
            Err(Failure::Dependency(
                "p config: cannot read `n`: denied: not granted".into()
            ))
        );
        let down = FakeHost::new().fail("config.get", HostFailure::Unavailable("down".into()));
        assert_eq!(
            Config::new(&down, "p").get_or("n", 1u32),
            Err(Failure::Dependency(
                "p config: cannot read `n`: unavailable: down".into()
            ))
        );
    }
}
