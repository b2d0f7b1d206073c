//! The `enrichd` binary, built as part of the tests package so the
//! process tests can name it with `env!("CARGO_BIN_EXE_enrichd-under-test")`
//! (an integration test only sees its own package's binaries). It is the
//! real binary: the same `main`, [`enrichd::cli::main`].

fn main() -> anyhow::Result<()> {
    enrichd::cli::main()
}
