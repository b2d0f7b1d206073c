//! New plugin projects (`enrichd plugin new`): renders the templates kept in
//! the repository's `templates/<lang>/`, embedded in the binary at build
//! time (`host/build.rs`), into a new directory, with the WIT the plugin
//! builds against and, for Rust, the vendored `enrichd-pdk` crate, so a
//! project builds with no checkout of enrichd and no unpublished package.
//!
//! Templates are minijinja: `trim_blocks` and `lstrip_blocks` on (a line
//! holding only a block tag vanishes), trailing newlines kept, undefined
//! variables an error. Paths are rendered too, and a `.jinja` suffix is
//! dropped (it keeps template sources out of the repository's own tools).

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

include!(concat!(env!("OUT_DIR"), "/scaffold_files.rs"));

/// The WIT every new project builds against: this enrichd's own.
pub const WIT: &str = include_str!("../../wit/plugin.wit");

/// Where a project keeps the WIT (and where the vendored PDK keeps its copy).
const WIT_PATH: &str = "wit/plugin.wit";

/// The directory the Rust PDK is vendored into, inside a new Rust project.
const PDK_DIR: &str = "enrichd-pdk";

/// Longest plugin name: it becomes a crate, package and file name.
const MAX_NAME_LEN: usize = 64;

/// The language of a new project (`templates/<name>/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust on `enrichd-pdk` (wit-bindgen).
    Rust,
    /// Python (componentize-py).
    Python,
    /// JavaScript (ComponentizeJS).
    Js,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// Which exports the new plugin has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    /// Handles Emailgistics deliveries (`delivery-plugin`).
    Delivery,
    /// Handles EngageLab callbacks (`event-plugin`).
    Event,
    /// Both (`enrichd-plugin`).
    Both,
}

impl World {
    fn wit_name(self) -> &'static str {
        match self {
            World::Delivery => "delivery-plugin",
            World::Event => "event-plugin",
            World::Both => "enrichd-plugin",
        }
    }
}

/// Why a project could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a plugin name.
    #[error("{0:?} is not a plugin name: use lowercase letters, digits and single dashes, starting with a letter, at most {MAX_NAME_LEN} characters (e.g. `vip-router`)")]
    BadName(String),
    /// The directory is there already; nothing is overwritten.
    #[error("{0} already exists: choose another name or --dir (nothing is overwritten)")]
    Exists(PathBuf),
    /// This binary was built without the language's templates.
    #[error(
        "this enrichd was built without the {0} templates (templates/{0}/ was empty at build time)"
    )]
    NoTemplates(&'static str),
    /// A template does not render (a defect of the template).
    #[error("template {path}: {source}")]
    Render {
        /// The template's path under `templates/`.
        path: String,
        /// minijinja's reason.
        source: minijinja::Error,
    },
    /// Writing the project failed.
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Create `parent/name/` for a `lang` plugin exporting `world`'s interfaces;
/// returns the project directory. Nothing is written unless every template
/// renders, and an existing directory is never touched.
pub fn create(
    parent: &Path,
    name: &str,
    lang: Lang,
    world: World,
) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let project = parent.join(name);
    if project.exists() {
        return Err(ScaffoldError::Exists(project));
    }
    let files = render(name, lang, world)?;
    for file in files {
        let path = project.join(&file.path);
        let dir = path.parent().expect("a file path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| ScaffoldError::Io(dir.to_path_buf(), e))?;
        std::fs::write(&path, &file.contents).map_err(|e| ScaffoldError::Io(path.clone(), e))?;
        if file.executable {
            make_executable(&path).map_err(|e| ScaffoldError::Io(path.clone(), e))?;
        }
    }
    Ok(project)
}

/// One file of a new project.
struct NewFile {
    /// Relative to the project.
    path: String,
    contents: Vec<u8>,
    /// A script the README runs (`./build.sh`).
    executable: bool,
}

#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Every file of the new project, as (relative path, contents).
fn render(name: &str, lang: Lang, world: World) -> Result<Vec<NewFile>, ScaffoldError> {
    let prefix = format!("{}/", lang.dir());
    let templates: Vec<_> = TEMPLATES
        .iter()
        .filter_map(|(path, bytes, executable)| {
            Some((path, path.strip_prefix(&prefix)?, *bytes, *executable))
        })
        .collect();
    if templates.is_empty() {
        return Err(ScaffoldError::NoTemplates(lang.dir()));
    }
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let ctx = minijinja::context! {
        name => name,
        snake_name => name.replace('-', "_"),
        camel_name => camel(name),
        world => world.wit_name(),
        handler => world != World::Event,
        events => world != World::Delivery,
        wit_version => crate::plugin::inspect::supported_wit_version(),
        enrichd_version => env!("CARGO_PKG_VERSION"),
    };
    let render = |path: &str, source: &str| {
        env.render_str(source, &ctx)
            .map_err(|source| ScaffoldError::Render {
                path: path.to_string(),
                source,
            })
    };
    let mut files = Vec::new();
    for (path, rel, bytes, executable) in templates {
        let rel = render(path, rel)?;
        let rel = rel.strip_suffix(".jinja").unwrap_or(&rel).to_string();
        let contents = match std::str::from_utf8(bytes) {
            Ok(text) => render(path, text)?.into_bytes(),
            // Not text (an icon, say): copied as it is.
            Err(_) => bytes.to_vec(),
        };
        files.push(NewFile {
            path: rel,
            contents,
            executable,
        });
    }
    let wit = |path: String| NewFile {
        path,
        contents: WIT.as_bytes().to_vec(),
        executable: false,
    };
    files.push(wit(WIT_PATH.into()));
    if lang == Lang::Rust {
        if PDK.is_empty() {
            return Err(ScaffoldError::NoTemplates("enrichd-pdk"));
        }
        for (rel, bytes, executable) in PDK {
            files.push(NewFile {
                path: format!("{PDK_DIR}/{rel}"),
                contents: bytes.to_vec(),
                executable: *executable,
            });
        }
        files.push(wit(format!("{PDK_DIR}/{WIT_PATH}")));
    }
    Ok(files)
}

/// Plugin names are kebab-case: they become crate, package and file names
/// in every language, and a `[[plugin]] name` in the config.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_string()))
    }
}

/// `vip-router` → `VipRouter`.
fn camel(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_plugin_names_are_kebab_case() {
        for good in ["a", "vip-router", "crm2-enrich"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            "Vip",
            "2fa",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "a b",
            "../x",
            long.as_str(),
        ] {
            assert!(
                matches!(check_name(bad), Err(ScaffoldError::BadName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(camel("vip-router"), "VipRouter");
    }

    #[test]
    fn issue_12_an_existing_directory_is_never_touched() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("taken");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
        let err = create(parent.path(), "taken", Lang::Rust, World::Delivery).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn issue_12_every_language_renders_for_every_world() {
        if TEMPLATES.is_empty() {
            panic!("no templates embedded: templates/ is missing");
        }
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for world in [World::Delivery, World::Event, World::Both] {
                let files = render("vip-router", lang, world)
                    .unwrap_or_else(|e| panic!("{lang:?} {world:?}: {e}"));
                let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
                assert!(paths.contains(&WIT_PATH), "{paths:?}");
                assert!(paths.iter().any(|p| p.ends_with("README.md")), "{paths:?}");
                assert!(
                    !paths
                        .iter()
                        .any(|p| p.ends_with(".jinja") || p.contains("{{")),
                    "{paths:?}"
                );
                for f in &files {
                    let text = String::from_utf8_lossy(&f.contents);
                    let path = &f.path;
                    assert!(
                        !text.contains("{{ "),
                        "{lang:?} {world:?} {path}: unrendered"
                    );
                }
            }
        }
    }
}
