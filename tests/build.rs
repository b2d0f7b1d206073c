//! Builds every enrichd plugin from source before the integration tests
//! compile (after Spin's `tests/test-components/build.rs`).
//!
//! Two nested workspaces are built for `wasm32-wasip2` in release mode into
//! `<root>/target/wasm-plugins`:
//!
//! - `<root>/plugins` — the first-party plugins;
//! - `<root>/tests/test-plugins` — plugins that exist only for the tests.
//!
//! The directory holding the resulting `.wasm` components is passed to the
//! crate as the `ENRICHD_PLUGIN_DIR` compile-time environment variable.
//!
//! Only std is used, so this adds no build dependencies.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target the plugins are built for.
const TARGET: &str = "wasm32-wasip2";

/// Variables the outer cargo (or clippy, `cargo fix`, coverage tools) sets
/// for this build script that must not leak into the nested builds: they
/// would add host flags, wrappers or another target dir to the wasm build.
const LEAKY_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "CARGO_PRIMARY_PACKAGE",
];

fn main() {
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"),
    );
    let root = manifest_dir
        .parent()
        .expect("the tests crate lives one level below the repository root")
        .to_path_buf();
    let target_dir = root.join("target").join("wasm-plugins");

    check_target_installed();

    let workspaces = [
        root.join("plugins"),
        root.join("tests").join("test-plugins"),
    ];

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for workspace in &workspaces {
        for path in watched_paths(workspace) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    for workspace in &workspaces {
        build_workspace(&workspace.join("Cargo.toml"), &target_dir);
    }

    println!(
        "cargo:rustc-env=ENRICHD_PLUGIN_DIR={}",
        target_dir.join(TARGET).join("release").display()
    );
}

/// Panics with instructions when the `wasm32-wasip2` standard library is
/// not installed for the compiler in use.
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{} --print sysroot`: {e}",
                rustc.to_string_lossy()
            )
        });
    if !output.status.success() {
        panic!(
            "`{} --print sysroot` failed ({}):\n{}",
            rustc.to_string_lossy(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let target_lib = sysroot.join("lib").join("rustlib").join(TARGET);
    if !target_lib.is_dir() {
        panic!(
            "\n\nThe Rust target `{TARGET}` is missing (no {}).\n\
             The enrichd tests build the WebAssembly plugins from source and need it.\n\
             Install it with:\n\n    rustup target add {TARGET}\n\n\
             (or run the test command from the README, which installs it).\n\n",
            target_lib.display()
        );
    }
}

/// Files and directories of a nested plugin workspace whose changes require
/// a rebuild: its `Cargo.toml` and `Cargo.lock`, and every member's
/// `Cargo.toml`, `src` and `build.rs`. `target` and hidden directories are
/// never watched.
fn watched_paths(workspace: &Path) -> Vec<PathBuf> {
    let mut paths = vec![workspace.join("Cargo.toml"), workspace.join("Cargo.lock")];
    let mut members: Vec<PathBuf> = fs::read_dir(workspace)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", workspace.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            path.is_dir()
                && name != "target"
                && !name.starts_with('.')
                && path.join("Cargo.toml").is_file()
        })
        .collect();
    members.sort();
    for member in members {
        paths.push(member.join("Cargo.toml"));
        paths.push(member.join("src"));
        let build_script = member.join("build.rs");
        if build_script.is_file() {
            paths.push(build_script);
        }
    }
    paths
}

/// `cargo build --release --target wasm32-wasip2` of one nested workspace,
/// panicking with cargo's output if it fails.
fn build_workspace(manifest: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for key in LEAKY_ENV {
        cmd.env_remove(key);
    }
    // `cargo fix` marks the rustc wrapper it installs with `__CARGO_FIX_*`
    // variables; a nested cargo seeing them would act as that wrapper.
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("__CARGO") {
            cmd.env_remove(key);
        }
    }

    let output = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{}` to build the plugins: {e}",
            cargo.to_string_lossy()
        )
    });
    if !output.status.success() {
        panic!(
            "building the plugins in {} failed ({}):\n{:?}\n\n{}",
            manifest.display(),
            output.status,
            cmd,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
