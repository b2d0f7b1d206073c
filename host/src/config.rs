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
use crate::crm::cache::{CacheSettings, DEFAULT_MAX_CAPACITY, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL};
use crate::crm::http::HttpSettings;
use crate::engagelab::queue::DEFAULT_DEDUPE_WINDOW;
use crate::engagelab::verify::{AppKey, DEFAULT_REPLAY_WINDOW};
use crate::store::{FlushPolicy, StoreSettings, DEFAULT_MAX_RECORDS, DEFAULT_RETENTION};

/// Default admin listener (delivery log, stats): loopback only, so the
/// delivery records are not exposed beside the public webhook.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// sled's background flush interval with `flush = "periodic"`: the most a
/// crash can lose of answered deliveries under that policy.
pub const DEFAULT_FLUSH_EVERY_MS: u64 = 500;
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
/// The whole time enrichd allows itself per delivery, from the moment the
/// request arrives. Emailgistics gives up after 100 s; answering by 90 s
/// leaves room for the network and a TLS terminator in front of enrichd.
pub const DEFAULT_DELIVERY_BUDGET: Duration = Duration::from_secs(90);
/// Emailgistics' own timeout: a budget at or above it would let enrichd
/// answer after the sender stopped listening, so it is refused.
pub const SENDER_TIMEOUT: Duration = Duration::from_secs(100);
/// Linear memory one plugin instance may grow to. Enrichment plugins need a
/// few MiB; 64 MiB stops a memory bomb long before it hurts the host.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Upper bound for `max_memory_bytes`: the pooling allocator reserves this
/// much address space per slot, and 4 GiB is all a 32-bit wasm memory has.
pub const MAX_MAX_MEMORY_BYTES: usize = 4 * 1024 * 1024 * 1024;
/// Elements per table of one plugin instance. Function tables of real
/// guests hold a few thousand entries; 100 000 costs the host under 1 MiB.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 100_000;
/// Core instances, tables and memories per plugin instance (each counted
/// separately). A Rust component has a handful; componentize-py guests need
/// more than 8; 32 leaves room without letting a component multiply.
pub const DEFAULT_MAX_INSTANCES: usize = 32;
/// Actions one plugin may return. A real enrichment returns a handful;
/// Emailgistics applies them one by one, so hundreds would be a bug or an
/// attack, and the plugin's whole output is refused.
pub const DEFAULT_MAX_ACTIONS: usize = 100;
/// Bytes of actions (as JSON) one plugin may return. Leaves room for a
/// sendMessage with an inline image or two (base64), refuses floods.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

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
    /// Admin listener address, or `off`.
    pub admin_listen: Option<String>,
    /// Data directory (sled), relative to the config file.
    pub data_dir: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: Option<usize>,
    /// Time allowed per delivery, from arrival, in milliseconds.
    pub delivery_budget_ms: Option<u64>,
    /// Instance allocator: `auto` (pooling if the machine allows it),
    /// `pooling` or `on-demand`.
    pub allocator: Option<Allocator>,
    /// Where precompiled components are kept, relative to the config file
    /// (default: `component-cache` in the data directory).
    pub cache_dir: Option<PathBuf>,
    /// Idempotency and the delivery log.
    #[serde(default)]
    pub idempotency: RawIdempotency,
    /// CRM sources, in order.
    #[serde(default)]
    pub crm: Vec<RawCrmSource>,
    /// Plugins, each compiled once at start.
    #[serde(default)]
    pub plugin: Vec<RawPlugin>,
    /// Emailgistics webhook routes.
    #[serde(default)]
    pub route: Vec<RawRoute>,
    /// EngageLab callback routes.
    #[serde(default)]
    pub engagelab: Vec<RawEventRoute>,
    /// How EngageLab callbacks are queued and retried.
    #[serde(default)]
    pub events: RawEvents,
}

/// `[[engagelab]]`: one EngageLab callback URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventRoute {
    /// Request path, e.g. `/engagelab-webhook`.
    pub path: String,
    /// The app keys signatures are checked with (several during a rotation).
    pub app_keys: Vec<RawSecret>,
    /// How far a callback's timestamp may be from now, seconds.
    pub replay_window_secs: Option<u64>,
    /// Event plugins to run, in order.
    #[serde(default)]
    pub chain: Vec<RawEventChainEntry>,
}

/// One entry of an EngageLab route's chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventChainEntry {
    /// A `[[plugin]]` name.
    pub plugin: String,
}

/// `[events]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// How long a callback is remembered to drop duplicates, hours.
    pub dedupe_hours: Option<u64>,
    /// Attempts for a callback whose plugin asks for a retry.
    pub max_attempts: Option<u32>,
}

/// `[idempotency]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdempotency {
    /// How long an answer is replayed (and kept in the delivery log), hours.
    pub retention_hours: Option<u64>,
    /// Most answers kept; the oldest are evicted beyond it.
    pub max_records: Option<usize>,
    /// `always` (flush before answering) or `periodic`.
    pub flush: Option<FlushPolicy>,
    /// With `periodic`: sled's flush interval, ms.
    pub flush_every_ms: Option<u64>,
}

/// `[[crm]]`: one CRM source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrmSource {
    /// Unique name; plugins are granted sources by name.
    pub name: String,
    /// `embedded` (sled, filled by `enrichd crm import`) or `http`.
    pub kind: CrmKind,
    /// embedded: a file (CSV or JSON lines) upserted at every start,
    /// relative to the config file.
    pub seed: Option<PathBuf>,
    /// http: URL template with `{email}`.
    pub email_url: Option<String>,
    /// http: URL template with `{domain}`.
    pub domain_url: Option<String>,
    /// http: request headers (auth), values from the environment.
    #[serde(default)]
    pub headers: Vec<RawHeader>,
    /// http: record field → JSON pointer into the answer.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// http: per-request timeout, ms.
    pub timeout_ms: Option<u64>,
    /// http: requests in flight at once.
    pub max_concurrency: Option<usize>,
    /// The cache in front of the source.
    #[serde(default)]
    pub cache: RawCrmCache,
}

/// The kind of a CRM source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrmKind {
    /// sled, inside the data directory.
    Embedded,
    /// A REST CRM.
    Http,
}

/// A request header for an http CRM source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    /// Header name.
    pub name: String,
    /// The value, written in the file.
    pub value: Option<String>,
    /// The name of an environment variable holding the value.
    pub env: Option<String>,
    /// Put before the value (e.g. `"Bearer "`).
    #[serde(default)]
    pub prefix: String,
}

/// `[crm.cache]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrmCache {
    /// Freshness of a found record, seconds.
    pub ttl_secs: Option<u64>,
    /// Freshness of a "not found", seconds.
    pub negative_ttl_secs: Option<u64>,
    /// Most entries in memory.
    pub max_capacity: Option<u64>,
    /// Refresh recently used keys this often, seconds (0 or absent: off).
    pub refresh_every_secs: Option<u64>,
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
    /// CRM sources this plugin may use, in order (default: all).
    pub crm_sources: Option<Vec<String>>,
    /// Other plugins whose kv namespaces this plugin may read.
    #[serde(default)]
    pub kv_read: Vec<String>,
    /// Fuel (roughly, wasm instructions) per call: a deterministic CPU limit.
    pub fuel: Option<u64>,
    /// Linear memory limit, in bytes.
    pub max_memory_bytes: Option<usize>,
    /// Elements per table.
    pub max_table_elements: Option<usize>,
    /// Core instances (and, separately, tables and memories) per instance.
    pub max_instances: Option<usize>,
    /// Most actions the plugin may return.
    pub max_actions: Option<usize>,
    /// Most bytes (JSON) of actions the plugin may return.
    pub max_output_bytes: Option<usize>,
    /// What a failure of this plugin does to the delivery.
    pub on_error: Option<OnError>,
    /// Expected SHA-256 of the component file (hex); a mismatch refuses start.
    pub sha256: Option<String>,
}

/// How pooled or on-demand instance memory is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// Pooling when the machine allows it, else on-demand (logged).
    #[default]
    Auto,
    /// Pooling, or refuse to start.
    Pooling,
    /// On-demand.
    OnDemand,
}

/// What a plugin's failure (timeout, memory, trap, output limit, guest
/// error) does to the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Drop this plugin's output, record why, continue the chain.
    #[default]
    Skip,
    /// Answer `status: "error"` with the reason; Emailgistics won't retry.
    Error,
    /// Answer 503 so Emailgistics retries the delivery.
    Retry,
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
    /// `kv`
    Kv,
}

impl Capability {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "log" => Some(Self::Log),
            "config" => Some(Self::Config),
            "crm" => Some(Self::Crm),
            "kv" => Some(Self::Kv),
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
    /// Admin listener; `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// Delivery store settings.
    pub store: StoreSettings,
    /// sled's background flush interval, ms.
    pub flush_every_ms: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Time allowed per delivery.
    pub delivery_budget: Duration,
    /// Instance allocator.
    pub allocator: Allocator,
    /// Precompiled component cache.
    pub cache_dir: PathBuf,
    /// CRM sources, in order.
    pub crm: Vec<CrmSourceSpec>,
    /// Plugins, in file order.
    pub plugins: Vec<PluginSpec>,
    /// Routes, in file order.
    pub routes: Vec<RouteSpec>,
    /// EngageLab routes, in file order.
    pub event_routes: Vec<EventRouteSpec>,
    /// Event queue settings.
    pub events: EventSettings,
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
    /// Sandbox limits.
    pub limits: Limits,
    /// Failure policy.
    pub on_error: OnError,
    /// Expected SHA-256 of the component.
    pub sha256: Option<[u8; 32]>,
    /// Indexes into [`Config::crm`] of the sources this plugin may use.
    pub crm_sources: Vec<usize>,
    /// Other plugins whose kv namespaces this plugin may read.
    pub kv_read: Vec<String>,
}

/// A validated CRM source.
#[derive(Debug, Clone)]
pub struct CrmSourceSpec {
    /// Name.
    pub name: String,
    /// Backend.
    pub backend: CrmBackendSpec,
    /// Cache.
    pub cache: CacheSettings,
}

/// A validated CRM backend.
#[derive(Debug, Clone)]
pub enum CrmBackendSpec {
    /// Embedded, with an optional seed file.
    Embedded {
        /// Upserted at start.
        seed: Option<PathBuf>,
    },
    /// REST.
    Http(HttpSettings),
}

/// Default per-request timeout of an http CRM: an interactive CRM answers in
/// well under a second; past 2 s the last-known value is the better answer.
pub const DEFAULT_CRM_TIMEOUT: Duration = Duration::from_secs(2);
/// Default requests in flight to an http CRM: enough for a busy mailbox,
/// few enough not to be mistaken for an attack by the CRM's rate limiter.
pub const DEFAULT_CRM_CONCURRENCY: usize = 16;

/// The sandbox limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call; `None`: not metered.
    pub fuel: Option<u64>,
    /// Linear memory, bytes.
    pub max_memory_bytes: usize,
    /// Elements per table.
    pub max_table_elements: usize,
    /// Core instances, tables and memories per instance (each).
    pub max_instances: usize,
    /// Actions per call.
    pub max_actions: usize,
    /// JSON bytes of actions per call.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: None,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_actions: DEFAULT_MAX_ACTIONS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// A validated `[[engagelab]]`.
#[derive(Debug, Clone)]
pub struct EventRouteSpec {
    /// Request path.
    pub path: String,
    /// Accepted app keys.
    pub app_keys: Vec<AppKey>,
    /// Accepted timestamp skew.
    pub replay_window: Duration,
    /// Indexes into [`Config::plugins`], in order.
    pub chain: Vec<usize>,
}

/// Queueing of EngageLab callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    /// How long duplicates are recognised.
    pub dedupe_window: Duration,
    /// Attempts per callback when a plugin asks for a retry.
    pub max_attempts: u32,
}

/// Default attempts: a plugin with `on_error = "retry"` gets a few more
/// chances over a few seconds, then the callback is dropped (and logged).
pub const DEFAULT_EVENT_ATTEMPTS: u32 = 5;

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
        let admin_listen = match self.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN) {
            "off" => None,
            addr => Some(
                addr.parse::<SocketAddr>()
                    .map_err(|e| invalid(format!("admin_listen = {addr:?}: {e} (or \"off\")")))?,
            ),
        };
        let idem = &self.idempotency;
        let retention = idem
            .retention_hours
            .map(|h| Duration::from_secs(h * 3600))
            .unwrap_or(DEFAULT_RETENTION);
        let store = StoreSettings {
            retention,
            max_records: idem.max_records.unwrap_or(DEFAULT_MAX_RECORDS),
            flush: idem.flush.unwrap_or(FlushPolicy::Always),
        };
        if store.retention.is_zero() || store.max_records == 0 {
            return Err(invalid(
                "[idempotency] retention_hours and max_records must be > 0",
            ));
        }
        let flush_every_ms = idem.flush_every_ms.unwrap_or(DEFAULT_FLUSH_EVERY_MS);
        if flush_every_ms == 0 {
            return Err(invalid("[idempotency] flush_every_ms must be > 0"));
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 || max_body_bytes > MAX_MAX_BODY_BYTES {
            return Err(invalid(format!(
                "max_body_bytes = {max_body_bytes}: must be between 1 and {MAX_MAX_BODY_BYTES}"
            )));
        }
        let data_dir = base.join(self.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        let delivery_budget = self
            .delivery_budget_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_DELIVERY_BUDGET);
        if delivery_budget.is_zero() || delivery_budget >= SENDER_TIMEOUT {
            return Err(invalid(format!(
                "delivery_budget_ms = {}: must be above 0 and below {} (Emailgistics stops waiting at {} s)",
                delivery_budget.as_millis(),
                SENDER_TIMEOUT.as_millis(),
                SENDER_TIMEOUT.as_secs()
            )));
        }
        let cache_dir = match self.cache_dir {
            Some(dir) => base.join(dir),
            None => data_dir.join("component-cache"),
        };

        let mut crm: Vec<CrmSourceSpec> = Vec::with_capacity(self.crm.len());
        for raw in self.crm {
            if crm.iter().any(|c| c.name == raw.name) || raw.name.trim().is_empty() {
                return Err(invalid(format!(
                    "CRM source name {:?} is empty or used twice",
                    raw.name
                )));
            }
            crm.push(crm_source(raw, base, env)?);
        }

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
                        "plugin {:?}: unknown capability {c:?} (known: log, config, crm, kv)",
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
            let limits = plugin_limits(&p)?;
            let crm_sources = match &p.crm_sources {
                None => (0..crm.len()).collect(),
                Some(names) => names
                    .iter()
                    .map(|n| {
                        crm.iter().position(|c| &c.name == n).ok_or_else(|| {
                            invalid(format!("plugin {:?}: no CRM source named {n:?}", p.name))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let sha256 = p
                .sha256
                .as_deref()
                .map(|hex_digest| {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest.trim(), &mut digest).map(|()| digest)
                })
                .transpose()
                .map_err(|e| {
                    invalid(format!(
                        "plugin {:?}: sha256 is not 64 hex digits: {e}",
                        p.name
                    ))
                })?;
            plugins.push(PluginSpec {
                path: base.join(&p.path),
                grants: Grants::new(caps),
                config: Arc::new(p.config),
                timeout,
                limits,
                on_error: p.on_error.unwrap_or_default(),
                sha256,
                crm_sources,
                kv_read: p.kv_read,
                name: p.name,
            });
        }

        for p in &plugins {
            if let Some(other) = p
                .kv_read
                .iter()
                .find(|n| !plugins.iter().any(|q| &q.name == *n))
            {
                return Err(invalid(format!(
                    "plugin {:?}: kv_read names {other:?}, which no [[plugin]] defines",
                    p.name
                )));
            }
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
                let value = resolve_secret(s, &format!("route {:?}: secret {i}", r.path), env)?;
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
        let mut event_routes: Vec<EventRouteSpec> = Vec::with_capacity(self.engagelab.len());
        for r in self.engagelab {
            let taken = r.path == crate::server::HEALTHZ_PATH
                || routes.iter().any(|q| q.path == r.path)
                || event_routes.iter().any(|q| q.path == r.path);
            if !r.path.starts_with('/') || taken {
                return Err(invalid(format!(
                    "engagelab path {:?} must start with '/' and not be used twice",
                    r.path
                )));
            }
            if r.app_keys.is_empty() {
                return Err(invalid(format!(
                    "engagelab {:?}: app_keys is empty; EngageLab signs every callback, so an app key is required",
                    r.path
                )));
            }
            let app_keys = r
                .app_keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    resolve_secret(k, &format!("engagelab {:?}: app key {i}", r.path), env)
                        .map(|v| AppKey::new(&v))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let chain = r
                .chain
                .iter()
                .map(|e| {
                    plugins
                        .iter()
                        .position(|p| p.name == e.plugin)
                        .ok_or_else(|| {
                            invalid(format!(
                            "engagelab {:?}: chain names plugin {:?}, which no [[plugin]] defines",
                            r.path, e.plugin
                        ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            event_routes.push(EventRouteSpec {
                path: r.path,
                app_keys,
                replay_window: r
                    .replay_window_secs
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_REPLAY_WINDOW),
                chain,
            });
        }
        if routes.is_empty() && event_routes.is_empty() {
            return Err(invalid(
                "no [[route]] or [[engagelab]] is defined: enrichd would serve nothing",
            ));
        }
        let events = EventSettings {
            dedupe_window: self
                .events
                .dedupe_hours
                .map(|h| Duration::from_secs(h * 3600))
                .unwrap_or(DEFAULT_DEDUPE_WINDOW),
            max_attempts: self.events.max_attempts.unwrap_or(DEFAULT_EVENT_ATTEMPTS),
        };
        if events.dedupe_window.is_zero() || events.max_attempts == 0 {
            return Err(invalid(
                "[events] dedupe_hours and max_attempts must be > 0",
            ));
        }

        Ok(Config {
            listen,
            admin_listen,
            store,
            flush_every_ms,
            data_dir,
            max_body_bytes,
            delivery_budget,
            allocator: self.allocator.unwrap_or_default(),
            cache_dir,
            crm,
            plugins,
            routes,
            event_routes,
            events,
        })
    }
}

/// A secret's value, from the file or the environment; `what` names it in
/// errors.
fn resolve_secret(
    s: &RawSecret,
    what: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let value = match (&s.value, &s.env) {
        (Some(v), None) => v.clone(),
        (None, Some(var)) => env(var).ok_or_else(|| {
            invalid(format!(
                "{what} reads environment variable {var:?}, which is not set"
            ))
        })?,
        _ => {
            return Err(invalid(format!(
                "{what} needs exactly one of `value` or `env`"
            )))
        }
    };
    if value.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    Ok(value)
}

fn crm_source(
    raw: RawCrmSource,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CrmSourceSpec, ConfigError> {
    let name = raw.name;
    let bad = |what: String| invalid(format!("CRM source {name:?}: {what}"));
    let secs = |s: Option<u64>, default: Duration| s.map(Duration::from_secs).unwrap_or(default);
    let timeout = raw
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_CRM_TIMEOUT);
    let cache = CacheSettings {
        ttl: secs(raw.cache.ttl_secs, DEFAULT_TTL),
        negative_ttl: secs(raw.cache.negative_ttl_secs, DEFAULT_NEGATIVE_TTL),
        max_capacity: raw.cache.max_capacity.unwrap_or(DEFAULT_MAX_CAPACITY),
        backend_timeout: timeout,
        refresh_every: raw
            .cache
            .refresh_every_secs
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
    };
    if cache.ttl.is_zero() || timeout.is_zero() || cache.max_capacity == 0 {
        return Err(bad(
            "ttl_secs, timeout_ms and max_capacity must be > 0".into()
        ));
    }
    let http_only = raw.email_url.is_some()
        || raw.domain_url.is_some()
        || !raw.headers.is_empty()
        || !raw.fields.is_empty()
        || raw.max_concurrency.is_some();
    let backend = match raw.kind {
        CrmKind::Embedded => {
            if http_only {
                return Err(bad("email_url, domain_url, headers, fields and max_concurrency are for kind = \"http\"".into()));
            }
            CrmBackendSpec::Embedded {
                seed: raw.seed.map(|p| base.join(p)),
            }
        }
        CrmKind::Http => {
            if raw.seed.is_some() {
                return Err(bad("seed is for kind = \"embedded\"".into()));
            }
            let email_url = raw
                .email_url
                .ok_or_else(|| bad("kind = \"http\" needs email_url".into()))?;
            let mut headers = Vec::with_capacity(raw.headers.len());
            for h in raw.headers {
                let secret = RawSecret {
                    value: h.value,
                    env: h.env,
                };
                let what = format!("CRM source {name:?}: header {:?}", h.name);
                let value = resolve_secret(&secret, &what, env)?;
                headers.push((h.name, format!("{}{value}", h.prefix)));
            }
            let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_CRM_CONCURRENCY);
            if max_concurrency == 0 {
                return Err(bad("max_concurrency must be > 0".into()));
            }
            CrmBackendSpec::Http(HttpSettings {
                email_url,
                domain_url: raw.domain_url,
                headers,
                fields: raw.fields.into_iter().collect(),
                timeout,
                max_concurrency,
            })
        }
    };
    Ok(CrmSourceSpec {
        name,
        backend,
        cache,
    })
}

fn plugin_limits(p: &RawPlugin) -> Result<Limits, ConfigError> {
    let name = &p.name;
    let d = Limits::default();
    let limits = Limits {
        fuel: p.fuel,
        max_memory_bytes: p.max_memory_bytes.unwrap_or(d.max_memory_bytes),
        max_table_elements: p.max_table_elements.unwrap_or(d.max_table_elements),
        max_instances: p.max_instances.unwrap_or(d.max_instances),
        max_actions: p.max_actions.unwrap_or(d.max_actions),
        max_output_bytes: p.max_output_bytes.unwrap_or(d.max_output_bytes),
    };
    if limits.fuel == Some(0) {
        return Err(invalid(format!("plugin {name:?}: fuel must be > 0")));
    }
    // Below 1 MiB not even a minimal Rust component instantiates.
    if !(1024 * 1024..=MAX_MAX_MEMORY_BYTES).contains(&limits.max_memory_bytes) {
        return Err(invalid(format!(
            "plugin {name:?}: max_memory_bytes must be between 1 MiB and {MAX_MAX_MEMORY_BYTES}"
        )));
    }
    if limits.max_instances == 0 || limits.max_table_elements == 0 {
        return Err(invalid(format!(
            "plugin {name:?}: max_instances and max_table_elements must be > 0"
        )));
    }
    if limits.max_actions == 0 || limits.max_output_bytes == 0 {
        return Err(invalid(format!(
            "plugin {name:?}: max_actions and max_output_bytes must be > 0"
        )));
    }
    Ok(limits)
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
    fn sandbox_settings_have_defaults_and_are_checked() {
        let c = resolve(MINIMAL).unwrap();
        assert_eq!(c.delivery_budget, DEFAULT_DELIVERY_BUDGET);
        assert_eq!(c.allocator, Allocator::Auto);
        assert_eq!(c.cache_dir, Path::new("/etc/enrichd/data/component-cache"));
        let p = &c.plugins[0];
        assert_eq!(p.limits, Limits::default());
        assert_eq!(p.on_error, OnError::Skip);
        assert_eq!(p.sha256, None);

        let c = resolve(&format!(
            "delivery_budget_ms = 99999\nallocator = \"on-demand\"\n{}",
            MINIMAL.replace(
                "capabilities",
                "fuel = 5000\nmax_memory_bytes = 2097152\nmax_table_elements = 5000\nmax_instances = 8\nmax_actions = 3\nmax_output_bytes = 100\non_error = \"retry\"\n\
                 sha256 = \"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"\ncapabilities"
            )
        ))
        .unwrap();
        assert_eq!(c.delivery_budget, Duration::from_millis(99_999));
        assert_eq!(c.allocator, Allocator::OnDemand);
        let p = &c.plugins[0];
        assert_eq!(
            p.limits,
            Limits {
                fuel: Some(5000),
                max_memory_bytes: 2 << 20,
                max_table_elements: 5000,
                max_instances: 8,
                max_actions: 3,
                max_output_bytes: 100
            }
        );
        assert_eq!(p.on_error, OnError::Retry);
        assert_eq!(p.sha256.unwrap()[..2], [0xe3, 0xb0]);

        for (setting, needle) in [
            ("delivery_budget_ms = 100000\n", "below 100000"),
            ("delivery_budget_ms = 0\n", "above 0"),
            ("allocator = \"magic\"\n", "unknown variant"),
        ] {
            let err = resolve(&format!("{setting}{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{setting}: {err}");
        }
        for (setting, needle) in [
            ("fuel = 0", "fuel must be > 0"),
            (
                "max_memory_bytes = 1000",
                "max_memory_bytes must be between",
            ),
            ("max_actions = 0", "must be > 0"),
            (
                "max_instances = 0",
                "max_instances and max_table_elements must be > 0",
            ),
            (
                "max_table_elements = 0",
                "max_instances and max_table_elements must be > 0",
            ),
            ("on_error = \"ignore\"", "unknown variant"),
            ("sha256 = \"abc\"", "sha256 is not 64 hex digits"),
        ] {
            let err =
                resolve(&MINIMAL.replace("capabilities", &format!("{setting}\ncapabilities")))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(needle), "{setting}: {err}");
        }
    }

    #[test]
    fn idempotency_and_admin_settings() {
        let c = resolve(MINIMAL).unwrap();
        assert_eq!(c.admin_listen, Some(DEFAULT_ADMIN_LISTEN.parse().unwrap()));
        assert_eq!(c.store.retention, DEFAULT_RETENTION);
        assert_eq!(c.store.flush, FlushPolicy::Always);
        let c = resolve(&format!(
            "admin_listen = \"off\"\n[idempotency]\nretention_hours = 1\nmax_records = 10\nflush = \"periodic\"\nflush_every_ms = 50\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.admin_listen, None);
        assert_eq!(c.store.retention, Duration::from_secs(3600));
        assert_eq!(c.store.max_records, 10);
        assert_eq!(c.store.flush, FlushPolicy::Periodic);
        assert_eq!(c.flush_every_ms, 50);
        for (setting, needle) in [
            ("admin_listen = \"everywhere\"\n", "admin_listen"),
            ("[idempotency]\nretention_hours = 0\n", "must be > 0"),
            ("[idempotency]\nflush = \"sometimes\"\n", "unknown variant"),
        ] {
            let err = resolve(&format!("{setting}{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{setting}: {err}");
        }
    }

    #[test]
    fn crm_sources_are_validated_and_granted_by_name() {
        let sources = r#"
            [[crm]]
            name = "local"
            kind = "embedded"
            seed = "crm.csv"
            [[crm]]
            name = "remote"
            kind = "http"
            email_url = "https://crm.example/api?email={email}"
            headers = [{ name = "Authorization", env = "HOOK_SECRET", prefix = "Bearer " }]
            fields = { region = "/address/region" }
            timeout_ms = 1500
            [crm.cache]
            ttl_secs = 60
            negative_ttl_secs = 5
        "#;
        let c = resolve(&format!("{sources}{MINIMAL}")).unwrap();
        assert_eq!(
            c.plugins[0].crm_sources,
            vec![0, 1],
            "all sources by default"
        );
        assert_eq!(c.crm[1].cache.ttl, Duration::from_secs(60));
        assert_eq!(c.crm[0].cache.ttl, DEFAULT_TTL);
        match &c.crm[1].backend {
            CrmBackendSpec::Http(h) => {
                assert_eq!(
                    h.headers,
                    vec![(
                        "Authorization".to_owned(),
                        "Bearer from-env-0123456789".to_owned()
                    )]
                );
                assert_eq!(
                    h.fields,
                    vec![("region".to_owned(), "/address/region".to_owned())]
                );
                assert_eq!(h.timeout, Duration::from_millis(1500));
            }
            other => panic!("{other:?}"),
        }
        let c = resolve(&format!(
            "{sources}{}",
            MINIMAL.replace("capabilities", "crm_sources = [\"remote\"]\ncapabilities")
        ))
        .unwrap();
        assert_eq!(c.plugins[0].crm_sources, vec![1]);

        for (src, needle) in [
            ("[[crm]]\nname = \"x\"\nkind = \"http\"\n", "needs email_url"),
            ("[[crm]]\nname = \"x\"\nkind = \"embedded\"\nemail_url = \"http://a/{email}\"\n", "are for kind"),
            ("[[crm]]\nname = \"x\"\nkind = \"ldap\"\n", "unknown variant"),
            (
                "[[crm]]\nname = \"x\"\nkind = \"http\"\nemail_url = \"http://a/{email}\"\nheaders = [{ name = \"A\", env = \"NOPE\" }]\n",
                "\"NOPE\", which is not set",
            ),
            ("[[crm]]\nname = \"x\"\nkind = \"embedded\"\n[[crm]]\nname = \"x\"\nkind = \"embedded\"\n", "used twice"),
        ] {
            let err = resolve(&format!("{src}{MINIMAL}")).unwrap_err().to_string();
            assert!(err.contains(needle), "{src}: {err}");
        }
        let err =
            resolve(&MINIMAL.replace("capabilities", "crm_sources = [\"nope\"]\ncapabilities"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("no CRM source named \"nope\""), "{err}");
    }

    #[test]
    fn engagelab_routes_need_app_keys_and_known_plugins() {
        let el = "[[engagelab]]\npath = \"/el\"\napp_keys = [{ env = \"HOOK_SECRET\" }, { value = \"k2\" }]\nchain = [{ plugin = \"a\" }]\n";
        let c = resolve(&format!("{MINIMAL}{el}")).unwrap();
        assert_eq!(c.event_routes[0].app_keys.len(), 2);
        assert_eq!(c.event_routes[0].replay_window, DEFAULT_REPLAY_WINDOW);
        assert_eq!(c.event_routes[0].chain, vec![0]);
        assert_eq!(c.events.max_attempts, DEFAULT_EVENT_ATTEMPTS);
        for (bad, needle) in [
            (
                el.replace("[{ env = \"HOOK_SECRET\" }, { value = \"k2\" }]", "[]"),
                "app key is required",
            ),
            (el.replace("\"/el\"", "\"/hook\""), "not be used twice"),
            (
                el.replace("plugin = \"a\"", "plugin = \"zz\""),
                "no [[plugin]] defines",
            ),
            (
                el.replace("HOOK_SECRET", "NOPE"),
                "\"NOPE\", which is not set",
            ),
        ] {
            let err = resolve(&format!("{MINIMAL}{bad}")).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
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
        match &c.crm[0].backend {
            CrmBackendSpec::Embedded { seed } => {
                assert!(seed.as_ref().unwrap().ends_with("crm-sample.jsonl"))
            }
            other => panic!("{other:?}"),
        }
    }
}
