//! The delivery record (what each plugin did, for the log and the admin
//! listener), typed ([`DeliveryRecord`]) and bounded in bytes.
//!
//! A record holds what plugins and senders chose: action bodies, notes,
//! drop reasons, texts, the delivery's subject and ids. Each of those is
//! capped on its own, but a chain of plugins can still add up to more than
//! one log line or one stored record should hold. [`bound`] keeps the record
//! whole when it fits and otherwise leaves out, in order, what matters
//! least (notes, action bodies, the replay input — host calls, then the
//! payload —, drop reasons, long texts, then whole plugin entries),
//! replacing each by counts and saying so in a `truncated` object. The
//! envelope is not touched: it is stored apart and replayed byte for byte.
//!
//! For `enrichd replay` the record also keeps the request body (`payload`,
//! up to [`MAX_PAYLOAD_BYTES`]) and each plugin's host calls
//! (`host_calls`, up to [`MAX_RECORDING_BYTES`] for the whole delivery).
//! The log line leaves both out ([`for_log`]): the payload is the mail's
//! content, the host calls hold CRM and kv data, and the store has them.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::chain::{PluginRecord, Status, Verdict};
use super::payload::Delivery;
use crate::text::json_len;

/// What is recorded of one answered delivery. Its JSON field names are the
/// ones stored records and the README's examples use; the stored form is
/// [`DeliveryRecord::bounded`] (a record over the bound is cut down, so
/// storage keeps JSON, not this type).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// Route path.
    pub route: String,
    /// The payload's id.
    pub delivery: String,
    /// The shared mailbox.
    pub mailbox: String,
    /// The conversation.
    pub conversation_id: String,
    /// The mail's subject (at most `MAX_SUBJECT_BYTES`).
    pub subject: String,
    /// Unix ms when answered.
    pub answered_at_ms: u64,
    /// Time from arrival to the answer, ms.
    pub elapsed_ms: u64,
    /// HTTP status answered.
    pub http_status: u16,
    /// How it was answered.
    pub status: RecordStatus,
    /// The envelope's message, or the 5xx reason.
    pub message: String,
    /// What each chain entry did, in order.
    pub plugins: Vec<PluginRecord>,
    /// The request body as received, for replay; absent when over
    /// [`MAX_PAYLOAD_BYTES`] (then `payloadLeftOut` gives its size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Size in bytes of a payload too large to keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_left_out: Option<usize>,
}

/// How a delivery was answered, as its record says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// 200, envelope status `success`.
    Success,
    /// 200, envelope status `error`.
    Error,
    /// 5xx: the sender retries.
    Retry,
}

/// How a delivery was answered: the parts of its record that are not the
/// delivery's own.
#[derive(Debug)]
pub struct Answered<'a> {
    /// The chain's verdict.
    pub verdict: &'a Verdict,
    /// HTTP status answered (a 5xx overrides the verdict: it is a retry).
    pub http_status: u16,
    /// The envelope's message, or the 5xx reason.
    pub message: String,
    /// Unix ms when answered.
    pub at_ms: u64,
    /// Time from arrival to the answer, ms.
    pub elapsed_ms: u64,
}

impl DeliveryRecord {
    /// The record of `delivery` on `route`, answered as `answered`, with
    /// what each chain entry did (`plugins`); their host calls are cut to
    /// [`MAX_RECORDING_BYTES`] in all, the first plugins' kept first.
    pub fn new(
        route: &str,
        delivery: &Delivery,
        answered: Answered<'_>,
        mut plugins: Vec<PluginRecord>,
    ) -> Self {
        let mut left = MAX_RECORDING_BYTES;
        for rec in plugins.iter_mut().filter_map(|p| p.host_calls.as_mut()) {
            left -= rec.limit_to(left, "per delivery", MAX_RECORDING_BYTES);
        }
        let raw = &delivery.raw_json;
        let (payload, payload_left_out) = if json_len(raw) <= MAX_PAYLOAD_BYTES {
            (Some(raw.clone()), None)
        } else {
            (None, Some(raw.len()))
        };
        let status = match answered.verdict {
            _ if answered.http_status >= 500 => RecordStatus::Retry,
            Verdict::Answer(env) => match env.status {
                Status::Success => RecordStatus::Success,
                Status::Error => RecordStatus::Error,
            },
            Verdict::Retry(_) => RecordStatus::Retry,
        };
        DeliveryRecord {
            route: route.to_owned(),
            delivery: delivery.id.clone(),
            mailbox: delivery.mailbox.clone(),
            conversation_id: delivery.conversation_id.clone(),
            subject: delivery.subject.clone(),
            answered_at_ms: answered.at_ms,
            elapsed_ms: answered.elapsed_ms,
            http_status: answered.http_status,
            status,
            message: answered.message,
            plugins,
            payload,
            payload_left_out,
        }
    }

    /// The record as JSON, [`bound`]ed to `max_bytes`: what is logged and
    /// stored.
    pub fn bounded(&self, max_bytes: usize) -> Value {
        // Serializing strings, numbers and plain enums cannot fail; an
        // empty object would still be a valid (if useless) record.
        let json = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        bound(json, max_bytes)
    }
}

/// Most bytes (as JSON) of one delivery record, in the log line and in the
/// store. A normal record (a few plugins, a few actions each) is 1–10 KiB;
/// 64 KiB keeps every such record whole while a delivery can add at most
/// this much to the log and the data directory.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Most JSON bytes of the host calls recorded for one delivery, all
/// plugins together. With [`MAX_PAYLOAD_BYTES`] it leaves 16 KiB of
/// [`MAX_RECORD_BYTES`] for the rest of a record (1–10 KiB normally), so
/// the replay input of a normal delivery is stored whole; and it adds at
/// most 24 KiB (before compression) per delivery to the store.
pub const MAX_RECORDING_BYTES: usize = 24 * 1024;

/// Most JSON bytes of the request body kept in the record for replay.
/// Emailgistics payloads are 1–10 KiB (the message text makes the
/// difference); a larger one is left out (`payloadLeftOut`) and replay
/// asks for it (`--payload`).
pub const MAX_PAYLOAD_BYTES: usize = 24 * 1024;

/// Bytes kept of each text (subject, ids, messages, failure details) when
/// the record has to be cut down that far.
const CUT_TEXT_BYTES: usize = 256;

/// How the summary of what was left out joins the record's JSON.
const TRUNCATED_KEY: &str = ",\"truncated\":";

/// What is left out first, in order: per-plugin lists (left with their
/// count), each plugin's host calls, then the payload. Action bodies go
/// before the replay input: the stored envelope still has every action.
const STEPS: [&str; 6] = [
    "notes",
    "http",
    "actions",
    "host_calls",
    "payload",
    "dropped",
];

/// The record as logged: without the replay input (the payload is the
/// mail's content, the host calls hold CRM and kv data; the store keeps
/// both for replay), so the log line is what it was before recordings.
pub fn for_log(record: &Value) -> Value {
    let mut logged = record.clone();
    if let Value::Object(top) = &mut logged {
        top.remove("payload");
    }
    for plugin in plugins_mut(&mut logged) {
        plugin.remove("host_calls");
    }
    logged
}

/// `record` unchanged when its JSON fits in `max_bytes`; otherwise a
/// summary that fits, with a `truncated` object saying what was left out.
pub fn bound(mut record: Value, max_bytes: usize) -> Value {
    let full = json_len(&record);
    if full <= max_bytes {
        return record;
    }
    let mut left_out = Map::new();
    // The summary goes in under its key: `,"truncated":` counts too.
    let fits = |r: &Value, left_out: &Map<String, Value>| {
        json_len(r) + TRUNCATED_KEY.len() + json_len(&truncated(max_bytes, full, left_out))
            <= max_bytes
    };
    for step in STEPS {
        let n = match step {
            "payload" => match &mut record {
                Value::Object(top) => top.remove("payload").map_or(0, |p| json_len(&p)),
                _ => 0,
            },
            list => drop_list(&mut record, list),
        };
        // HTTP requests and the replay input are named only when there
        // were some (records without them are bounded as before).
        if n == 0 && matches!(step, "http" | "host_calls" | "payload") {
            continue;
        }
        left_out.insert(step.into(), n.into());
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
/// entry's `counts` (for `host_calls`, its number of calls); returns how
/// many items were removed in all.
fn drop_list(record: &mut Value, list: &str) -> usize {
    let mut total = 0;
    for plugin in plugins_mut(record) {
        let n = match plugin.remove(list) {
            Some(Value::Array(items)) => items.len(),
            Some(Value::Object(rec)) => rec
                .get("calls")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            _ => continue,
        };
        total += n;
        let counts = plugin
            .entry("counts")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(counts) = counts {
            counts.insert(list.into(), n.into());
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
    use crate::emailgistics::chain::Envelope;
    use crate::emailgistics::payload::{parse, Parsed};

    fn seed() -> Delivery {
        match parse(include_bytes!("../../../examples/seed-payload.json")) {
            Ok(Parsed::Received(d)) => *d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn the_typed_record_has_the_field_names_of_the_stored_records() {
        let d = seed();
        let verdict = Verdict::Answer(Envelope::message_only("1 action"));
        let answered = Answered {
            verdict: &verdict,
            http_status: 200,
            message: "1 action".into(),
            at_ms: 1_700_000_000_000,
            elapsed_ms: 12,
        };
        let record = DeliveryRecord::new("/hook", &d, answered, Vec::new());
        // The shape the delivery handler built with `json!` before.
        let expected = json!({
            "route": "/hook",
            "delivery": d.id,
            "mailbox": d.mailbox,
            "conversationId": d.conversation_id,
            "subject": d.subject,
            "answeredAtMs": 1_700_000_000_000u64,
            "elapsedMs": 12,
            "httpStatus": 200,
            "status": "success",
            "message": "1 action",
            "plugins": [],
            "payload": d.raw_json,
        });
        assert_eq!(record.bounded(MAX_RECORD_BYTES), expected);
    }

    #[test]
    fn a_5xx_is_recorded_as_a_retry_whatever_the_verdict() {
        let d = seed();
        let error = Verdict::Answer(Envelope {
            status: Status::Error,
            message: "refused".into(),
            actions: Vec::new(),
        });
        let cases = [
            (&error, 200, "error"),
            // An envelope that could not be encoded is answered 500.
            (&error, 500, "retry"),
            (&Verdict::Retry("plugin asked".into()), 503, "retry"),
        ];
        for (verdict, http_status, expected) in cases {
            let answered = Answered {
                verdict,
                http_status,
                message: String::new(),
                at_ms: 0,
                elapsed_ms: 0,
            };
            let record = DeliveryRecord::new("/hook", &d, answered, Vec::new());
            assert_eq!(record.bounded(MAX_RECORD_BYTES)["status"], expected);
        }
    }

    #[test]
    fn a_large_typed_record_is_bounded() {
        let mut d = seed();
        d.subject = "s".repeat(100_000);
        let verdict = Verdict::Retry("x".into());
        let answered = Answered {
            verdict: &verdict,
            http_status: 503,
            message: "m".repeat(100_000),
            at_ms: 0,
            elapsed_ms: 0,
        };
        let record = DeliveryRecord::new("/hook", &d, answered, Vec::new());
        let json = record.bounded(4096);
        assert!(json_len(&json) <= 4096, "{}", json_len(&json));
        assert_eq!(json["httpStatus"], 503);
        assert!(json.get("truncated").is_some());
    }

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

    /// A plugin entry whose recording holds `calls` config answers of
    /// `value_len` bytes each.
    fn recorded(name: &str, calls: usize, value_len: usize) -> PluginRecord {
        use crate::plugin::recording::{Answer, HostCall, Recording};
        let mut r = PluginRecord::new(name, super::super::chain::Outcome::Applied);
        r.elapsed_us = 1;
        r.host_calls = Some(Recording {
            calls: (0..calls)
                .map(|i| HostCall {
                    call: "config.get".into(),
                    args: vec![format!("k{i}")],
                    answer: Answer::Ok(json!("v".repeat(value_len))),
                })
                .collect(),
            ..Recording::default()
        });
        r
    }

    fn answered(verdict: &Verdict) -> Answered<'_> {
        Answered {
            verdict,
            http_status: 200,
            message: "m".into(),
            at_ms: 0,
            elapsed_ms: 0,
        }
    }

    #[test]
    fn issue_12_replay_input_at_its_bounds_fits_the_record_whole() {
        let mut d = seed();
        // A payload just under its bound, recordings at theirs.
        d.raw_json = format!("{{\"pad\":\"{}\"}}", "p".repeat(MAX_PAYLOAD_BYTES - 20));
        let verdict = Verdict::Answer(Envelope::message_only("m"));
        let plugins = vec![recorded("a", 12, 1000), recorded("b", 12, 1000)];
        let record = DeliveryRecord::new("/hook", &d, answered(&verdict), plugins);
        assert!(record.payload.is_some());
        let kept: usize = record
            .plugins
            .iter()
            .filter_map(|p| p.host_calls.as_ref())
            .map(|r| json_len(&r.calls))
            .sum();
        assert!(kept <= MAX_RECORDING_BYTES, "{kept}");
        let json = record.bounded(MAX_RECORD_BYTES);
        assert!(json.get("truncated").is_none(), "kept whole");
        assert!(json_len(&json) <= MAX_RECORD_BYTES);
    }

    #[test]
    fn issue_12_recordings_over_the_delivery_bound_are_cut_from_the_call_that_overflows() {
        let d = seed();
        let verdict = Verdict::Answer(Envelope::message_only("m"));
        // 20 calls of ~1 KiB for the first plugin, 10 for the second: the
        // second's fifth call is the first over 24 KiB.
        let plugins = vec![recorded("a", 20, 1000), recorded("b", 10, 1000)];
        let record = DeliveryRecord::new("/hook", &d, answered(&verdict), plugins);
        let a = record.plugins[0].host_calls.as_ref().unwrap();
        assert!(a.truncated.is_none());
        let b = record.plugins[1].host_calls.as_ref().unwrap();
        let t = b.truncated.as_ref().expect("cut");
        assert_eq!(
            (t.bound.as_str(), t.max_bytes),
            ("per delivery", MAX_RECORDING_BYTES)
        );
        assert_eq!(t.from_call, b.calls.len());
        assert_eq!(t.left_out, 10 - b.calls.len());
        assert!(json_len(&a.calls) + json_len(&b.calls) <= MAX_RECORDING_BYTES);
        let json = record.bounded(MAX_RECORD_BYTES);
        assert_eq!(
            json["plugins"][1]["host_calls"]["truncated"]["from_call"],
            t.from_call
        );
    }

    #[test]
    fn issue_12_a_payload_over_its_bound_is_left_out_with_its_size() {
        let mut d = seed();
        d.raw_json = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        let verdict = Verdict::Answer(Envelope::message_only("m"));
        let json = DeliveryRecord::new("/hook", &d, answered(&verdict), Vec::new())
            .bounded(MAX_RECORD_BYTES);
        assert!(json.get("payload").is_none());
        assert_eq!(json["payloadLeftOut"], MAX_PAYLOAD_BYTES + 1);
        let mut r = record(vec![plugin("a", 1, 1, 0)], "s");
        r["payload"] = json!("{}");
        r["plugins"][0]["host_calls"] = json!({"calls": []});
        let logged = for_log(&r);
        assert!(logged.get("payload").is_none());
        assert!(logged["plugins"][0].get("host_calls").is_none());
        assert_eq!(logged["plugins"][0]["plugin"], "a");
    }

    #[test]
    fn issue_12_the_replay_input_goes_after_action_bodies_and_before_drop_reasons() {
        let mut r = record(vec![plugin("a", 50, 1000, 10)], "Hi");
        r["plugins"][0]["host_calls"] =
            json!({"calls": [{"call": "config.get", "args": ["k"], "ok": "v".repeat(20_000)}]});
        r["plugins"][0]["dropped"] = json!([{"index": 0, "type": "tag", "reason": "r"}]);
        r["payload"] = json!("p".repeat(20_000));
        // Without notes and actions it still does not fit 32 KiB.
        let b = bound(r.clone(), 32 * 1024);
        assert!(b.get("payload").is_some(), "the payload stays");
        assert!(b["plugins"][0].get("host_calls").is_none());
        assert_eq!(b["plugins"][0]["counts"]["host_calls"], 1);
        assert_eq!(b["truncated"]["leftOut"]["host_calls"], 1);
        let b = bound(r, 16 * 1024);
        assert!(b.get("payload").is_none());
        assert!(b["truncated"]["leftOut"]["payload"].as_u64().unwrap() > 20_000);
        assert_eq!(
            b["plugins"][0]["dropped"][0]["reason"], "r",
            "drop reasons stay"
        );
    }
}
