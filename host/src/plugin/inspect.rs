//! What a plugin component is, read from its top-level import and export
//! sections without compiling it (`enrichd plugin inspect`): its world, the
//! imports it needs mapped to the capabilities that grant them, its
//! exports, its digest, the `enrichd:plugin` WIT version it was built
//! against, and its footprint (the smallest limits it runs under).
//!
//! Reading the sections takes milliseconds even for the multi-MiB
//! components of componentize-py and ComponentizeJS, where compiling takes
//! seconds. The file is parsed, not validated: `serve` still compiles it and
//! checks it against the linker.

use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};

use super::engine::{EVENTS_EXPORT, HANDLER_EXPORT};
use super::footprint::Footprint;
use super::policy::Capability;

/// WASI packages every plugin gets (`wasmtime_wasi::p2::add_to_linker_async`
/// and wasi-http's in `engine`), each with an empty context: no files,
/// environment, arguments or sockets; outbound HTTP only when granted
/// (`plugin::http`).
const PROVIDED_WASI: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:http",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];
/// The WASI version line the linker provides (any `0.2.x` import resolves).
const PROVIDED_WASI_VERSION: &str = "0.2.";

/// Why a file cannot be inspected as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not a WebAssembly binary at all.
    #[error("not a WebAssembly component: {0}")]
    NotWasm(String),
    /// A core module: plugins are components (`wasm32-wasip2`).
    #[error("a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)")]
    CoreModule,
    /// A component exporting neither plugin interface.
    #[error("exports neither {HANDLER_EXPORT} nor {EVENTS_EXPORT}: not an enrichd plugin (its exports: {exports:?})")]
    NotAPlugin {
        /// What it exports instead.
        exports: Vec<String>,
    },
}

/// Which world a plugin implements, from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `handler`: runs on deliveries (`delivery-plugin`).
    Delivery,
    /// Exports `events`: runs on EngageLab events (`event-plugin`).
    Event,
    /// Exports both (`enrichd-plugin`).
    Both,
}

impl World {
    /// The world's name in `wit/plugin.wit`.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Delivery => "delivery-plugin",
            World::Event => "event-plugin",
            World::Both => "enrichd-plugin",
        }
    }
}

/// What one import needs from the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// An enrichd host interface, granted by this capability.
    Grant(Capability),
    /// An enrichd interface of types only: nothing to grant.
    Types,
    /// A WASI interface every plugin gets, with an empty context.
    Wasi,
    /// Something enrichd does not provide: `serve` refuses to load it.
    Refused {
        /// Why.
        reason: String,
        /// How to build without it, when known.
        hint: Option<&'static str>,
    },
}

/// One import of the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// Its name, e.g. `enrichd:plugin/crm@0.2.0`.
    pub name: String,
    /// What it needs.
    pub need: Need,
}

/// What `inspect` found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The plugin's world.
    pub world: World,
    /// Top-level imports, in the component's order.
    pub imports: Vec<Import>,
    /// Top-level exports, in the component's order.
    pub exports: Vec<String>,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the file (what a `[[plugin]]` `sha256` pin compares).
    pub sha256: [u8; 32],
    /// The `enrichd:plugin` version in its import and export names (the
    /// highest, should they differ); `None` if it names none.
    pub wit_version: Option<String>,
    /// What one instance needs: the smallest limits it runs under.
    pub footprint: Footprint,
}

impl Inspection {
    /// The capabilities to grant for every enrichd import, sorted by name.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut caps: Vec<Capability> = self
            .imports
            .iter()
            .filter_map(|i| match i.need {
                Need::Grant(c) => Some(c),
                _ => None,
            })
            .collect();
        caps.sort_by_key(|c| c.name());
        caps.dedup();
        caps
    }

    /// Whether this enrichd supports the WIT version it was built against.
    pub fn wit_supported(&self) -> bool {
        self.wit_version.as_deref() == Some(supported_wit_version())
    }
}

/// The `enrichd:plugin` WIT version this enrichd supports (`0.2.0`).
pub fn supported_wit_version() -> &'static str {
    split_name(HANDLER_EXPORT).map_or("", |n| n.version)
}

/// An interface name `package/interface@version` taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name<'a> {
    package: &'a str,
    interface: &'a str,
    version: &'a str,
}

fn split_name(name: &str) -> Option<Name<'_>> {
    let (path, version) = name.rsplit_once('@').unwrap_or((name, ""));
    let (package, interface) = path.split_once('/')?;
    Some(Name {
        package,
        interface,
        version,
    })
}

/// Whether `name` is the plugin interface `export` (one of the engine's
/// export names) at any version: a 0.1.0 plugin still has a world.
fn is_interface(name: &str, export: &str) -> bool {
    match (split_name(name), split_name(export)) {
        (Some(a), Some(b)) => a.package == b.package && a.interface == b.interface,
        _ => false,
    }
}

/// What the import `name` needs: a grant, nothing, or a rebuild.
pub fn classify(name: &str) -> Need {
    let enrichd = split_name(HANDLER_EXPORT).map(|n| n.package);
    let Some(n) = split_name(name) else {
        return Need::Refused {
            reason: "not an interface of a WIT package; enrichd provides none of those".into(),
            hint: None,
        };
    };
    if Some(n.package) == enrichd {
        if n.version != supported_wit_version() {
            return Need::Refused {
                reason: format!(
                    "built against {}@{}, this enrichd provides {}: rebuild the plugin",
                    n.package,
                    n.version,
                    supported_wit_version()
                ),
                hint: None,
            };
        }
        return match Capability::parse(n.interface).filter(|c| c.is_enrichd_interface()) {
            Some(cap) => Need::Grant(cap),
            None if n.interface == "types" => Need::Types,
            None => Need::Refused {
                reason: format!("enrichd has no host interface {:?}", n.interface),
                hint: None,
            },
        };
    }
    if PROVIDED_WASI.contains(&n.package) && n.version.starts_with(PROVIDED_WASI_VERSION) {
        // Making requests needs the grant (and `allowed_hosts`); its types
        // alone (a ComponentizeJS default build) need nothing.
        return match (n.package, n.interface) {
            ("wasi:http", "outgoing-handler") => Need::Grant(Capability::Http),
            _ => Need::Wasi,
        };
    }
    Need::Refused {
        reason: format!("enrichd does not provide {}@{}", n.package, n.version),
        hint: None,
    }
}

/// Inspect the component `bytes`.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, InspectError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(InspectError::NotWasm(
            "no \\0asm header (is this the .wasm file?)".into(),
        ));
    }
    let (imports, exports) = top_level_names(bytes)?;
    let handler = exports.iter().any(|e| is_interface(e, HANDLER_EXPORT));
    let events = exports.iter().any(|e| is_interface(e, EVENTS_EXPORT));
    let world = match (handler, events) {
        (true, true) => World::Both,
        (true, false) => World::Delivery,
        (false, true) => World::Event,
        (false, false) => return Err(InspectError::NotAPlugin { exports }),
    };
    let enrichd = split_name(HANDLER_EXPORT).map(|n| n.package);
    let wit_version = imports
        .iter()
        .chain(&exports)
        .filter_map(|name| split_name(name))
        .filter(|n| Some(n.package) == enrichd)
        .map(|n| n.version.to_string())
        .max_by(|a, b| version_key(a).cmp(&version_key(b)));
    Ok(Inspection {
        world,
        imports: imports
            .into_iter()
            .map(|name| Import {
                need: classify(&name),
                name,
            })
            .collect(),
        exports,
        size: bytes.len() as u64,
        sha256: Sha256::digest(bytes).into(),
        wit_version,
        footprint: Footprint::of(bytes).map_err(bad)?,
    })
}

fn bad(e: wasmparser::BinaryReaderError) -> InspectError {
    InspectError::NotWasm(e.message().to_string())
}

/// `0.10.0` above `0.9.0`: numeric parts compared as numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The names in the outermost component's import and export sections
/// (nested modules and components are the plugin's own business).
fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), InspectError> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // parse_all walks nested modules and components inline; depth 1 is ours.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(bad)? {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 && encoding == Encoding::Module {
                    return Err(InspectError::CoreModule);
                }
            }
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.map_err(bad)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export.map_err(bad)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(InspectError::NotWasm("the file ends early".into()));
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_12_imports_map_to_grants_wasi_or_refusals() {
        assert_eq!(
            classify("enrichd:plugin/crm@0.2.0"),
            Need::Grant(Capability::Crm)
        );
        assert_eq!(
            classify("enrichd:plugin/kv@0.2.0"),
            Need::Grant(Capability::Kv)
        );
        assert_eq!(classify("enrichd:plugin/types@0.2.0"), Need::Types);
        assert_eq!(classify("wasi:io/streams@0.2.6"), Need::Wasi);
        assert_eq!(classify("wasi:cli/environment@0.2.0"), Need::Wasi);
        assert_eq!(
            classify("wasi:http/outgoing-handler@0.2.0"),
            Need::Grant(Capability::Http)
        );
        assert_eq!(classify("wasi:http/types@0.2.4"), Need::Wasi);
        assert!(
            matches!(classify("enrichd:plugin/crm@0.1.0"), Need::Refused { reason, .. } if reason.contains("rebuild"))
        );
        assert!(matches!(
            classify("wasi:io/streams@0.3.0"),
            Need::Refused { .. }
        ));
        assert!(matches!(
            classify("enrichd:plugin/http@0.2.0"),
            Need::Refused { .. }
        ));
    }

    #[test]
    fn issue_12_core_modules_and_garbage_are_refused() {
        assert!(matches!(
            inspect(b"\0asm\x01\0\0\0"),
            Err(InspectError::CoreModule)
        ));
        assert!(matches!(inspect(b"hello"), Err(InspectError::NotWasm(_))));
        assert!(matches!(
            inspect(b"\0asm\x0d\0\x01\0"),
            Err(InspectError::NotAPlugin { .. })
        ));
    }

    #[test]
    fn issue_12_versions_compare_numerically() {
        assert!(version_key("0.10.0") > version_key("0.9.0"));
        assert_eq!(supported_wit_version(), "0.2.0");
    }
}
