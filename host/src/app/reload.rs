//! Hot reload: the config file read again, what changed compiled and
//! checked as at start, then swapped in at once.
//!
//! What a request sees is one [`Generation`]: the routes (secrets, app
//! keys, chains), the plugins, the allowlists. The router takes an `Arc` of
//! the current one once, when a request arrives, so a delivery in flight
//! finishes on the generation it started on while the next ones see the
//! new one. The swap is an [`arc_swap::ArcSwap`]: loading it is a few
//! atomic operations on the hot path with no lock a reload could hold up,
//! where `tokio::sync::watch` would take a read lock per request and
//! notify watchers nobody needs.
//!
//! A plugin whose spec (file, pin, grants, limits, config, …) is unchanged
//! and whose file still has the same SHA-256 is reused as it is (its call
//! counter and circuit breaker go on); the others are loaded (the
//! component cache makes an already-compiled file instant).
//!
//! A changed `listen` or `admin_listen` is bound before anything is
//! swapped, and `[tls]` loaded ([`super::listeners`]): either failing
//! refuses the reload whole. What the running process fixed at start is
//! refused with "needs a restart" ([`fixed_changes`], [`pool_refusal`]):
//! the storage, the CRM sources, the engine and its pool, the body and
//! connection limits, the delivery budget, `[events]`.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::emailgistics::Route;
use crate::engagelab::EventRoute;
use crate::plugin::policy::PluginSpec;
use crate::plugin::{EngineOptions, Plugin, PluginEngine};
use crate::source_ip::SourceFilter;

use super::assemble::{self, StartError};

/// Reads the config the server was started with again, with the command
/// line's overrides applied (`--data-dir`, `--listen`, …).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What the public listener serves, swapped whole by a reload.
pub struct Generation {
    /// 1 at start, one more per successful reload.
    pub number: u64,
    /// The config it was built from (what the next reload compares with).
    pub config: Config,
    /// Every loaded plugin, in config order.
    pub plugins: Vec<Arc<Plugin>>,
    /// The Emailgistics routes, in config order.
    pub routes: Vec<Route>,
    /// The EngageLab routes, in config order (shared with the event worker).
    pub event_routes: Arc<Vec<EventRoute>>,
    /// The allowlists of the routes that have one.
    pub sources: Arc<Vec<Arc<SourceFilter>>>,
}

impl Generation {
    /// The Emailgistics route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path)
    }

    /// The EngageLab route serving `path`, if any.
    pub fn event_route(&self, path: &str) -> Option<&EventRoute> {
        self.event_routes.iter().find(|r| r.path == path)
    }
}

/// Why a reload was refused (the running generation keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was not started from a config file.
    #[error("this server has no config file to reload from")]
    NoSource,
    /// The file does not read or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Something fixed at start changed.
    #[error("{0} changed: that needs a restart")]
    NeedsRestart(String),
    /// The new limits exceed what the running engine was built for.
    #[error("{0}: that needs a restart")]
    Pool(String),
    /// A plugin, a chain or `[tls]` is refused, as it would be at start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A changed listener address cannot be bound.
    #[error(transparent)]
    Bind(#[from] super::listeners::BindError),
}

/// What a successful reload changed (the `changed` of its answer).
#[derive(Debug, Serialize)]
pub struct Changes {
    /// The generation now serving.
    pub generation: u64,
    /// Plugins by name.
    pub plugins: PluginChanges,
    /// Emailgistics routes by path.
    pub routes: Names,
    /// EngageLab routes by path.
    pub engagelab: Names,
    /// The listeners re-bound: `listen`/`admin_listen` and the address
    /// now listened on, or `"off"`. Empty when neither address changed.
    pub listeners: super::listeners::Rebound,
    /// Whether `[tls]` changed (new connections get the new settings).
    pub tls: bool,
}

/// Plugins loaded anew, reused unchanged, and gone.
#[derive(Debug, Serialize)]
pub struct PluginChanges {
    /// Loaded (new, or changed: file, pin, grants, limits or config).
    pub loaded: Vec<String>,
    /// Unchanged, reused as they were.
    pub reused: Vec<String>,
    /// No longer configured.
    pub removed: Vec<String>,
}

/// Names added, kept (possibly with new secrets or chains) and removed.
#[derive(Debug, Serialize)]
pub struct Names {
    /// New.
    pub added: Vec<String>,
    /// In both.
    pub kept: Vec<String>,
    /// Gone.
    pub removed: Vec<String>,
}

impl Names {
    fn between<'a>(
        old: impl Iterator<Item = &'a str>,
        new: impl Iterator<Item = &'a str>,
    ) -> Names {
        let (old, new): (Vec<&str>, Vec<&str>) = (old.collect(), new.collect());
        let owned = |v: Vec<&&str>| v.into_iter().map(|s| s.to_string()).collect();
        Names {
            added: owned(new.iter().filter(|n| !old.contains(n)).collect()),
            kept: owned(new.iter().filter(|n| old.contains(n)).collect()),
            removed: owned(old.iter().filter(|n| !new.contains(n)).collect()),
        }
    }
}

/// The settings fixed at start that differ between `running` and `new`,
/// by their config key.
pub fn fixed_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (running, new);
    [
        ("data_dir", a.data_dir == b.data_dir),
        // The admin listener checks the token it started with: a reload
        // must not open it on a new address with a token it never checks.
        ("admin_token", a.admin_token == b.admin_token),
        ("[storage]", a.storage == b.storage),
        ("[store]", a.store == b.store),
        ("flush_every_ms", a.flush_every_ms == b.flush_every_ms),
        ("sled_cache_bytes", a.sled_cache_bytes == b.sled_cache_bytes),
        ("allocator", a.allocator == b.allocator),
        ("cache_dir", a.cache_dir == b.cache_dir),
        ("[cache]", a.cache == b.cache),
        ("[[crm]]", a.crm == b.crm),
        ("[events]", a.events == b.events),
        ("max_connections", a.max_connections == b.max_connections),
        ("max_body_bytes", a.max_body_bytes == b.max_body_bytes),
        (
            "body_read_timeout_ms",
            a.body_read_timeout == b.body_read_timeout,
        ),
        ("delivery_budget_ms", a.delivery_budget == b.delivery_budget),
    ]
    .into_iter()
    .filter_map(|(key, same)| (!same).then_some(key))
    .collect()
}

/// Why the running engine cannot serve plugins with the limits `wanted`
/// asks for: its pool's slots were sized at start, and fuel metering is
/// compiled in or not. Lower limits are fine.
pub fn pool_refusal(running: &EngineOptions, wanted: &EngineOptions) -> Option<String> {
    if wanted.fuel && !running.fuel {
        return Some(
            "a plugin has a fuel limit, and the running engine does not meter fuel".into(),
        );
    }
    [
        ("max_memory_bytes", running.max_memory_bytes, wanted.max_memory_bytes),
        ("max_table_elements", running.max_table_elements, wanted.max_table_elements),
        ("max_instances", running.max_instances, wanted.max_instances),
    ]
    .into_iter()
    .find(|(_, running, wanted)| wanted > running)
    .map(|(key, running, wanted)| {
        format!("a plugin's {key} = {wanted} exceeds the {running} the running engine's pool was sized for")
    })
}

/// Build the generation after `running` from `config`: refuse what needs
/// a restart, load what changed, check the chains. Blocking (compiling):
/// run it on tokio's blocking pool.
pub(super) fn next(
    engine: &PluginEngine,
    running: &Generation,
    config: Config,
) -> Result<(Generation, Changes), ReloadError> {
    let fixed = fixed_changes(&running.config, &config);
    if !fixed.is_empty() {
        return Err(ReloadError::NeedsRestart(fixed.join(", ")));
    }
    if let Some(why) = pool_refusal(engine.options(), &assemble::engine_options(&config)) {
        return Err(ReloadError::Pool(why));
    }
    let reuse = |spec: &PluginSpec| reusable(running, spec);
    let (plugins, reused) = assemble::load_plugins(engine, &config, &reuse)?;
    let (routes, event_routes) = assemble::routes(&config, &plugins)?;
    let named = |pick: bool| -> Vec<String> {
        config
            .plugins
            .iter()
            .zip(&reused)
            .filter(|(_, r)| **r == pick)
            .map(|(p, _)| p.name.clone())
            .collect()
    };
    let old_plugins = Names::between(
        running.config.plugins.iter().map(|p| p.name.as_str()),
        config.plugins.iter().map(|p| p.name.as_str()),
    );
    let changes = Changes {
        generation: running.number + 1,
        plugins: PluginChanges {
            loaded: named(false),
            reused: named(true),
            removed: old_plugins.removed,
        },
        routes: Names::between(
            running.routes.iter().map(|r| r.path.as_str()),
            routes.iter().map(|r| r.path.as_str()),
        ),
        engagelab: Names::between(
            running.event_routes.iter().map(|r| r.path.as_str()),
            event_routes.iter().map(|r| r.path.as_str()),
        ),
        // Bound by the caller, after this.
        listeners: Default::default(),
        tls: running.config.tls != config.tls,
    };
    let generation = Generation {
        number: running.number + 1,
        sources: Arc::new(super::source_filters(&config)),
        config,
        plugins,
        routes,
        event_routes: Arc::new(event_routes),
    };
    Ok((generation, changes))
}

/// The running plugin loaded from a spec equal to `spec`, if its file
/// still hashes to what it was loaded from.
fn reusable(running: &Generation, spec: &PluginSpec) -> Option<Arc<Plugin>> {
    use sha2::Digest;
    let i = running.config.plugins.iter().position(|p| p == spec)?;
    let plugin = &running.plugins[i];
    let bytes = std::fs::read(&spec.path).ok()?;
    let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    (digest == *plugin.sha256()).then(|| plugin.clone())
}
