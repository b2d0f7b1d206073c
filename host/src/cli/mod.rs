//! The command line. `serve` runs enrichd; `check-config` checks a config
//! as `serve` would load it; `reload` has a running one read it again;
//! `deliveries` reads the delivery log; `replay` runs a logged delivery
//! again; `crm` imports CRM data; `plugin` helps plugin authors;
//! `test-webhook` checks an endpoint as Emailgistics Admin's "Test Webhook"
//! does. This is glue: errors are `anyhow` with context, for people.

mod check_config;
mod crm;
pub mod deliveries;
mod guest_lines;
pub mod logging;
mod plugin;
mod plugin_run;
mod reload;
mod replay;
mod serve;
pub mod test_webhook;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `enrichd --version`: the crate's version and the plugin WIT package it
/// loads plugins of.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (plugin WIT enrichd:plugin@{})",
        env!("CARGO_PKG_VERSION"),
        crate::plugin::inspect::supported_wit_version()
    )
});

/// enrichd: an Emailgistics webhook endpoint that enriches messages with
/// sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version = VERSION.as_str(), about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How to write log lines to stderr: `json` (one object per line, the
    /// delivery's `route` and `delivery` id on each line about it) or
    /// `text`. Default: text when stderr is a terminal, JSON otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<logging::LogFormat>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve webhook deliveries (and the admin endpoints).
    Serve(ServeArgs),
    /// Check a config as `serve` would load it, without opening the store
    /// or binding the listeners: parse it, resolve its secrets from the
    /// environment, load every plugin (pins, memory and table sizes, the
    /// component, its imports against its grants), check the chains; print
    /// the listeners, plugins, routes and chains, then every problem.
    /// Exit status: 0 `serve` would start, 1 it would not.
    #[command(after_help = CHECK_CONFIG_HELP)]
    CheckConfig {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask the running `enrichd serve` to read its config file again and
    /// swap to it (what SIGHUP does), through its admin listener; print the
    /// answer: what changed, or why the new config was refused (the running
    /// one keeps serving). Exit status: 0 reloaded, 1 refused or no answer.
    #[command(after_help = RELOAD_HELP)]
    Reload {
        /// The config file the server runs (its `admin_listen` says where
        /// to ask).
        #[arg(long, short)]
        config: PathBuf,
        /// Ask the admin listener at this address instead.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Read the delivery log (works while the server runs).
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Manage embedded CRM data.
    #[command(subcommand)]
    Crm(CrmCommand),
    /// Tools for plugin authors and operators (no config, no server).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run a logged delivery again, in this process, with the host-call
    /// answers it saw (CRM, kv, config, outbound HTTP: from its record;
    /// nothing is written or sent), on the route's chain from the config,
    /// optionally with new plugin components; print the recorded and
    /// replayed actions side by side and their difference. Exit status: 0
    /// identical, 2 different, 1 error.
    #[command(after_help = REPLAY_HELP)]
    Replay(replay::ReplayArgs),
    /// Do what Emailgistics Admin's "Test Webhook" button does: POST the
    /// sample delivery with the bearer secret, check the answer (HTTP 200,
    /// JSON, `status` and `message`, each action against the action
    /// reference) and print "Success! …" with a summary of the actions, or
    /// the error. Exit status: 0 success, 2-6 the step that failed.
    #[command(after_help = test_webhook::HELP)]
    TestWebhook(test_webhook::TestWebhookArgs),
}

const CHECK_CONFIG_HELP: &str = "\
Example:
  ENRICHD_SECRET=… enrichd check-config --config /etc/enrichd/enrichd.toml

Run it as the user enrichd runs as (the systemd unit does, before every start):
it compiles plugins into the config's component cache, which `serve` then reuses.";

const RELOAD_HELP: &str = "\
Example:
  enrichd reload --config /etc/enrichd/enrichd.toml

Same as `systemctl reload enrichd` (SIGHUP), but prints the answer, e.g.
  {\"reloaded\": true, \"changed\": {\"plugins\": {\"loaded\": [\"crm-enrich\"], ...}}}
  {\"reloaded\": false, \"error\": \"max_connections changed: that needs a restart\"}";

const REPLAY_HELP: &str = "\
Examples:
  enrichd replay -c enrichd.toml 65e0aaef382d2e93ed1ef9bc
  enrichd replay -c enrichd.toml 65e0aaef382d2e93ed1ef9bc \\
      --plugin crm-enrich=target/wasm32-wasip2/release/crm_enrich.wasm --json

Exit status: 0 the replay gives the recorded actions and answer, 2 it differs,
1 it could not run (no such delivery, a plugin that does not load, …).
Host calls the recording does not hold answer `unavailable` (an HTTP request:
`internal-error`, \"not recorded: …\") and are listed.";

/// `enrichd plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project from the templates built into this enrichd:
    /// `DIR/NAME/` with the sources, a unit test, a README (build, test,
    /// inspect, run, serve), a sample payload, and the WIT it builds against
    /// (and, for Rust, the `enrichd-pdk` crate it uses). Builds with one
    /// command, offline for Rust; never overwrites an existing directory.
    #[command(after_help = NEW_HELP)]
    New {
        /// The plugin's name, kebab-case (`vip-router`); also the directory's.
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// What it handles: Emailgistics deliveries, EngageLab events, or both.
        #[arg(long, value_enum, default_value = "delivery")]
        world: crate::scaffold::World,
        /// Where to create the project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Show what a plugin component is: its world, the imports it needs and
    /// the capabilities that grant them, its exports, size, sha256 (ready to
    /// paste as a pin) and the enrichd:plugin WIT version it was built
    /// against. Reads the component's import and export sections; compiles
    /// nothing. Exits with status 1 for a file that is not an enrichd plugin
    /// component.
    #[command(after_help = INSPECT_HELP)]
    Inspect {
        /// The component (`.wasm`).
        file: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin once on a delivery payload or an EngageLab callback,
    /// composed as `serve` composes it (same engine, sandbox, default limits,
    /// validation and envelope; a temporary store, removed after): prints the
    /// outcome and wall time, its message or failure, fuel consumed, peak
    /// linear memory, output bytes, the actions, what validation dropped or
    /// changed and why, the answer enrichd would give, and the plugin's log,
    /// stdout and stderr lines. Exits with status 1 when the plugin failed.
    #[command(after_help = RUN_HELP)]
    Run(Box<plugin_run::RunArgs>),
}

const NEW_HELP: &str = "\
Example:
  enrichd plugin new vip-router --lang rust
  cd vip-router && cat README.md

  enrichd plugin new bounce-watch --lang python --world event --dir ~/plugins";

const RUN_HELP: &str = "\
Examples:
  enrichd plugin run keyword_router.wasm --payload examples/seed-payload.json \\
      --grant config --config 'rules=coverage, claim => Policy Desk' --config backup=any
  enrichd plugin run crm_enrich.wasm --payload examples/seed-payload.json \\
      --grant crm,log --crm examples/crm-sample.jsonl --json
  enrichd plugin run engagement_tracker.wasm --event examples/engagelab/open.json --grant kv
  enrichd plugin run fraud_check.wasm --payload examples/seed-payload.json \\
      --grant http,config --allow-host https://fraud.example.com --config threshold=0.8

--kv file:
  {\"engagement-tracker\": {\"opens:adelev@contoso.com\": \"3\"}}";

const INSPECT_HELP: &str = "\
Example:
  enrichd plugin inspect target/wasm-plugins/wasm32-wasip2/release/crm_enrich.wasm
  enrichd plugin inspect --json my_plugin.wasm | jq .capabilities

--json fields:
  file, world (\"delivery\" | \"event\" | \"both\"), wit_world (its name in wit/plugin.wit),
  exports [names], imports [{name, kind (\"enrichd\" | \"enrichd-types\" | \"wasi\" | \"refused\"),
  provided, capability (enrichd only), reason and hint (refused only)}], capabilities [to grant],
  loadable (enrichd serve would accept its imports and version), size_bytes, sha256 (hex),
  wit_version (null if it names none), wit_supported, supported_wit_version.";

/// `enrichd crm …`
#[derive(Debug, Subcommand)]
pub enum CrmCommand {
    /// Import customer records (CSV with a header row, or JSON lines) into an
    /// embedded CRM source. Rows are upserted by email; bad rows are reported
    /// with their line numbers and the command fails, after importing the
    /// good rows (all or nothing with --strict). Stop `enrichd serve` on the
    /// same data directory first.
    Import {
        /// Config and data.
        #[command(flatten)]
        target: Target,
        /// The file: `.csv`, or `.jsonl` / `.ndjson` / `.json` (one object per line).
        file: PathBuf,
        /// The embedded source to import into (default: the first one).
        #[arg(long)]
        source: Option<String>,
        /// Import nothing if any row is bad.
        #[arg(long)]
        strict: bool,
    },
}

/// Where the config and data are.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Data directory instead of the config's `data_dir`: the store, the
    /// kv, the CRM records and, unless the config sets `cache_dir`, the
    /// compiled-component cache all move there.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `enrichd serve`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config and data.
    #[command(flatten)]
    pub target: Target,
    /// Listen on this address instead of the config's `listen`.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin listener instead of the config's `admin_listen`.
    #[arg(long)]
    pub admin_listen: Option<std::net::SocketAddr>,
}

/// `enrichd deliveries …`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List answered deliveries, newest first.
    List {
        /// Config and data.
        #[command(flatten)]
        target: Target,
        /// Only those answered since: a duration ago (`30m`, `2h`, `3d`) or
        /// an RFC 3339 time (`2026-11-22T06:00:00Z`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = crate::admin::DEFAULT_LIST_LIMIT)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one delivery's answer and full record.
    Show {
        /// Config and data.
        #[command(flatten)]
        target: Target,
        /// The payload `id`.
        id: String,
        /// Only this route's delivery with that id.
        #[arg(long)]
        route: Option<String>,
    },
}

/// The `enrichd` binary's `main`: parse the arguments, log to stderr
/// (`--log-format`; `RUST_LOG`, default `info`), run the command. Also the
/// `main` of the test suite's copy of the binary
/// (`tests/src/bin/enrichd-under-test.rs`).
pub fn main() -> anyhow::Result<()> {
    use clap::Parser;
    let cli = Cli::parse();
    let format = logging::LogFormat::or_default(cli.log_format);
    if !matches!(cli.command, Command::Plugin(PluginCommand::Run(_))) {
        logging::init(format, None)?;
        return run(cli);
    }
    // `plugin run` reports the plugin's lines itself: kept at every level,
    // not logged.
    let lines = guest_lines::GuestLines::default();
    logging::init(format, Some(lines.clone()))?;
    run_with(cli, lines)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    run_with(cli, guest_lines::GuestLines::default())
}

/// Run a parsed command line; `plugin run` reads the plugin's lines from
/// `lines`.
fn run_with(cli: Cli, lines: guest_lines::GuestLines) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig { config } => {
            let target = Target {
                config,
                data_dir: None,
            };
            if !check_config::run(&target)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Reload {
            config,
            admin_listen,
        } => {
            if !reload::run(&config, admin_listen)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::TestWebhook(args) => test_webhook::run(args),
        Command::Deliveries(cmd) => deliveries::run(cmd),
        Command::Replay(args) => replay::run(args),
        Command::Crm(CrmCommand::Import {
            target,
            file,
            source,
            strict,
        }) => crm::import(&target, &file, source.as_deref(), strict),
        Command::Plugin(PluginCommand::New {
            name,
            lang,
            world,
            dir,
        }) => plugin::new(&dir, &name, lang, world),
        Command::Plugin(PluginCommand::Inspect { file, json }) => plugin::inspect(&file, json),
        Command::Plugin(PluginCommand::Run(args)) => plugin_run::run(*args, lines),
    }
}

/// Load the config and apply `--data-dir`.
fn load(target: &Target) -> anyhow::Result<crate::config::Config> {
    Ok(load_config(target)?)
}

/// [`load`], with the config's own error (a reload reports it).
/// `--data-dir` is taken from the working directory, and replaces the
/// file's before anything is derived from it (the component cache).
fn load_config(target: &Target) -> Result<crate::config::Config, crate::config::ConfigError> {
    let data_dir = target
        .data_dir
        .as_ref()
        .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
    crate::config::Config::load_with_data_dir(&target.config, data_dir)
}
