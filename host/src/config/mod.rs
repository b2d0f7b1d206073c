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

use crate::auth::Secret;
use crate::crm::cache::{CacheSettings, DEFAULT_MAX_CAPACITY, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL};
use crate::crm::http::HttpSettings;
use crate::engagelab::verify::{AppKey, DEFAULT_REPLAY_WINDOW};
use crate::storage::answers::{StoreSettings, DEFAULT_MAX_RECORDS, DEFAULT_RETENTION};
use crate::storage::events::DEFAULT_DEDUPE_WINDOW;
use crate::storage::FlushPolicy;
pub use raw::StorageKind;

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
/// Items in one list of one action (tags, custom-field keys, users, backup
/// assignments, to/cc/bcc recipients, inline assets). Real mailboxes have
/// tens of users and tags, and a message tens of recipients; 100 matches
/// `max_actions` and keeps the per-action work and the record small, while
/// a flood (tens of thousands of keys) is refused before any per-item work.
pub const DEFAULT_MAX_LIST_ITEMS: usize = 100;
/// Bytes of one name-like value of an action (tag name, custom-field key,
/// user name, template name, display name, action label, asset id,
/// filename and content type). Emailgistics names are short identifiers
/// typed by an admin; 256 bytes covers any real one, even in a 4-byte
/// script, and bounds what a rejection reason or a note may quote.
pub const DEFAULT_MAX_NAME_BYTES: usize = 256;
/// Bytes of a plugin's own text kept by the host: its output `message`, a
/// guest error and a trap's text (with the guest's last stderr line). A
/// useful diagnostic is a line or two; 2 KiB keeps one, while a plugin's
/// 20 MiB "message" no longer reaches the log, the record or a 503 body.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 2048;

// --- Budgets of the host imports (issue 9) ---------------------------------
/// Lines one plugin call may write to the host's log (`log` import, stdout
/// and stderr together). A plugin that explains its decision needs a few
/// lines per delivery; 100 leaves room for debugging output while 10 000
/// deliveries a day stay under a million lines.
pub const DEFAULT_MAX_LOG_LINES: usize = 100;
/// Bytes of guest text one plugin call may write to the host's log. 16 KiB
/// matches what is kept of stdout/stderr per stream, holds 100 lines of
/// ~160 characters, and bounds a looping plugin's log growth per call to
/// what a person can still read.
pub const DEFAULT_MAX_LOG_BYTES: usize = 16 * 1024;
/// Keys one plugin's kv namespace may hold. The kv holds a record per
/// address or message the plugin tracks; 100 000 is a large mailbox's
/// correspondents, and counting them at start stays well under a second.
pub const DEFAULT_KV_MAX_KEYS: u64 = 100_000;
/// Bytes (keys plus values) one plugin's kv namespace may hold. 100 000
/// records of ~600 bytes; the kv shares the data directory with the
/// idempotency store, so one plugin must not be able to fill the disk.
pub const DEFAULT_KV_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// kv operations (get, set, delete, get-from) per plugin call. A plugin
/// reads and writes a few records per delivery; 1 000 allows batch work
/// and stops a loop from keeping the store busy for a whole timeout.
pub const DEFAULT_KV_OPS_PER_CALL: usize = 1_000;
/// Bytes (keys plus values) one plugin call may write to the kv. 16
/// values of the largest size (64 KiB) or thousands of typical records; a
/// plugin writing until its timeout wrote ~1 GiB per call before this.
pub const DEFAULT_KV_WRITE_BYTES_PER_CALL: usize = 1024 * 1024;
/// CRM lookups (`lookup-email`, `lookup-domain`) per plugin call. A
/// delivery has a sender, a handful of recipients and perhaps their
/// domains; 20 covers that, and bounds the backend calls one delivery can
/// cause to 2 × 20 per granted source (an email lookup may also try its
/// domain).
pub const DEFAULT_CRM_LOOKUPS_PER_CALL: usize = 20;
/// sled's page cache (`sled_cache_bytes`). sled's own default is 1 GiB,
/// and data a plugin writes to the kv is cached up to it: RSS grew by
/// gigabytes under a kv fill. The hot data (recent deliveries, CRM
/// last-known values, kv records in use) fits in 64 MiB; colder pages are
/// read from the OS page cache.
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Consecutive failures of a plugin that open its circuit breaker. One or
/// two failures in a row happen to healthy plugins (a bad payload, a slow
/// dependency); five in a row mean it is broken, and every further call
/// would cost an instance and up to its timeout for nothing. 0 disables the
/// breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// How long an open breaker bypasses its plugin before one probe call.
/// Long enough that a broken plugin costs one call per 30 s instead of one
/// per delivery; short enough that a plugin whose dependency came back is
/// used again well before a sender's retry schedule gives up.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// Upper bound for `breaker_cooldown_ms`: beyond an hour a typo (an extra
/// zero) would silently take a plugin out of service for most of a day.
pub const MAX_BREAKER_COOLDOWN: Duration = Duration::from_secs(3600);

/// A plugin's circuit breaker settings (see [`crate::plugin::breaker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker; 0: never opens.
    pub failures: u32,
    /// How long an open breaker bypasses the plugin before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: DEFAULT_BREAKER_FAILURES,
            cooldown: DEFAULT_BREAKER_COOLDOWN,
        }
    }
}

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
    // Senders (issue 9).
    /// Most open connections on the public listener (beyond it, a small
    /// reserve answers only `/healthz`).
    pub max_connections: usize,
    /// Time a client gets to send a request body, from when its head arrived.
    pub body_read_timeout: Duration,
    /// sled's page cache, bytes.
    pub sled_cache_bytes: u64,
    /// Where the state lives.
    pub storage: StorageSpec,
}

/// Default key prefix in Redis: names every key as enrichd's, and lets
/// other deployments pick their own.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "enrichd:";

/// Default EngageLab lease with Redis: 5 minutes. A host that dies while
/// processing a callback delays it by this much (another host then takes
/// it); it must be longer than the slowest event chain (the sum of its
/// plugins' timeouts, checked at start), or a slow but alive host would see
/// its callback processed twice.
pub const DEFAULT_EVENT_LEASE: Duration = Duration::from_secs(300);

/// The validated `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSpec {
    /// Embedded sled under `data_dir`.
    Sled,
    /// A shared Redis.
    Redis {
        /// The server's URL.
        url: String,
        /// Prefix of every key.
        key_prefix: String,
        /// How long a host holds a callback before another may take it.
        event_lease: Duration,
    },
}

impl Config {
    /// The storage settings: backend and bounds.
    pub fn storage_settings(&self) -> crate::storage::Settings {
        use crate::storage::{Backend, Limits, RedisSettings, Settings, SledSettings};
        let backend = match &self.storage {
            StorageSpec::Sled => Backend::Sled(SledSettings {
                data_dir: self.data_dir.clone(),
                flush: self.store.flush,
                flush_every_ms: self.flush_every_ms,
                cache_bytes: self.sled_cache_bytes,
            }),
            StorageSpec::Redis {
                url,
                key_prefix,
                event_lease,
            } => Backend::Redis(RedisSettings {
                url: url.clone(),
                key_prefix: key_prefix.clone(),
                event_lease: *event_lease,
            }),
        };
        Settings {
            backend,
            limits: Limits {
                retention: self.store.retention,
                max_records: self.store.max_records,
                dedupe_window: self.events.dedupe_window,
                max_queued: self.events.max_queued,
            },
        }
    }
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
    // Budgets of the host imports (issue 9).
    /// Log lines per call (`log` import, stdout and stderr together).
    pub max_log_lines: usize,
    /// Bytes of guest text logged per call.
    pub max_log_bytes: usize,
    /// Keys the plugin's kv namespace may hold.
    pub kv_max_keys: u64,
    /// Bytes (keys plus values) the plugin's kv namespace may hold.
    pub kv_max_bytes: u64,
    /// kv operations per call.
    pub kv_ops_per_call: usize,
    /// Bytes (keys plus values) written to the kv per call.
    pub kv_write_bytes_per_call: usize,
    /// CRM lookups per call.
    pub crm_lookups_per_call: usize,
    /// Circuit breaker: when repeated failures bypass the plugin.
    pub breaker: BreakerSettings,
    /// Items per list of one action.
    pub max_list_items: usize,
    /// Bytes of one name-like value of an action.
    pub max_name_bytes: usize,
    /// Bytes kept of the plugin's message, guest error or trap text.
    pub max_message_bytes: usize,
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
            max_log_lines: DEFAULT_MAX_LOG_LINES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            kv_max_keys: DEFAULT_KV_MAX_KEYS,
            kv_max_bytes: DEFAULT_KV_MAX_BYTES,
            kv_ops_per_call: DEFAULT_KV_OPS_PER_CALL,
            kv_write_bytes_per_call: DEFAULT_KV_WRITE_BYTES_PER_CALL,
            crm_lookups_per_call: DEFAULT_CRM_LOOKUPS_PER_CALL,
            breaker: BreakerSettings::default(),
            max_list_items: DEFAULT_MAX_LIST_ITEMS,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
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
    /// Most callbacks queued at once.
    pub max_queued: usize,
}

/// Default attempts: a plugin with `on_error = "retry"` gets a few more
/// chances over a few seconds, then the callback is dropped (and logged).
pub const DEFAULT_EVENT_ATTEMPTS: u32 = 5;

/// Most EngageLab callbacks queued at once by default. A callback is a few
/// KiB, so 100 000 of them are a few hundred MB of sled at worst, and the
/// worker clears them in minutes once its plugins work again; beyond it a
/// stuck chain must not fill the disk, so callbacks are answered 503 and
/// EngageLab keeps them and retries (nothing is lost).
pub const DEFAULT_MAX_QUEUED_EVENTS: usize = 100_000;
/// Upper bound for `[events] max_queued`: ten million callbacks are tens of
/// GB and hours of work; a larger value is a typo, refused at start.
pub const MAX_MAX_QUEUED_EVENTS: usize = 10_000_000;

/// Most open connections on the public listener by default. Each costs a
/// file descriptor and a task; the usual `ulimit -n` is 1024 to 65536, and
/// sled, the component cache and the admin listener need descriptors too.
/// Emailgistics and EngageLab open a handful at once; 1024 is far above any
/// honest sender and far below descriptor exhaustion.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Upper bound for `max_connections`: beyond it the cap no longer protects
/// the descriptor table of any ordinary host.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Time a client gets to send a whole request body by default, counted from
/// when its head arrived. A 1 MiB body at a slow 1 Mbit/s takes 8 s; an
/// honest sender on a data-centre link sends it in milliseconds (EngageLab's
/// whole request must fit in its own 3 s). A body that trickles longer is
/// a slow-loris attempt and gets 408 instead of holding a connection for
/// the whole 90 s delivery budget.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

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

mod raw;
mod resolve;
#[cfg(test)]
mod tests;

pub use raw::*;
