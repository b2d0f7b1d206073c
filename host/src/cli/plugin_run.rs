//! `enrichd plugin run PLUGIN.wasm --payload FILE | --event FILE`: one
//! plugin, once, composed as `serve` composes it ([`crate::app::one_off`]):
//! same engine, sandbox, limits, validation and envelope, with CRM records
//! and kv entries from the author's files, and no server.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::guest_lines::{GuestLine, GuestLines};
use crate::app::one_off::{OneOff, Spec};
use crate::emailgistics::chain::{Outcome, PluginRecord, Verdict};
use crate::emailgistics::{convert, payload};
use crate::plugin::policy::{Capability, HttpOrigin};
use crate::plugin::Usage;

/// `enrichd plugin run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// An Emailgistics `received` payload (JSON).
    #[arg(long, required_unless_present = "event", conflicts_with = "event")]
    pub payload: Option<PathBuf>,
    /// An EngageLab callback (JSON), for an event plugin.
    #[arg(long)]
    pub event: Option<PathBuf>,
    /// A config value the plugin reads (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
    pub config: Vec<(String, String)>,
    /// Capabilities to grant, comma-separated (`log,config,crm,kv,http`).
    #[arg(long, value_delimiter = ',')]
    pub grant: Vec<String>,
    /// A host the plugin may send HTTP requests to, `scheme://host[:port]`
    /// as in the config's `allowed_hosts` (repeatable; needs `--grant
    /// http`, which needs at least one).
    #[arg(long = "allow-host", value_name = "URL", value_parser = origin)]
    pub allow_hosts: Vec<String>,
    /// CRM records for the `crm` import (CSV or JSON lines, as `enrichd
    /// crm import` reads them), in an embedded source named `local`.
    #[arg(long)]
    pub crm: Option<PathBuf>,
    /// kv entries: a JSON object of namespace → {key → value}. The
    /// plugin's own namespace is its name; it may read the others.
    #[arg(long)]
    pub kv: Option<PathBuf>,
    /// The plugin's name (and kv namespace); default: the file's stem,
    /// `_` read as `-`.
    #[arg(long)]
    pub name: Option<String>,
    /// A fuel limit (default: metered, no limit, so the run reports the
    /// fuel consumed).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Keep compiled components here between runs (default: the user's
    /// cache, `$XDG_CACHE_HOME/enrichd/component-cache` or
    /// `~/.cache/enrichd/component-cache`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component afresh and keep nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// One JSON object instead of text: `plugin` (its record, with
    /// `usage` and `output_bytes`), `answer` (status and envelope;
    /// deliveries only), and `log`, `stdout`, `stderr`, `host` (lines).
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// What the one-off app runs, checked: every grant a capability, and
    /// `--allow-host` exactly when `http` is granted.
    fn spec(self) -> anyhow::Result<Spec> {
        for g in &self.grant {
            Capability::parse(g).with_context(|| {
                let known: Vec<_> = Capability::ALL.iter().map(|c| c.name()).collect();
                format!("--grant {g:?}: not one of {known:?}")
            })?;
        }
        let http = self.grant.iter().any(|g| g == Capability::Http.name());
        match (http, self.allow_hosts.is_empty()) {
            (true, true) => bail!(
                "--grant http needs at least one --allow-host URL (e.g. --allow-host https://api.example.com): \
                 without one every request is denied"
            ),
            (false, false) => bail!(
                "--allow-host needs --grant http: without the grant every request is denied"
            ),
            _ => {}
        }
        Ok(Spec {
            file: self.file,
            name: self.name,
            grants: self.grant,
            config: self.config,
            allowed_hosts: self.allow_hosts,
            crm: self.crm,
            kv: self.kv,
            fuel: self.fuel,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(user_cache_dir)
            },
        })
    }
}

/// `scheme://host[:port]` of `--allow-host`, checked as the config checks
/// `allowed_hosts`.
fn origin(s: &str) -> Result<String, String> {
    HttpOrigin::parse(s).map(|_| s.to_owned())
}

/// `KEY=VALUE` of `--config`.
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// `$XDG_CACHE_HOME/enrichd/component-cache`, else under `$HOME/.cache`.
pub(super) fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("enrichd").join("component-cache"))
}

/// Compose the one-off app, run the plugin once, report; an error (exit
/// status 1) when the plugin failed.
pub(super) fn run(args: RunArgs, lines: GuestLines) -> anyhow::Result<()> {
    let json = args.json;
    let (payload, callback) = (args.payload.clone(), args.event.clone());
    let spec = args.spec()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let one_off = OneOff::build(&spec).await?;
        match (&payload, &callback) {
            (Some(path), None) => deliver(&one_off, path).await,
            (None, Some(path)) => event(&one_off, path).await,
            _ => bail!("give exactly one of --payload and --event"),
        }
    })?;
    let lines = lines.take();
    if json {
        let mut out = report.json;
        for stream in ["log", "stdout", "stderr", "host"] {
            out[stream] = lines
                .iter()
                .filter(|l| l.stream == stream)
                .map(|l| match stream {
                    "log" => serde_json::json!({ "level": l.level, "message": l.message }),
                    _ => l.message.clone().into(),
                })
                .collect::<Vec<_>>()
                .into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", report.text);
        print_lines(&lines);
    }
    if let Some(failure) = report.failed {
        bail!("the plugin did not succeed: {failure}");
    }
    Ok(())
}

/// What a run found, for people and for machines.
struct Report {
    text: String,
    json: serde_json::Value,
    /// Why the plugin did not succeed, if it did not.
    failed: Option<String>,
}

async fn deliver(one_off: &OneOff, path: &std::path::Path) -> anyhow::Result<Report> {
    let body = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let delivery = match payload::parse(&body)
        .with_context(|| format!("{} is not a delivery payload", path.display()))?
    {
        payload::Parsed::Received(d) => convert::delivery(&d),
        payload::Parsed::UnknownEvent(e) => {
            bail!("{}: event {e:?} is not a delivery", path.display())
        }
    };
    if !one_off.plugin().handles_deliveries() {
        bail!("not a delivery plugin (it exports no handler): use --event");
    }
    let budget = crate::config::DEFAULT_DELIVERY_BUDGET;
    let (verdict, records) = one_off.deliver(&delivery, budget).await;
    let record = records.first().context("the chain ran no plugin")?;
    let answer = match &verdict {
        Verdict::Answer(envelope) => serde_json::json!({ "status": 200, "envelope": envelope }),
        Verdict::Retry(reason) => serde_json::json!({ "status": 503, "reason": reason }),
    };
    Ok(Report {
        text: delivery_text(record, &verdict)?,
        json: serde_json::json!({ "plugin": record, "answer": answer }),
        failed: (record.outcome != Outcome::Applied).then(|| {
            record
                .failure
                .as_ref()
                .map_or_else(|| format!("{:?}", record.outcome), |f| f.to_string())
        }),
    })
}

async fn event(one_off: &OneOff, path: &std::path::Path) -> anyhow::Result<Report> {
    let body = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let callback = crate::engagelab::event::parse(&body)
        .with_context(|| format!("{} is not an EngageLab callback", path.display()))?;
    if !one_off.plugin().handles_events() {
        bail!("not an event plugin (it exports no events): use --payload");
    }
    let started = std::time::Instant::now();
    let called = one_off.event(&crate::engagelab::wit_event(&callback)).await;
    let elapsed_us = started.elapsed().as_micros() as u64;
    let plugin = &one_off.plugin().info().name;
    let failure = called.result.err().map(|f| f.to_string());
    let outcome = if failure.is_some() {
        "failed"
    } else {
        "handled"
    };
    let mut text = format!("plugin       {plugin} ({outcome}, {elapsed_us} µs)\n");
    if let Some(f) = &failure {
        text += &format!("failure      {f}\n");
    }
    text += &usage_text(&called.usage, None);
    Ok(Report {
        text,
        json: serde_json::json!({
            "plugin": {
                "plugin": plugin,
                "outcome": outcome,
                "elapsed_us": elapsed_us,
                "failure": failure,
                "limits_hit": called.limits_hit,
                "usage": called.usage,
            },
        }),
        failed: failure,
    })
}

fn usage_text(usage: &Usage, output_bytes: Option<usize>) -> String {
    let mut text = String::new();
    if let Some(fuel) = usage.fuel {
        text += &format!("fuel         {fuel}\n");
    }
    text += &format!("peak memory  {} bytes\n", usage.peak_memory_bytes);
    if let Some(bytes) = output_bytes {
        text += &format!("output       {bytes} bytes of actions\n");
    }
    text += &format!(
        "printed      {} bytes to stdout, {} to stderr\n",
        usage.stdout_bytes, usage.stderr_bytes
    );
    text
}

fn delivery_text(record: &PluginRecord, verdict: &Verdict) -> anyhow::Result<String> {
    let mut text = format!(
        "plugin       {} ({:?}, {} µs)\n",
        record.plugin, record.outcome, record.elapsed_us
    );
    if let Some(message) = &record.message {
        text += &format!("message      {message}\n");
    }
    if let Some(failure) = &record.failure {
        text += &format!("failure      {failure}\n");
    }
    if let Some(usage) = &record.usage {
        text += &usage_text(usage, record.output_bytes);
    }
    for limit in &record.limits_hit {
        text += &format!("limit hit    {limit}\n");
    }
    text += &format!(
        "actions      {}\n",
        serde_json::to_string_pretty(&record.actions)?
    );
    for d in &record.dropped {
        text += &format!(
            "dropped      #{} {} {:?}: {}\n",
            d.index, d.action_type, d.name, d.reason
        );
    }
    for n in &record.notes {
        text += &format!("note         {n}\n");
    }
    text += &match verdict {
        Verdict::Answer(envelope) => {
            format!("answer       200 {}\n", serde_json::to_string(envelope)?)
        }
        Verdict::Retry(reason) => format!("answer       503 (retry): {reason}\n"),
    };
    Ok(text)
}

fn print_lines(lines: &[GuestLine]) {
    for l in lines {
        match l.stream.as_str() {
            "log" => println!("{:<13}{} {}", "log", l.level, l.message),
            stream => println!("{stream:<13}{}", l.message),
        }
    }
}
