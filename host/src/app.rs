//! Assembling a running enrichd from a [`Config`]: the storage, the CRM
//! seed, the compiled plugins and the routes that use them.
//!
//! Everything that can fail does so here, at start, with a message naming
//! the file or plugin at fault — never later, on a delivery.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::config::{CrmBackendSpec, CrmSourceSpec};
use crate::crm::cache::CrmSource;
use crate::crm::embedded::{CrmError, EmbeddedCrm, ImportOptions};
use crate::crm::http::HttpCrm;
use crate::crm::{Backend, BackendError};
use crate::emailgistics::auth::Secret;
use crate::emailgistics::chain::ChainEntry;
use crate::idempotency::{Clock, Inflight};
use crate::plugin::{EngineOptions, LoadError, PluginEngine, Services};
use crate::storage::crm_records::CrmDb;
use crate::storage::{CrmLastKnown, OpenError, Storage};

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
}

/// One Emailgistics webhook route, ready to serve.
pub struct Route {
    /// Request path.
    pub path: String,
    /// Accepted secrets.
    pub secrets: Vec<Secret>,
    /// Plugins in order.
    pub chain: Vec<ChainEntry>,
}

/// A running enrichd's state, shared by all connections.
pub struct App {
    /// Routes by path.
    pub routes: Vec<Route>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Time allowed per delivery.
    pub delivery_budget: std::time::Duration,
    /// Services lent to plugins.
    pub services: Services,
    /// Every piece of state: answers, the event queue, kv, CRM values.
    pub storage: Storage,
    /// Deliveries being processed right now.
    pub inflight: Arc<Inflight>,
    /// The clock stored answers are stamped and expired with.
    pub clock: Clock,
    /// Every loaded plugin, in config order.
    pub plugins: Vec<Arc<crate::plugin::Plugin>>,
    /// EngageLab routes by path.
    pub event_routes: Vec<crate::engagelab::EventRoute>,
    /// How long the event worker holds a callback before another may
    /// take it (`[storage] event_lease_ms`).
    pub event_lease: std::time::Duration,
    /// Event queue settings.
    pub event_settings: crate::config::EventSettings,
    /// Wakes the event worker when a callback is queued.
    pub event_wakeup: tokio::sync::Notify,
    /// EngageLab counters.
    pub event_stats: crate::engagelab::EventStats,
    /// The public listener's connection cap and counts (`max_connections`).
    pub connections: crate::http::ConnectionCap,
    /// Time a client gets to send a request body (`body_read_timeout_ms`).
    pub body_read_timeout: std::time::Duration,
    /// The wasm engine; dropping it stops the epoch ticker.
    pub engine: PluginEngine,
}

impl App {
    /// Open the storage, seed the CRM, compile every plugin (on tokio's
    /// blocking pool: compiling takes seconds).
    pub async fn build(config: &Config) -> Result<App, StartError> {
        let clock = Clock::new();
        let embedded = config
            .crm
            .iter()
            .any(|c| matches!(c.backend, CrmBackendSpec::Embedded { .. }));
        let (storage, crm_db) = crate::storage::open_with_crm(
            &config.storage_settings(),
            clock,
            embedded.then_some(config.data_dir.as_path()),
        )
        .await?;
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::assemble(&config, storage, crm_db, clock))
            .await
            .map_err(|e| StartError::Interrupted(e.to_string()))?
    }

    /// Everything after the storage: CRM sources, plugins, routes.
    fn assemble(
        config: &Config,
        storage: Storage,
        crm_db: Option<CrmDb>,
        clock: Clock,
    ) -> Result<App, StartError> {
        let crm = config
            .crm
            .iter()
            .map(|spec| {
                open_crm_source(spec, crm_db.as_ref(), storage.crm.clone(), clock).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let engine = PluginEngine::new(EngineOptions {
            allocator: config.allocator,
            fuel: config.plugins.iter().any(|p| p.limits.fuel.is_some()),
            max_memory_bytes: config
                .plugins
                .iter()
                .map(|p| p.limits.max_memory_bytes)
                .max()
                .unwrap_or(crate::plugin::policy::DEFAULT_MAX_MEMORY_BYTES),
            max_table_elements: config
                .plugins
                .iter()
                .map(|p| p.limits.max_table_elements)
                .max()
                .unwrap_or(crate::plugin::policy::DEFAULT_MAX_TABLE_ELEMENTS),
            cache_dir: Some(config.cache_dir.clone()),
        })?;
        let started = Instant::now();
        let plugins = config
            .plugins
            .iter()
            .map(|spec| engine.load(spec).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            plugins = plugins.len(),
            ms = started.elapsed().as_millis() as u64,
            "plugins compiled"
        );

        // What each chain needs is only known once the plugins are loaded.
        for r in &config.routes {
            for e in &r.chain {
                if !plugins[e.plugin].handles_deliveries() {
                    return Err(StartError::Chain(format!(
                        "route {:?}: plugin {:?} does not export enrichd:plugin/handler (it is an event plugin)",
                        r.path, config.plugins[e.plugin].name
                    )));
                }
            }
        }
        let event_routes = config
            .event_routes
            .iter()
            .map(|r| {
                let chain = r
                    .chain
                    .iter()
                    .map(|&i| {
                        if plugins[i].handles_events() {
                            Ok(Arc::clone(&plugins[i]))
                        } else {
                            Err(StartError::Chain(format!(
                                "engagelab {:?}: plugin {:?} does not export enrichd:plugin/events",
                                r.path, config.plugins[i].name
                            )))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(crate::engagelab::EventRoute {
                    path: r.path.clone(),
                    app_keys: r.app_keys.clone(),
                    replay_window: r.replay_window,
                    chain,
                })
            })
            .collect::<Result<Vec<_>, StartError>>()?;

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

        Ok(App {
            routes,
            max_body_bytes: config.max_body_bytes,
            delivery_budget: config.delivery_budget,
            services: Services {
                crm,
                kv: Some(storage.kv.clone()),
            },
            event_lease: match &config.storage {
                crate::config::StorageSpec::Redis { event_lease, .. } => *event_lease,
                crate::config::StorageSpec::Sled => crate::config::DEFAULT_EVENT_LEASE,
            },
            storage,
            inflight: Arc::new(Inflight::default()),
            clock,
            plugins,
            event_routes,
            event_settings: config.events,
            event_wakeup: tokio::sync::Notify::new(),
            event_stats: Default::default(),
            connections: crate::http::ConnectionCap::new(config.max_connections),
            body_read_timeout: config.body_read_timeout,
            engine,
        })
    }

    /// How many times the plugin named `name` has been called.
    pub fn plugin_calls(&self, name: &str) -> Option<u64> {
        self.plugins
            .iter()
            .find(|p| p.info().name == name)
            .map(|p| p.calls())
    }

    /// The EngageLab route serving `path`, if any.
    pub fn event_route(&self, path: &str) -> Option<&crate::engagelab::EventRoute> {
        self.event_routes.iter().find(|r| r.path == path)
    }

    /// The route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path)
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
