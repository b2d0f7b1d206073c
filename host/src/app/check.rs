//! `enrichd check-config`'s checks: what `serve` would refuse at start,
//! found without opening the store or binding a listener, every problem
//! listed rather than the first.
//!
//! Plugins are loaded exactly as `serve` loads them (the same engine
//! settings, [`super::assemble::engine_options`], and the same
//! [`PluginEngine::load`]: pins, declared memory and table sizes, the
//! component itself, its imports against the linker), into the config's
//! component cache, so a check before start (the systemd unit's
//! `ExecStartPre`) leaves `serve` nothing to compile. The listeners are not
//! bound: on a running host the addresses are taken by the server being
//! checked; `serve` reports a taken address itself.

use std::path::PathBuf;

use crate::config::{Config, CrmBackendSpec};
use crate::plugin::inspect::{self, World};
use crate::plugin::policy::Capability;
use crate::plugin::{Plugin, PluginEngine};

/// One plugin as checked.
#[derive(Debug)]
pub struct PluginCheck {
    /// Name from the config.
    pub name: String,
    /// The component.
    pub path: PathBuf,
    /// What it implements; `None` if it could not be read.
    pub world: Option<World>,
    /// Capabilities its imports need.
    pub needs: Vec<Capability>,
    /// Capabilities the config grants it.
    pub granted: Vec<Capability>,
    /// Whether the config pins its sha256.
    pub pinned: bool,
    /// Whether it loaded as `serve` would load it.
    pub loaded: bool,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Every plugin, in config order.
    pub plugins: Vec<PluginCheck>,
    /// What would stop `serve` from starting, or break every call.
    pub problems: Vec<String>,
    /// What works but is probably not what was meant.
    pub warnings: Vec<String>,
}

/// Check `config` (already parsed and resolved: its secrets read).
pub fn check(config: &Config) -> Checked {
    let mut out = Checked::default();
    if Some(config.listen) == config.admin_listen {
        out.problems.push(format!(
            "listen and admin_listen are the same address ({})",
            config.listen
        ));
    }
    // The certificate and key load and match, as at start (nothing bound).
    if let Some(tls) = &config.tls {
        if let Err(e) = super::tls::PublicTls::load(tls) {
            out.problems.push(format!("[tls]: {e}"));
        }
    }
    for spec in &config.crm {
        if let CrmBackendSpec::Embedded { seed: Some(seed) } = &spec.backend {
            if !seed.is_file() {
                out.problems.push(format!(
                    "CRM source {:?}: seed {} is not a readable file",
                    spec.name,
                    seed.display()
                ));
            }
        }
    }
    for r in &config.routes {
        if r.secrets.is_empty() {
            out.warnings.push(format!(
                "route {:?} has no secret: every request is accepted",
                r.path
            ));
        }
    }
    let any_allowlist = config.routes.iter().any(|r| r.allow_ips.is_some())
        || config.event_routes.iter().any(|r| r.allow_ips.is_some());
    if !config.trusted_proxies.is_empty() && !any_allowlist {
        out.warnings
            .push("trusted_proxies is set but no route has allow_ips: it has no effect".into());
    }
    let engine = match PluginEngine::new(super::assemble::engine_options(config)) {
        Ok(engine) => Some(engine),
        Err(e) => {
            out.problems.push(e.to_string());
            None
        }
    };
    let loaded: Vec<Option<Plugin>> = config
        .plugins
        .iter()
        .map(|spec| {
            let plugin = engine.as_ref().map(|e| e.load(spec)).transpose();
            let plugin = plugin.unwrap_or_else(|e| {
                out.problems.push(e.to_string());
                None
            });
            let inspection = std::fs::read(&spec.path)
                .ok()
                .and_then(|bytes| inspect::inspect(&bytes).ok());
            let needs = inspection.as_ref().map(|i| i.capabilities()).unwrap_or_default();
            let granted: Vec<Capability> = Capability::ALL
                .into_iter()
                .filter(|c| spec.grants.allows(*c))
                .collect();
            for missing in needs.iter().filter(|c| !granted.contains(c)) {
                out.problems.push(format!(
                    "plugin {:?} imports what capability `{}` grants, which it is not granted: its calls would fail; add \"{}\" to its capabilities",
                    spec.name,
                    missing.name(),
                    missing.name()
                ));
            }
            if inspection.is_some() {
                for unused in granted.iter().filter(|c| !needs.contains(c)) {
                    out.warnings.push(format!(
                        "plugin {:?} is granted `{}` but does not import it",
                        spec.name,
                        unused.name()
                    ));
                }
            }
            out.plugins.push(PluginCheck {
                name: spec.name.clone(),
                path: spec.path.clone(),
                world: inspection.map(|i| i.world),
                needs,
                granted,
                pinned: spec.sha256.is_some(),
                loaded: plugin.is_some(),
            });
            plugin
        })
        .collect();
    let loaded: Vec<Option<&Plugin>> = loaded.iter().map(Option::as_ref).collect();
    out.problems
        .extend(super::assemble::chain_mismatches(config, &loaded));
    out
}
