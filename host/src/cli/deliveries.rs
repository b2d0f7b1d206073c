//! `enrichd deliveries list|show`: read the delivery log.
//!
//! The configured storage is read directly: with Redis, the store every
//! host shares. The embedded store allows one process per database, so
//! while `enrichd serve` runs the same data directory, the log is read
//! through that server's admin listener instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::DeliveriesCommand;
use crate::config::Config;
use crate::storage::{Backend, DeliverySummary, Storage, StoredDelivery};

pub(super) fn run(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCommand::List {
            target,
            since,
            limit,
            json,
        } => {
            let config = super::load(&target)?;
            let since = since
                .as_deref()
                .map(|s| parse_since(s, now_ms()))
                .transpose()?
                .unwrap_or(0);
            let items = list(&config, since, limit)?;
            for d in &items {
                if json {
                    println!("{}", serde_json::to_string(d)?);
                } else {
                    println!(
                        "{}  {}  {}  {}  {}",
                        format_ms(d.stored_at_ms),
                        d.status,
                        d.route,
                        d.id,
                        d.message
                    );
                }
            }
            if items.is_empty() && !json {
                eprintln!("no deliveries stored since {}", format_ms(since));
            }
            Ok(())
        }
        DeliveriesCommand::Show { target, id, route } => {
            let config = super::load(&target)?;
            let delivery = show(&config, &id, route.as_deref())?;
            let answer: serde_json::Value = serde_json::from_str(&delivery.body)
                .unwrap_or(serde_json::Value::String(delivery.body.clone()));
            let shown = serde_json::json!({
                "route": delivery.route,
                "id": delivery.id,
                "storedAt": format_ms(delivery.stored_at_ms),
                "httpStatus": delivery.status,
                "answer": answer,
                "record": delivery.record,
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
    }
}

/// Deliveries answered since `since_ms`, newest first: from the store, or
/// from the running server's admin listener when it holds the store.
pub fn list(config: &Config, since_ms: u64, limit: usize) -> anyhow::Result<Vec<DeliverySummary>> {
    match open_store(config) {
        Ok((rt, store)) => Ok(rt.block_on(store.answers.list(since_ms, limit))?),
        Err(local) => {
            let v = via_admin(
                config,
                &format!("/deliveries?since={since_ms}&limit={limit}"),
                local,
            )?;
            serde_json::from_value(v["deliveries"].clone())
                .context("unexpected answer from the admin listener")
        }
    }
}

/// The newest stored delivery with this id (on `route`, if given): from the
/// store, or from the running server's admin listener.
pub fn show(config: &Config, id: &str, route: Option<&str>) -> anyhow::Result<StoredDelivery> {
    match open_store(config) {
        Ok((rt, store)) => rt
            .block_on(store.answers.find(id, route))?
            .into_iter()
            .next()
            .with_context(|| format!("no stored delivery with id {id:?}")),
        Err(local) => {
            let mut path = format!(
                "/deliveries/{}",
                percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
            );
            if let Some(r) = route {
                path.push_str(&format!(
                    "?route={}",
                    form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>()
                ));
            }
            serde_json::from_value(via_admin(config, &path, local)?)
                .context("unexpected answer from the admin listener")
        }
    }
}

/// Open the configured storage (with sled: if no other process holds it),
/// with the runtime its calls run on.
fn open_store(config: &Config) -> anyhow::Result<(tokio::runtime::Runtime, Storage)> {
    let settings = config.storage_settings();
    if let Backend::Sled(embedded) = &settings.backend {
        let path = embedded.db_path();
        if !path.exists() {
            bail!(
                "no delivery store at {} (has enrichd run with this data directory?)",
                path.display()
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let storage = runtime
        .block_on(crate::storage::open(&settings, crate::clock::Clock::new()))
        .context("is enrichd serve running on it?")?;
    Ok((runtime, storage))
}

/// GET `path` from the configured admin listener.
fn via_admin(
    config: &Config,
    path: &str,
    local: anyhow::Error,
) -> anyhow::Result<serde_json::Value> {
    let Some(addr) = config.admin_listen else {
        return Err(
            local.context("admin_listen is off, so the running server cannot be asked either")
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(admin_get(addr, path))
        .with_context(|| format!("{local:#}; and asking the admin listener at {addr} failed"))
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, value) =
        admin_request(addr, hyper::Method::GET, path, Duration::from_secs(30)).await?;
    if !status.is_success() {
        bail!(
            "admin listener answered {status}: {}",
            value["message"].as_str().unwrap_or("")
        );
    }
    Ok(value)
}

/// The environment variable the admin commands read the admin token from.
pub const ADMIN_TOKEN_ENV: &str = "ENRICHD_ADMIN_TOKEN";

/// Send `method path` (no body) to the admin listener at `addr`, with the
/// admin token of [`ADMIN_TOKEN_ENV`] if it is set, and read its JSON
/// answer within `timeout`.
pub(super) async fn admin_request(
    addr: std::net::SocketAddr,
    method: hyper::Method,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(hyper::StatusCode, serde_json::Value)> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    // A server with `admin_token` wants it; the token stays out of argv.
    if let Ok(token) = std::env::var(ADMIN_TOKEN_ENV) {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let res = tokio::time::timeout(timeout, sender.send_request(req)).await??;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("admin listener answered {status} with non-JSON"))?;
    Ok((status, value))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `30m`, `2h`, `3d` ago, or an RFC 3339 time, as unix ms.
fn parse_since(s: &str, now: u64) -> anyhow::Result<u64> {
    if let Ok(ago) = humantime::parse_duration(s) {
        return Ok(now.saturating_sub(ago.as_millis() as u64));
    }
    let at = humantime::parse_rfc3339_weak(s).with_context(|| {
        format!("--since {s:?}: neither a duration (30m, 2h, 3d) nor an RFC 3339 time")
    })?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = 10 * 24 * 3600 * 1000;
        assert_eq!(parse_since("2h", now).unwrap(), now - 2 * 3600 * 1000);
        assert_eq!(parse_since("3d", now).unwrap(), now - 3 * 24 * 3600 * 1000);
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now).unwrap(), 1000);
        assert!(parse_since("yesterday-ish", now).is_err());
        assert_eq!(format_ms(1000), "1970-01-01T00:00:01Z");
    }
}
