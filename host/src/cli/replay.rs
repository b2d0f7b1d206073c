//! `enrichd replay ID`: run a logged delivery again, with the host-call
//! answers it saw (see [`crate::app::replay`]), and print the recorded and
//! replayed actions side by side with their difference.
//!
//! The record is read as `enrichd deliveries show` reads it: from the store,
//! or, while `serve` holds the embedded store, through its admin listener.
//! Exit status: 0 identical, 2 different ([`DIFFERS`]), 1 error.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::app::replay::{self, Change, Replayed, Request};

/// Exit status when the replay differs from the record: not an error (1),
/// so a CI job can tell "the new version changes the answer" apart.
pub const DIFFERS: i32 = 2;

/// `enrichd replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Config (routes, plugins, limits) and data (the delivery log).
    #[command(flatten)]
    pub target: super::Target,
    /// The payload `id` of the logged delivery.
    pub id: String,
    /// Replay on this route instead of the recorded one.
    #[arg(long)]
    pub route: Option<String>,
    /// Run NEW.wasm in place of plugin NAME (repeatable; its pin is not
    /// enforced).
    #[arg(long = "plugin", value_name = "NAME=NEW.wasm", value_parser = super::plugin_run::key_value)]
    pub plugins: Vec<(String, String)>,
    /// The payload, for a record that keeps none (stored before payloads
    /// were kept, or larger than a record keeps).
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let config = super::load(&args.target)?;
    let stored = super::deliveries::show(&config, &args.id, None)?;
    let payload = args
        .payload
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let swaps: Vec<(String, PathBuf)> = args
        .plugins
        .into_iter()
        .map(|(name, path)| (name, PathBuf::from(path)))
        .collect();
    let replayed = replay::replay(Request {
        config: &config,
        stored: &stored,
        route: args.route.as_deref(),
        swaps: &swaps,
        payload,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&replayed)?);
    } else {
        print_text(&replayed);
    }
    if !replayed.identical {
        use std::io::Write;
        std::io::stdout().flush()?;
        // The documented status for "differs": not an error.
        std::process::exit(DIFFERS);
    }
    Ok(())
}

fn print_text(r: &Replayed) {
    println!(
        "delivery {} on {}, replayed with its recorded host calls",
        r.delivery, r.route
    );
    for p in &r.plugins {
        let (old, new) = (&p.sides.old, &p.sides.new);
        let state = if p.sides.diff.is_empty() {
            "identical"
        } else {
            "DIFFERS"
        };
        println!(
            "\nplugin {}: {state}\n  recorded  {}\n  replayed  {}",
            p.plugin,
            summary(old),
            summary(new)
        );
        print_changes(&p.sides.diff);
        for u in &p.unrecorded {
            println!(
                "  unrecorded  {}({}) → unavailable",
                u.call,
                u.args.join(", ")
            );
        }
        if p.unrecorded_total > p.unrecorded.len() {
            println!(
                "  unrecorded  … {} more",
                p.unrecorded_total - p.unrecorded.len()
            );
        }
    }
    let a = &r.answer;
    println!(
        "\nanswer: {}\n  recorded  {}\n  replayed  {}",
        if a.diff.is_empty() {
            "identical"
        } else {
            "DIFFERS"
        },
        compact(&a.old),
        compact(&a.new)
    );
    print_changes(&a.diff);
    println!(
        "\n{}",
        if r.identical {
            "identical"
        } else {
            "differs (exit status 2)"
        }
    );
}

/// A plugin side in one line: outcome and action count.
fn summary(side: &Value) -> String {
    if side.is_null() {
        return "not in this run".into();
    }
    let actions = match side["actions"].as_array() {
        Some(a) => format!("{} actions", a.len()),
        None => "actions left out of the record by its bound".into(),
    };
    format!("{}, {actions}", side["outcome"].as_str().unwrap_or("?"))
}

fn print_changes(diff: &[Change]) {
    for c in diff {
        match c {
            Change::Added { index, new } => println!("  + #{index}  {}", compact(new)),
            Change::Removed { index, old } => println!("  - #{index}  {}", compact(old)),
            Change::Changed { index, old, new } => println!(
                "  ~ #{index}  recorded  {}\n  ~ #{index}  replayed  {}",
                compact(old),
                compact(new)
            ),
        }
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
