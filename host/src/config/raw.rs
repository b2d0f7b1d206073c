//! The config file as written: serde types, unknown keys refused. They are
//! validated into [`super::Config`] by [`super::resolve`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::plugin::policy::{Allocator, OnError};
use crate::storage::FlushPolicy;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Public listener address.
    pub listen: Option<String>,
    /// Admin listener address, or `off`.
    pub admin_listen: Option<String>,
    /// The admin listener's token (required when it is not loopback).
    pub admin_token: Option<RawSecret>,
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
    /// Most bytes of cache entries kept, beyond those in use (default 1 GiB).
    pub cache_max_bytes: Option<u64>,
    /// How long a cache entry the config does not use is kept since its
    /// last use, hours (default 168: 7 days).
    pub cache_grace_hours: Option<u64>,
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
    // Senders (issue 9): connection and body-read bounds.
    /// Most open connections on the public listener.
    pub max_connections: Option<usize>,
    /// Time a client gets to send a request body once its head arrived, ms.
    pub body_read_timeout_ms: Option<u64>,
    /// sled's page cache, in bytes (default 16 MiB).
    pub sled_cache_bytes: Option<u64>,
    /// Where the state lives: embedded sled (default) or a shared Redis.
    #[serde(default)]
    pub storage: RawStorage,
    /// Proxies (CIDRs) whose `X-Forwarded-For` names the client for
    /// `allow_ips`; from any other peer the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// HTTPS on the public listener (issue 13).
    pub tls: Option<RawTls>,
}

/// `[tls]`: HTTPS on the public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Certificate chain (PEM, leaf first), relative to the config file.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, RSA or EC), relative to the config file.
    pub key: PathBuf,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// Time a client gets to complete its handshake, ms.
    pub handshake_timeout_ms: Option<u64>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `sled` (default) or `redis`.
    pub kind: Option<StorageKind>,
    /// redis: the server's URL, or `{ env = "VAR" }`.
    pub url: Option<RawUrl>,
    /// redis: prefix of every key (default `enrichd:`).
    pub key_prefix: Option<String>,
    /// redis: how long a host holds an EngageLab callback before another
    /// may take it over, ms.
    pub event_lease_ms: Option<u64>,
}

/// The kind of storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    /// Embedded sled under `data_dir`.
    Sled,
    /// A shared Redis.
    Redis,
}

/// A URL written in the file, or read from the environment.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUrl {
    /// `url = "redis://…"`
    Plain(String),
    /// `url = { env = "ENRICHD_REDIS_URL" }`
    Env {
        /// The variable's name.
        env: String,
    },
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
    /// Client addresses (CIDRs) answered; absent: every client.
    pub allow_ips: Option<Vec<String>>,
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
    /// Most callbacks queued at once; beyond it callbacks are answered 503.
    pub max_queued: Option<usize>,
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
    /// Host imports this plugin may use: `log`, `config`, `crm`, `kv`, `http`.
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
    /// Where the plugin may send HTTP requests (`scheme://host[:port]`
    /// each); required, non-empty, with the `http` capability.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
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
    /// Consecutive failures that open the plugin's circuit breaker (0: off).
    pub breaker_failures: Option<u32>,
    /// How long an open breaker bypasses the plugin before a probe, ms.
    pub breaker_cooldown_ms: Option<u64>,
    /// Most items in one list of one action (tags, keys, users, recipients…).
    pub max_list_items: Option<usize>,
    /// Most bytes of one name-like value (tag, key, user, template, asset id…).
    pub max_name_bytes: Option<usize>,
    /// Most bytes kept of the plugin's message, guest error or trap text.
    pub max_message_bytes: Option<usize>,
    /// What a failure of this plugin does to the delivery.
    pub on_error: Option<OnError>,
    /// Expected SHA-256 of the component file (hex); a mismatch refuses start.
    pub sha256: Option<String>,
    // Budgets of the host imports (issue 9).
    /// Log lines per call (`log` import, stdout and stderr together).
    pub max_log_lines: Option<usize>,
    /// Bytes of guest text logged per call.
    pub max_log_bytes: Option<usize>,
    /// Keys the plugin's kv namespace may hold.
    pub kv_max_keys: Option<u64>,
    /// Bytes (keys plus values) the plugin's kv namespace may hold.
    pub kv_max_bytes: Option<u64>,
    /// kv operations per call.
    pub kv_ops_per_call: Option<usize>,
    /// Bytes (keys plus values) written to the kv per call.
    pub kv_write_bytes_per_call: Option<usize>,
    /// CRM lookups per call.
    pub crm_lookups_per_call: Option<usize>,
    // Outbound HTTP (capability `http`).
    /// HTTP requests per call.
    pub http_requests_per_call: Option<usize>,
    /// Bytes of one response body the plugin may read.
    pub http_response_bytes: Option<u64>,
    /// Bytes of one request body the plugin may send.
    pub http_request_bytes: Option<u64>,
    /// Outbound connections of the plugin open at once.
    pub http_connections: Option<usize>,
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
    /// Client addresses (CIDRs) answered; absent: every client.
    pub allow_ips: Option<Vec<String>>,
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
