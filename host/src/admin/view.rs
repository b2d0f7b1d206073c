//! The Admin view: server-rendered HTML pages under `/ui` on the admin
//! listener, readable with JavaScript off.
//!
//! - `/ui/` or `/ui/deliveries`: the newest deliveries, filtered by
//!   `route`, `mailbox`, `status` (`success`, `error`), `since` and
//!   `until` (UTC `YYYY-MM-DDTHH:MM[:SS]`, or unix ms) and `limit`, from a
//!   plain `<form method=get>`.
//! - `/ui/deliveries/<id>?route=<path>`: the envelope answered and, per
//!   plugin, its actions, drops and why, errors, timings, usage, host
//!   calls, from the stored record (what `GET /deliveries/<id>` serves).
//! - `/ui/plugins`: per plugin its limits, grants, sha256, calls, failure
//!   rates by kind, latency percentiles of recent calls
//!   ([`crate::metrics::PluginSummary`]) and circuit breaker.
//! - `/ui/engagelab`: the EngageLab counters and queue (what `/stats` has),
//!   and what happened to the recent callbacks, newest first.
//!
//! Templates are minijinja, compiled into the binary (`include_str!`), with
//! HTML auto-escaping: every value, plugin-made strings included, is
//! escaped. Pages also carry a `Content-Security-Policy` that runs no
//! script at all, so a value that escaped escaping would still be inert.

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use minijinja::{context, Environment, Value};
use serde_json::json;

use super::{decode_id, find_one, stats, store_failed, AdminState};
use crate::http::Body;

/// Where the view is served.
pub const UI_PREFIX: &str = "/ui";
/// Rows of a deliveries page unless `limit` says otherwise.
pub const DEFAULT_PAGE_ROWS: usize = 50;
/// Most rows of a deliveries page: each row is a stored record read and a
/// line of HTML (~1 KiB), so a page stays under a few hundred KiB.
pub const MAX_PAGE_ROWS: usize = 200;
/// Most stored deliveries one page looks through to fill its rows: a
/// filter reads each one's record (mailbox, status), so this bounds the
/// store reads of a request; older matches are reached with `until`.
pub const MAX_SCAN: usize = 1000;

/// Bad filters are answered 400 with the reason.
type Page = Result<(&'static str, Value), (StatusCode, String)>;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("deliveries.html", include_str!("templates/deliveries.html")),
        ("delivery.html", include_str!("templates/delivery.html")),
        ("plugins.html", include_str!("templates/plugins.html")),
        ("engagelab.html", include_str!("templates/engagelab.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        // Checked by the tests: every page renders.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "admin view: bad template");
        }
    }
    env.add_filter("pretty", |v: Value| {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    });
    env.add_filter("utc", |ms: u64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    });
    env
});

/// Whether `path` is a page of the view.
pub fn is_ui(path: &str) -> bool {
    path.strip_prefix(UI_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The query parameter `name`, if given and not blank.
fn param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The page at `path` (under [`UI_PREFIX`]) with its query.
pub async fn handle(state: &AdminState, path: &str, query: &[(String, String)]) -> Response<Body> {
    let (title, page) = match path {
        "/ui" | "/ui/" | "/ui/deliveries" => ("Deliveries", deliveries(state, query).await),
        "/ui/plugins" => ("Plugins", plugins(state).await),
        "/ui/engagelab" => ("EngageLab", engagelab(state).await),
        _ => match path.strip_prefix("/ui/deliveries/") {
            Some(id) => ("Delivery", delivery(state, id, param(query, "route")).await),
            None => (
                "Not found",
                Err((StatusCode::NOT_FOUND, "no such page".into())),
            ),
        },
    };
    let (status, template, ctx) = match page {
        Ok((template, ctx)) => (StatusCode::OK, template, ctx),
        Err((status, message)) => (status, "error.html", context! { message }),
    };
    let html = render(template, ctx).and_then(|body| {
        let body = Value::from_safe_string(body);
        render("layout.html", context! { title, body })
    });
    match html {
        Ok(html) => html_answer(status, html),
        Err(e) => {
            tracing::error!(error = %e, "admin view: cannot render {template}");
            html_answer(StatusCode::INTERNAL_SERVER_ERROR, "render failed".into())
        }
    }
}

fn render(template: &str, ctx: Value) -> Result<String, minijinja::Error> {
    TEMPLATES.get_template(template)?.render(ctx)
}

fn html_answer(status: StatusCode, html: String) -> Response<Body> {
    let mut res = Response::new(Body::new(html.into()));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `since`/`until`: unix ms, or UTC `YYYY-MM-DDTHH:MM[:SS]` (what a
/// `datetime-local` field sends), `Z` optional.
fn parse_time(name: &str, value: Option<&str>) -> Result<Option<u64>, (StatusCode, String)> {
    let Some(value) = value else { return Ok(None) };
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(Some(ms));
    }
    let mut text = value.trim_end_matches('Z').to_owned();
    if text.len() == "YYYY-MM-DDTHH:MM".len() {
        text.push_str(":00");
    }
    humantime::parse_rfc3339_weak(&text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| Some(d.as_millis() as u64))
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("{name} = {value:?}: expected UTC YYYY-MM-DDTHH:MM[:SS] or unix ms"),
            )
        })
}

async fn deliveries(state: &AdminState, query: &[(String, String)]) -> Page {
    let param = |name| param(query, name);
    let bad = |what: String| (StatusCode::BAD_REQUEST, what);
    let since = parse_time("since", param("since"))?;
    let until = parse_time("until", param("until"))?;
    let limit = match param("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| bad(format!("limit = {l:?}: not a number")))?,
        None => DEFAULT_PAGE_ROWS,
    }
    .clamp(1, MAX_PAGE_ROWS);
    let status = param("status");
    if status.is_some_and(|s| !matches!(s, "success" | "error")) {
        return Err(bad("status must be success or error".into()));
    }
    let (route, mailbox) = (param("route"), param("mailbox"));
    let listed = state
        .answers
        .list(since.unwrap_or(0), MAX_SCAN)
        .await
        .map_err(store_failed)?;
    let (scanned, capped) = (listed.len(), listed.len() == MAX_SCAN);
    let mut rows = Vec::new();
    let mut more = false;
    for summary in listed {
        if route.is_some_and(|r| r != summary.route)
            || until.is_some_and(|u| summary.stored_at_ms > u)
        {
            continue;
        }
        let Ok(stored) = find_one(state, &summary.id, Some(&summary.route)).await else {
            continue; // expired since it was listed
        };
        let r = &stored.record;
        let text = |key| text(r, key);
        if mailbox.is_some_and(|m| !m.eq_ignore_ascii_case(text("mailbox")))
            || status.is_some_and(|s| s != text("status"))
        {
            continue;
        }
        if rows.len() == limit {
            more = true;
            break;
        }
        let plugins = r["plugins"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let dropped: usize = plugins
            .iter()
            .filter_map(|p| p["dropped"].as_array())
            .map(Vec::len)
            .sum();
        rows.push(json!({
            "href": delivery_href(&stored.route, &stored.id),
            "at": stored.stored_at_ms,
            "route": stored.route,
            "id": stored.id,
            "mailbox": text("mailbox"),
            "subject": text("subject"),
            "status": text("status"),
            "http": stored.status,
            "message": text("message"),
            "plugins": plugins.len(),
            "dropped": dropped,
        }));
    }
    let f = json!({
        "route": route.unwrap_or_default(),
        "mailbox": mailbox.unwrap_or_default(),
        "status": status.unwrap_or_default(),
        "since": param("since").unwrap_or_default(),
        "until": param("until").unwrap_or_default(),
        "limit": limit,
    });
    Ok((
        "deliveries.html",
        context! { f, rows, scanned, capped, more, max_page => MAX_PAGE_ROWS, max_scan => MAX_SCAN },
    ))
}

/// The string `record[key]`, or `""`.
fn text<'r>(record: &'r serde_json::Value, key: &str) -> &'r str {
    record.get(key).and_then(|v| v.as_str()).unwrap_or_default()
}

/// The view's address of a delivery (id and route percent-encoded).
fn delivery_href(route: &str, id: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("route", route)
        .finish();
    format!("{UI_PREFIX}/deliveries/{id}?{query}")
}

async fn delivery(state: &AdminState, raw_id: &str, route: Option<&str>) -> Page {
    let d = find_one(state, &decode_id(raw_id)?, route).await?;
    let envelope = serde_json::from_str::<serde_json::Value>(&d.body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| d.body.clone());
    let host_calls: usize = d.record["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["host_calls"]["calls"].as_array())
        .map(Vec::len)
        .sum();
    let r = Value::from_serialize(&d.record);
    let d = Value::from_serialize(&d);
    Ok(("delivery.html", context! { d, r, envelope, host_calls }))
}

async fn plugins(state: &AdminState) -> Page {
    let stats = stats(state).await?;
    let plugins: Vec<serde_json::Value> = state
        .plugins
        .load()
        .iter()
        .map(|p| {
            let info = p.info();
            let tally = state.metrics.plugin_summary(&info.name);
            let turns = tally.turns;
            let failures: Vec<serde_json::Value> = tally
                .failures
                .iter()
                .map(|(kind, n)| {
                    let pct = *n as f64 * 100.0 / turns.max(1) as f64;
                    json!({ "kind": kind, "count": n, "percent": format!("{pct:.1}") })
                })
                .collect();
            let ms = |us: Option<u64>| us.map(|us| format!("{:.2}", us as f64 / 1000.0));
            json!({
                "name": info.name,
                "sha256": hex::encode(p.sha256()),
                "calls": p.calls(),
                "failures": failures,
                "turns": turns,
                "latency": {
                    "p50": ms(tally.p50_us),
                    "p95": ms(tally.p95_us),
                    "p99": ms(tally.p99_us),
                    "window": tally.window,
                },
                "breaker": stats["plugins"][&info.name]["breaker"],
                "timeout_ms": info.timeout.as_millis() as u64,
                "limits": format!("{:?}", info.limits),
                "grants": format!("{:?}", info.grants),
                "allowed_hosts": format!("{:?}", info.allowed_hosts),
                "on_error": format!("{:?}", info.on_error),
            })
        })
        .collect();
    Ok(("plugins.html", context! { plugins }))
}

async fn engagelab(state: &AdminState) -> Page {
    let stats = stats(state).await?;
    let engagelab = Value::from_serialize(&stats["engagelab"]);
    let recent = Value::from_serialize(state.event_stats.recent());
    let keep = crate::engagelab::RECENT_OUTCOMES;
    Ok(("engagelab.html", context! { engagelab, recent, keep }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_14_every_template_compiles() {
        for name in [
            "layout.html",
            "deliveries.html",
            "delivery.html",
            "plugins.html",
            "engagelab.html",
            "error.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn issue_14_values_are_escaped() {
        let message = "<script>alert(1)</script>";
        let html = render("error.html", context! { message }).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn issue_14_times_parse_as_utc_or_unix_ms() {
        assert_eq!(
            parse_time("since", Some("1700000000000")).unwrap(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("since", Some("1970-01-01T00:01")).unwrap(),
            Some(60_000)
        );
        assert_eq!(
            parse_time("since", Some("1970-01-01T00:00:02Z")).unwrap(),
            Some(2_000)
        );
        assert_eq!(parse_time("since", None).unwrap(), None);
        assert_eq!(
            parse_time("since", Some("yesterday")).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
