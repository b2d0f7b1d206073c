//! The command line: `enrichd serve --config FILE [--listen ADDR] [--data-dir DIR]`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// enrichd: an Emailgistics webhook endpoint that enriches messages with
/// sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve webhook deliveries.
    Serve(ServeArgs),
}

/// `enrichd serve`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Listen on this address instead of the config's `listen`.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Keep data here instead of the config's `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}
