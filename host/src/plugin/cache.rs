//! The on-disk cache of precompiled components: one file per component
//! and engine, written atomically, read back instead of compiling again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// A directory of precompiled components, `<sha256>-<engine hash>.cwasm`.
#[derive(Debug)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// The cache kept in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        ComponentCache { dir }
    }

    /// The component for `bytes`: from the cache when a compatible entry is
    /// there, else compiled (and cached). Returns whether the cache served it.
    pub(super) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> wasmtime::Result<(Component, bool)> {
        let dir = &self.dir;
        let entry = dir.join(cache_file_name(engine, digest));
        if entry.is_file() {
            match load_precompiled(engine, &entry) {
                Ok(component) => return Ok((component, true)),
                // A damaged or foreign file: recompile and replace it.
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), error = %e, "ignoring unusable cache entry")
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = write_atomically(dir, &entry, &compiled) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the component cache; continuing without it");
        }
        Ok((deserialize_trusted(engine, &compiled)?, false))
    }
}

/// Cache entries are keyed by the wasm's digest and by everything in the
/// engine's settings that makes compiled code incompatible (fuel,
/// epochs, allocator, wasmtime version…).
fn cache_file_name(engine: &Engine, digest: &[u8; 32]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{}-{:016x}.cwasm", hex::encode(digest), h.finish())
}

/// Load a cache entry. The file is read into memory rather than mapped: a
/// mapped file that someone truncates or rewrites while enrichd runs would
/// crash the process (SIGBUS) on the next access to its code.
fn load_precompiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    deserialize_trusted(engine, &bytes)
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

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
