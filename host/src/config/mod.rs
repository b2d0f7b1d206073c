//! The host configuration: a TOML file read into [`RawConfig`] (serde, unknown
//! keys refused) and validated into a [`Config`] with every default applied,
//! every path made absolute and every secret resolved.
//!
//! Validation does no I/O of its own: the file's directory and an environment
//! lookup are passed in, so every rule is unit-testable. Reading the file is
//! [`Config::load`]'s only job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::crm::cache::{CacheSettings, DEFAULT_MAX_CAPACITY, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL};
use crate::crm::http::HttpSettings;
use crate::emailgistics::auth::Secret;
use crate::engagelab::verify::{AppKey, DEFAULT_REPLAY_WINDOW};
use crate::http::tls::{CertFiles, MinVersion, TlsSettings, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::source_ip::Cidrs;
use crate::storage::answers::{StoreSettings, DEFAULT_MAX_RECORDS, DEFAULT_RETENTION};
use crate::storage::events::DEFAULT_DEDUPE_WINDOW;
use crate::storage::FlushPolicy;
pub use raw::StorageKind;
// The plugin policy types are the plugin runtime's; the config resolves
// into them (config -> plugin, never the other way).
use crate::plugin::policy::*;

use crate::plugin::cache::{CachePolicy, DEFAULT_CACHE_GRACE, DEFAULT_CACHE_MAX_BYTES};

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
/// Upper bound for `max_memory_bytes`: the pooling allocator reserves this
/// much address space per slot, and 4 GiB is all a 32-bit wasm memory has.
pub const MAX_MAX_MEMORY_BYTES: usize = 4 * 1024 * 1024 * 1024;
/// sled's page cache (`sled_cache_bytes`): 16 MiB. sled's own default is
/// 1 GiB, and data a plugin writes to the kv is cached up to it: RSS grew
/// by gigabytes under a kv fill. sled counts the cache in on-disk page
/// sizes, and the pages in memory take about three times that (measured:
/// 64 MiB of cache held ~175 MiB, 16 MiB ~60 MiB). A bigger cache does not
/// buy speed here: claims look up fresh ids at random over the whole store
/// (1.2 GB at 1 000 000 answers), so they miss any cache that fits an
/// appliance and read from the OS page cache; with 1 000 000 answers stored
/// 64 MiB and 16 MiB served the same deliveries/s (README, "Memory and disk
/// as the store grows").
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Upper bound for `[tls] handshake_timeout_ms`: the time a client gets
/// for its request head ([`crate::http::HEADER_READ_TIMEOUT`]); a
/// handshake allowed longer than that would let a silent client hold a
/// connection slot longer than a slow-loris one.
pub const MAX_TLS_HANDSHAKE_TIMEOUT: Duration = crate::http::HEADER_READ_TIMEOUT;
/// Upper bound for `breaker_cooldown_ms`: beyond an hour a typo (an extra
/// zero) would silently take a plugin out of service for most of a day.
pub const MAX_BREAKER_COOLDOWN: Duration = Duration::from_secs(3600);

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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener; `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// The admin listener's token (`admin_token`): every admin request but
    /// `/healthz` must carry it; required when the listener is not loopback.
    pub admin_token: Option<String>,
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
    /// How the component cache is bounded.
    pub cache: CachePolicy,
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
    /// Proxies whose `X-Forwarded-For` names the client (`allow_ips`).
    pub trusted_proxies: Cidrs,
    /// HTTPS on the public listener; `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
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
                url, key_prefix, ..
            } => Backend::Redis(RedisSettings {
                url: url.clone(),
                key_prefix: key_prefix.clone(),
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

/// A validated CRM source.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmSourceSpec {
    /// Name.
    pub name: String,
    /// Backend.
    pub backend: CrmBackendSpec,
    /// Cache.
    pub cache: CacheSettings,
}

/// A validated CRM backend.
#[derive(Debug, Clone, PartialEq)]
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
    /// Client addresses answered; `None`: every client.
    pub allow_ips: Option<Cidrs>,
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
    /// Client addresses answered; `None`: every client.
    pub allow_ips: Option<Cidrs>,
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
        Self::load_with_data_dir(path, None)
    }

    /// [`Config::load`] with `data_dir` (`--data-dir`) in place of the
    /// file's: the data directory and everything derived from it.
    pub fn load_with_data_dir(
        path: &Path,
        data_dir: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let mut raw = read_raw(path)?;
        if let Some(dir) = data_dir {
            raw = raw.with_data_dir(dir);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        raw.resolve(&base, &|name| std::env::var(name).ok())
    }

    /// Only the admin listener of the file at `path` (`None`: off): what
    /// `enrichd reload` needs to find the running server, without the
    /// environment the secrets come from.
    pub fn admin_listen_of(path: &Path) -> Result<Option<SocketAddr>, ConfigError> {
        read_raw(path)?.admin_listen()
    }
}

/// Read and parse the file, unvalidated.
fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

mod raw;
mod resolve;
#[cfg(test)]
mod tests;

pub use raw::*;
