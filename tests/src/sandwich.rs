//! The "sandwich" configs of the containment tests: each plugin under test
//! runs between two well-behaved plugins (`crm-enrich` before it,
//! `keyword-router` after it), on a route of its own, so a test can check
//! that the good plugins' actions still apply whatever the one in the
//! middle does.

use serde_json::{json, Value};

use crate::{crm_sample, plugin_toml, plugin_toml_as, seed_payload};

/// The name of `crm-enrich`'s first action for the seed payload.
pub const GOOD_BEFORE: &str = "Apply CRM context";
/// The name of `keyword-router`'s action for the seed payload.
pub const GOOD_AFTER: &str = "Route by keyword \"coverage\"";

/// A `[[plugin]]` table named `name` for the `hostile` test plugin in
/// `mode`: granted `config` plus `caps`, with extra TOML for the table
/// (`limits`) and extra `[plugin.config]` lines (`config`).
pub fn hostile(name: &str, mode: &str, caps: &[&str], limits: &str, config: &str) -> String {
    let mut all = vec!["config"];
    all.extend_from_slice(caps);
    plugin_toml_as(
        name,
        "hostile",
        &all,
        &format!("{limits}\n[plugin.config]\nmode = {mode:?}\n{config}"),
    )
}

/// A config with one route per entry: `/<name>` runs crm-enrich, the
/// entry's plugin (its `[[plugin]]` table is the entry's string), then
/// keyword-router. `top` is top-level TOML, written first.
pub fn sandwich(top: &str, entries: &[(&str, String)]) -> String {
    let mut config = format!(
        "{top}\n[[crm]]\nname = \"main\"\nkind = \"embedded\"\nseed = {:?}\n{}{}",
        crm_sample(),
        plugin_toml("crm-enrich", &["crm", "config"], ""),
        plugin_toml(
            "keyword-router",
            &["config"],
            "[plugin.config]\nrules = \"coverage => Policy Desk\""
        ),
    );
    for (_, table) in entries {
        config.push_str(table);
    }
    for (name, _) in entries {
        config.push_str(&format!(
            "[[route]]\npath = \"/{name}\"\nchain = [{{ plugin = \"crm-enrich\" }}, {{ plugin = {name:?} }}, {{ plugin = \"keyword-router\" }}]\n"
        ));
    }
    config
}

/// The names of the actions in an envelope, in order.
pub fn action_names(body: &Value) -> Vec<String> {
    body["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["name"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The seed payload with its own `id` (a repeated id is replayed, not run).
pub fn seed_with_id(id: &str) -> Value {
    let mut p = seed_payload();
    p["id"] = json!(id);
    p
}
