//! `enrichd plugin run PLUGIN.wasm --payload FILE`: one delivery plugin,
//! once, through the same engine, sandbox, limits, validation and envelope
//! as `serve`, with no config file and no server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::emailgistics::chain::{self, ChainEntry, Outcome, Verdict};
use crate::emailgistics::{convert, payload};
use crate::plugin::policy::{Capability, PluginSpec};
use crate::plugin::{EngineOptions, Grants, Limits, PluginEngine, Services};

/// What `plugin run` was asked to do.
pub(super) struct RunArgs<'a> {
    /// The component.
    pub file: &'a Path,
    /// The Emailgistics payload.
    pub payload: &'a Path,
    /// `--config KEY=VALUE` pairs: the plugin's `[plugin.config]`.
    pub config: &'a [(String, String)],
    /// `--grant` names.
    pub grants: &'a [String],
    /// `--json`.
    pub json: bool,
}

/// `KEY=VALUE` of `--config`.
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Parse the payload, load the plugin as `serve` would (default limits,
/// on-demand allocation, no cache), run it as a one-entry chain.
pub(super) fn run(args: RunArgs<'_>) -> anyhow::Result<()> {
    let body = std::fs::read(args.payload)
        .with_context(|| format!("cannot read {}", args.payload.display()))?;
    let delivery = match payload::parse(&body)
        .with_context(|| format!("{} is not a delivery payload", args.payload.display()))?
    {
        payload::Parsed::Received(d) => convert::delivery(&d),
        payload::Parsed::UnknownEvent(e) => {
            bail!("{}: event {e:?} is not a delivery", args.payload.display())
        }
    };
    let mut caps = Vec::new();
    for g in args.grants {
        caps.push(Capability::parse(g).with_context(|| {
            let known: Vec<_> = Capability::ALL.iter().map(|c| c.name()).collect();
            format!("--grant {g:?}: not one of {known:?}")
        })?);
    }
    let limits = Limits::default();
    let spec = PluginSpec {
        name: args
            .file
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned()),
        path: args.file.to_path_buf(),
        grants: Grants::new(caps),
        config: Arc::new(args.config.iter().cloned().collect::<BTreeMap<_, _>>()),
        timeout: crate::config::DEFAULT_PLUGIN_TIMEOUT,
        limits,
        on_error: Default::default(),
        sha256: None,
        crm_sources: Vec::new(),
        kv_read: Vec::new(),
        allowed_hosts: Vec::new(),
    };
    let engine = PluginEngine::new(EngineOptions {
        allocator: crate::plugin::policy::Allocator::OnDemand,
        fuel: limits.fuel.is_some(),
        max_memory_bytes: limits.max_memory_bytes,
        max_table_elements: limits.max_table_elements,
        cache_dir: None,
    })?;
    let plugin = Arc::new(engine.load(&spec)?);
    if !plugin.handles_deliveries() {
        bail!(
            "{}: not a delivery plugin (it exports no handler)",
            args.file.display()
        );
    }
    let chain = [ChainEntry {
        plugin,
        mailboxes: None,
    }];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (verdict, records) = rt.block_on(chain::run(
        &chain,
        &delivery,
        &Services::default(),
        tokio::time::Instant::now(),
        spec.timeout,
    ));
    let record = records.first().context("the chain ran no plugin")?;
    if args.json {
        let answer = match &verdict {
            Verdict::Answer(envelope) => serde_json::json!({ "status": 200, "envelope": envelope }),
            Verdict::Retry(reason) => serde_json::json!({ "status": 503, "reason": reason }),
        };
        let out = serde_json::json!({ "plugin": record, "answer": answer });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(record, &verdict)?;
    }
    if record.outcome != Outcome::Applied {
        bail!("the plugin did not succeed: {:?}", record.outcome);
    }
    Ok(())
}

fn print_text(record: &chain::PluginRecord, verdict: &Verdict) -> anyhow::Result<()> {
    println!(
        "plugin       {} ({:?}, {} µs)",
        record.plugin, record.outcome, record.elapsed_us
    );
    if let Some(message) = &record.message {
        println!("message      {message}");
    }
    if let Some(failure) = &record.failure {
        println!("failure      {failure}");
    }
    println!(
        "actions      {}",
        serde_json::to_string_pretty(&record.actions)?
    );
    for d in &record.dropped {
        println!(
            "dropped      #{} {} {:?}: {}",
            d.index, d.action_type, d.name, d.reason
        );
    }
    for n in &record.notes {
        println!("note         {n}");
    }
    match verdict {
        Verdict::Answer(envelope) => {
            println!("answer       200 {}", serde_json::to_string(envelope)?)
        }
        Verdict::Retry(reason) => println!("answer       503 (retry): {reason}"),
    }
    Ok(())
}
