//! The composition root: builds a running enrichd from a [`Config`] (the
//! storage, then the CRM sources, the compiled plugins and the routes),
//! hands each handler the narrow state it needs
//! ([`DeliveryState`], [`EventState`], [`AdminState`]) and runs them
//! ([`run`]): the public listener behind the [`router`], the admin
//! listener, and the background [`jobs`] under one [`supervisor`]. What
//! the routes serve is a [`reload::Generation`], swapped whole by a reload.
//!
//! With `[tls]` the public listener speaks HTTPS ([`tls`]): its
//! certificate is loaded at start and reloaded on SIGHUP
//! ([`App::reload_tls`]) and when its files change. A reload may move the
//! listeners and change `[tls]` ([`listeners`]).
//!
//! Three other compositions live here for the CLI: [`one_off`] (one plugin,
//! run once, as `serve` would run it: `enrichd plugin run`), [`replay`]
//! (a logged delivery's chain, its host calls answered from the record:
//! `enrichd replay`) and [`check`] (the config's plugins loaded as `serve`
//! would, nothing opened or bound: `enrichd check-config`).
//!
//! Everything that can fail does so here, at start or at a [`reload`],
//! with a message naming the file or plugin at fault — never later, on a
//! delivery. Nothing below this module sees the whole; tests read counters
//! through [`App`]'s accessors.

mod assemble;
pub mod check;
pub mod jobs;
pub mod listeners;
pub mod one_off;
pub mod reload;
pub mod replay;
pub mod router;
pub mod supervisor;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, watch, Mutex, Notify};

use crate::admin::{AdminState, Reload};
use crate::clock::Clock;
use crate::config::{Config, CrmBackendSpec, StorageSpec, DEFAULT_EVENT_LEASE};
use crate::emailgistics::auth::Secret;
use crate::emailgistics::DeliveryState;
use crate::engagelab::{EventState, EventStats};
use crate::http::tls::{TlsListener, TlsSwitch};
use crate::http::{serve_capped, Accept, BodyLimits, ConnectionCap};
use crate::idempotency::Inflight;
use crate::plugin::{Plugin, PluginEngine, Services};
use crate::source_ip::SourceFilter;
use crate::storage::Storage;
use assemble::Parts;
pub use assemble::StartError;
use listeners::{Rebind, Sessions, Shutdown};
use reload::{Changes, ConfigSource, Generation, ReloadError};
use router::Router;

/// A running enrichd's parts: the handlers' states, and what the jobs and
/// the tests reach through the accessors.
pub struct App {
    deliveries: Arc<DeliveryState>,
    events: Arc<EventState>,
    admin: Arc<AdminState>,
    storage: Storage,
    // What the public listener serves; swapped by a reload.
    current: Arc<ArcSwap<Generation>>,
    // Serializes reloads (a reload never blocks a delivery: they only load
    // `current`). `None`: not started from a file, nothing to reload.
    source: Mutex<Option<ConfigSource>>,
    connections: ConnectionCap,
    // Dropping it stops the epoch ticker: it lives as long as the app.
    engine: Arc<PluginEngine>,
    // HTTPS on the public listener, if `[tls]` is configured; swapped by
    // a reload, with `tls_switch` (what the public listener speaks).
    tls: ArcSwapOption<tls::PublicTls>,
    tls_switch: TlsSwitch,
    // Listeners a reload bound, to the serving loop of `run` (which takes
    // the receiver).
    rebind: mpsc::UnboundedSender<Rebind>,
    rebinds: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Rebind>>>,
}

impl App {
    /// Open the storage, seed the CRM, compile every plugin (on tokio's
    /// blocking pool: compiling takes seconds), and wire the handlers.
    pub async fn build(config: &Config) -> Result<App, StartError> {
        // First: a certificate that does not load is the quickest to report.
        let tls = config.tls.as_ref().map(tls::PublicTls::load).transpose()?;
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
        let owned = config.clone();
        let last_known = storage.crm.clone();
        let metrics = crate::metrics::Metrics::new();
        let crm_metrics = metrics.clone();
        let parts = tokio::task::spawn_blocking(move || {
            assemble::parts(&owned, crm_db.as_ref(), &last_known, clock, &crm_metrics)
        })
        .await
        .map_err(|e| StartError::Interrupted(e.to_string()))??;
        let app = Self::compose(config, storage, parts, clock, metrics);
        app.set_tls(tls);
        Ok(app)
    }

    /// Give each handler its state.
    fn compose(
        config: &Config,
        storage: Storage,
        parts: Parts,
        clock: Clock,
        metrics: crate::metrics::Metrics,
    ) -> App {
        let services = Services {
            crm: parts.crm,
            kv: Some(storage.kv.clone()),
            replay: None,
        };
        let body = BodyLimits {
            max_bytes: config.max_body_bytes,
            read_timeout: config.body_read_timeout,
        };
        let inflight = Arc::new(Inflight::default());
        let event_stats = Arc::new(EventStats::default());
        let connections = ConnectionCap::new(config.max_connections);
        let sources = Arc::new(source_filters(config));
        let event_routes = Arc::new(parts.event_routes);
        let admin = AdminState {
            metrics: metrics.clone(),
            sources: ArcSwap::new(sources.clone()),
            backend: storage.backend,
            answers: storage.answers.clone(),
            events: storage.events.clone(),
            kv: storage.kv.clone(),
            clock,
            maintenance: storage.maintenance.clone(),
            inflight: inflight.clone(),
            allocator: parts.engine.allocator(),
            component_cache: parts.engine.cache().cloned(),
            plugins: ArcSwap::from_pointee(parts.plugins.clone()),
            crm: services.crm.clone(),
            event_stats: event_stats.clone(),
            connections: connections.clone(),
            token: config.admin_token.as_deref().map(Secret::new),
        };
        let events = EventState {
            routes: ArcSwap::new(event_routes.clone()),
            queue: storage.events.clone(),
            lease: match &config.storage {
                StorageSpec::Redis { event_lease, .. } => *event_lease,
                StorageSpec::Sled => DEFAULT_EVENT_LEASE,
            },
            max_attempts: config.events.max_attempts,
            wakeup: Notify::new(),
            stats: event_stats,
            body,
            clock,
            services: services.clone(),
        };
        let deliveries = DeliveryState {
            budget: config.delivery_budget,
            body,
            answers: storage.answers.clone(),
            inflight,
            clock,
            services,
            metrics,
        };
        let (rebind, rebinds) = mpsc::unbounded_channel();
        App {
            deliveries: Arc::new(deliveries),
            events: Arc::new(events),
            admin: Arc::new(admin),
            storage,
            current: Arc::new(ArcSwap::from_pointee(Generation {
                number: 1,
                config: config.clone(),
                plugins: parts.plugins,
                routes: parts.routes,
                event_routes,
                sources,
            })),
            source: Mutex::new(None),
            connections,
            engine: Arc::new(parts.engine),
            tls: ArcSwapOption::empty(),
            tls_switch: TlsSwitch::default(),
            rebind,
            rebinds: std::sync::Mutex::new(Some(rebinds)),
        }
    }

    /// Serve new public connections with `tls` (plain HTTP when `None`).
    fn set_tls(&self, tls: Option<tls::PublicTls>) {
        self.tls_switch
            .store(tls.as_ref().map(|t| t.acceptor.clone()));
        self.tls.store(tls.map(Arc::new));
    }

    /// Reload from `source` (the config file the server was started with)
    /// on SIGHUP and `POST /reload`.
    pub fn reloading_from(self, source: ConfigSource) -> App {
        App {
            source: Mutex::new(Some(source)),
            ..self
        }
    }

    /// Read the config again and swap to it, if it loads and checks as at
    /// start (its `[tls]` too), its new listener addresses bind, and it
    /// changes nothing fixed at start; else keep the running one and say
    /// why. One reload at a time; deliveries go on meanwhile (those in
    /// flight on the generation they started on, open connections on the
    /// listener and TLS settings they started with).
    pub async fn reload(&self) -> Result<Changes, ReloadError> {
        let source = self.source.lock().await;
        let source = source.as_ref().ok_or(ReloadError::NoSource)?;
        let config = source()?;
        let (engine, running) = (self.engine.clone(), self.current.load_full());
        let before = running.clone();
        let (next, mut changes) =
            tokio::task::spawn_blocking(move || reload::next(&engine, &running, config))
                .await
                .map_err(|e| StartError::Interrupted(e.to_string()))??;
        // Everything that can fail before anything is swapped.
        let tls = changes
            .tls
            .then(|| {
                next.config
                    .tls
                    .as_ref()
                    .map(tls::PublicTls::load)
                    .transpose()
            })
            .transpose()?;
        let (rebind, rebound) = listeners::bind(&before.config, &next.config).await?;
        changes.listeners = rebound;
        let next = Arc::new(next);
        // The router first: new requests see the new routes; then the event
        // worker and the admin view.
        self.current.store(next.clone());
        self.events.routes.store(next.event_routes.clone());
        self.admin.plugins.store(Arc::new(next.plugins.clone()));
        self.admin.sources.store(next.sources.clone());
        if let Some(tls) = tls {
            self.set_tls(tls);
        }
        if rebind.public.is_some() || rebind.admin.is_some() {
            // Fails only when `run` has ended: the listeners are dropped.
            let _ = self.rebind.send(rebind);
        }
        Ok(changes)
    }

    /// [`App::reload`], then the certificate ([`App::reload_tls`]: the
    /// files may have been renewed with the config), logged; the answer
    /// `POST /reload` gives: whether the config took, and the JSON.
    pub async fn reload_and_answer(&self) -> (bool, serde_json::Value) {
        let config = self.reload().await;
        let result = if config.is_ok() { "ok" } else { "refused" };
        self.admin.metrics.record(|| {
            metrics::counter!("enrichd_reloads_total", "result" => result).increment(1);
        });
        let certificate = match self.reload_tls() {
            Ok(true) => serde_json::json!("reloaded"),
            Ok(false) => serde_json::Value::Null,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        match config {
            Ok(changes) => {
                tracing::info!(changed = %serde_json::json!(changes), "config reloaded");
                let answer = serde_json::json!({"reloaded": true, "changed": changes, "certificate": certificate});
                (true, answer)
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the running config keeps serving");
                let answer = serde_json::json!({"reloaded": false, "error": e.to_string(), "certificate": certificate});
                (false, answer)
            }
        }
    }

    /// What the public listener serves now.
    pub fn generation(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// How many times the plugin named `name` has been called.
    pub fn plugin_calls(&self, name: &str) -> Option<u64> {
        self.current
            .load()
            .plugins
            .iter()
            .find(|p| p.info().name == name)
            .map(|p| p.calls())
    }

    /// Every loaded plugin, in config order.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.current.load().plugins.clone()
    }

    /// The services lent to plugins (CRM sources, kv).
    pub fn services(&self) -> &Services {
        &self.deliveries.services
    }

    /// Every piece of state, one handle per port.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The EngageLab counters.
    pub fn event_stats(&self) -> &EventStats {
        &self.events.stats
    }

    /// The wasm engine (its allocator, its call permits).
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Read the `[tls]` certificate and key again and present them from
    /// the next handshake on (what SIGHUP does); open connections keep
    /// theirs. A pair that does not load is refused, the old one kept, and
    /// the reason logged and returned. `Ok(false)`: no `[tls]`.
    pub fn reload_tls(&self) -> Result<bool, crate::http::tls::TlsError> {
        match &*self.tls.load() {
            Some(tls) => tls.certs.reload().map(|()| true),
            None => Ok(false),
        }
    }
}

/// The allowlists of the routes (Emailgistics and EngageLab) that have
/// `allow_ips`, each behind the config's trusted proxies.
fn source_filters(config: &Config) -> Vec<Arc<SourceFilter>> {
    let routes = config.routes.iter().map(|r| (&r.path, &r.allow_ips));
    let events = config.event_routes.iter().map(|r| (&r.path, &r.allow_ips));
    routes
        .chain(events)
        .filter_map(|(path, allow)| {
            let allow = allow.clone()?;
            Some(Arc::new(SourceFilter::new(
                path,
                allow,
                config.trusted_proxies.clone(),
            )))
        })
        .collect()
}

/// Serve `app`: its webhook routes on `listener`, its admin endpoints on
/// `admin` (if any) and its background jobs, until `shutdown` resolves (or
/// a listener ends). Then the listeners stop accepting and drain — the
/// public one for up to the delivery budget, so no accepted delivery is cut
/// short — and only then are the jobs shut down.
///
/// Both listeners are anything that accepts connections ([`Accept`]); the
/// public one speaks TLS or not as the app's `[tls]` says at each accepted
/// connection. A reload that moves a listener hands its new one here
/// ([`listeners`]): it starts serving, and the one it replaces drains as
/// at shutdown. One task handles SIGHUP (the config, then the certificate:
/// [`App::reload_and_answer`]) and reloads the certificate when its files
/// change ([`tls::reload_task`]); the admin listener's `POST /reload` runs
/// the same reload.
pub async fn run(
    listener: impl Accept + 'static,
    admin: Option<impl Accept + 'static>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let jobs = jobs::start(&app.storage, &app.events, &app.deliveries.services.crm);
    let metrics = app.admin.metrics.clone();
    jobs.spawn("metrics upkeep", move || {
        metrics.clone().upkeep_periodically()
    });
    // One signal for both listeners: the caller's, or the current listener
    // of either kind ending (an accept loop ends only on the signal today;
    // if one ever ends for another reason, the other must not serve on
    // alone).
    let (stop, stopped_rx) = watch::channel(false);
    let stopped = || {
        let mut rx = stopped_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let signal = async {
        tokio::select! {
            () = shutdown => {}
            () = stopped() => {}
        }
        stop.send_replace(true);
    };
    let router = Router::new(
        app.deliveries.clone(),
        app.events.clone(),
        app.current.clone(),
    );
    let mut rebinds = match app.rebinds.lock() {
        Ok(mut rx) => rx.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    let listening = async {
        let mut public = Sessions::new(stopped_rx.clone());
        let mut admins = Sessions::new(stopped_rx.clone());
        public.start(|shutdown| serve_public(&app, &router, listener, shutdown));
        if let Some(listener) = admin {
            admins.start(|shutdown| serve_admin(&app, listener, shutdown));
        }
        let mut result = Ok(());
        while !(public.is_empty() && admins.is_empty()) {
            tokio::select! {
                Some(rebind) = listeners::next(&mut rebinds) => {
                    if let Some(listener) = rebind.public {
                        tracing::info!(addr = ?listener.local_addr().ok(), "listening (re-bound by a reload); the old listener drains");
                        public.start(|shutdown| serve_public(&app, &router, listener, shutdown));
                    }
                    match rebind.admin {
                        Some(Some(listener)) => {
                            tracing::info!(admin = ?listener.local_addr().ok(), "admin listening (re-bound by a reload)");
                            admins.start(|shutdown| serve_admin(&app, listener, shutdown));
                        }
                        Some(None) => admins.retire(),
                        None => {}
                    }
                }
                Some((current, ended)) = public.ended() => {
                    result = result.and(ended);
                    if current {
                        stop.send_replace(true);
                    }
                }
                Some((current, ended)) = admins.ended() => {
                    result = result.and(ended);
                    if current {
                        stop.send_replace(true);
                    }
                }
            }
        }
        result
    };
    let hangup = || async {
        let _ = app.reload_and_answer().await;
    };
    let certs = || app.tls.load_full().map(|t| t.certs.clone());
    let reload = tls::reload_task(certs, stopped(), hangup);
    let ((), listening, ()) = tokio::join!(signal, listening, reload);
    // The listeners have drained; the jobs stop at their next await (the
    // event worker's callback in hand stays queued and is run again).
    jobs.shutdown(jobs::SHUTDOWN_GRACE).await;
    listening
}

/// Serve the webhook routes on `listener` (TLS or not as the app's switch
/// says) until `shutdown`, then drain for up to the delivery budget.
fn serve_public<A: Accept + 'static>(
    app: &App,
    router: &Router,
    listener: A,
    shutdown: Shutdown,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let (budget, cap) = (app.deliveries.budget, app.connections.clone());
    let listener = TlsListener::new(listener, app.tls_switch.clone());
    let router = router.clone();
    let handler = move |req| {
        let router = router.clone();
        async move { router.handle(req).await }
    };
    async move { serve_capped(listener, shutdown, budget, &cap, handler).await }
}

/// Serve the admin endpoints on `listener` until `shutdown`; its
/// `POST /reload` reloads `app`.
fn serve_admin<A: Accept + 'static>(
    app: &Arc<App>,
    listener: A,
    shutdown: Shutdown,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let reloading = app.clone();
    let reload: Reload = Arc::new(move || {
        let app = reloading.clone();
        Box::pin(async move { app.reload_and_answer().await })
    });
    crate::admin::run(listener, app.admin.clone(), Some(reload), shutdown)
}

#[cfg(test)]
mod tests;
