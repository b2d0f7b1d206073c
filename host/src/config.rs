//! The host configuration: a TOML file read into [`RawConfig`] (serde, unknown
//! keys refused) and validated into a [`Config`] with every default applied,
//! every path made absolute and every secret resolved.
//!
//! Validation does no I/O of its own: the file's directory and an environment
//! lookup are passed in, so every rule is unit-testable. Reading the file is
//! [`Config::load`]'s only job.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Secret;

/// Default public listener: loopback, so a fresh install exposes nothing
/// until an operator chooses an address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default body limit. A delivery is a few KiB; `bodyText` of a long mail
/// thread can reach hundreds of KiB; 1 MiB leaves room without letting a
/// client make the host buffer arbitrary amounts.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Upper bound for `max_body_bytes`: beyond this a misconfiguration (an
/// extra zero) would let one request hold a large buffer per connection.
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default wall-clock limit for one plugin call. Plugins do small in-memory
/// work plus host calls; 10 s is generous and still leaves room in the
/// delivery budget for the rest of the chain.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default data directory, relative to the config file.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What TOML said, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Public listener address.
    pub listen: Option<String>,
    /// Data directory (sled), relative to the config file.
    pub data_dir: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: Option<usize>,
    /// CRM data.
    #[serde(default)]
    pub crm: RawCrm,
    /// Plugins, each compiled once at start.
    #[serde(default)]
    pub plugin: Vec<RawPlugin>,
    /// Emailgistics webhook routes.
    #[serde(default)]
    pub route: Vec<RawRoute>,
}

/// `[crm]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrm {
    /// A JSON-lines file of customer records upserted into the embedded
    /// store at start, relative to the config file.
    pub seed: Option<PathBuf>,
}

/// `[[plugin]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// Unique name, used by routes and in logs.
    pub name: String,
    /// The component (`.wasm`), relative to the config file.
    pub path: PathBuf,
    /// Host imports this plugin may use: `log`, `config`, `crm`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Values the plugin reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Wall-clock limit per call, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Request path, e.g. `/emailgistics-webhook`.
    pub path: String,
    /// Accepted bearer secrets (several during a rotation). None: no check.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    /// Plugins to run, in order.
    #[serde(default)]
    pub chain: Vec<RawChainEntry>,
}

/// A secret, either written in the file or read from the environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// The secret itself.
    pub value: Option<String>,
    /// The name of an environment variable holding it.
    pub env: Option<String>,
}

/// One entry of a route's chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChainEntry {
    /// A `[[plugin]]` name.
    pub plugin: String,
    /// Run only for deliveries to these mailboxes (case-insensitive).
    pub mailboxes: Option<Vec<String>>,
}

/// A host import a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `log`
    Log,
    /// `config`
    Config,
    /// `crm`
    Crm,
}

impl Capability {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "log" => Some(Self::Log),
            "config" => Some(Self::Config),
            "crm" => Some(Self::Crm),
            _ => None,
        }
    }
}

/// The capabilities granted to one plugin; everything else is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(HashSet<Capability>);

impl Grants {
    /// Grants from a list.
    pub fn new(caps: impl IntoIterator<Item = Capability>) -> Self {
        Grants(caps.into_iter().collect())
    }
    /// Whether `cap` was granted.
    pub fn allows(&self, cap: Capability) -> bool {
        self.0.contains(&cap)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// CRM seed file.
    pub crm_seed: Option<PathBuf>,
    /// Plugins, in file order.
    pub plugins: Vec<PluginSpec>,
    /// Routes, in file order.
    pub routes: Vec<RouteSpec>,
}

/// A validated `[[plugin]]`.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Unique name.
    pub name: String,
    /// Absolute path of the component.
    pub path: PathBuf,
    /// Granted capabilities.
    pub grants: Grants,
    /// Values for the `config` import.
    pub config: Arc<BTreeMap<String, String>>,
    /// Wall-clock limit per call.
    pub timeout: Duration,
}

/// A validated `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Request path.
    pub path: String,
    /// Accepted secrets (empty: no check).
    pub secrets: Vec<Secret>,
    /// Chain, in order.
    pub chain: Vec<ChainEntrySpec>,
}

/// A validated chain entry.
#[derive(Debug, Clone)]
pub struct ChainEntrySpec {
    /// Index into [`Config::plugins`].
    pub plugin: usize,
    /// Lower-cased mailbox filter; `None` runs for every mailbox.
    pub mailboxes: Option<Vec<String>>,
}

impl Config {
    /// Read and validate a config file, resolving secrets from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        raw.resolve(&base, &|name| std::env::var(name).ok())
    }
}

impl RawConfig {
    /// Validate into a [`Config`]. Relative paths are taken from `base`;
    /// `env` looks up environment variables named by secrets.
    pub fn resolve(
        self,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| invalid(format!("listen = {listen:?}: {e}")))?;
        let max_body_bytes = self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
            return Err(invalid(format!(
                "max_body_bytes = {max_body_bytes}: must be between 1 and {MAX_MAX_BODY_BYTES}"
            )));
        }
        let data_dir = base.join(self.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));

        let mut plugins = Vec::with_capacity(self.plugin.len());
        for p in self.plugin {
            if p.name.trim().is_empty() {
                return Err(invalid("a [[plugin]] has an empty name"));
            }
            if plugins.iter().any(|q: &PluginSpec| q.name == p.name) {
                return Err(invalid(format!("plugin {:?} is defined twice", p.name)));
            }
            let mut caps = Vec::new();
            for c in &p.capabilities {
                caps.push(Capability::parse(c).ok_or_else(|| {
                    invalid(format!(
                        "plugin {:?}: unknown capability {c:?} (known: log, config, crm)",
                        p.name
                    ))
                })?);
            }
            let timeout = match p.timeout_ms {
                Some(0) => {
                    return Err(invalid(format!(
                        "plugin {:?}: timeout_ms must be > 0",
                        p.name
                    )))
                }
                Some(ms) => Duration::from_millis(ms),
                None => DEFAULT_PLUGIN_TIMEOUT,
            };
            plugins.push(PluginSpec {
                path: base.join(&p.path),
                name: p.name,
                grants: Grants::new(caps),
                config: Arc::new(p.config),
                timeout,
            });
        }

        let mut routes: Vec<RouteSpec> = Vec::with_capacity(self.route.len());
        for r in self.route {
            if !r.path.starts_with('/') {
                return Err(invalid(format!(
                    "route path {:?} must start with '/'",
                    r.path
                )));
            }
            if r.path == crate::server::HEALTHZ_PATH || routes.iter().any(|q| q.path == r.path) {
                return Err(invalid(format!("route path {:?} is used twice", r.path)));
            }
            let mut secrets = Vec::with_capacity(r.secrets.len());
            for (i, s) in r.secrets.iter().enumerate() {
                let value = match (&s.value, &s.env) {
                    (Some(v), None) => v.clone(),
                    (None, Some(var)) => env(var).ok_or_else(|| {
                        invalid(format!(
                            "route {:?}: secret {i} reads environment variable {var:?}, which is not set",
                            r.path
                        ))
                    })?,
                    _ => {
                        return Err(invalid(format!(
                            "route {:?}: secret {i} needs exactly one of `value` or `env`",
                            r.path
                        )))
                    }
                };
                if value.is_empty() {
                    return Err(invalid(format!("route {:?}: secret {i} is empty", r.path)));
                }
                secrets.push(Secret::new(&value));
            }
            let mut chain = Vec::with_capacity(r.chain.len());
            for e in r.chain {
                let plugin = plugins
                    .iter()
                    .position(|p| p.name == e.plugin)
                    .ok_or_else(|| {
                        invalid(format!(
                            "route {:?}: chain names plugin {:?}, which no [[plugin]] defines",
                            r.path, e.plugin
                        ))
                    })?;
                let mailboxes = e
                    .mailboxes
                    .map(|m| m.iter().map(|s| s.trim().to_lowercase()).collect());
                chain.push(ChainEntrySpec { plugin, mailboxes });
            }
            routes.push(RouteSpec {
                path: r.path,
                secrets,
                chain,
            });
        }
        if routes.is_empty() {
            return Err(invalid(
                "no [[route]] is defined: enrichd would serve nothing",
            ));
        }

        Ok(Config {
            listen,
            data_dir,
            max_body_bytes,
            crm_seed: self.crm.seed.map(|p| base.join(p)),
            plugins,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        raw.resolve(Path::new("/etc/enrichd"), &|name| {
            (name == "HOOK_SECRET").then(|| "from-env-0123456789".to_owned())
        })
    }

    const MINIMAL: &str = r#"
        [[plugin]]
        name = "a"
        path = "a.wasm"
        capabilities = ["crm", "log"]
        [[route]]
        path = "/hook"
        chain = [{ plugin = "a" }]
    "#;

    #[test]
    fn defaults_apply_and_paths_are_taken_from_the_config_dir() {
        let c = resolve(MINIMAL).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.data_dir, Path::new("/etc/enrichd/data"));
        assert_eq!(c.plugins[0].path, Path::new("/etc/enrichd/a.wasm"));
        assert_eq!(c.plugins[0].timeout, DEFAULT_PLUGIN_TIMEOUT);
        assert!(c.plugins[0].grants.allows(Capability::Crm));
        assert!(!c.plugins[0].grants.allows(Capability::Config));
        assert!(c.routes[0].secrets.is_empty());
    }

    #[test]
    fn secrets_come_from_the_file_or_the_environment() {
        let c = resolve(&format!(
            "{MINIMAL}\nsecrets = [{{ value = \"literal-secret-123\" }}, {{ env = \"HOOK_SECRET\" }}]"
        ))
        .unwrap();
        assert_eq!(c.routes[0].secrets.len(), 2);
        let err = resolve(&format!("{MINIMAL}\nsecrets = [{{ env = \"NOPE\" }}]")).unwrap_err();
        assert!(
            err.to_string().contains("\"NOPE\", which is not set"),
            "{err}"
        );
        let err = resolve(&format!(
            "{MINIMAL}\nsecrets = [{{ env = \"HOOK_SECRET\", value = \"x\" }}]"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn inconsistent_configs_are_refused_with_a_reason() {
        let cases = [
            ("listen = \"nowhere\"\n", "listen"),
            ("max_body_bytes = 0\n", "max_body_bytes"),
            ("bogus_key = 1\n", "unknown field"),
        ];
        for (prefix, needle) in cases {
            let err = resolve(&format!("{prefix}{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{prefix}: {err}");
        }
        let err = resolve(&MINIMAL.replace("\"crm\"", "\"network\"")).unwrap_err();
        assert!(
            err.to_string().contains("unknown capability \"network\""),
            "{err}"
        );
        let err = resolve(&MINIMAL.replace("plugin = \"a\"", "plugin = \"b\"")).unwrap_err();
        assert!(err.to_string().contains("no [[plugin]] defines"), "{err}");
        let err = resolve(&MINIMAL.replace("/hook", "hook")).unwrap_err();
        assert!(err.to_string().contains("must start with '/'"), "{err}");
        let twice = format!("{MINIMAL}\n[[plugin]]\nname = \"a\"\npath = \"x.wasm\"\n");
        assert!(resolve(&twice)
            .unwrap_err()
            .to_string()
            .contains("defined twice"));
        let no_route = "[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n";
        assert!(resolve(no_route)
            .unwrap_err()
            .to_string()
            .contains("no [[route]]"));
    }

    #[test]
    fn mailbox_filters_are_lower_cased() {
        let c = resolve(&MINIMAL.replace(
            "{ plugin = \"a\" }",
            "{ plugin = \"a\", mailboxes = [\" Claims@Example.com \"] }",
        ))
        .unwrap();
        assert_eq!(
            c.routes[0].chain[0].mailboxes.as_deref(),
            Some(&["claims@example.com".to_owned()][..])
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let c = Config::load(&dir.join("enrichd.toml")).unwrap();
        assert!(!c.routes.is_empty() && !c.plugins.is_empty());
        assert!(c.crm_seed.unwrap().ends_with("crm-sample.jsonl"));
    }
}
