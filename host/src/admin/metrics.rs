//! `GET /metrics`: the Prometheus text exposition of this enrichd's
//! registry ([`crate::metrics::Metrics`]). What the parts count already
//! (EngageLab, CRM sources, circuit breakers, allowlists, connections,
//! the store) is copied into the registry at scrape time, from the same
//! atomics `/stats` reads: one count, two views.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use metrics::{counter, gauge};

use std::sync::Arc;

use super::{store_failed, AdminState};
use crate::crm::cache::CrmSource;
use crate::engagelab::EventStats;
use crate::http::Body;
use crate::plugin::policy::Capability;

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to `GET /metrics`.
pub async fn respond(state: &AdminState) -> Response<Body> {
    match render(state).await {
        Ok(text) => {
            let mut res = Response::new(Body::new(text.into()));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            res
        }
        Err((status, message)) => crate::http::error(status, &message),
    }
}

/// The exposition, after copying the parts' counters in.
async fn render(state: &AdminState) -> Result<String, (StatusCode, String)> {
    let deliveries = state.answers.len().await.map_err(store_failed)?;
    let queued = state.events.len().await.map_err(store_failed)?;
    let bytes_on_disk = state.maintenance.bytes_on_disk().await;
    let head_received_ms = state
        .events
        .head_received_ms()
        .await
        .map_err(store_failed)?;
    let kv = kv_usage(state).await?;
    state.metrics.record(|| {
        gauge!("enrichd_store_deliveries").set(deliveries as f64);
        if let Some(bytes) = bytes_on_disk {
            gauge!("enrichd_store_size_bytes").set(bytes as f64);
        }
        gauge!("enrichd_deliveries_in_flight").set(state.inflight.len() as f64);
        engagelab(&state.event_stats, queued, state.events.max_queued());
        // 0 with nothing queued: a gauge that vanished would look like a
        // scrape gap to an alert on it.
        let head_age_ms = head_received_ms.map_or(0, |at| state.clock.now_ms().saturating_sub(at));
        gauge!("enrichd_engagelab_queue_head_age_seconds").set(head_age_ms as f64 / 1e3);
        for (namespace, usage) in kv {
            gauge!("enrichd_kv_bytes", "namespace" => namespace.clone()).set(usage.bytes as f64);
            gauge!("enrichd_kv_keys", "namespace" => namespace).set(usage.keys as f64);
        }
        plugins(state);
        crm_sources(&state.crm);
        gauge!("enrichd_connections_open").set(state.connections.open() as f64);
        counter!("enrichd_connections_refused_total").absolute(state.connections.refused());
        for filter in state.sources.load().iter() {
            let counts = filter.snapshot();
            for (reason, key) in [
                ("not_allowed", "notAllowed"),
                ("bad_forwarded_for", "badForwardedFor"),
            ] {
                counter!("enrichd_source_ip_refusals_total",
                    "route" => filter.route().to_owned(), "reason" => reason)
                .absolute(counts[key].as_u64().unwrap_or(0));
            }
        }
    });
    Ok(state.metrics.render())
}

/// What each kv-granted plugin's namespace holds (one cheap read each: the
/// backends keep the usage next to the data, for the quotas).
async fn kv_usage(
    state: &AdminState,
) -> Result<Vec<(String, crate::storage::kv::Usage)>, (StatusCode, String)> {
    let plugins = state.plugins.load_full();
    let mut usage = Vec::new();
    for p in plugins
        .iter()
        .filter(|p| p.info().grants.allows(Capability::Kv))
    {
        let name = p.info().name.clone();
        let held = state.kv.usage(&name).await.map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("kv usage of {name:?}: {e}"),
            )
        })?;
        usage.push((name, held));
    }
    Ok(usage)
}

fn engagelab(stats: &EventStats, queued: usize, max_queued: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    gauge!("enrichd_engagelab_queue_depth").set(queued as f64);
    gauge!("enrichd_engagelab_queue_capacity").set(max_queued as f64);
    let counters = [
        ("enrichd_engagelab_received_total", &stats.received),
        ("enrichd_engagelab_duplicates_total", &stats.duplicates),
        ("enrichd_engagelab_processed_total", &stats.processed),
        ("enrichd_engagelab_retried_total", &stats.retried),
        ("enrichd_engagelab_postponed_total", &stats.postponed),
        (
            "enrichd_engagelab_plugin_failures_total",
            &stats.plugin_failures,
        ),
        ("enrichd_engagelab_route_gone_total", &stats.route_gone),
    ];
    for (name, value) in counters {
        counter!(name).absolute(value.load(Relaxed));
    }
    for (reason, value) in [
        ("bad_request", &stats.refused),
        ("queue_full", &stats.queue_full),
    ] {
        counter!("enrichd_engagelab_refused_total", "reason" => reason)
            .absolute(value.load(Relaxed));
    }
}

fn plugins(state: &AdminState) {
    for p in state.plugins.load().iter() {
        let name = p.info().name.clone();
        let breaker = p.breaker().stats();
        // 0 closed, 1 half-open, 2 open: alert on `> 0`.
        let level = match breaker.state {
            "closed" => 0.0,
            "half-open" => 1.0,
            _ => 2.0,
        };
        gauge!("enrichd_plugin_breaker_state", "plugin" => name.clone()).set(level);
        counter!("enrichd_plugin_breaker_opens_total", "plugin" => name.clone())
            .absolute(breaker.opens);
        counter!("enrichd_plugin_invocations_total", "plugin" => name).absolute(p.calls());
    }
}

/// The CRM sources' counters (their backend call durations are a
/// histogram recorded as each call ends: `enrichd_crm_backend_duration_seconds`).
fn crm_sources(crm: &[Arc<CrmSource>]) {
    use std::sync::atomic::Ordering::Relaxed;
    for source in crm {
        let s = source.stats();
        let counters = [
            ("enrichd_crm_hits_total", &s.hits),
            ("enrichd_crm_misses_total", &s.misses),
            ("enrichd_crm_backend_calls_total", &s.backend_calls),
            ("enrichd_crm_backend_errors_total", &s.backend_errors),
            ("enrichd_crm_stale_served_total", &s.stale_served),
            ("enrichd_crm_domain_fallbacks_total", &s.domain_fallbacks),
            ("enrichd_crm_refreshed_total", &s.refreshed),
        ];
        let label = source.name().to_owned();
        for (name, value) in counters {
            counter!(name, "source" => label.clone()).absolute(value.load(Relaxed));
        }
    }
}
