//! The admin listener: the delivery log and counters, as JSON, on an address
//! separate from the public webhook (loopback by default).
//!
//! - `GET /deliveries?since=<unix ms>&limit=<n>`: newest first.
//! - `GET /deliveries/<id>[?route=<path>]`: the full record of a delivery
//!   (the newest, if the id was delivered to several routes).
//! - `GET /stats`: stored deliveries, bytes on disk, in flight, per plugin
//!   its calls and its circuit breaker
//!   ([`crate::plugin::breaker::BreakerStats`]), the EngageLab queue (length
//!   and cap), the public listener's connections (open, cap, refused),
//!   the component cache's entries and bytes (shared with whatever else
//!   uses its directory; `null` if it cannot be read) and, per route with
//!   `allow_ips`, the requests its allowlist refused (`sourceIp`:
//!   `notAllowed`, `badForwardedFor`).
//! - `POST /reload`: read the config file again and swap to it (see
//!   [`Reload`]); `200 {"reloaded": true, "changed": {…}}`, or `422
//!   {"reloaded": false, "error": "…"}` with the running config kept.
//! - `GET /metrics`: the Prometheus text exposition ([`metrics`]).
//! - `GET /healthz`.
//! - `GET /ui/…`: the Admin view, HTML ([`view`]).
//! - `GET /openapi.json`: the OpenAPI document of every route ([`openapi`]).
//!
//! With `admin_token` set, every request but `/healthz` needs it ([`token`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

mod metrics;
pub mod openapi;
pub mod token;
pub mod view;

use crate::crm::cache::CrmSource;
use crate::emailgistics::auth::Secret;
use crate::engagelab::EventStats;
use crate::http::{error, json, Accept, Body, ConnectionCap};
use crate::idempotency::Inflight;
use crate::plugin::cache::ComponentCache;
use crate::plugin::{AllocatorKind, Plugin};
use crate::source_ip::SourceFilter;
use crate::storage::{AnswerStore, EventQueue, Maintenance, StoredDelivery};

/// Default and largest page of `GET /deliveries`.
pub const DEFAULT_LIST_LIMIT: usize = 50;
/// Largest page: a listing is built in memory.
pub const MAX_LIST_LIMIT: usize = 10_000;
/// Where a reload is asked for (`POST`).
pub const RELOAD_PATH: &str = "/reload";
/// Admin requests are short reads; on shutdown they get this long.
const ADMIN_GRACE: Duration = Duration::from_secs(5);

/// What the admin listener reads: the stored answers and the queue, and
/// the counters of the parts it reports on.
pub struct AdminState {
    /// `"sled"` or `"redis"`.
    pub backend: &'static str,
    /// Stored answers (the delivery log).
    pub answers: Arc<dyn AnswerStore>,
    /// The EngageLab queue (its length and cap).
    pub events: Arc<dyn EventQueue>,
    /// The plugins' kv (the bytes each namespace holds, for `/metrics`).
    pub kv: Arc<dyn crate::storage::kv::PluginKv>,
    /// The backend's size on disk.
    pub maintenance: Arc<dyn Maintenance>,
    /// Deliveries in flight on this host.
    pub inflight: Arc<Inflight>,
    /// Which instance allocator the wasm engine uses.
    pub allocator: AllocatorKind,
    /// The precompiled component cache (its size), if there is one.
    pub component_cache: Option<Arc<ComponentCache>>,
    /// Every loaded plugin (calls, circuit breaker), as of the last reload.
    pub plugins: arc_swap::ArcSwap<Vec<Arc<Plugin>>>,
    /// The CRM sources (counters).
    pub crm: Vec<Arc<CrmSource>>,
    /// EngageLab counters.
    pub event_stats: Arc<EventStats>,
    /// The public listener's connection cap and counts.
    pub connections: ConnectionCap,
    /// The routes' source-IP allowlists (refusals by route and reason), as
    /// of the last reload.
    pub sources: arc_swap::ArcSwap<Vec<Arc<SourceFilter>>>,
    /// `admin_token`, as read at start (a reload does not change it).
    pub token: Option<Secret>,
    /// This enrichd's metrics registry, rendered at `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The host's clock (ages shown in `/metrics`).
    pub clock: crate::clock::Clock,
}

/// What `POST /reload` runs: the composition root's reload. It answers
/// whether the new config took, and the JSON to send back.
pub type Reload =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = (bool, serde_json::Value)> + Send>> + Send + Sync>;

/// Serve the admin endpoints until `shutdown`; `POST /reload` runs
/// `reload` (`None`: there is no `/reload`).
pub async fn run(
    listener: impl Accept,
    state: Arc<AdminState>,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    crate::http::serve(listener, shutdown, ADMIN_GRACE, move |req| {
        let (state, reload) = (state.clone(), reload.clone());
        async move { handle(&state, reload.as_ref(), req).await }
    })
    .await
}

async fn handle(
    state: &AdminState,
    reload: Option<&Reload>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(refused) = token::admit(state.token.as_ref(), &req) {
        return refused;
    }
    if let (RELOAD_PATH, Some(reload)) = (req.uri().path(), reload) {
        if *req.method() != Method::POST {
            return crate::http::method_not_allowed("POST");
        }
        let (reloaded, answer) = reload().await;
        let status = if reloaded {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return json(status, answer.to_string().into());
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return crate::http::method_not_allowed("GET, HEAD");
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let path = req.uri().path();
    if view::is_ui(path) {
        return view::handle(state, path, &query).await;
    }
    let result = match path {
        "/healthz" => Ok(serde_json::json!({"status": "ok"})),
        // The two answers that are not JSON.
        "/metrics" => return metrics::respond(state).await,
        openapi::OPENAPI_PATH => return openapi::serve(),
        "/stats" => stats(state).await,
        "/deliveries" => list(state, param("since"), param("limit")).await,
        _ => match path.strip_prefix("/deliveries/") {
            Some(raw_id) => show(state, raw_id, param("route")).await,
            None => Err((StatusCode::NOT_FOUND, "no such endpoint".into())),
        },
    };
    match result {
        Ok(value) => json(StatusCode::OK, value.to_string().into()),
        Err((status, message)) => error(status, &message),
    }
}

/// A JSON answer, or the status and message of an error answer.
type Answer = Result<serde_json::Value, (StatusCode, String)>;

fn store_failed(e: crate::storage::StorageError) -> (StatusCode, String) {
    tracing::error!(error = %e, "admin: delivery store read failed");
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn list(state: &AdminState, since: Option<&str>, limit: Option<&str>) -> Answer {
    let bad = |what: &str| (StatusCode::BAD_REQUEST, what.to_owned());
    let since = since
        .map(str::parse::<u64>)
        .transpose()
        .map_err(|_| bad("since must be unix milliseconds"))?
        .unwrap_or(0);
    let limit = limit
        .map(str::parse::<usize>)
        .transpose()
        .map_err(|_| bad("limit must be a number"))?
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .min(MAX_LIST_LIMIT);
    let deliveries = state
        .answers
        .list(since, limit)
        .await
        .map_err(store_failed)?;
    Ok(serde_json::json!({ "deliveries": deliveries }))
}

async fn show(state: &AdminState, raw_id: &str, route: Option<&str>) -> Answer {
    let delivery = find_one(state, &decode_id(raw_id)?, route).await?;
    serde_json::to_value(delivery).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A delivery id from a URL path (percent-encoded).
fn decode_id(raw_id: &str) -> Result<std::borrow::Cow<'_, str>, (StatusCode, String)> {
    percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .map_err(|_| (StatusCode::BAD_REQUEST, "the id is not UTF-8".to_owned()))
}

/// The stored delivery `id` on `route`, or the newest of that id on any
/// route; 404 if there is none.
async fn find_one(
    state: &AdminState,
    id: &str,
    route: Option<&str>,
) -> Result<StoredDelivery, (StatusCode, String)> {
    let found = state.answers.find(id, route).await.map_err(store_failed)?;
    found.into_iter().next().ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "no stored delivery with this id".to_owned(),
        )
    })
}

async fn stats(state: &AdminState) -> Answer {
    let plugins: serde_json::Map<String, serde_json::Value> = state
        .plugins
        .load()
        .iter()
        .map(|p| {
            (
                p.info().name.clone(),
                serde_json::json!({ "calls": p.calls(), "breaker": p.breaker().stats() }),
            )
        })
        .collect();
    Ok(serde_json::json!({
        "storage": state.backend,
        "deliveries": state.answers.len().await.map_err(store_failed)?,
        "bytesOnDisk": state.maintenance.bytes_on_disk().await,
        "inflight": state.inflight.len(),
        "allocator": format!("{:?}", state.allocator),
        "componentCache": component_cache(state).await,
        "plugins": plugins,
        "crm": crate::crm::stats(&state.crm),
        "engagelab": state.event_stats.snapshot(
            state.events.len().await.map_err(store_failed)?,
            state.events.max_queued(),
        ),
        "connections": {
            "open": state.connections.open(),
            "max": state.connections.max(),
            "refused": state.connections.refused(),
        },
        "sourceIp": state
            .sources
            .load()
            .iter()
            .map(|f| (f.route().to_owned(), f.snapshot()))
            .collect::<serde_json::Map<_, _>>(),
    }))
}

/// The component cache's entries and bytes, read from its directory now
/// (other processes may share it); `null` without a cache or if it cannot
/// be read.
async fn component_cache(state: &AdminState) -> serde_json::Value {
    let Some(cache) = state.component_cache.clone() else {
        return serde_json::Value::Null;
    };
    match tokio::task::spawn_blocking(move || cache.usage()).await {
        Ok(Ok(usage)) => serde_json::json!(usage),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "admin: cannot read the component cache");
            serde_json::Value::Null
        }
        Err(_) => serde_json::Value::Null,
    }
}
