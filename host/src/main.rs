//! The `enrichd` binary: parse arguments, set up tracing, and run the
//! command (see [`enrichd::cli`]).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = enrichd::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    enrichd::cli::run(cli)
}
