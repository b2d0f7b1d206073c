//! Python and JavaScript plugins built from source for the tests.
//!
//! The example plugins under `plugins/python/` (componentize-py) and
//! `plugins/js/` (ComponentizeJS, through `templates/js/build.mjs`, the build
//! script every generated JS project gets) are built the way an author's
//! project is: their files and `wit/plugin.wit` copied into a build
//! directory, the toolchain run there. Neither toolchain builds
//! reproducibly and a build takes ~30 s and up to ~800 MB, so each result is
//! kept under `target/polyglot/`, keyed by a hash of everything that goes
//! into it (sources, WIT, build script, toolchain pin, options): reruns
//! reuse it, and the component cache of the server sees the same bytes.
//!
//! The toolchains are the ones `scripts/toolchains` installs
//! (`ENRICHD_COMPONENTIZE_PY`, `ENRICHD_JS_TOOLCHAIN`, else the default
//! locations under `target/toolchains/`). Without them a test skips with a
//! printed reason, unless `ENRICHD_REQUIRE_TOOLCHAINS=1` (set by
//! `scripts/check`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A plugin language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// componentize-py.
    Python,
    /// ComponentizeJS.
    Js,
}

impl Lang {
    /// The environment variable naming the toolchain, and its default place.
    fn toolchain_var(self) -> (&'static str, &'static str) {
        match self {
            Lang::Python => (
                "ENRICHD_COMPONENTIZE_PY",
                "target/toolchains/python/bin/componentize-py",
            ),
            Lang::Js => ("ENRICHD_JS_TOOLCHAIN", "target/toolchains/js"),
        }
    }

    /// The file that pins the toolchain's version (part of the build key).
    fn pin(self) -> PathBuf {
        root().join(match self {
            Lang::Python => "plugins/python/requirements.txt",
            Lang::Js => "plugins/js/package-lock.json",
        })
    }
}

/// The toolchain of `lang` (componentize-py's path, or the directory whose
/// `node_modules` holds ComponentizeJS), or `None` after printing why the
/// caller should skip.
///
/// # Panics
/// When it is missing and `ENRICHD_REQUIRE_TOOLCHAINS=1`.
pub fn toolchain(lang: Lang) -> Option<PathBuf> {
    let (var, default) = lang.toolchain_var();
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "the {lang:?} plugin toolchain is missing ({var} unset and no {}): \
         ./scripts/check installs it (scripts/toolchains)",
        path.display()
    );
    if std::env::var("ENRICHD_REQUIRE_TOOLCHAINS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// One plugin to build.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Its language.
    pub lang: Lang,
    /// Its directory under `plugins/python/` or `plugins/js/`.
    pub name: &'static str,
    /// The WIT world it targets.
    pub world: &'static str,
    /// JS only: keep ComponentizeJS's default features (`http`,
    /// `fetch-event`), which make the component import `wasi:http`.
    pub default_features: bool,
}

/// The Python example plugin (`plugins/python/urgency-triage`).
pub const PYTHON: Spec = Spec {
    lang: Lang::Python,
    name: "urgency-triage",
    world: "delivery-plugin",
    default_features: false,
};

/// The JavaScript example plugin (`plugins/js/regional-router`).
pub const JS: Spec = Spec {
    lang: Lang::Js,
    name: "regional-router",
    world: "delivery-plugin",
    default_features: false,
};

/// The minimum limits a componentize-py plugin needs (README, "Python"):
/// the interpreter is 14 core instances with a 5 680-element table, and
/// handling the seed payload grows its memory to ~12.3 MiB (198 wasm
/// pages of 64 KiB: 12.375 MiB).
pub const PYTHON_LIMITS: &str =
    "max_instances = 14\nmax_table_elements = 5680\nmax_memory_bytes = 12976128";

/// The minimum limits a ComponentizeJS plugin needs (README, "JavaScript"):
/// StarlingMonkey is 4 core instances with a 7 697-element table and
/// ~9.1 MiB of memory (147 pages: 9.1875 MiB).
pub const JS_LIMITS: &str =
    "max_instances = 4\nmax_table_elements = 7697\nmax_memory_bytes = 9633792";

/// A built component.
#[derive(Debug, Clone)]
pub struct Built {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// How long the build took; `None` when it came from `target/polyglot`.
    pub build_time: Option<Duration>,
}

/// Builds run one at a time: each takes up to ~800 MB and both cores.
static BUILDING: Mutex<()> = Mutex::new(());

/// The component for `spec`, built with the toolchain `tool` unless a
/// build of the same inputs is in `target/polyglot/`.
///
/// # Panics
/// When the build fails (with the toolchain's output).
pub fn build(spec: Spec, tool: &Path) -> Built {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    let sources = root.join(source_dir(spec.lang)).join(spec.name);
    let mut inputs = source_files(&sources);
    inputs.push((PathBuf::from("wit/plugin.wit"), root.join("wit/plugin.wit")));
    if spec.lang == Lang::Js {
        inputs.push((
            PathBuf::from("build.mjs"),
            root.join("templates/js/build.mjs"),
        ));
    }
    let key = build_key(spec, &inputs);
    let out_dir = root.join("target/polyglot");
    let out = out_dir.join(format!("{}-{}.wasm", spec.name, &key[..16]));
    if let Ok(meta) = std::fs::metadata(&out) {
        return Built {
            path: out,
            size: meta.len(),
            build_time: None,
        };
    }

    let work = out_dir.join(format!("build-{}-{}", spec.name, &key[..16]));
    let _ = std::fs::remove_dir_all(&work);
    for (rel, from) in &inputs {
        let to = work.join(rel);
        std::fs::create_dir_all(to.parent().expect("a file has a parent")).expect("build dir");
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    let mut cmd = match spec.lang {
        Lang::Python => {
            let mut cmd = Command::new(tool);
            cmd.args(["-d", "wit", "-w", spec.world, "componentize", "app", "-o"])
                .arg("plugin.wasm");
            cmd
        }
        Lang::Js => {
            // The project's node_modules, as `npm ci` gives an author.
            std::os::unix::fs::symlink(tool.join("node_modules"), work.join("node_modules"))
                .expect("link node_modules");
            let mut cmd = Command::new("node");
            cmd.args(["build.mjs", spec.world, "plugin.wasm"]);
            if spec.default_features {
                cmd.arg("--default-features");
            }
            cmd
        }
    };
    let started = Instant::now();
    let output = cmd
        .current_dir(&work)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let build_time = started.elapsed();
    if !output.status.success() {
        panic!(
            "building {} failed ({}): {cmd:?}\n{}\n{}",
            spec.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(work.join("plugin.wasm"), &out).expect("keep the component");
    let _ = std::fs::remove_dir_all(&work);
    Built {
        size: std::fs::metadata(&out).expect("built").len(),
        path: out,
        build_time: Some(build_time),
    }
}

/// Runs the plugin's unit tests in its own language (`python3 -m unittest`,
/// `node --test`) and returns their output.
///
/// # Panics
/// When they fail or cannot run.
pub fn unit_tests(lang: Lang, name: &str) -> String {
    let dir = root().join(source_dir(lang)).join(name);
    let mut cmd = match lang {
        Lang::Python => {
            let mut cmd = Command::new("python3");
            // No __pycache__ left in the source tree.
            cmd.args(["-B", "-m", "unittest", "-v"]);
            cmd
        }
        Lang::Js => {
            let mut cmd = Command::new("node");
            cmd.arg("--test");
            cmd
        }
    };
    let output = cmd
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{name}'s unit tests failed: {text}"
    );
    text
}

fn source_dir(lang: Lang) -> &'static str {
    match lang {
        Lang::Python => "plugins/python",
        Lang::Js => "plugins/js",
    }
}

/// The plugin's source files (relative path, absolute path): the top-level
/// `.py`/`.js` files, its unit tests included (they are tiny).
fn source_files(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut files: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("py" | "js")))
        .map(|p| (PathBuf::from(p.file_name().expect("a file name")), p))
        .collect();
    files.sort();
    files
}

/// The sha256 (hex) of everything a build depends on.
fn build_key(spec: Spec, inputs: &[(PathBuf, PathBuf)]) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{spec:?}\n"));
    for (rel, path) in inputs
        .iter()
        .chain([&(PathBuf::from("pin"), spec.lang.pin())])
    {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        hash.update(format!("{}\n{}\n", rel.display(), bytes.len()));
        hash.update(&bytes);
    }
    hex::encode(hash.finalize())
}
