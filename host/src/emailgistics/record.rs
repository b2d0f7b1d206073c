//! The delivery record (what each plugin did, for the log and the admin
//! listener), bounded in bytes.
//!
//! A record holds what plugins and senders chose: action bodies, notes,
//! drop reasons, texts, the delivery's subject and ids. Each of those is
//! capped on its own, but a chain of plugins can still add up to more than
//! one log line or one stored record should hold. [`bound`] keeps the record
//! whole when it fits and otherwise leaves out, in order, what matters
//! least (notes, action bodies, drop reasons, long texts, then whole plugin
//! entries), replacing each by counts and saying so in a `truncated` object.
//! The envelope is not touched: it is stored apart and replayed byte for
//! byte.

use serde_json::{json, Map, Value};

use crate::text::json_len;

/// Most bytes (as JSON) of one delivery record, in the log line and in the
/// store. A normal record (a few plugins, a few actions each) is 1–10 KiB;
/// 64 KiB keeps every such record whole while a delivery can add at most
/// this much to the log and the data directory.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Bytes kept of each text (subject, ids, messages, failure details) when
/// the record has to be cut down that far.
const CUT_TEXT_BYTES: usize = 256;

/// Per-plugin lists left out first, with the name of their count.
const LISTS: [&str; 3] = ["notes", "actions", "dropped"];

/// `record` unchanged when its JSON fits in `max_bytes`; otherwise a
/// summary that fits, with a `truncated` object saying what was left out.
pub fn bound(mut record: Value, max_bytes: usize) -> Value {
    let full = json_len(&record);
    if full <= max_bytes {
        return record;
    }
    let mut left_out = Map::new();
    let fits = |r: &Value, left_out: &Map<String, Value>| {
        json_len(r) + json_len(&truncated(max_bytes, full, left_out)) <= max_bytes
    };
    for list in LISTS {
        let n = drop_list(&mut record, list);
        left_out.insert(list.into(), n.into());
        if fits(&record, &left_out) {
            return finish(record, max_bytes, full, left_out);
        }
    }
    let cut = cut_texts(&mut record);
    left_out.insert("cutTexts".into(), cut.into());
    if fits(&record, &left_out) {
        return finish(record, max_bytes, full, left_out);
    }
    // Whole plugin entries, from the last: the first ones ran first and
    // usually explain the rest.
    let mut dropped_plugins = 0usize;
    while let Some(plugins) = record.get_mut("plugins").and_then(Value::as_array_mut) {
        if plugins.pop().is_none() {
            break;
        }
        dropped_plugins += 1;
        left_out.insert("plugins".into(), dropped_plugins.into());
        if fits(&record, &left_out) {
            return finish(record, max_bytes, full, left_out);
        }
    }
    // Only the top-level texts can be left, and they were cut: keep what
    // says how the delivery was answered.
    let mut minimal = Map::new();
    if let Value::Object(top) = &record {
        for key in ["route", "delivery", "httpStatus", "status"] {
            if let Some(v) = top.get(key) {
                minimal.insert(key.into(), v.clone());
            }
        }
    }
    finish(Value::Object(minimal), max_bytes, full, left_out)
}

fn finish(mut record: Value, max_bytes: usize, full: usize, left_out: Map<String, Value>) -> Value {
    if let Value::Object(top) = &mut record {
        top.insert("truncated".into(), truncated(max_bytes, full, &left_out));
    }
    record
}

fn truncated(max_bytes: usize, full: usize, left_out: &Map<String, Value>) -> Value {
    json!({ "maxBytes": max_bytes, "fullBytes": full, "leftOut": left_out })
}

fn plugins_mut(record: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    record
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Removes `list` from every plugin entry, leaving its length in the
/// entry's `counts`; returns how many items were removed in all.
fn drop_list(record: &mut Value, list: &str) -> usize {
    let mut total = 0;
    for plugin in plugins_mut(record) {
        let Some(Value::Array(items)) = plugin.remove(list) else {
            continue;
        };
        total += items.len();
        let counts = plugin
            .entry("counts")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(counts) = counts {
            counts.insert(list.into(), items.len().into());
        }
    }
    total
}

/// Cuts every long string of the record (top level and plugin entries, one
/// level of nesting for failure details) to [`CUT_TEXT_BYTES`]; returns how
/// many were cut.
fn cut_texts(record: &mut Value) -> usize {
    fn cut_strings(map: &mut Map<String, Value>, depth: usize) -> usize {
        let mut n = 0;
        for value in map.values_mut() {
            match value {
                Value::String(s) if s.len() > CUT_TEXT_BYTES => {
                    *s = crate::text::cut(s, CUT_TEXT_BYTES, "the record bound", MAX_RECORD_BYTES);
                    n += 1;
                }
                Value::Object(inner) if depth > 0 => n += cut_strings(inner, depth - 1),
                _ => {}
            }
        }
        n
    }
    let mut n = match record {
        Value::Object(top) => cut_strings(top, 0),
        _ => 0,
    };
    for plugin in plugins_mut(record) {
        n += cut_strings(plugin, 1);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str, actions: usize, value_len: usize, notes: usize) -> Value {
        json!({
            "plugin": name,
            "outcome": "applied",
            "elapsed_us": 10,
            "actions": (0..actions)
                .map(|i| json!({"type": "tag", "value": {"tags": [format!("{i}{}", "x".repeat(value_len))]}}))
                .collect::<Vec<_>>(),
            "dropped": [],
            "notes": (0..notes).map(|i| format!("note {i}")).collect::<Vec<_>>(),
        })
    }

    fn record(plugins: Vec<Value>, subject: &str) -> Value {
        json!({
            "route": "/hook",
            "delivery": "d-1",
            "subject": subject,
            "httpStatus": 200,
            "status": "success",
            "message": "m",
            "plugins": plugins,
        })
    }

    #[test]
    fn a_record_that_fits_is_kept_whole() {
        let r = record(vec![plugin("a", 3, 10, 2), plugin("b", 1, 10, 0)], "Hi");
        assert_eq!(bound(r.clone(), MAX_RECORD_BYTES), r);
    }

    #[test]
    fn notes_go_first_with_their_counts() {
        let r = record(vec![plugin("a", 2, 10, 10_000)], "Hi");
        let b = bound(r, MAX_RECORD_BYTES);
        assert!(json_len(&b) <= MAX_RECORD_BYTES);
        let p = &b["plugins"][0];
        assert_eq!(p["actions"].as_array().unwrap().len(), 2, "actions kept");
        assert!(p.get("notes").is_none());
        assert_eq!(p["counts"]["notes"], 10_000);
        assert_eq!(b["truncated"]["leftOut"]["notes"], 10_000);
        assert_eq!(b["truncated"]["maxBytes"], MAX_RECORD_BYTES);
        assert!(b["truncated"]["fullBytes"].as_u64().unwrap() > MAX_RECORD_BYTES as u64);
    }

    #[test]
    fn action_bodies_go_next_and_the_outcome_stays() {
        let r = record(
            vec![plugin("a", 100, 1000, 100), plugin("b", 100, 1000, 0)],
            "Hi",
        );
        let b = bound(r, MAX_RECORD_BYTES);
        assert!(json_len(&b) <= MAX_RECORD_BYTES);
        for (i, name) in ["a", "b"].iter().enumerate() {
            let p = &b["plugins"][i];
            assert_eq!(p["plugin"], *name);
            assert_eq!(p["outcome"], "applied");
            assert_eq!(p["counts"]["actions"], 100);
            assert!(p.get("actions").is_none());
        }
        assert_eq!(b["truncated"]["leftOut"]["actions"], 200);
        assert_eq!(b["subject"], "Hi", "short texts are kept");
    }

    #[test]
    fn long_texts_and_then_plugin_entries_are_cut_to_fit() {
        let mut plugins: Vec<Value> = (0..40)
            .map(|i| {
                let mut p = plugin(&format!("p{i}"), 0, 0, 0);
                p["message"] = json!("m".repeat(2048));
                p
            })
            .collect();
        plugins.push(plugin("last", 1, 1, 1));
        let b = bound(record(plugins, &"s".repeat(1 << 20)), 8 * 1024);
        assert!(json_len(&b) <= 8 * 1024, "{}", json_len(&b));
        assert!(b["subject"]
            .as_str()
            .unwrap()
            .contains("(1048576 bytes, cut"));
        let left = &b["truncated"]["leftOut"];
        assert!(left["cutTexts"].as_u64().unwrap() >= 41);
        let kept = b["plugins"].as_array().unwrap().len();
        assert_eq!(left["plugins"].as_u64().unwrap() as usize, 41 - kept);
        assert_eq!(b["plugins"][0]["plugin"], "p0", "the first plugins stay");
    }

    #[test]
    fn a_record_of_huge_ids_is_reduced_to_how_it_was_answered() {
        let mut r = record(vec![], "s");
        r["delivery"] = json!("d".repeat(1 << 20));
        let b = bound(r, 1024);
        assert!(json_len(&b) <= 1024, "{b}");
        assert_eq!(b["httpStatus"], 200);
        assert!(b["delivery"].as_str().unwrap().len() <= CUT_TEXT_BYTES);
    }
}
