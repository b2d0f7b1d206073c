//! One plugin, run once, outside a server (`enrichd plugin run`): the app is
//! composed exactly as `serve` composes it — from a config, so the plugin is
//! loaded, granted, limited and sandboxed by the same code — but the config
//! is written for the run into a temporary directory: a sled store there,
//! the plugin on one route (and one EngageLab route when it handles events),
//! an embedded CRM source seeded from the author's file, and the kv
//! namespaces filled from theirs. The temporary directory is removed when
//! the run is over; only the compiled-component cache outlives it (a
//! Python or JS plugin compiles for ~10 s, then loads from it in ~70 ms).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::time::Instant;

use super::App;
use crate::config::Config;
use crate::emailgistics::chain::{self, PluginRecord, Verdict};
use crate::plugin::inspect::World;
use crate::plugin::{CallLimit, Called, Plugin, WitDelivery, WitEvent};
use crate::storage::Quota;

/// The CRM source a `--crm` file is imported into.
pub const CRM_SOURCE: &str = "local";

/// Route paths of the one-off config (never bound: nothing listens).
const ROUTE: &str = "/run";

/// What to run and with what.
#[derive(Debug, Default)]
pub struct Spec {
    /// The component.
    pub file: PathBuf,
    /// The plugin's name (its kv namespace); default: the file's stem.
    pub name: Option<String>,
    /// Capability names to grant.
    pub grants: Vec<String>,
    /// The plugin's `[plugin.config]`.
    pub config: Vec<(String, String)>,
    /// Its `allowed_hosts` (with `http` granted).
    pub allowed_hosts: Vec<String>,
    /// CRM records (CSV or JSON lines, as `enrichd crm import` reads).
    pub crm: Option<PathBuf>,
    /// kv entries: a JSON object of namespace → {key → string value}.
    pub kv: Option<PathBuf>,
    /// The fuel limit; `None` meters fuel without a limit, so the run can
    /// say what the plugin consumed.
    pub fuel: Option<u64>,
    /// Where compiled components are kept between runs; `None`: in the
    /// temporary directory (compiled again every run).
    pub cache_dir: Option<PathBuf>,
}

/// A composed app holding the one plugin, and the directory it lives in.
pub struct OneOff {
    app: App,
    plugin: Arc<Plugin>,
    // Dropped last: the app's store is in it.
    _dir: tempfile::TempDir,
}

impl OneOff {
    /// Write the config, build the app as `serve` does, fill the kv.
    pub async fn build(spec: &Spec) -> anyhow::Result<OneOff> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let name = match &spec.name {
            Some(name) => name.clone(),
            None => spec.file.file_stem().map_or_else(
                || "plugin".into(),
                |s| s.to_string_lossy().replace('_', "-"),
            ),
        };
        let kv = match &spec.kv {
            Some(path) => read_kv(path)?,
            None => serde_json::Map::new(),
        };
        // Which routes it goes on; a file that is no plugin is left to the
        // loader, which says why in serve's words.
        let world = crate::plugin::inspect::inspect(
            &std::fs::read(&spec.file)
                .with_context(|| format!("cannot read {}", spec.file.display()))?,
        )
        .map_or(World::Delivery, |found| found.world);
        let path = dir.path().join("enrichd.toml");
        let text = config_text(spec, &name, world, dir.path())?;
        std::fs::write(&path, text).context("cannot write the one-off config")?;
        let mut config = Config::load(&path)?;
        // The plugin may read every namespace the kv file fills. Granted on
        // the resolved config: the file's `kv_read` may only name plugins
        // the config defines, and the others are not here.
        config.plugins[0].kv_read = kv.keys().filter(|ns| **ns != name).cloned().collect();
        let app = App::build(&config).await?;
        let plugin = app
            .plugins()
            .first()
            .cloned()
            .context("the one-off config has one plugin")?;
        fill_kv(&app, &kv).await?;
        Ok(OneOff {
            app,
            plugin,
            _dir: dir,
        })
    }

    /// The plugin as loaded.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Run the plugin on a delivery as the route's chain: its record and
    /// the answer enrichd would give.
    pub async fn deliver(
        &self,
        delivery: &WitDelivery,
        budget: std::time::Duration,
    ) -> (Verdict, Vec<PluginRecord>) {
        let generation = self.app.generation();
        let chain = generation.routes.first().map_or(&[][..], |r| &r.chain);
        chain::run(chain, delivery, self.app.services(), Instant::now(), budget).await
    }

    /// Run the plugin on an EngageLab event, within its timeout.
    pub async fn event(&self, event: &WitEvent) -> Called<()> {
        let limit = CallLimit {
            deadline: Instant::now() + self.plugin.info().timeout,
            budget_bound: false,
        };
        self.plugin
            .call_event_reporting(event, self.app.services(), limit)
            .await
    }
}

/// The config `serve` would need to run this one plugin.
fn config_text(spec: &Spec, name: &str, world: World, dir: &Path) -> anyhow::Result<String> {
    use toml::{Table, Value};
    let abs = |p: &Path| -> anyhow::Result<Value> {
        let p = std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))?;
        Ok(Value::String(p.display().to_string()))
    };
    let mut plugin = Table::new();
    plugin.insert("name".into(), name.into());
    plugin.insert("path".into(), abs(&spec.file)?);
    plugin.insert(
        "capabilities".into(),
        Value::Array(spec.grants.iter().map(|g| g.as_str().into()).collect()),
    );
    // i64::MAX is TOML's largest integer: metered, never reached.
    let fuel = spec
        .fuel
        .map_or(i64::MAX, |f| f.min(i64::MAX as u64) as i64);
    plugin.insert("fuel".into(), fuel.into());
    if !spec.allowed_hosts.is_empty() {
        let hosts = spec.allowed_hosts.iter().map(|h| h.as_str().into());
        plugin.insert("allowed_hosts".into(), Value::Array(hosts.collect()));
    }
    let config: Table = spec
        .config
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    plugin.insert("config".into(), Value::Table(config));

    let mut root = Table::new();
    root.insert("listen".into(), "127.0.0.1:0".into());
    root.insert("data_dir".into(), abs(&dir.join("data"))?);
    if let Some(cache) = &spec.cache_dir {
        root.insert("cache_dir".into(), abs(cache)?);
    }
    // No pool to reserve for one call, as for any short-lived process.
    root.insert("allocator".into(), "on-demand".into());
    if let Some(crm) = &spec.crm {
        let mut source = Table::new();
        source.insert("name".into(), CRM_SOURCE.into());
        source.insert("kind".into(), "embedded".into());
        source.insert("seed".into(), abs(crm)?);
        root.insert("crm".into(), Value::Array(vec![Value::Table(source)]));
    }
    root.insert("plugin".into(), Value::Array(vec![Value::Table(plugin)]));
    let mut route = Table::new();
    route.insert("path".into(), ROUTE.into());
    let mut secret = Table::new();
    secret.insert("value".into(), "one-off-run-secret".into());
    route.insert("secrets".into(), Value::Array(vec![Value::Table(secret)]));
    let mut entry = Table::new();
    entry.insert("plugin".into(), name.into());
    let chain = Value::Array(vec![Value::Table(entry)]);
    route.insert("chain".into(), chain.clone());
    if world != World::Event {
        root.insert("route".into(), Value::Array(vec![Value::Table(route)]));
    }
    if world != World::Delivery {
        let mut events = Table::new();
        events.insert("path".into(), "/run-events".into());
        let mut key = Table::new();
        key.insert("value".into(), "one-off-run-app-key".into());
        events.insert("app_keys".into(), Value::Array(vec![Value::Table(key)]));
        events.insert("chain".into(), chain);
        root.insert("engagelab".into(), Value::Array(vec![Value::Table(events)]));
    }
    Ok(toml::to_string(&root)?)
}

/// The `--kv` file: `{"namespace": {"key": "value", …}, …}`.
fn read_kv(path: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shape = || {
        format!(
            "{}: expected a JSON object of namespace → {{key → string value}}",
            path.display()
        )
    };
    let value: serde_json::Value = serde_json::from_str(&text).with_context(shape)?;
    let Some(namespaces) = value.as_object() else {
        bail!(shape());
    };
    for (ns, entries) in namespaces {
        let ok = entries
            .as_object()
            .is_some_and(|e| e.values().all(|v| v.is_string()));
        if !ok {
            bail!("{}: namespace {ns:?}", shape());
        }
    }
    Ok(namespaces.clone())
}

/// Write the `--kv` entries through the same port the plugins use.
async fn fill_kv(app: &App, kv: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<()> {
    let Some(store) = &app.services().kv else {
        return Ok(());
    };
    for (ns, entries) in kv {
        for (key, value) in entries.as_object().into_iter().flatten() {
            let value = value.as_str().unwrap_or_default();
            store
                .set_within(ns, key, value, Quota::UNLIMITED)
                .await
                .with_context(|| format!("--kv: cannot set {ns:?} {key:?}"))?;
        }
    }
    Ok(())
}
