//! The composition root: builds a running enrichd from a [`Config`] (the
//! storage, then the CRM sources, the compiled plugins and the routes),
//! hands each handler the narrow state it needs
//! ([`DeliveryState`], [`EventState`], [`AdminState`]) and runs them
//! ([`run`]): the public listener behind the [`router`], the admin
//! listener, and the background [`jobs`] under one [`supervisor`].
//!
//! With `[tls]` the public listener speaks HTTPS ([`tls`]): its
//! certificate is loaded at start and reloaded on SIGHUP
//! ([`App::reload_tls`]) and when its files change.
//!
//! Three other compositions live here for the CLI: [`one_off`] (one plugin,
//! run once, as `serve` would run it: `enrichd plugin run`), [`replay`]
//! (a logged delivery's chain, its host calls answered from the record:
//! `enrichd replay`) and [`check`] (the config's plugins loaded as `serve`
//! would, nothing opened or bound: `enrichd check-config`).
//!
//! Everything that can fail does so here, at start, with a message naming
//! the file or plugin at fault — never later, on a delivery. Nothing below
//! this module sees the whole; tests read counters through [`App`]'s
//! accessors.

mod assemble;
pub mod check;
pub mod jobs;
pub mod one_off;
pub mod replay;
pub mod router;
pub mod supervisor;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::admin::AdminState;
use crate::clock::Clock;
use crate::config::{Config, CrmBackendSpec, StorageSpec, DEFAULT_EVENT_LEASE};
use crate::emailgistics::{DeliveryState, Route};
use crate::engagelab::{EventRoute, EventState, EventStats};
use crate::http::{serve_capped, Accept, BodyLimits, ConnectionCap};
use crate::idempotency::Inflight;
use crate::plugin::{Plugin, PluginEngine, Services};
use crate::source_ip::SourceFilter;
use crate::storage::Storage;
use assemble::Parts;
pub use assemble::StartError;
use router::Router;

/// A running enrichd's parts: the handlers' states, and what the jobs and
/// the tests reach through the accessors.
pub struct App {
    deliveries: Arc<DeliveryState>,
    events: Arc<EventState>,
    admin: Arc<AdminState>,
    storage: Storage,
    plugins: Vec<Arc<Plugin>>,
    connections: ConnectionCap,
    sources: Arc<[Arc<SourceFilter>]>,
    // Dropping it stops the epoch ticker: it lives as long as the app.
    engine: PluginEngine,
    // HTTPS on the public listener, if `[tls]` is configured.
    tls: Option<tls::PublicTls>,
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
        let parts = tokio::task::spawn_blocking(move || {
            assemble::parts(&owned, crm_db.as_ref(), &last_known, clock)
        })
        .await
        .map_err(|e| StartError::Interrupted(e.to_string()))??;
        Ok(App {
            tls,
            ..Self::compose(config, storage, parts, clock)
        })
    }

    /// Give each handler its state.
    fn compose(config: &Config, storage: Storage, parts: Parts, clock: Clock) -> App {
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
        let sources = source_filters(config);
        let admin = AdminState {
            sources: sources.clone(),
            backend: storage.backend,
            answers: storage.answers.clone(),
            events: storage.events.clone(),
            maintenance: storage.maintenance.clone(),
            inflight: inflight.clone(),
            allocator: parts.engine.allocator(),
            component_cache: parts.engine.cache().cloned(),
            plugins: parts.plugins.clone(),
            crm: services.crm.clone(),
            event_stats: event_stats.clone(),
            connections: connections.clone(),
        };
        let events = EventState {
            routes: parts.event_routes,
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
            routes: parts.routes,
            budget: config.delivery_budget,
            body,
            answers: storage.answers.clone(),
            inflight,
            clock,
            services,
        };
        App {
            deliveries: Arc::new(deliveries),
            events: Arc::new(events),
            admin: Arc::new(admin),
            storage,
            plugins: parts.plugins,
            connections,
            sources,
            engine: parts.engine,
            tls: None,
        }
    }

    /// How many times the plugin named `name` has been called.
    pub fn plugin_calls(&self, name: &str) -> Option<u64> {
        self.plugins
            .iter()
            .find(|p| p.info().name == name)
            .map(|p| p.calls())
    }

    /// Every loaded plugin, in config order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The Emailgistics routes, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.deliveries.routes
    }

    /// The EngageLab routes, in config order.
    pub fn event_routes(&self) -> &[EventRoute] {
        &self.events.routes
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
        match &self.tls {
            Some(tls) => tls.certs.reload().map(|()| true),
            None => Ok(false),
        }
    }
}

/// The allowlists of the routes (Emailgistics and EngageLab) that have
/// `allow_ips`, each behind the config's trusted proxies.
fn source_filters(config: &Config) -> Arc<[Arc<SourceFilter>]> {
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
/// a listener ends). Then both listeners stop accepting and drain — the
/// public one for up to the delivery budget, so no accepted delivery is cut
/// short — and only then are the jobs shut down.
///
/// Both listeners are anything that accepts connections ([`Accept`]); with
/// `[tls]` the public one is wrapped in TLS here, and one task reloads its
/// certificate on SIGHUP and when the files change ([`tls::reload_task`]).
pub async fn run(
    listener: impl Accept,
    admin: Option<impl Accept>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let jobs = jobs::start(&app.storage, &app.events, &app.deliveries.services.crm);
    // One signal for both listeners: the caller's, or the first listener to
    // end (an accept loop ends only on the signal today; if one ever ends
    // for another reason, the other must not serve on alone).
    let (stop, stopped) = watch::channel(false);
    let stopped = || {
        let mut rx = stopped.clone();
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
        app.sources.clone(),
    );
    let handler = move |req| {
        let router = router.clone();
        async move { router.handle(req).await }
    };
    let public = async {
        let (budget, cap) = (app.deliveries.budget, &app.connections);
        let result = match &app.tls {
            Some(tls) => serve_capped(tls.wrap(listener), stopped(), budget, cap, handler).await,
            None => serve_capped(listener, stopped(), budget, cap, handler).await,
        };
        stop.send_replace(true);
        result
    };
    let admin = async {
        let Some(listener) = admin else {
            return Ok(());
        };
        let result = crate::admin::run(listener, app.admin.clone(), stopped()).await;
        stop.send_replace(true);
        result
    };
    let reload = tls::reload_task(app.tls.as_ref().map(|t| t.certs.clone()), stopped());
    let ((), public, admin, ()) = tokio::join!(signal, public, admin, reload);
    // The listeners have drained; the jobs stop at their next await (the
    // event worker's callback in hand stays queued and is run again).
    jobs.shutdown(jobs::SHUTDOWN_GRACE).await;
    public.and(admin)
}

#[cfg(test)]
mod tests;
