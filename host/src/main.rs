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
        // Colours only for people: piped into a file or a collector, plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    enrichd::cli::run(cli)
}
