//! The `enrichd` binary: parse arguments, set up tracing, and run the
//! command (see [`enrichd::cli`]).

fn main() -> anyhow::Result<()> {
    enrichd::cli::main()
}
