//! Turning the resolved config into the parts a running enrichd is made
//! of: the CRM sources (seeding embedded ones), the wasm engine and the
//! compiled plugins, and the routes that use them. Blocking work (seeding,
//! compiling): the caller runs it on tokio's blocking pool.

use std::sync::Arc;
use std::time::Instant;

use crate::clock::Clock;
use crate::config::{Config, CrmBackendSpec, CrmSourceSpec};
use crate::crm::cache::CrmSource;
use crate::crm::embedded::{CrmError, EmbeddedCrm, ImportOptions};
use crate::crm::http::HttpCrm;
use crate::crm::{Backend, BackendError};
use crate::emailgistics::chain::ChainEntry;
use crate::emailgistics::Route;
use crate::engagelab::EventRoute;
use crate::metrics::Metrics;
use crate::plugin::cache::{CachePolicy, ComponentCache};
use crate::plugin::policy::PluginSpec;
use crate::plugin::{EngineOptions, LoadError, Plugin, PluginEngine};
use crate::storage::crm_records::CrmDb;
use crate::storage::{CrmLastKnown, OpenError};

/// Why enrichd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The storage could not be opened (e.g. another enrichd holds the
    /// sled lock; Redis refused the connection).
    #[error(transparent)]
    Store(#[from] OpenError),
    /// Assembling was interrupted (a panic, or the runtime shutting down).
    #[error("start interrupted: {0}")]
    Interrupted(String),
    /// The embedded CRM or its seed could not be loaded.
    #[error("CRM: {0}")]
    Crm(#[from] CrmError),
    /// A CRM source could not be set up.
    #[error("CRM source {name:?}: {reason}")]
    CrmSource {
        /// Source name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] LoadError),
    /// A chain names a plugin that does not implement what the chain needs.
    #[error("{0}")]
    Chain(String),
    /// The `[tls]` certificate or key does not load.
    #[error("[tls]: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
    /// rustls refused the `[tls]` settings.
    #[error("[tls]: {0}")]
    TlsConfig(String),
}

/// What the config assembles into, before it is wired into handler state.
pub(super) struct Parts {
    /// The wasm engine; dropping it stops the epoch ticker.
    pub engine: PluginEngine,
    /// Every loaded plugin, in config order.
    pub plugins: Vec<Arc<Plugin>>,
    /// The CRM sources, in config order.
    pub crm: Vec<Arc<CrmSource>>,
    /// Emailgistics routes.
    pub routes: Vec<Route>,
    /// EngageLab routes.
    pub event_routes: Vec<EventRoute>,
}

/// Seed the CRM sources, compile every plugin, build the routes ([`routes`]).
pub(super) fn parts(
    config: &Config,
    crm_db: Option<&CrmDb>,
    last_known: &Arc<dyn CrmLastKnown>,
    clock: Clock,
    metrics: &Metrics,
) -> Result<Parts, StartError> {
    let crm = config
        .crm
        .iter()
        .map(|spec| {
            open_crm_source(spec, crm_db, last_known.clone(), clock)
                .map(|source| Arc::new(source.with_metrics(metrics.clone())))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let engine = PluginEngine::new(engine_options(config))?;
    let (plugins, _) = load_plugins(&engine, config, &|_| None)?;
    let (routes, event_routes) = routes(config, &plugins)?;
    Ok(Parts {
        engine,
        plugins,
        crm,
        routes,
        event_routes,
    })
}

/// Load every plugin of `config` (compiling it, or from the component
/// cache), except those `reuse` hands back already loaded; then bound the
/// cache. Also says, per plugin, whether it was reused.
pub(super) fn load_plugins(
    engine: &PluginEngine,
    config: &Config,
    reuse: &dyn Fn(&PluginSpec) -> Option<Arc<Plugin>>,
) -> Result<(Vec<Arc<Plugin>>, Vec<bool>), StartError> {
    let started = Instant::now();
    let mut reused = Vec::with_capacity(config.plugins.len());
    let plugins = config
        .plugins
        .iter()
        .map(|spec| {
            let kept = reuse(spec);
            reused.push(kept.is_some());
            match kept {
                Some(plugin) => Ok(plugin),
                None => engine.load(spec).map(Arc::new),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        plugins = plugins.len(),
        reused = reused.iter().filter(|r| **r).count(),
        ms = started.elapsed().as_millis() as u64,
        "plugins compiled"
    );
    if let Some(cache) = engine.cache() {
        sweep_cache(cache, &config.cache);
    }
    Ok((plugins, reused))
}

/// The routes of `config` over its loaded `plugins` (`plugins[i]` is
/// `config.plugins[i]`); refuses a chain naming a plugin that does not
/// implement what the chain needs.
pub(super) fn routes(
    config: &Config,
    plugins: &[Arc<Plugin>],
) -> Result<(Vec<Route>, Vec<EventRoute>), StartError> {
    // What each chain needs is only known once the plugins are loaded.
    let loaded: Vec<Option<&Plugin>> = plugins.iter().map(|p| Some(&**p)).collect();
    if let Some(first) = chain_mismatches(config, &loaded).into_iter().next() {
        return Err(StartError::Chain(first));
    }
    let event_routes = config
        .event_routes
        .iter()
        .map(|r| EventRoute {
            path: r.path.clone(),
            app_keys: r.app_keys.clone(),
            replay_window: r.replay_window,
            chain: r.chain.iter().map(|&i| Arc::clone(&plugins[i])).collect(),
        })
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|r| {
            if r.secrets.is_empty() {
                tracing::warn!(route = %r.path, "no secret configured: every request is accepted");
            }
            Route {
                path: r.path.clone(),
                secrets: r.secrets.clone(),
                chain: r
                    .chain
                    .iter()
                    .map(|e| ChainEntry {
                        plugin: Arc::clone(&plugins[e.plugin]),
                        mailboxes: e.mailboxes.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok((routes, event_routes))
}

/// Every chain entry naming a plugin that does not implement what its
/// chain needs (a delivery route needs `handler`, an EngageLab route
/// `events`). `plugins[i]` is the loaded `config.plugins[i]`, `None` if it
/// did not load (its own error says why; nothing more is said here).
pub(super) fn chain_mismatches(config: &Config, plugins: &[Option<&Plugin>]) -> Vec<String> {
    let mut found = Vec::new();
    let name = |i: usize| &config.plugins[i].name;
    for r in &config.routes {
        for e in &r.chain {
            if plugins[e.plugin].is_some_and(|p| !p.handles_deliveries()) {
                found.push(format!(
                    "route {:?}: plugin {:?} does not export enrichd:plugin/handler (it is an event plugin)",
                    r.path,
                    name(e.plugin)
                ));
            }
        }
    }
    for r in &config.event_routes {
        for &i in &r.chain {
            if plugins[i].is_some_and(|p| !p.handles_events()) {
                found.push(format!(
                    "engagelab {:?}: plugin {:?} does not export enrichd:plugin/events",
                    r.path,
                    name(i)
                ));
            }
        }
    }
    found
}

/// The engine settings `config` asks for (`serve` and `replay` alike, so
/// they share the component cache and the sandbox).
pub(super) fn engine_options(config: &Config) -> EngineOptions {
    use crate::plugin::policy::{self, Limits};
    // The pool is sized for the largest limit of any plugin.
    let largest = |limit: fn(&Limits) -> usize, default: usize| {
        config
            .plugins
            .iter()
            .map(|p| limit(&p.limits))
            .max()
            .unwrap_or(default)
    };
    EngineOptions {
        allocator: config.allocator,
        fuel: config.plugins.iter().any(|p| p.limits.fuel.is_some()),
        max_memory_bytes: largest(|l| l.max_memory_bytes, policy::DEFAULT_MAX_MEMORY_BYTES),
        max_table_elements: largest(|l| l.max_table_elements, policy::DEFAULT_MAX_TABLE_ELEMENTS),
        max_instances: largest(|l| l.max_instances, policy::DEFAULT_MAX_INSTANCES),
        cache_dir: Some(config.cache_dir.clone()),
    }
}

/// Bound the component cache now that the entries the config uses are
/// known, and report its size. A cache that cannot be read is no reason not
/// to start: it is only a cache.
fn sweep_cache(cache: &ComponentCache, policy: &CachePolicy) {
    match cache.sweep(policy) {
        Ok(report) => tracing::info!(
            dir = %cache.dir().display(),
            entries = report.left.entries,
            bytes = report.left.bytes,
            in_use_bytes = report.in_use_bytes,
            removed = report.removed.entries,
            removed_bytes = report.removed.bytes,
            leftovers_removed = report.temps_removed,
            max_bytes = policy.max_bytes,
            grace_hours = policy.grace.as_secs() / 3600,
            "component cache"
        ),
        Err(e) => {
            tracing::warn!(dir = %cache.dir().display(), error = %e, "cannot sweep the component cache")
        }
    }
}

/// Open one CRM source: its backend (seeding an embedded one) and its cache.
fn open_crm_source(
    spec: &CrmSourceSpec,
    db: Option<&CrmDb>,
    last_known: Arc<dyn CrmLastKnown>,
    clock: Clock,
) -> Result<CrmSource, StartError> {
    let failed = |reason: String| StartError::CrmSource {
        name: spec.name.clone(),
        reason,
    };
    let backend = match &spec.backend {
        CrmBackendSpec::Embedded { seed } => {
            let db = db.ok_or_else(|| failed("no embedded CRM database is open".into()))?;
            let crm = EmbeddedCrm::open(db, &spec.name)?;
            if let Some(seed) = seed {
                let report = crm.import(seed, ImportOptions::default(), &mut |_, _| {})?;
                for e in &report.errors {
                    tracing::warn!(source = %spec.name, seed = %seed.display(), "skipped {e}");
                }
                tracing::info!(
                    source = %spec.name,
                    seed = %seed.display(),
                    imported = report.imported,
                    bad_rows = report.bad_rows,
                    total = crm.len(),
                    "CRM seed loaded"
                );
            }
            Backend::Embedded(crm)
        }
        CrmBackendSpec::Http(settings) => Backend::Http(Box::new(
            HttpCrm::new(settings.clone()).map_err(|e: BackendError| failed(e.to_string()))?,
        )),
    };
    Ok(CrmSource::new(
        &spec.name, backend, spec.cache, last_known, clock,
    ))
}
