//! The on-disk cache of precompiled components: one file per component
//! and engine, written atomically, read back instead of compiling again,
//! and bounded by a sweep after the configured plugins are loaded.
//!
//! Bounds: neither Python nor JavaScript toolchains build reproducibly, so
//! every rebuild of such a plugin adds an entry of ~35 MB. The sweep
//! ([`ComponentCache::sweep`]) removes the entries this process did not
//! use once they are older than a grace period, leftovers of crashed
//! writes, and then, least recently used first, unused entries while the
//! directory is above a size cap. An entry's last use is its mtime,
//! touched on every load (atime is often off or relaxed).
//!
//! Several enrichd processes may share one directory: an entry is written
//! to a temporary file and renamed into place, so a half-written entry is
//! never read, and it is read whole into memory, so an entry removed by
//! another process's sweep at worst costs a recompile.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use wasmtime::component::Component;
use wasmtime::Engine;

use super::pool::allocator_refused;

/// Default size cap of the cache directory (`cache_max_bytes`): 1 GiB. A
/// Python or JavaScript entry is 35–37 MB, a Rust one a fraction of 1 MB,
/// so this keeps the entries of a config with a dozen polyglot plugins
/// plus as many previous builds (a rollback loads from the cache instead
/// of compiling for 10+ s) — small beside the data directory's disk.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;
/// Default grace period (`cache_grace_hours`) of an entry the current
/// config does not use: 7 days, so that rolling back to last week's build
/// (after a bad deploy, or across a weekend) still starts from the cache,
/// while a build abandoned for longer stops taking space.
pub const DEFAULT_CACHE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Age from which a temporary file is a crashed write's leftover. A write
/// happens after compiling, so it only lasts as long as writing one entry
/// (under a second for 37 MB); ten minutes leaves a slow disk ample room
/// and never takes another process's write in progress.
const TEMP_STALE_AFTER: Duration = Duration::from_secs(600);

/// Extension of a cache entry.
const ENTRY_EXTENSION: &str = ".cwasm";
/// Extension of a temporary file being written.
const TEMP_EXTENSION: &str = ".tmp";

/// How the sweep bounds the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Most bytes of entries kept, entries in use excepted.
    pub max_bytes: u64,
    /// How long an entry not in use is kept since its last use.
    pub grace: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            grace: DEFAULT_CACHE_GRACE,
        }
    }
}

/// Entries in the cache directory and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    /// Entry files.
    pub entries: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// The cache after the sweep.
    pub left: CacheUsage,
    /// Bytes of the entries this process uses (never removed).
    pub in_use_bytes: u64,
    /// Entries removed, and their bytes.
    pub removed: CacheUsage,
    /// Leftover temporary files removed.
    pub temps_removed: usize,
}

/// A directory of precompiled components, `<sha256>-<engine hash>.cwasm`,
/// remembering which entries this process used.
#[derive(Debug)]
pub struct ComponentCache {
    dir: PathBuf,
    in_use: Mutex<HashSet<String>>,
}

impl ComponentCache {
    /// The cache kept in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        ComponentCache {
            dir,
            in_use: Mutex::default(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component for `bytes`: from the cache when a compatible entry is
    /// there, else compiled (and cached). Returns whether the cache served it.
    /// Either way the entry is in use by this process from now on.
    pub(super) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> wasmtime::Result<(Component, bool)> {
        let name = cache_file_name(engine, digest);
        let entry = self.dir.join(&name);
        self.use_entry(&name);
        match read_entry(&entry) {
            Ok(Some(cached)) => match deserialize_trusted(engine, &cached) {
                Ok(component) => return Ok((component, true)),
                // The entry is fine; the pool is too small for it.
                // Recompiling would take seconds and be refused the same.
                Err(e) if allocator_refused(&e) => return Err(e),
                // A damaged or foreign file: recompile and replace it.
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), error = %e, "ignoring unusable cache entry")
                }
            },
            // Never written, or removed by a sweep: compile.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(entry = %entry.display(), error = %e, "cannot read the cache entry")
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = write_atomically(&self.dir, &name, &compiled) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the component cache; continuing without it");
        }
        Ok((deserialize_trusted(engine, &compiled)?, false))
    }

    /// Record that this process uses the entry `name`: a sweep keeps it.
    fn use_entry(&self, name: &str) {
        self.in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
    }

    /// The entries in the directory now (none if it does not exist).
    pub fn usage(&self) -> std::io::Result<CacheUsage> {
        Ok(self
            .scan()?
            .entries
            .iter()
            .fold(CacheUsage::default(), |u, e| CacheUsage {
                entries: u.entries + 1,
                bytes: u.bytes + e.bytes,
            }))
    }

    /// Bound the directory by `policy`: remove the leftovers of crashed
    /// writes, the entries not in use by this process whose last use is
    /// older than the grace period, then, least recently used first,
    /// entries not in use while the entries are above the size cap. Files
    /// that are neither entries nor temporary files are left alone.
    pub fn sweep(&self, policy: &CachePolicy) -> std::io::Result<SweepReport> {
        self.sweep_at(policy, SystemTime::now())
    }

    fn sweep_at(&self, policy: &CachePolicy, now: SystemTime) -> std::io::Result<SweepReport> {
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let scan = self.scan()?;
        let mut report = SweepReport::default();
        for temp in &scan.temps {
            if age(temp.used) > TEMP_STALE_AFTER && self.remove(temp) {
                report.temps_removed += 1;
            }
        }
        let in_use = self
            .in_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (used, mut unused): (Vec<_>, Vec<_>) = scan
            .entries
            .into_iter()
            .partition(|e| in_use.contains(&e.name));
        report.in_use_bytes = used.iter().map(|e| e.bytes).sum();
        // Oldest first: the expired ones, then the least recently used.
        unused.sort_by_key(|e| e.used);
        let mut total: u64 = report.in_use_bytes + unused.iter().map(|e| e.bytes).sum::<u64>();
        let mut kept = CacheUsage {
            entries: used.len(),
            bytes: report.in_use_bytes,
        };
        for entry in unused {
            let expired = age(entry.used) > policy.grace;
            if (expired || total > policy.max_bytes) && self.remove(&entry) {
                total -= entry.bytes;
                report.removed.entries += 1;
                report.removed.bytes += entry.bytes;
            } else {
                kept.entries += 1;
                kept.bytes += entry.bytes;
            }
        }
        report.left = kept;
        if report.in_use_bytes > policy.max_bytes {
            tracing::warn!(
                dir = %self.dir.display(),
                in_use_bytes = report.in_use_bytes,
                max_bytes = policy.max_bytes,
                "the component cache entries in use alone exceed cache_max_bytes; they are kept"
            );
        }
        Ok(report)
    }

    /// Remove a file found by [`Self::scan`], unless another process used
    /// it since (its mtime moved): that narrows, without closing, the window
    /// in which a sweep removes an entry another process just loaded, which
    /// then only costs that process a recompile at its next start.
    fn remove(&self, file: &CacheFile) -> bool {
        let path = self.dir.join(&file.name);
        match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(used) if used == file.used => {}
            _ => return false,
        }
        match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove from the component cache");
                false
            }
        }
    }

    /// The entries and temporary files in the directory.
    fn scan(&self) -> std::io::Result<Scan> {
        let mut scan = Scan::default();
        let dir = match std::fs::read_dir(&self.dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(e),
        };
        for item in dir {
            let item = item?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let kind = FileKind::of(&name);
            if kind == FileKind::Other {
                continue;
            }
            // Gone since listed (another sweep): not there any more.
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let file = CacheFile {
                name,
                bytes: meta.len(),
                used: meta.modified()?,
            };
            match kind {
                FileKind::Entry => scan.entries.push(file),
                FileKind::Temp => scan.temps.push(file),
                FileKind::Other => {}
            }
        }
        Ok(scan)
    }
}

#[derive(Debug, Default)]
struct Scan {
    entries: Vec<CacheFile>,
    temps: Vec<CacheFile>,
}

#[derive(Debug)]
struct CacheFile {
    name: String,
    bytes: u64,
    /// Last use: the mtime.
    used: SystemTime,
}

#[derive(Debug, PartialEq, Eq)]
enum FileKind {
    Entry,
    Temp,
    Other,
}

impl FileKind {
    /// Only names this code writes are the cache's: `<64 hex>-<16 hex>`,
    /// then `.cwasm` (an entry) or a temporary suffix (`.cwasm.<n>.tmp`,
    /// or the older `.tmp<pid>`). Anything else in the directory is not
    /// ours to remove.
    fn of(name: &str) -> FileKind {
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        let stem_ok = name.len() > 81
            && name.is_char_boundary(81)
            && hex(&name[..64])
            && name.as_bytes()[64] == b'-'
            && hex(&name[65..81]);
        if !stem_ok {
            return FileKind::Other;
        }
        match &name[81..] {
            ENTRY_EXTENSION => FileKind::Entry,
            rest if rest.starts_with(".tmp")
                || (rest.starts_with(ENTRY_EXTENSION) && rest.ends_with(TEMP_EXTENSION)) =>
            {
                FileKind::Temp
            }
            _ => FileKind::Other,
        }
    }
}

/// Cache entries are keyed by the wasm's digest and by everything in the
/// engine's settings that makes compiled code incompatible (fuel,
/// epochs, allocator, wasmtime version…).
fn cache_file_name(engine: &Engine, digest: &[u8; 32]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!(
        "{}-{:016x}{ENTRY_EXTENSION}",
        hex::encode(digest),
        h.finish()
    )
}

/// Read a cache entry whole, and record its use (mtime). `None`: no such
/// entry. The file is read into memory rather than mapped: a mapped file
/// that someone truncates or rewrites while enrichd runs would crash the
/// process (SIGBUS) on the next access to its code; an open file another
/// process removes is still read whole.
fn read_entry(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // A cache that cannot be touched (read-only) still serves; its entries
    // just look older than they are to a sweep.
    if let Err(e) = file.set_modified(SystemTime::now()) {
        tracing::debug!(entry = %path.display(), error = %e, "cannot record the cache entry's use");
    }
    Ok(Some(bytes))
}

#[allow(unsafe_code)]
fn deserialize_trusted(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize` trusts its input to be wasmtime's own output.
    // It is: either `engine.precompile_component` produced it a moment ago
    // in this process, or it is a cache entry that only this code writes,
    // from such output, into the operator's data directory (as trusted as
    // the enrichd binary itself), atomically, under a name that includes
    // the engine's compatibility hash. wasmtime still checks the header
    // (version, settings) and refuses a mismatched or truncated file.
    unsafe { Component::deserialize(engine, compiled) }
}

/// Write `dir/name` through a temporary file of its own (unique across
/// processes and threads) renamed into place: readers see the old entry,
/// no entry, or the whole new one.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{}-{n}{TEMP_EXTENSION}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
