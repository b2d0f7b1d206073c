//! `enrichd check-config`: parse the config, resolve its secrets, load
//! every plugin as `serve` would ([`crate::app::check`]), and print a
//! summary of the listeners, plugins, routes and chains, then every
//! problem. Exit status 0 when `serve` would start, 1 otherwise.

use std::fmt::Write as _;

use crate::app::check::{self, Checked};
use crate::config::Config;
use crate::plugin::policy::Capability;

/// Check the config at `path`; `Ok(false)` when it has problems (each
/// printed), an `Err` when it does not even resolve.
pub(super) fn run(target: &super::Target) -> anyhow::Result<bool> {
    let config = match super::load(target) {
        Ok(config) => config,
        Err(e) => {
            println!("{}: 1 problem", target.config.display());
            println!("  error: {e:#}");
            return Ok(false);
        }
    };
    let checked = check::check(&config);
    print!("{}", summary(&config, &checked));
    Ok(checked.problems.is_empty())
}

fn names(caps: &[Capability]) -> String {
    let names: Vec<&str> = caps.iter().map(|c| c.name()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn allow(list: Option<&crate::source_ip::Cidrs>) -> String {
    list.map_or("everyone".into(), |c| c.to_strings().join(", "))
}

/// The summary, then the warnings and problems.
fn summary(config: &Config, checked: &Checked) -> String {
    let mut s = String::new();
    let admin = config
        .admin_listen
        .map_or("off".to_owned(), |a| a.to_string());
    let _ = writeln!(s, "listen: {}   admin: {admin}", config.listen);
    let storage = match &config.storage {
        crate::config::StorageSpec::Sled => format!("sled in {}", config.data_dir.display()),
        crate::config::StorageSpec::Redis { key_prefix, .. } => {
            format!("redis (keys {key_prefix}*)")
        }
    };
    let _ = writeln!(s, "storage: {storage}");
    if !config.trusted_proxies.is_empty() {
        let proxies = config.trusted_proxies.to_strings().join(", ");
        let _ = writeln!(s, "trusted_proxies: {proxies}");
    }
    let _ = writeln!(s, "plugins:");
    for p in &checked.plugins {
        let world = p
            .world
            .map_or("unreadable".into(), |w| format!("{w:?}").to_lowercase());
        let state = if p.loaded { "ok" } else { "NOT LOADED" };
        let pin = if p.pinned { "pinned" } else { "not pinned" };
        let _ = writeln!(
            s,
            "  {} [{state}] {} ({world}; needs: {}; granted: {}; sha256 {pin})",
            p.name,
            p.path.display(),
            names(&p.needs),
            names(&p.granted),
        );
    }
    let plugin = |i: usize| config.plugins[i].name.as_str();
    let mut route = |kind: &str, path: &str, keys: String, allow_ips, chain: Vec<&str>| {
        let _ = writeln!(
            s,
            "{kind} {path}: {keys}; allow_ips: {}; chain: {}",
            allow(allow_ips),
            chain.join(" -> ")
        );
    };
    for r in &config.routes {
        let keys = format!("{} secret(s)", r.secrets.len());
        let chain = r.chain.iter().map(|e| plugin(e.plugin)).collect();
        route("route", &r.path, keys, r.allow_ips.as_ref(), chain);
    }
    for r in &config.event_routes {
        let keys = format!("{} app key(s)", r.app_keys.len());
        let chain = r.chain.iter().map(|&i| plugin(i)).collect();
        route("engagelab", &r.path, keys, r.allow_ips.as_ref(), chain);
    }
    for w in &checked.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    for p in &checked.problems {
        let _ = writeln!(s, "  error: {p}");
    }
    match checked.problems.len() {
        0 => s.push_str("config OK\n"),
        n => {
            let _ = writeln!(
                s,
                "{n} problem(s): enrichd serve would not start or would fail"
            );
        }
    }
    s
}
