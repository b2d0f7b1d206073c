//! `enrichd plugin inspect PLUGIN.wasm`: what a plugin component is and
//! what to grant it, for people (text) or machines (`--json`); and
//! `enrichd plugin new`: a new plugin project.

use anyhow::Context;

use crate::plugin::inspect::{self, Inspection, Need};

/// The `--json` field names are documented on [`super::PluginCommand`].
pub(super) fn inspect(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // One line naming the file: the error is the answer, not a failure of enrichd.
    let found = inspect::inspect(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(file, &found))?);
    } else {
        print!("{}", to_text(file, &found));
    }
    Ok(())
}

/// Create the project and say where it is and what to read next.
pub(super) fn new(
    dir: &std::path::Path,
    name: &str,
    lang: crate::scaffold::Lang,
    world: crate::scaffold::World,
) -> anyhow::Result<()> {
    let project = crate::scaffold::create(dir, name, lang, world)?;
    println!(
        "created {} ({lang:?} {world:?} plugin); next: {}",
        project.display(),
        project.join("README.md").display()
    );
    Ok(())
}

/// `"crm"`-style list of the capabilities to grant.
fn capability_names(found: &Inspection) -> Vec<&'static str> {
    found.capabilities().into_iter().map(|c| c.name()).collect()
}

fn wit_status(found: &Inspection) -> &'static str {
    if found.wit_supported() {
        "supported"
    } else {
        "NOT supported: rebuild against wit/ of this enrichd"
    }
}

fn to_json(file: &std::path::Path, found: &Inspection) -> serde_json::Value {
    let imports: Vec<serde_json::Value> = found
        .imports
        .iter()
        .map(|i| {
            let mut o = serde_json::json!({ "name": i.name });
            let (kind, provided) = match &i.need {
                Need::Grant(cap) => {
                    o["capability"] = cap.name().into();
                    (
                        if cap.is_enrichd_interface() {
                            "enrichd"
                        } else {
                            "wasi"
                        },
                        true,
                    )
                }
                Need::Types => ("enrichd-types", true),
                Need::Wasi => ("wasi", true),
                Need::Refused { reason, hint } => {
                    o["reason"] = reason.as_str().into();
                    if let Some(hint) = hint {
                        o["hint"] = (*hint).into();
                    }
                    ("refused", false)
                }
            };
            o["kind"] = kind.into();
            o["provided"] = provided.into();
            o
        })
        .collect();
    serde_json::json!({
        "file": file.display().to_string(),
        "world": found.world,
        "wit_world": found.world.wit_name(),
        "exports": found.exports,
        "imports": imports,
        "capabilities": capability_names(found),
        "loadable": found.wit_supported() && !refuses(found),
        "size_bytes": found.size,
        "sha256": hex::encode(found.sha256),
        "wit_version": found.wit_version,
        "wit_supported": found.wit_supported(),
        "supported_wit_version": inspect::supported_wit_version(),
        "footprint": found.footprint,
        "min_limits": {
            "max_instances": found.footprint.min_instances(),
            "max_memory_bytes": found.footprint.memory_bytes,
            "max_table_elements": found.footprint.table_elements,
        },
    })
}

fn refuses(found: &Inspection) -> bool {
    found
        .imports
        .iter()
        .any(|i| matches!(i.need, Need::Refused { .. }))
}

fn to_text(file: &std::path::Path, found: &Inspection) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{}", format!("{key:<13}{value}").trim_end());
    };
    line("file", file.display().to_string());
    line(
        "world",
        format!("{:?} plugin ({})", found.world, found.world.wit_name()).to_lowercase(),
    );
    line(
        "wit",
        match &found.wit_version {
            Some(v) => format!("enrichd:plugin@{v} ({})", wit_status(found)),
            None => "names no enrichd:plugin version".into(),
        },
    );
    line("size", format!("{} bytes", found.size));
    line("pin", format!("sha256 = \"{}\"", hex::encode(found.sha256)));
    let f = &found.footprint;
    line(
        "needs",
        format!(
            "max_instances >= {} (core instances {}, memories {}, tables {}), max_memory_bytes >= {}, max_table_elements >= {}",
            f.min_instances(),
            f.core_instances,
            f.memories,
            f.tables,
            f.memory_bytes,
            f.table_elements
        ),
    );
    let caps: Vec<String> = capability_names(found)
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    line("grant", format!("capabilities = [{}]", caps.join(", ")));
    if refuses(found) {
        line(
            "loadable",
            "NO: enrichd serve refuses it (see imports)".into(),
        );
    }
    line("imports", String::new());
    let width = found
        .imports
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    // What to act on first: what to grant, what blocks loading, then the rest.
    let mut imports: Vec<_> = found.imports.iter().collect();
    imports.sort_by_key(|i| match i.need {
        Need::Grant(_) => 0,
        Need::Refused { .. } => 1,
        Need::Types => 2,
        Need::Wasi => 3,
    });
    for i in imports {
        let what = match &i.need {
            Need::Grant(cap) => format!("capability `{}`", cap.name()),
            Need::Types => "types only, nothing to grant".into(),
            Need::Wasi => "WASI, provided to every plugin (empty context)".into(),
            Need::Refused { reason, hint } => match hint {
                Some(hint) => format!("NOT PROVIDED: {reason}; {hint}"),
                None => format!("NOT PROVIDED: {reason}"),
            },
        };
        line("", format!("{:<width$}  {what}", i.name));
    }
    line("exports", String::new());
    for e in &found.exports {
        line("", e.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::inspect::{Import, World};
    use crate::plugin::policy::Capability;

    #[test]
    fn issue_12_inspect_text_puts_grants_and_refusals_before_wasi() {
        let import = |name: &str, need| Import {
            name: name.into(),
            need,
        };
        let found = Inspection {
            world: World::Delivery,
            imports: vec![
                import("wasi:io/poll@0.2.6", Need::Wasi),
                import(
                    "wasi:keyvalue/store@0.2.0",
                    inspect::classify("wasi:keyvalue/store@0.2.0"),
                ),
                import("enrichd:plugin/kv@0.2.0", Need::Grant(Capability::Kv)),
            ],
            exports: vec!["enrichd:plugin/handler@0.2.0".into()],
            size: 3,
            sha256: [0xab; 32],
            wit_version: Some("0.2.0".into()),
            footprint: crate::plugin::footprint::Footprint {
                core_instances: 14,
                memories: 1,
                tables: 2,
                memory_bytes: 1 << 20,
                table_elements: 5680,
            },
        };
        let text = to_text(std::path::Path::new("p.wasm"), &found);
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        assert!(at("enrichd:plugin/kv") < at("wasi:keyvalue/store"));
        assert!(at("wasi:keyvalue/store") < at("wasi:io/poll"));
        assert!(text.contains(&format!("sha256 = \"{}\"", "ab".repeat(32))));
        assert!(text.contains("loadable     NO"), "{text}");
        assert!(
            text.contains("enrichd does not provide wasi:keyvalue@0.2.0"),
            "{text}"
        );
        let json = to_json(std::path::Path::new("p.wasm"), &found);
        assert_eq!(json["loadable"], false);
        assert_eq!(json["imports"][1]["kind"], "refused");
        // The footprint: the smallest limits to configure.
        assert!(
            text.contains("needs        max_instances >= 14 (core instances 14, memories 1, tables 2), max_memory_bytes >= 1048576, max_table_elements >= 5680"),
            "{text}"
        );
        assert_eq!(json["min_limits"]["max_instances"], 14);
        assert_eq!(json["footprint"]["tables"], 2);
    }

    #[test]
    fn issue_12_plugin_inspect_help_has_an_example() {
        use clap::CommandFactory;
        let mut cli = super::super::Cli::command();
        cli.clone().debug_assert();
        let help = cli
            .find_subcommand_mut("plugin")
            .and_then(|p| p.find_subcommand_mut("inspect"))
            .expect("plugin inspect")
            .render_long_help()
            .to_string();
        assert!(help.contains("Example:"), "{help}");
        assert!(help.contains("--json fields"), "{help}");
    }
}
