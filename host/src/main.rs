//! The `enrichd` binary: parse arguments, set up tracing, and run the
//! command (see [`enrichd::cli`]).

/// jemalloc, not the system allocator. With glibc's malloc every thread of
/// tokio's blocking pool (where sled's work runs; a hundred threads under
/// load) got an arena, and each kept the memory it had freed: RSS was
/// 240-300 MiB after 100 000 deliveries and still rising. jemalloc
/// returns freed pages after a few seconds (its decay) and shares small
/// size classes across threads: ~185 MiB, flat, in the same run, with a
/// lower p99 (README, "Memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    enrichd::cli::main()
}
