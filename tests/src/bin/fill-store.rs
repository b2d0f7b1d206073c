//! Fills a sled data directory with stored deliveries (and optionally plugin
//! kv data), fast, through the real storage ports: the store-size bench
//! (`scripts/bench-store`) fills to 100 000 and 1 000 000 deliveries with it,
//! and the memory-bound test (`tests/tests/store_memory.rs`) runs it as its
//! own process so the RSS it reports is the storage's alone.
//!
//! ```text
//! fill-store --data-dir DIR --template FILE --count N
//!            [--route R] [--cache-bytes B] [--kv-bytes B] [--concurrency C]
//! ```
//!
//! - The database is opened as `enrichd serve` opens it (sled backend,
//!   `storage::sled::open_blocking`, the default retention and
//!   `max_records`), with `flush = "periodic"`: the on-disk layout is the
//!   same as with `"always"`, without an fsync per record. It takes sled's
//!   lock, so no enrichd may be serving the directory meanwhile.
//! - Each delivery goes through `AnswerStore::claim` and `complete`, the
//!   path a served delivery takes, with id `fill-<run id>-<i>` (the run id
//!   is random, so several fills add up), `stored_at_ms` = now (live), and
//!   status, body and record from the template; `record["delivery"]` is
//!   set to the new id.
//! - The template is what the admin listener's `GET /deliveries/ID` answers
//!   (a `StoredDelivery`: its `body` is used byte for byte) or what
//!   `enrichd deliveries show` prints (`answer` re-serialized compactly
//!   becomes the body: the same JSON, maybe not the same bytes as the
//!   server sent; `httpStatus` the status).
//! - `--kv-bytes B`: also writes B bytes of values (in values of
//!   [`KV_VALUE_BYTES`]) into the kv namespace [`KV_NAMESPACE`] through
//!   `PluginKv`, with no quota.
//!
//! Progress goes to stderr. At the end, after a flush, it prints one line
//! on stdout: `FILLED <records> <seconds> <VmHWM kB> <VmRSS kB>` (records
//! in the store, seconds the fill took, and the process's peak and current
//! resident memory from `/proc/self/status`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use enrichd::clock::Clock;
use enrichd::storage::{self, Claimed, Completed, DeliveryKey, Quota, StoredDelivery};

/// The enrichd binary's allocator (see `host/src/main.rs`): the memory
/// this process reports is then what the server's storage would hold.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The kv namespace `--kv-bytes` fills (a plugin name no real plugin has).
const KV_NAMESPACE: &str = "fill-store";
/// Size of each kv value: a few KB, like a JSON record per address, well
/// under the port's 64 KiB bound.
const KV_VALUE_BYTES: usize = 4096;
/// The lease of each claim: the fill holds it for one write only.
const LEASE: Duration = Duration::from_secs(60);
/// Progress is reported every this many records.
const PROGRESS_EVERY: u64 = 50_000;

/// Fill a sled data directory with stored deliveries.
#[derive(Parser, Debug)]
struct Args {
    /// The data directory (the database is `enrichd.sled` in it).
    #[arg(long)]
    data_dir: PathBuf,
    /// A stored delivery as `GET /deliveries/ID` or `enrichd deliveries
    /// show` prints it.
    #[arg(long)]
    template: PathBuf,
    /// How many deliveries to add.
    #[arg(long)]
    count: u64,
    /// The route they are stored under (default: the template's).
    #[arg(long)]
    route: Option<String>,
    /// sled's page cache, bytes (default: enrichd's).
    #[arg(long, default_value_t = enrichd::config::DEFAULT_SLED_CACHE_BYTES)]
    cache_bytes: u64,
    /// Bytes of plugin kv values to write too.
    #[arg(long, default_value_t = 0)]
    kv_bytes: u64,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
}

/// The parts of a delivery the template gives.
struct Template {
    route: String,
    status: u16,
    body: String,
    record: serde_json::Value,
}

/// Read the template in either shape (see the module docs).
fn read_template(path: &std::path::Path) -> anyhow::Result<Template> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Ok(d) = serde_json::from_value::<StoredDelivery>(v.clone()) {
        return Ok(Template {
            route: d.route,
            status: d.status,
            body: d.body,
            record: d.record,
        });
    }
    let (Some(route), Some(status), Some(answer), Some(record)) = (
        v["route"].as_str(),
        v["httpStatus"].as_u64(),
        v.get("answer"),
        v.get("record"),
    ) else {
        bail!(
            "{}: neither a stored delivery (GET /deliveries/ID) nor `enrichd deliveries show` output",
            path.display()
        );
    };
    Ok(Template {
        route: route.to_owned(),
        status: u16::try_from(status).context("httpStatus")?,
        body: match answer {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        record: record.clone(),
    })
}

/// A run id no other fill shares (std's hasher keys are random per process).
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// `VmHWM` and `VmRSS` of this process, kB (0 when unreadable).
fn memory_kb() -> (u64, u64) {
    let kb = |field| enrichd_tests::resources::status_kb(field).unwrap_or(0);
    (kb("VmHWM"), kb("VmRSS"))
}

/// Claim and complete one delivery.
async fn store_one(
    answers: &dyn storage::AnswerStore,
    template: &Template,
    route: &str,
    id: String,
    now_ms: u64,
) -> anyhow::Result<()> {
    let key = DeliveryKey::new(route, &id);
    let lease = match answers.claim(&key, LEASE).await? {
        Claimed::Leader(lease) => lease,
        other => bail!("{id}: claim found {other:?}: ids must be new"),
    };
    let mut record = template.record.clone();
    record["delivery"] = serde_json::Value::String(id.clone());
    let answer = StoredDelivery {
        route: route.to_owned(),
        id,
        stored_at_ms: now_ms,
        status: template.status,
        body: template.body.clone(),
        record,
    };
    match answers.complete(&lease, &answer).await? {
        Completed::Stored => Ok(()),
        other => bail!("{}: complete gave {other:?}", answer.id),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let template = Arc::new(read_template(&args.template)?);
    let route: Arc<str> = args.route.as_deref().unwrap_or(&template.route).into();
    let settings = storage::SledSettings {
        data_dir: args.data_dir.clone(),
        flush: storage::FlushPolicy::Periodic,
        flush_every_ms: enrichd::config::DEFAULT_FLUSH_EVERY_MS,
        cache_bytes: args.cache_bytes,
    };
    let limits = storage::Limits {
        retention: storage::answers::DEFAULT_RETENTION,
        max_records: storage::answers::DEFAULT_MAX_RECORDS,
        dedupe_window: storage::events::DEFAULT_DEDUPE_WINDOW,
        max_queued: enrichd::config::DEFAULT_MAX_QUEUED_EVENTS,
    };
    let clock = Clock::new();
    // `open_blocking` is what `storage::open` runs for sled; it also hands
    // out the database, which the fill flushes before it reports.
    let (store, db) = tokio::task::spawn_blocking(move || {
        storage::sled::open_blocking(&settings, &limits, clock)
    })
    .await??;

    let started = Instant::now();
    let run = run_id();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (answers, template, route, run, next) = (
            store.answers.clone(),
            template.clone(),
            route.clone(),
            run.clone(),
            next.clone(),
        );
        let count = args.count;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let id = format!("fill-{run}-{i}");
                store_one(&*answers, &template, &route, id, clock.now_ms()).await?;
                if (i + 1) % PROGRESS_EVERY == 0 {
                    eprintln!(
                        "fill-store: {} deliveries in {:.1} s",
                        i + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }

    let value = "v".repeat(KV_VALUE_BYTES);
    let values = args.kv_bytes.div_ceil(KV_VALUE_BYTES as u64);
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..args.concurrency.max(1) {
        let (kv, value, next) = (store.kv.clone(), value.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= values {
                    return anyhow::Ok(());
                }
                kv.set_within(KV_NAMESPACE, &format!("k-{i}"), &value, Quota::UNLIMITED)
                    .await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    if values > 0 {
        eprintln!(
            "fill-store: {values} kv values ({} bytes) in {KV_NAMESPACE:?}",
            values * KV_VALUE_BYTES as u64
        );
    }

    tokio::task::spawn_blocking(move || db.flush())
        .await?
        .context("flushing the database")?;
    let records = store.answers.len().await?;
    let seconds = started.elapsed().as_secs_f64();
    let (hwm, rss) = memory_kb();
    println!("FILLED {records} {seconds:.1} {hwm} {rss}");
    Ok(())
}
