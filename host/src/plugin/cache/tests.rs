//! The cache's bounds on real files in a temporary directory: grace period,
//! LRU order under the cap, entries in use, temporary leftovers, and a
//! sweep racing a writer and a reader.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

/// An entry's file name for the `n`th test component.
fn entry(n: u8) -> String {
    format!("{}-{:016x}{ENTRY_EXTENSION}", hex::encode([n; 32]), 7)
}

/// Write `name` with `bytes` bytes, last used `ago` before `now`.
fn put(dir: &Path, name: &str, bytes: usize, now: SystemTime, ago: Duration) {
    let path = dir.join(name);
    std::fs::write(&path, vec![b'x'; bytes]).unwrap();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(now - ago)
        .unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn policy(max_bytes: u64, grace: Duration) -> CachePolicy {
    CachePolicy { max_bytes, grace }
}

#[test]
fn issue_16_entries_not_in_use_go_once_their_grace_period_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    put(dir.path(), &entry(1), 100, now, 8 * 24 * HOUR);
    put(dir.path(), &entry(2), 100, now, 6 * 24 * HOUR);
    // In use by this process, and unused for a month: kept.
    put(dir.path(), &entry(3), 100, now, 30 * 24 * HOUR);
    let cache = ComponentCache::new(dir.path().to_owned());
    cache.use_entry(&entry(3));

    let report = cache
        .sweep_at(&policy(u64::MAX, DEFAULT_CACHE_GRACE), now)
        .unwrap();

    assert_eq!(names(dir.path()), vec![entry(2), entry(3)]);
    assert_eq!(
        report.removed,
        CacheUsage {
            entries: 1,
            bytes: 100
        }
    );
    assert_eq!(
        report.left,
        CacheUsage {
            entries: 2,
            bytes: 200
        }
    );
    assert_eq!(cache.usage().unwrap(), report.left);
}

#[test]
fn issue_16_above_the_cap_the_least_recently_used_entries_not_in_use_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    for (n, hours) in [(1, 4), (2, 1), (3, 3), (4, 2)] {
        put(dir.path(), &entry(n), 100, now, hours * HOUR);
    }
    // The oldest of all, but in use.
    put(dir.path(), &entry(5), 100, now, 10 * HOUR);
    let cache = ComponentCache::new(dir.path().to_owned());
    cache.use_entry(&entry(5));

    let report = cache
        .sweep_at(&policy(300, DEFAULT_CACHE_GRACE), now)
        .unwrap();

    // 500 bytes, cap 300: the two least recently used of 1–4 go (1, then 3).
    assert_eq!(names(dir.path()), vec![entry(2), entry(4), entry(5)]);
    assert_eq!(report.removed.entries, 2);
    assert_eq!(report.left.bytes, 300);
    assert_eq!(report.in_use_bytes, 100);
}

#[test]
fn issue_16_entries_in_use_stay_even_above_the_cap_and_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    put(dir.path(), &entry(1), 100, now, 30 * 24 * HOUR);
    put(dir.path(), &entry(2), 100, now, 30 * 24 * HOUR);
    put(dir.path(), &entry(3), 100, now, Duration::ZERO);
    let cache = ComponentCache::new(dir.path().to_owned());
    cache.use_entry(&entry(1));
    cache.use_entry(&entry(2));

    let report = cache.sweep_at(&policy(50, Duration::ZERO), now).unwrap();

    assert_eq!(names(dir.path()), vec![entry(1), entry(2)]);
    assert_eq!(report.in_use_bytes, 200);
    assert_eq!(report.left.entries, 2);
}

#[test]
fn issue_16_leftovers_of_crashed_writes_go_and_writes_in_progress_and_foreign_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let crashed = format!("{}.123-0{TEMP_EXTENSION}", entry(1));
    let crashed_older_version = entry(2).replace(ENTRY_EXTENSION, ".tmp4242");
    let in_progress = format!("{}.124-0{TEMP_EXTENSION}", entry(3));
    let old = 24 * HOUR;
    put(dir.path(), &crashed, 100, now, old);
    put(dir.path(), &crashed_older_version, 100, now, old);
    put(dir.path(), &in_progress, 100, now, Duration::from_secs(5));
    // Not names this cache writes: never removed, never counted.
    for foreign in ["notes.txt", "abc.cwasm", "x.tmp"] {
        put(dir.path(), foreign, 100, now, 365 * 24 * HOUR);
    }
    let cache = ComponentCache::new(dir.path().to_owned());

    let report = cache.sweep_at(&policy(0, Duration::ZERO), now).unwrap();

    assert_eq!(report.temps_removed, 2);
    assert_eq!(report.left, CacheUsage::default());
    assert_eq!(
        names(dir.path()),
        vec![
            in_progress,
            "abc.cwasm".to_owned(),
            "notes.txt".to_owned(),
            "x.tmp".to_owned()
        ]
    );
}

#[test]
fn issue_16_a_missing_directory_is_an_empty_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ComponentCache::new(dir.path().join("never-written"));
    assert_eq!(cache.usage().unwrap(), CacheUsage::default());
    assert_eq!(
        cache.sweep(&CachePolicy::default()).unwrap(),
        SweepReport::default()
    );
}

/// A real engine and the smallest component: compiled and written once,
/// then served from the cache with its last use recorded; in use, so a
/// sweep down to zero bytes keeps it.
#[test]
fn issue_16_a_load_from_the_cache_records_its_use() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
    let empty_component = b"\0asm\x0d\0\x01\0";
    let digest = [9u8; 32];
    let cache = ComponentCache::new(dir.path().to_owned());

    let (_, cached) = cache.component(&engine, empty_component, &digest).unwrap();
    assert!(!cached, "an empty cache compiles");
    let name = cache_file_name(&engine, &digest);
    assert_eq!(names(dir.path()), vec![name.clone()]);
    let week_ago = SystemTime::now() - 7 * 24 * HOUR;
    File::options()
        .write(true)
        .open(dir.path().join(&name))
        .unwrap()
        .set_modified(week_ago)
        .unwrap();

    let (_, cached) = ComponentCache::new(dir.path().to_owned())
        .component(&engine, empty_component, &digest)
        .unwrap();
    assert!(cached, "the second load is served from the cache");
    let used = std::fs::metadata(dir.path().join(&name))
        .unwrap()
        .modified()
        .unwrap();
    assert!(used > week_ago + HOUR, "the load touched the entry");

    let report = cache.sweep(&policy(0, Duration::ZERO)).unwrap();
    assert_eq!(report.left.entries, 1, "{report:?}");
    assert_eq!(names(dir.path()), vec![name]);
}

/// Another process's sweep (here: a thread's, with a cap of 0 and no
/// grace, so it removes every entry it may) races a writer replacing an
/// entry and a reader loading it: the writer's temporary file is never
/// taken from under it, and the reader sees the whole entry or none.
#[test]
fn issue_16_a_sweep_racing_a_writer_and_a_reader_never_yields_a_partial_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let name = entry(1);
    const LEN: usize = 1 << 20;
    let stop = Arc::new(AtomicBool::new(false));

    let sweeper = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let cache = ComponentCache::new(path);
            let mut removed = 0;
            while !stop.load(Ordering::Relaxed) {
                removed += cache
                    .sweep(&policy(0, Duration::ZERO))
                    .unwrap()
                    .removed
                    .entries;
            }
            removed
        })
    };
    let reader = {
        let (path, name, stop) = (path.clone(), name.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut whole, mut missing) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match read_entry(&path.join(&name)).unwrap() {
                    Some(bytes) => {
                        assert_eq!(bytes.len(), LEN, "a partial entry was read");
                        assert!(bytes.iter().all(|&b| b == bytes[0]), "a mixed entry");
                        whole += 1;
                    }
                    None => missing += 1,
                }
            }
            (whole, missing)
        })
    };
    for round in 0..200u32 {
        write_atomically(&path, &name, &vec![round as u8; LEN])
            .expect("the writer's temporary file was removed under it");
    }
    stop.store(true, Ordering::Relaxed);
    let removed = sweeper.join().unwrap();
    let (whole, missing) = reader.join().unwrap();
    // How the race went varies from run to run; that it raced does not.
    assert!(removed > 0, "the sweep never removed the entry");
    eprintln!("reads: {whole} whole, {missing} missing; {removed} removed");
    // No temporary file is left behind.
    assert!(names(&path)
        .iter()
        .all(|n| FileKind::of(n) == FileKind::Entry));
}

#[test]
fn only_names_this_cache_writes_are_its_own() {
    assert_eq!(FileKind::of(&entry(1)), FileKind::Entry);
    assert_eq!(
        FileKind::of(&format!("{}.1-2.tmp", entry(1))),
        FileKind::Temp
    );
    for other in [
        "",
        "a.cwasm",
        &entry(1).replace('-', "_"),
        &format!("{}.bak", entry(1)),
        &format!("é{}", &entry(1)[2..]),
    ] {
        assert_eq!(FileKind::of(other), FileKind::Other, "{other:?}");
    }
}
