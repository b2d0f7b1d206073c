//! Shared helpers for the enrichd integration tests.
//!
//! The crate's build script (`tests/build.rs`) builds every plugin from
//! source for `wasm32-wasip2` before the tests compile:
//!
//! - the first-party plugins in `plugins/` (`crm-enrich`, `keyword-router`);
//! - the test-only plugins in `tests/test-plugins/` (`trap`, `guest-error`,
//!   `every-action`, `echo`, `probe-capabilities`).
//!
//! All of them land in [`PLUGIN_DIR`]; use [`plugin_path`] to find one by its
//! package name.

use std::path::PathBuf;

/// The directory holding the built plugin components
/// (`<root>/target/wasm-plugins/wasm32-wasip2/release`).
pub const PLUGIN_DIR: &str = env!("ENRICHD_PLUGIN_DIR");

/// The path of a built plugin component, by package name: `crm-enrich` →
/// `<PLUGIN_DIR>/crm_enrich.wasm`.
///
/// # Panics
///
/// When the file does not exist (an unknown plugin name, or the build script
/// did not build it).
pub fn plugin_path(name: &str) -> PathBuf {
    let path = PathBuf::from(PLUGIN_DIR).join(format!("{}.wasm", name.replace('-', "_")));
    if !path.is_file() {
        panic!(
            "plugin `{name}` not found at {}: is it a member of plugins/ or \
             tests/test-plugins/ (tests/build.rs builds both)?",
            path.display()
        );
    }
    path
}
