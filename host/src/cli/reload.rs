//! `enrichd reload`: ask a running `enrichd serve` to read its config
//! again, through its admin listener (`POST /reload`), and print the
//! answer.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// How long a reload may take before the command gives up waiting (the
/// server goes on). Compiling a changed plugin takes seconds in a release
/// build; a minute more for a large one on a slow appliance.
const RELOAD_WAIT: Duration = Duration::from_secs(300);

/// Ask the server behind `config`'s admin listener (or `admin`) to reload;
/// print its answer. `Ok(true)`: the new config serves.
pub(super) fn run(config: &Path, admin: Option<SocketAddr>) -> anyhow::Result<bool> {
    let addr = match admin {
        Some(addr) => addr,
        None => crate::config::Config::admin_listen_of(config)?.with_context(|| {
            format!(
                "{}: admin_listen is \"off\": send SIGHUP to the server instead",
                config.display()
            )
        })?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, answer) = runtime
        .block_on(super::deliveries::admin_request(
            addr,
            hyper::Method::POST,
            crate::admin::RELOAD_PATH,
            RELOAD_WAIT,
        ))
        .with_context(|| format!("asking the server at {addr} (admin_listen) to reload"))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    let reloaded = answer["reloaded"].as_bool() == Some(true);
    if !reloaded {
        let why = answer["error"]
            .as_str()
            .map_or(status.to_string(), str::to_owned);
        eprintln!("reload refused; the running config keeps serving: {why}");
    }
    Ok(reloaded)
}
