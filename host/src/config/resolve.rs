//! Validation of a [`RawConfig`] into a [`Config`]: defaults applied, paths
//! made absolute, secrets resolved, every cross-reference checked. No I/O:
//! the file's directory and an environment lookup are passed in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;

impl RawConfig {
    /// The admin listener's address; `None`: `"off"`.
    pub fn admin_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN) {
            "off" => Ok(None),
            addr => addr
                .parse::<SocketAddr>()
                .map(Some)
                .map_err(|e| invalid(format!("admin_listen = {addr:?}: {e} (or \"off\")"))),
        }
    }

    /// `--data-dir`: `dir` takes the place of the file's `data_dir`. Set on
    /// the raw file, before [`RawConfig::resolve`], so that everything
    /// derived from the data directory (the component cache's default
    /// place; sled, the kv and the CRM records live in `data_dir` itself)
    /// moves with it. A relative `dir` is taken from `base`, as the file's
    /// own; the command line makes it absolute first.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }

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
        let admin_listen = self.admin_listen()?;
        let idem = &self.idempotency;
        let retention = idem
            .retention_hours
            // Saturating: a huge count means "forever" (the store saturates
            // too), not an overflow panic.
            .map(|h| Duration::from_secs(h.saturating_mul(3600)))
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
        let sled_cache_bytes = self.sled_cache_bytes.unwrap_or(DEFAULT_SLED_CACHE_BYTES);
        // Below 1 MiB sled thrashes on its own metadata.
        if sled_cache_bytes < 1024 * 1024 {
            return Err(invalid(format!(
                "sled_cache_bytes = {sled_cache_bytes}: must be at least 1 MiB (1048576)"
            )));
        }
        let cache_dir = match self.cache_dir {
            Some(dir) => base.join(dir),
            None => data_dir.join("component-cache"),
        };
        let cache = CachePolicy {
            max_bytes: self.cache_max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES),
            // Saturating, as the other hour counts: huge means "forever".
            grace: self
                .cache_grace_hours
                .map(|h| Duration::from_secs(h.saturating_mul(3600)))
                .unwrap_or(DEFAULT_CACHE_GRACE),
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
                    let known: Vec<_> = Capability::ALL.iter().map(|c| c.name()).collect();
                    invalid(format!(
                        "plugin {:?}: unknown capability {c:?} (known: {})",
                        p.name,
                        known.join(", ")
                    ))
                })?);
            }
            let allowed_hosts = allowed_hosts(&p, caps.contains(&Capability::Http))?;
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
                allowed_hosts,
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
            if r.path == crate::http::HEALTHZ_PATH || routes.iter().any(|q| q.path == r.path) {
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
            let allow_ips = allow_ips(&format!("route {:?}", r.path), r.allow_ips.as_deref())?;
            routes.push(RouteSpec {
                path: r.path,
                secrets,
                chain,
                allow_ips,
            });
        }
        let mut event_routes: Vec<EventRouteSpec> = Vec::with_capacity(self.engagelab.len());
        for r in self.engagelab {
            let taken = r.path == crate::http::HEALTHZ_PATH
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
            let allow_ips = allow_ips(&format!("engagelab {:?}", r.path), r.allow_ips.as_deref())?;
            event_routes.push(EventRouteSpec {
                allow_ips,
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
                .map(|h| Duration::from_secs(h.saturating_mul(3600)))
                .unwrap_or(DEFAULT_DEDUPE_WINDOW),
            max_attempts: self.events.max_attempts.unwrap_or(DEFAULT_EVENT_ATTEMPTS),
            max_queued: self.events.max_queued.unwrap_or(DEFAULT_MAX_QUEUED_EVENTS),
        };
        if events.dedupe_window.is_zero() || events.max_attempts == 0 {
            return Err(invalid(
                "[events] dedupe_hours and max_attempts must be > 0",
            ));
        }
        if events.max_queued == 0 || events.max_queued > MAX_MAX_QUEUED_EVENTS {
            return Err(invalid(format!(
                "[events] max_queued = {}: must be between 1 and {MAX_MAX_QUEUED_EVENTS}",
                events.max_queued
            )));
        }
        // Senders (issue 9): connection cap and body-read timeout.
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 || max_connections > MAX_MAX_CONNECTIONS {
            return Err(invalid(format!(
                "max_connections = {max_connections}: must be between 1 and {MAX_MAX_CONNECTIONS}"
            )));
        }
        let body_read_timeout = self
            .body_read_timeout_ms
            .map(Duration::from_millis)
            // The default never outlasts a shorter delivery budget; only a
            // value written in the file is refused for that.
            .unwrap_or(DEFAULT_BODY_READ_TIMEOUT.min(delivery_budget));
        if body_read_timeout.is_zero() || body_read_timeout > delivery_budget {
            return Err(invalid(format!(
                "body_read_timeout_ms = {}: must be above 0 and at most the delivery budget ({} ms)",
                body_read_timeout.as_millis(),
                delivery_budget.as_millis()
            )));
        }

        let storage = Self::storage_spec(&self.storage, &plugins, &event_routes, env)?;
        let trusted_proxies = Cidrs::parse(&self.trusted_proxies)
            .map_err(|e| invalid(format!("trusted_proxies: {e}")))?;
        let tls = self.tls.map(|t| tls_settings(t, base)).transpose()?;
        let admin_token = self
            .admin_token
            .as_ref()
            .map(|t| resolve_secret(t, "admin_token", env))
            .transpose()?;
        // Off loopback, the delivery log (mail subjects, CRM answers) and
        // `/reload` would be open to the network: a token is required.
        if let (Some(addr), None) = (admin_listen, &admin_token) {
            if !addr.ip().is_loopback() {
                return Err(invalid(format!(
                    "admin_listen = \"{addr}\" is not loopback: set admin_token \
                     (admin_token = {{ env = \"ENRICHD_ADMIN_TOKEN\" }})"
                )));
            }
        }

        Ok(Config {
            listen,
            admin_listen,
            admin_token,
            store,
            flush_every_ms,
            data_dir,
            max_body_bytes,
            delivery_budget,
            allocator: self.allocator.unwrap_or_default(),
            cache_dir,
            cache,
            crm,
            plugins,
            routes,
            event_routes,
            events,
            max_connections,
            body_read_timeout,
            sled_cache_bytes,
            storage,
            trusted_proxies,
            tls,
        })
    }

    /// `[storage]`: the kind, and for Redis its URL (from the file or the
    /// environment), key prefix and event lease (longer than the slowest
    /// event chain).
    fn storage_spec(
        s: &RawStorage,
        plugins: &[PluginSpec],
        event_routes: &[EventRouteSpec],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StorageSpec, ConfigError> {
        let kind = s.kind.unwrap_or(StorageKind::Sled);
        if kind == StorageKind::Sled {
            if s.url.is_some() || s.key_prefix.is_some() || s.event_lease_ms.is_some() {
                return Err(invalid(
                    "[storage] url, key_prefix and event_lease_ms are for kind = \"redis\"",
                ));
            }
            return Ok(StorageSpec::Sled);
        }
        let url = match &s.url {
            None => return Err(invalid("[storage] kind = \"redis\" needs a url")),
            Some(RawUrl::Plain(url)) => url.clone(),
            Some(RawUrl::Env { env: var }) => env(var).ok_or_else(|| {
                invalid(format!(
                    "[storage] url: environment variable {var} is not set"
                ))
            })?,
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                "[storage] url must start with redis:// or rediss://",
            ));
        }
        let key_prefix = s
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
        if key_prefix.is_empty() || key_prefix.len() > 64 {
            return Err(invalid("[storage] key_prefix must be 1 to 64 bytes"));
        }
        let event_lease = s
            .event_lease_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_EVENT_LEASE);
        for r in event_routes {
            let slowest: Duration = r.chain.iter().map(|&i| plugins[i].timeout).sum();
            if event_lease <= slowest {
                return Err(invalid(format!(
                    "[storage] event_lease_ms = {} must be longer than engagelab {:?}'s chain can run ({} ms, the sum of its plugins' timeouts)",
                    event_lease.as_millis(),
                    r.path,
                    slowest.as_millis()
                )));
            }
        }
        Ok(StorageSpec::Redis {
            url,
            key_prefix,
            event_lease,
        })
    }
}

/// A route's `allow_ips`: absent is everyone; present, it must parse and
/// not be empty (an empty list would refuse every client, which is what
/// removing the route is for).
fn allow_ips(what: &str, entries: Option<&[String]>) -> Result<Option<Cidrs>, ConfigError> {
    let Some(entries) = entries else {
        return Ok(None);
    };
    if entries.is_empty() {
        return Err(invalid(format!(
            "{what}: allow_ips is empty, which would refuse every client (remove it to allow all)"
        )));
    }
    Cidrs::parse(entries)
        .map(Some)
        .map_err(|e| invalid(format!("{what}: allow_ips: {e}")))
}

/// A secret's value, from the file or the environment; `what` names it in
/// errors.
/// `[tls]`: paths from the config's directory (whether they load is
/// checked at start, by the app), the lowest version, the handshake
/// deadline (at most [`MAX_TLS_HANDSHAKE_TIMEOUT`]).
fn tls_settings(raw: RawTls, base: &Path) -> Result<TlsSettings, ConfigError> {
    let min_version = match raw.min_version.as_deref() {
        None | Some("1.2") => MinVersion::Tls12,
        Some("1.3") => MinVersion::Tls13,
        Some(other) => {
            return Err(invalid(format!(
                "[tls] min_version = {other:?}: must be \"1.2\" or \"1.3\" (older versions are not supported)"
            )))
        }
    };
    let handshake_timeout = raw
        .handshake_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    if handshake_timeout.is_zero() || handshake_timeout > MAX_TLS_HANDSHAKE_TIMEOUT {
        return Err(invalid(format!(
            "[tls] handshake_timeout_ms = {}: must be above 0 and at most {}",
            handshake_timeout.as_millis(),
            MAX_TLS_HANDSHAKE_TIMEOUT.as_millis()
        )));
    }
    Ok(TlsSettings {
        files: CertFiles {
            cert: base.join(raw.cert),
            key: base.join(raw.key),
        },
        min_version,
        handshake_timeout,
    })
}

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
        max_log_lines: p.max_log_lines.unwrap_or(d.max_log_lines),
        max_log_bytes: p.max_log_bytes.unwrap_or(d.max_log_bytes),
        kv_max_keys: p.kv_max_keys.unwrap_or(d.kv_max_keys),
        kv_max_bytes: p.kv_max_bytes.unwrap_or(d.kv_max_bytes),
        kv_ops_per_call: p.kv_ops_per_call.unwrap_or(d.kv_ops_per_call),
        kv_write_bytes_per_call: p
            .kv_write_bytes_per_call
            .unwrap_or(d.kv_write_bytes_per_call),
        crm_lookups_per_call: p.crm_lookups_per_call.unwrap_or(d.crm_lookups_per_call),
        breaker: breaker_settings(p)?,
        max_list_items: p.max_list_items.unwrap_or(d.max_list_items),
        max_name_bytes: p.max_name_bytes.unwrap_or(d.max_name_bytes),
        max_message_bytes: p.max_message_bytes.unwrap_or(d.max_message_bytes),
        http_requests_per_call: p.http_requests_per_call.unwrap_or(d.http_requests_per_call),
        http_response_bytes: p.http_response_bytes.unwrap_or(d.http_response_bytes),
        http_request_bytes: p.http_request_bytes.unwrap_or(d.http_request_bytes),
        http_connections: p.http_connections.unwrap_or(d.http_connections),
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
    output_caps(name, &limits)?;
    // Budgets of the host imports. Zero would turn an import off; that is
    // what not granting the capability is for.
    let imports = [
        ("max_log_lines", limits.max_log_lines as u64),
        ("max_log_bytes", limits.max_log_bytes as u64),
        ("kv_max_keys", limits.kv_max_keys),
        ("kv_max_bytes", limits.kv_max_bytes),
        ("kv_ops_per_call", limits.kv_ops_per_call as u64),
        (
            "kv_write_bytes_per_call",
            limits.kv_write_bytes_per_call as u64,
        ),
        ("crm_lookups_per_call", limits.crm_lookups_per_call as u64),
        (
            "http_requests_per_call",
            limits.http_requests_per_call as u64,
        ),
        ("http_response_bytes", limits.http_response_bytes),
        ("http_request_bytes", limits.http_request_bytes),
        ("http_connections", limits.http_connections as u64),
    ];
    if let Some((key, _)) = imports.iter().find(|(_, v)| *v == 0) {
        return Err(invalid(format!(
            "plugin {name:?}: {key} must be > 0 (to deny the import, leave its capability out)"
        )));
    }
    Ok(limits)
}

/// The plugin's `allowed_hosts`: required with `http` granted (an empty
/// list would deny every request), refused without it (it would do
/// nothing), each entry `scheme://host[:port]`.
fn allowed_hosts(p: &RawPlugin, http: bool) -> Result<Vec<HttpOrigin>, ConfigError> {
    let name = &p.name;
    match (http, p.allowed_hosts.is_empty()) {
        (true, true) => {
            return Err(invalid(format!(
                "plugin {name:?}: capability `http` needs allowed_hosts (e.g. [\"https://api.example.com\"])"
            )))
        }
        (false, false) => {
            return Err(invalid(format!(
                "plugin {name:?}: allowed_hosts without capability `http` does nothing; grant `http` or remove it"
            )))
        }
        _ => {}
    }
    p.allowed_hosts
        .iter()
        .map(|entry| {
            HttpOrigin::parse(entry)
                .map_err(|e| invalid(format!("plugin {name:?}: allowed_hosts: {e}")))
        })
        .collect()
}

fn breaker_settings(p: &RawPlugin) -> Result<BreakerSettings, ConfigError> {
    let d = BreakerSettings::default();
    let settings = BreakerSettings {
        failures: p.breaker_failures.unwrap_or(d.failures),
        cooldown: p
            .breaker_cooldown_ms
            .map(Duration::from_millis)
            .unwrap_or(d.cooldown),
    };
    if settings.cooldown.is_zero() || settings.cooldown > MAX_BREAKER_COOLDOWN {
        return Err(invalid(format!(
            "plugin {:?}: breaker_cooldown_ms must be between 1 and {} (to turn the breaker off, set breaker_failures = 0)",
            p.name,
            MAX_BREAKER_COOLDOWN.as_millis()
        )));
    }
    Ok(settings)
}

/// The caps on a plugin's actions and texts.
fn output_caps(name: &str, limits: &Limits) -> Result<(), ConfigError> {
    if limits.max_list_items == 0 {
        return Err(invalid(format!(
            "plugin {name:?}: max_list_items must be > 0"
        )));
    }
    // Below 16 bytes not even a short tag fits; below 128 the cut marker
    // (with the original size and the limit) leaves nothing of the text.
    if limits.max_name_bytes < 16 || limits.max_message_bytes < 128 {
        return Err(invalid(format!(
            "plugin {name:?}: max_name_bytes must be >= 16 and max_message_bytes >= 128"
        )));
    }
    Ok(())
}
