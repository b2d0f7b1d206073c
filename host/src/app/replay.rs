//! Replaying a logged delivery (`enrichd replay`): the route's chain
//! (from the config, with `--plugin NAME=NEW.wasm` swaps) is compiled in
//! this process with the same engine settings, sandbox and limits as
//! `serve`, and run on the recorded payload with every host import
//! answered from the recorded host calls (see
//! [`crate::plugin::recording`]): no CRM, no kv store, nothing written.
//! The result is compared with the recorded one, per plugin and for the
//! answer.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::assemble;
use crate::config::Config;
use crate::emailgistics::chain::{self, ChainEntry, PluginRecord, Verdict};
use crate::emailgistics::{convert, payload};
use crate::plugin::recording::{Recording, Replay, Unrecorded};
use crate::plugin::{LoadError, PluginEngine, Services};
use crate::storage::StoredDelivery;

/// Why a delivery cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The config has no route with this path.
    #[error("the config has no route {0:?} (pass --route to replay on another)")]
    NoRoute(String),
    /// A swap names no plugin of the chain.
    #[error("--plugin {0}=…: the route's chain has no plugin of that name")]
    NoSuchPlugin(String),
    /// A chain plugin handles no deliveries.
    #[error("plugin {0:?} does not export enrichd:plugin/handler")]
    NotADeliveryPlugin(String),
    /// The record keeps no payload and none was given.
    #[error("{0}; pass the payload with --payload FILE")]
    NoPayload(String),
    /// The payload is not an Emailgistics delivery.
    #[error("the payload is not a delivery: {0}")]
    Payload(String),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What to replay, and how.
pub struct Request<'a> {
    /// The config: routes, plugins, limits, engine settings.
    pub config: &'a Config,
    /// The logged delivery.
    pub stored: &'a StoredDelivery,
    /// Replay on this route instead of the recorded one.
    pub route: Option<&'a str>,
    /// Plugins whose component is replaced (name, new `.wasm`); their
    /// pins are not enforced.
    pub swaps: &'a [(String, PathBuf)],
    /// The payload, when the record has none.
    pub payload: Option<Vec<u8>>,
}

/// The recorded and the replayed answers and how they differ.
#[derive(Debug, Serialize)]
pub struct Replayed {
    /// The delivery's id.
    pub delivery: String,
    /// The route replayed on.
    pub route: String,
    /// Per plugin, in the replayed chain's order, then recorded plugins
    /// the replayed chain does not have.
    pub plugins: Vec<PluginSide>,
    /// The answer: `{httpStatus, body}` recorded and replayed.
    pub answer: Sides,
    /// Whether every plugin's actions and outcome and the answer are the
    /// same.
    pub identical: bool,
}

/// One plugin's recorded and replayed result.
#[derive(Debug, Serialize)]
pub struct PluginSide {
    /// Plugin name.
    pub plugin: String,
    /// Recorded and replayed `{outcome, actions}` (`null`: not in that run;
    /// recorded `actions` are `null` when the record's bound left them out).
    pub sides: Sides,
    /// Host calls the recording could not answer (they got `unavailable`).
    pub unrecorded: Vec<Unrecorded>,
    /// How many there were, listed or not.
    pub unrecorded_total: usize,
}

/// Two values and their difference.
#[derive(Debug, Serialize)]
pub struct Sides {
    /// Recorded.
    pub old: Value,
    /// Replayed.
    pub new: Value,
    /// Actions (or values) added, removed and changed; empty when equal.
    pub diff: Vec<Change>,
}

/// One difference between the recorded and the replayed actions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// Only in the replay, at `index` of the new list.
    Added {
        /// Position in the new list.
        index: usize,
        /// The action.
        new: Value,
    },
    /// Only in the record, at `index` of the old list.
    Removed {
        /// Position in the old list.
        index: usize,
        /// The action.
        old: Value,
    },
    /// In both places, different.
    Changed {
        /// Position in the new list.
        index: usize,
        /// Recorded.
        old: Value,
        /// Replayed.
        new: Value,
    },
}

/// Replay `req.stored`: compile the chain, run it on the recorded payload
/// with the recorded host calls, compare. Compiles (seconds without the
/// cache): run it off the async workers.
pub fn replay(req: Request<'_>) -> Result<Replayed, ReplayError> {
    let record = &req.stored.record;
    let path = req.route.unwrap_or(&req.stored.route);
    let route = req
        .config
        .routes
        .iter()
        .find(|r| r.path == path)
        .ok_or_else(|| ReplayError::NoRoute(path.to_owned()))?;
    let body = match (req.payload, record["payload"].as_str()) {
        (Some(given), _) => given,
        (None, Some(kept)) => kept.as_bytes().to_vec(),
        (None, None) => return Err(ReplayError::NoPayload(missing_payload(record))),
    };
    let delivery = match payload::parse(&body).map_err(|e| ReplayError::Payload(e.to_string()))? {
        payload::Parsed::Received(d) => convert::delivery(&d),
        payload::Parsed::UnknownEvent(e) => {
            return Err(ReplayError::Payload(format!("event {e:?}")))
        }
    };
    let engine = PluginEngine::new(assemble::engine_options(req.config))?;
    for (name, _) in req.swaps {
        if !route
            .chain
            .iter()
            .any(|e| &req.config.plugins[e.plugin].name == name)
        {
            return Err(ReplayError::NoSuchPlugin(name.clone()));
        }
    }
    let mut chain = Vec::with_capacity(route.chain.len());
    for e in &route.chain {
        let mut spec = req.config.plugins[e.plugin].clone();
        if let Some((_, path)) = req.swaps.iter().find(|(n, _)| *n == spec.name) {
            (spec.path, spec.sha256) = (path.clone(), None);
        }
        let plugin = engine.load(&spec)?;
        if !plugin.handles_deliveries() {
            return Err(ReplayError::NotADeliveryPlugin(spec.name));
        }
        chain.push(ChainEntry {
            plugin: Arc::new(plugin),
            mailboxes: e.mailboxes.clone(),
        });
    }
    let services = Services {
        replay: Some(Arc::new(Replay::new(recordings(record)))),
        ..Services::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Engine(e.to_string()))?;
    let (verdict, records) = runtime.block_on(chain::run(
        &chain,
        &delivery,
        &services,
        tokio::time::Instant::now(),
        req.config.delivery_budget,
    ));
    Ok(compare(req.stored, path, &verdict, &records))
}

/// Why the record has no payload.
fn missing_payload(record: &Value) -> String {
    match record["payloadLeftOut"].as_u64() {
        Some(n) => format!(
            "the payload ({n} bytes) was over the {} bytes a record keeps",
            crate::emailgistics::record::MAX_PAYLOAD_BYTES
        ),
        None if record["truncated"]["leftOut"]["payload"].is_u64() => {
            "the record's bound left the payload out".into()
        }
        None => "the record keeps no payload (stored before enrichd kept payloads)".into(),
    }
}

/// Each recorded plugin's host calls, or why it has none.
fn recordings(record: &Value) -> Vec<(String, Result<Recording, String>)> {
    let plugins = record["plugins"].as_array().map_or(&[][..], Vec::as_slice);
    plugins
        .iter()
        .map(|p| {
            let name = p["plugin"].as_str().unwrap_or_default().to_owned();
            let rec = match p.get("host_calls") {
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| format!("its recording cannot be read: {e}")),
                None if p["counts"].get("host_calls").is_some() => {
                    Err("the record's bound left its recording out".into())
                }
                None if p["outcome"] != "applied" && p["outcome"] != "failed" => {
                    Err("it did not run in the recorded delivery".into())
                }
                None => Err(
                    "the record has no recording (stored before enrichd kept host calls)".into(),
                ),
            };
            (name, rec)
        })
        .collect()
}

/// The recorded and replayed results side by side.
fn compare(
    stored: &StoredDelivery,
    route: &str,
    verdict: &Verdict,
    records: &[PluginRecord],
) -> Replayed {
    let old_plugins = stored.record["plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut taken = vec![false; old_plugins.len()];
    let mut plugins = Vec::new();
    for r in records {
        // The k-th entry of a name pairs with its k-th recorded entry.
        let old = old_plugins
            .iter()
            .enumerate()
            .find(|(i, p)| !taken[*i] && p["plugin"] == r.plugin.as_str());
        let old = old.map_or(Value::Null, |(i, p)| {
            taken[i] = true;
            json!({ "outcome": p["outcome"], "actions": p.get("actions").cloned().unwrap_or(Value::Null) })
        });
        let new = json!({ "outcome": r.outcome, "actions": r.actions });
        let rec = r.host_calls.clone().unwrap_or_default();
        plugins.push(PluginSide {
            plugin: r.plugin.clone(),
            sides: sides(old, new),
            unrecorded: rec.unrecorded,
            unrecorded_total: rec.unrecorded_total,
        });
    }
    for (_, p) in old_plugins.iter().enumerate().filter(|(i, _)| !taken[*i]) {
        let old = json!({ "outcome": p["outcome"], "actions": p.get("actions").cloned().unwrap_or(Value::Null) });
        plugins.push(PluginSide {
            plugin: p["plugin"].as_str().unwrap_or_default().to_owned(),
            sides: sides(old, Value::Null),
            unrecorded: Vec::new(),
            unrecorded_total: 0,
        });
    }
    let old_body: Value =
        serde_json::from_str(&stored.body).unwrap_or_else(|_| Value::String(stored.body.clone()));
    let new_answer = match verdict {
        Verdict::Answer(env) => json!({ "httpStatus": 200, "body": env }),
        Verdict::Retry(reason) => {
            json!({ "httpStatus": 503, "body": { "status": "error", "message": reason } })
        }
    };
    let answer = sides(
        json!({ "httpStatus": stored.status, "body": old_body }),
        new_answer,
    );
    let identical = answer.diff.is_empty() && plugins.iter().all(|p| p.sides.diff.is_empty());
    Replayed {
        delivery: stored.id.clone(),
        route: route.to_owned(),
        plugins,
        answer,
        identical,
    }
}

/// `old` and `new` with their difference: the actions of each (an
/// `actions` array, or the `body.actions` of an answer) compared as lists,
/// anything else as a whole value.
fn sides(old: Value, new: Value) -> Sides {
    let list = |v: &Value| -> Vec<Value> {
        let a = v.get("actions").or_else(|| v.get("body")?.get("actions"));
        a.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let mut diff = diff_lists(&list(&old), &list(&new));
    let rest = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("actions");
        }
        if let Some(o) = v.get_mut("body").and_then(Value::as_object_mut) {
            o.remove("actions");
        }
        v
    };
    if rest(&old) != rest(&new) {
        diff.push(Change::Changed {
            index: 0,
            old: rest(&old),
            new: rest(&new),
        });
    }
    Sides { old, new, diff }
}

/// The changes from `old` to `new`: a longest common subsequence keeps
/// what both share in order; a removal and an addition at the same place
/// are one change. Lists are at most `max_actions` (100 by default) long,
/// so the quadratic table is small.
pub fn diff_lists(old: &[Value], new: &[Value]) -> Vec<Change> {
    let (n, m) = (old.len(), new.len());
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < n && j < m && lcs[i + 1][j + 1] == lcs[i][j] {
            // Neither is kept: the old one became the new one.
            out.push(Change::Changed {
                index: j,
                old: old[i].clone(),
                new: new[j].clone(),
            });
            (i, j) = (i + 1, j + 1);
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(Change::Added {
                index: j,
                new: new[j].clone(),
            });
            j += 1;
        } else {
            out.push(Change::Removed {
                index: i,
                old: old[i].clone(),
            });
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<Value> {
        names.iter().map(|n| json!({ "tag": n })).collect()
    }

    #[test]
    fn equal_lists_have_no_changes() {
        assert!(diff_lists(&tags(&["a", "b"]), &tags(&["a", "b"])).is_empty());
    }

    #[test]
    fn an_insertion_is_one_addition_not_a_cascade_of_changes() {
        let d = diff_lists(&tags(&["a", "b"]), &tags(&["x", "a", "b"]));
        assert_eq!(
            d,
            [Change::Added {
                index: 0,
                new: json!({"tag": "x"})
            }]
        );
        let d = diff_lists(&tags(&["a", "b", "c"]), &tags(&["a", "c"]));
        assert_eq!(
            d,
            [Change::Removed {
                index: 1,
                old: json!({"tag": "b"})
            }]
        );
    }

    #[test]
    fn a_replaced_action_is_a_change() {
        let d = diff_lists(&tags(&["a", "b", "c"]), &tags(&["a", "B", "c"]));
        assert_eq!(
            d,
            [Change::Changed {
                index: 1,
                old: json!({"tag": "b"}),
                new: json!({"tag": "B"})
            }]
        );
    }

    #[test]
    fn outcomes_and_answers_are_compared_beyond_their_actions() {
        let s = sides(
            json!({"outcome": "applied", "actions": []}),
            json!({"outcome": "failed", "actions": []}),
        );
        assert_eq!(s.diff.len(), 1);
        let s = sides(
            json!({"httpStatus": 200, "body": {"message": "m", "actions": [1]}}),
            json!({"httpStatus": 200, "body": {"message": "m", "actions": [1]}}),
        );
        assert!(s.diff.is_empty());
    }
}
