//! The admin listener: the delivery log and counters, as JSON, on an address
//! separate from the public webhook (loopback by default).
//!
//! - `GET /deliveries?since=<unix ms>&limit=<n>`: newest first.
//! - `GET /deliveries/<id>[?route=<path>]`: the full record of a delivery
//!   (the newest, if the id was delivered to several routes).
//! - `GET /stats`: stored deliveries, bytes on disk, in flight, per plugin
//!   its calls and its circuit breaker
//!   ([`crate::plugin::breaker::BreakerStats`]), the EngageLab queue (length
//!   and cap) and the public listener's connections (open, cap, refused).
//! - `GET /healthz`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::app::App;
use crate::http::{error, json, Body};

/// Default and largest page of `GET /deliveries`.
pub const DEFAULT_LIST_LIMIT: usize = 50;
/// Largest page: a listing is built in memory.
pub const MAX_LIST_LIMIT: usize = 10_000;
/// Admin requests are short reads; on shutdown they get this long.
const ADMIN_GRACE: Duration = Duration::from_secs(5);

/// Serve the admin endpoints until `shutdown`.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    crate::http::serve(listener, shutdown, ADMIN_GRACE, move |req| {
        let app = app.clone();
        async move { handle(&app, req).await }
    })
    .await
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        res.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return res;
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
    let result = match path {
        "/healthz" => Ok(serde_json::json!({"status": "ok"})),
        "/stats" => stats(app).await,
        "/deliveries" => list(app, param("since"), param("limit")).await,
        _ => match path.strip_prefix("/deliveries/") {
            Some(raw_id) => show(app, raw_id, param("route")).await,
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

async fn list(app: &App, since: Option<&str>, limit: Option<&str>) -> Answer {
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
    let deliveries = app
        .storage
        .answers
        .list(since, limit)
        .await
        .map_err(store_failed)?;
    Ok(serde_json::json!({ "deliveries": deliveries }))
}

async fn show(app: &App, raw_id: &str, route: Option<&str>) -> Answer {
    let id = percent_encoding::percent_decode_str(raw_id)
        .decode_utf8()
        .map_err(|_| (StatusCode::BAD_REQUEST, "the id is not UTF-8".to_owned()))?;
    let found = app
        .storage
        .answers
        .find(&id, route)
        .await
        .map_err(store_failed)?;
    match found.into_iter().next() {
        Some(delivery) => serde_json::to_value(delivery)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        None => Err((
            StatusCode::NOT_FOUND,
            "no stored delivery with this id".to_owned(),
        )),
    }
}

async fn stats(app: &App) -> Answer {
    let plugins: serde_json::Map<String, serde_json::Value> = app
        .plugins
        .iter()
        .map(|p| {
            (
                p.info().name.clone(),
                serde_json::json!({ "calls": p.calls(), "breaker": p.breaker().stats() }),
            )
        })
        .collect();
    Ok(serde_json::json!({
        "storage": app.storage.backend,
        "deliveries": app.storage.answers.len().await.map_err(store_failed)?,
        "bytesOnDisk": app.storage.maintenance.bytes_on_disk().await,
        "inflight": app.inflight.len(),
        "allocator": format!("{:?}", app.engine.allocator()),
        "plugins": plugins,
        "crm": crm_stats(app),
        "engagelab": app.event_stats.snapshot(
            app.storage.events.len().await.map_err(store_failed)?,
            app.storage.events.max_queued(),
        ),
        "connections": {
            "open": app.connections.open(),
            "max": app.connections.max(),
            "refused": app.connections.refused(),
        },
    }))
}

/// Per CRM source: its backend kind and counters.
pub fn crm_stats(app: &App) -> serde_json::Value {
    app.services
        .crm
        .iter()
        .map(|s| {
            let mut v = s.stats().snapshot();
            v["backend"] = serde_json::json!(s.backend().kind());
            (s.name().to_owned(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}
