//! Embeds the files `enrichd plugin new` writes: the project templates
//! (`templates/<lang>/`) and the Rust PDK (`plugins/enrichd-pdk/`, vendored
//! into every new Rust project), as `(relative path, bytes, executable)`
//! tables in `$OUT_DIR/scaffold_files.rs` (a template's `build.sh` must stay
//! runnable).
//!
//! A build script rather than a directory-embedding macro: on stable Rust
//! such macros cannot tell cargo to rebuild when a file is added to the
//! directory, and `rerun-if-changed` on a directory does (cargo scans it).
//! Only std is used, so this adds no build dependencies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Directory names never embedded: build output, and the PDK's `wit` link
/// (the WIT is embedded once, from `wit/`, and written next to the PDK).
const SKIPPED: &[&str] = &["target", "wit", "node_modules", "__pycache__"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("host/ lives in the repository");
    let mut out = String::new();
    for (table, dir) in [
        ("TEMPLATES", root.join("templates")),
        ("PDK", root.join("plugins").join("enrichd-pdk")),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        collect(&dir, &dir, &mut files);
        files.sort();
        writeln!(
            out,
            "pub(crate) static {table}: &[(&str, &[u8], bool)] = &["
        )
        .unwrap();
        for (rel, abs, executable) in files {
            writeln!(out, "    ({rel:?}, include_bytes!({abs:?}), {executable}),").unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(dest.join("scaffold_files.rs"), out).expect("OUT_DIR is writable");
}

/// Every file under `dir` as (path relative to `base` with `/`, absolute
/// path, executable). A missing directory embeds nothing: the command then
/// says what this build lacks.
fn collect(base: &Path, dir: &Path, files: &mut Vec<(String, String, bool)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("readable directory entry");
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED.contains(&name.as_str()) {
                collect(base, &path, files);
            }
        } else if name != "Cargo.lock" {
            let rel = path.strip_prefix(base).expect("under base");
            let rel: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
            files.push((rel.join("/"), path.display().to_string(), executable(&path)));
        }
    }
}

#[cfg(unix)]
fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn executable(_: &Path) -> bool {
    false
}
