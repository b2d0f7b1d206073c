//! A plugin's policy as the runtime applies it: granted capabilities, the
//! sandbox limits and import budgets with their defaults, the circuit
//! breaker settings, the failure policy and the allocator. The config
//! resolves into these types (`config` depends on `plugin`, not the other
//! way round).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// Linear memory one plugin instance may grow to. Enrichment plugins need a
/// few MiB; 64 MiB stops a memory bomb long before it hurts the host.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
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
// --- Outbound HTTP (capability `http`, issue 12) ----------------------------
/// Outbound HTTP requests one plugin call may make. An enrichment asks one
/// or two services about a message (a fraud score, a ticket lookup) and
/// perhaps follows a redirect; 4 covers that, and bounds what one delivery
/// can make the host send to third parties (a loop would otherwise hammer
/// them for the whole timeout).
pub const DEFAULT_HTTP_REQUESTS_PER_CALL: usize = 4;
/// Bytes of one response body a plugin may read. API answers are a few
/// KiB of JSON; 1 MiB leaves room for a large one while a plugin cannot
/// make the host stream a 10 GiB download into its memory: the body is cut
/// there and the guest's stream fails.
pub const DEFAULT_HTTP_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Bytes of one request body a plugin may send. A query about one message
/// (addresses, a subject, a few fields) is a few KiB of JSON; 64 KiB keeps
/// a plugin from using the host to upload the mails it sees in bulk.
pub const DEFAULT_HTTP_REQUEST_BYTES: u64 = 64 * 1024;
/// Outbound connections one plugin may have open at once, across all its
/// calls. A request normally holds its connection for tens of ms; 16 lets a
/// busy plugin overlap its deliveries' requests while one plugin cannot
/// open hundreds of sockets (file descriptors, the remote's rate limits).
/// One over the cap fails at once (`connection-limit-reached`) rather than
/// queueing while it holds an instance slot.
pub const DEFAULT_HTTP_CONNECTIONS: usize = 16;

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
    /// `http`: outbound requests through `wasi:http/outgoing-handler`, to
    /// the plugin's `allowed_hosts` only.
    Http,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [Self::Log, Self::Config, Self::Crm, Self::Kv, Self::Http];

    /// Its name in the config's `capabilities`; except for `http` (which
    /// grants `wasi:http/outgoing-handler`), also the name of the
    /// `enrichd:plugin` interface it grants.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Config => "config",
            Self::Crm => "crm",
            Self::Kv => "kv",
            Self::Http => "http",
        }
    }

    /// Whether it grants an `enrichd:plugin` interface of its name (every
    /// capability but `http`).
    pub fn is_enrichd_interface(self) -> bool {
        self != Self::Http
    }

    /// The capability named `s` in the config (`log`, `config`, `crm`, `kv`,
    /// `http`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
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

/// A validated `[[plugin]]`: what loading a plugin needs. Equal specs (and
/// an unchanged file) load the same plugin: a reload reuses it.
#[derive(Debug, Clone, PartialEq)]
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
    /// Indexes into the config's CRM sources of the sources this plugin may use.
    pub crm_sources: Vec<usize>,
    /// Other plugins whose kv namespaces this plugin may read.
    pub kv_read: Vec<String>,
    /// Where the plugin may send HTTP requests (with `http` granted).
    pub allowed_hosts: Vec<HttpOrigin>,
}

/// One entry of a plugin's `allowed_hosts`: a scheme, a host and a port,
/// compared exactly (no wildcards: each service a plugin may call is
/// listed, so a typo or a compromised plugin cannot reach a neighbour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOrigin {
    /// Whether the scheme is `https` (else `http`).
    pub https: bool,
    /// The host, lower-case (an IPv6 address in brackets).
    pub host: String,
    /// The port (the scheme's default when the entry gives none).
    pub port: u16,
}

impl HttpOrigin {
    /// Parse `scheme://host[:port]` (a trailing `/` allowed); anything more
    /// (a path, a query, user info, a wildcard, another scheme) is refused
    /// with the reason.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let uri: hyper::Uri = entry
            .parse()
            .map_err(|e| format!("{entry:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{entry:?} must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{entry:?} has no host"))?;
        if authority.as_str().contains('@') || authority.host().contains('*') {
            return Err(format!(
                "{entry:?}: only scheme://host[:port] (no user info, no wildcards)"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{entry:?}: only scheme://host[:port] (a host is allowed whole, not a path)"
            ));
        }
        Ok(HttpOrigin {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// Whether a request to `uri` goes to this origin.
    pub fn admits(&self, uri: &hyper::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        https == self.https
            && authority.host().eq_ignore_ascii_case(&self.host)
            && authority.port_u16().unwrap_or(if https { 443 } else { 80 }) == self.port
    }
}

impl std::fmt::Display for HttpOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

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
    // Outbound HTTP (capability `http`).
    /// HTTP requests per call.
    pub http_requests_per_call: usize,
    /// Bytes of one response body the plugin may read.
    pub http_response_bytes: u64,
    /// Bytes of one request body the plugin may send.
    pub http_request_bytes: u64,
    /// Outbound connections open at once, across the plugin's calls.
    pub http_connections: usize,
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
            http_requests_per_call: DEFAULT_HTTP_REQUESTS_PER_CALL,
            http_response_bytes: DEFAULT_HTTP_RESPONSE_BYTES,
            http_request_bytes: DEFAULT_HTTP_REQUEST_BYTES,
            http_connections: DEFAULT_HTTP_CONNECTIONS,
        }
    }
}
