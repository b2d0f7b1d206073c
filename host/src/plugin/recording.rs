//! The host calls of one plugin call, recorded (live) or served back
//! (replay): the answers a plugin saw, so `enrichd replay` can run a logged
//! delivery again deterministically.
//!
//! Live, every import that reaches a backend or the plugin's config is
//! recorded in call order with its arguments and its answer
//! ([`HostCall`]): `crm.lookup-email` / `lookup-domain` (fields,
//! provenance, age, source, or the host-error), `kv.get` / `get-from`,
//! `config.get` / `get-all`, `kv.set` / `delete` as effects, and each
//! outbound request the `wasi:http` gate lets out (`outgoing-handler.handle`,
//! recorded when its response body ends: [`super::http_tape`]). Calls the
//! host refuses before asking anything (capability not granted, a per-call
//! budget used up, a malformed key) are not recorded: replay runs the same
//! checks under the same config and refuses them the same way. `log` is
//! not recorded: it answers nothing but `ok` or those refusals, and its
//! lines are bounded by the log budget already.
//!
//! The recording is bounded ([`MAX_RECORDING_BYTES_PER_CALL`], and per
//! delivery `emailgistics::record::MAX_RECORDING_BYTES`): past the bound
//! it keeps counting calls but no more answers, and says from which call
//! on it is [`Truncated`].
//!
//! In replay ([`Replay`]), the k-th call of an import with the same
//! arguments gets the k-th recorded answer of that import and arguments; a
//! call the recording does not hold gets `host-error.unavailable("not
//! recorded: …")` and is listed in [`Recording::unrecorded`]. `kv.set` and
//! `delete` are accepted and discarded: replay writes to no store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::bindings::enrichd::plugin::{crm, types::HostError};
use crate::text::json_len;

/// Most bytes (as JSON) of the host calls recorded for one plugin call. A
/// CRM answer is a few hundred bytes and a kv value at most 64 KiB; 16 KiB
/// keeps dozens of lookups and small kv reads whole, while one plugin
/// cannot take more than a quarter of its delivery's record
/// (`MAX_RECORD_BYTES`, 64 KiB) with its recording.
pub const MAX_RECORDING_BYTES_PER_CALL: usize = 16 * 1024;

/// Most unrecorded calls listed by name and arguments in a replay; more are
/// only counted (the `config` import has no per-call budget).
pub const MAX_UNRECORDED_LISTED: usize = 64;

/// One host call and the answer the plugin got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostCall {
    /// The import, `interface.function` as in the WIT (`crm.lookup-email`).
    pub call: String,
    /// Its arguments, in WIT order.
    pub args: Vec<String>,
    /// What it answered.
    #[serde(flatten)]
    pub answer: Answer,
}

/// What a host call answered: its value as JSON, or the host-error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// The `ok` value (`null` for none or for `_`).
    Ok(Value),
    /// The `host-error`.
    Err(RecordedError),
}

/// A `host-error`, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum RecordedError {
    /// `denied`
    Denied(String),
    /// `unavailable`
    Unavailable(String),
    /// `invalid`
    Invalid(String),
    /// `over-limit`
    OverLimit(String),
}

impl From<&HostError> for RecordedError {
    fn from(e: &HostError) -> Self {
        match e {
            HostError::Denied(m) => RecordedError::Denied(m.clone()),
            HostError::Unavailable(m) => RecordedError::Unavailable(m.clone()),
            HostError::Invalid(m) => RecordedError::Invalid(m.clone()),
            HostError::OverLimit(m) => RecordedError::OverLimit(m.clone()),
        }
    }
}

impl From<RecordedError> for HostError {
    fn from(e: RecordedError) -> Self {
        match e {
            RecordedError::Denied(m) => HostError::Denied(m),
            RecordedError::Unavailable(m) => HostError::Unavailable(m),
            RecordedError::Invalid(m) => HostError::Invalid(m),
            RecordedError::OverLimit(m) => HostError::OverLimit(m),
        }
    }
}

/// Where a recording stops keeping answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truncated {
    /// The first call not kept (0-based, in call order); every later call
    /// is left out too.
    pub from_call: usize,
    /// How many calls were left out.
    pub left_out: usize,
    /// The bound that cut it: `per call` or `per delivery`.
    pub bound: String,
    /// That bound, in JSON bytes.
    pub max_bytes: usize,
}

/// A call made in replay that the recording does not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unrecorded {
    /// The import.
    pub call: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The host calls of one plugin call: recorded live, or (in replay) the
/// calls the recording could not answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// The calls kept, in call order.
    pub calls: Vec<HostCall>,
    /// Set when the bound cut the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
    /// Replay only: calls answered `unavailable` because the recording did
    /// not hold them (at most [`MAX_UNRECORDED_LISTED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrecorded: Vec<Unrecorded>,
    /// Replay only: how many calls were unrecorded, listed or not.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unrecorded_total: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Recording {
    /// Keep at most `left` bytes of calls (as JSON), what is left of the
    /// `bound` of `max_bytes`, cutting at the first call that does not fit;
    /// returns the bytes kept.
    pub fn limit_to(&mut self, left: usize, bound: &str, max_bytes: usize) -> usize {
        let mut kept = 0;
        for (i, call) in self.calls.iter().enumerate() {
            let len = json_len(call);
            if kept + len > left {
                let earlier = self.truncated.as_ref().map_or(0, |t| t.left_out);
                self.truncated = Some(Truncated {
                    from_call: i,
                    left_out: self.calls.len() - i + earlier,
                    bound: bound.to_owned(),
                    max_bytes,
                });
                self.calls.truncate(i);
                break;
            }
            kept += len;
        }
        kept
    }
}

/// A value an import answers, as it is recorded and served back.
pub(super) trait Taped: Sized {
    /// As JSON.
    fn to_json(&self) -> Value;
    /// Back from JSON; `None` when the recording does not fit the type.
    fn from_json(v: &Value) -> Option<Self>;
}

impl Taped for () {
    fn to_json(&self) -> Value {
        Value::Null
    }
    fn from_json(_: &Value) -> Option<Self> {
        Some(())
    }
}

impl Taped for Option<String> {
    fn to_json(&self) -> Value {
        self.as_deref().map_or(Value::Null, Value::from)
    }
    fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            Value::String(s) => Some(Some(s.clone())),
            _ => None,
        }
    }
}

impl Taped for Vec<(String, String)> {
    fn to_json(&self) -> Value {
        json!(self)
    }
    fn from_json(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// A CRM answer as recorded.
#[derive(Serialize, Deserialize)]
struct CrmRecorded {
    fields: Vec<(String, String)>,
    provenance: String,
    age_ms: u64,
    source: String,
}

impl Taped for Option<crm::CrmAnswer> {
    fn to_json(&self) -> Value {
        let Some(a) = self else { return Value::Null };
        let provenance = match a.provenance {
            crm::Provenance::Fresh => "fresh",
            crm::Provenance::Stale => "stale",
            crm::Provenance::Domain => "domain",
        };
        json!(CrmRecorded {
            fields: a.fields.clone(),
            provenance: provenance.into(),
            age_ms: a.age_ms,
            source: a.source.clone(),
        })
    }
    fn from_json(v: &Value) -> Option<Self> {
        if v.is_null() {
            return Some(None);
        }
        let r: CrmRecorded = serde_json::from_value(v.clone()).ok()?;
        let provenance = match r.provenance.as_str() {
            "fresh" => crm::Provenance::Fresh,
            "stale" => crm::Provenance::Stale,
            "domain" => crm::Provenance::Domain,
            _ => return None,
        };
        Some(Some(crm::CrmAnswer {
            fields: r.fields,
            provenance,
            age_ms: r.age_ms,
            source: r.source,
        }))
    }
}

/// What one plugin call does with its host calls.
#[derive(Debug, Default)]
enum TapeState {
    /// Nothing (event calls: they have no stored record).
    #[default]
    Off,
    /// Record them (a live delivery).
    Record(Recorder),
    /// Serve them from a recording (replay).
    Replay(Player),
}

/// The tape of one plugin call, shared by the store (the `crm`, `kv` and
/// `config` imports) and the `wasi:http` gate, whose responses are
/// recorded when their bodies end, after the hook call that made them.
#[derive(Debug, Clone, Default)]
pub(super) struct Tape(Arc<Mutex<TapeState>>);

/// A live recording under [`MAX_RECORDING_BYTES_PER_CALL`].
#[derive(Debug, Default)]
pub(super) struct Recorder {
    recording: Recording,
    bytes: usize,
}

/// The answers of one recorded plugin call, served back in replay.
#[derive(Debug)]
pub(super) struct Player {
    /// The recording, `Err` saying why there is none.
    recorded: Result<Recording, String>,
    used: Vec<bool>,
    unrecorded: Recording,
}

impl Tape {
    fn new(state: TapeState) -> Self {
        Tape(Arc::new(Mutex::new(state)))
    }

    /// A tape that neither records nor serves.
    pub(super) fn off() -> Self {
        Tape::default()
    }

    /// A fresh recorder.
    pub(super) fn record() -> Self {
        Tape::new(TapeState::Record(Recorder::default()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapeState> {
        // A panic while holding the lock leaves plain lists behind.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the calls are recorded.
    pub(super) fn recording(&self) -> bool {
        matches!(*self.lock(), TapeState::Record(_))
    }

    /// Whether the calls are served from a recording.
    pub(super) fn replaying(&self) -> bool {
        matches!(*self.lock(), TapeState::Replay(_))
    }

    /// In replay, the answer to `call(args)`: the next unused recorded one,
    /// or `unavailable` (and the call listed) when there is none. `None`
    /// when not replaying: the caller asks the live backend.
    pub(super) fn serve<T: Taped>(
        &self,
        call: &str,
        args: &[String],
    ) -> Option<Result<T, HostError>> {
        let TapeState::Replay(player) = &mut *self.lock() else {
            return None;
        };
        Some(player.serve(call, args))
    }

    /// In replay, list `call(args)` among the calls the recording could not
    /// answer (a recorded answer that ended before the replay did).
    pub(super) fn not_recorded(&self, call: &str, args: &[String]) {
        if let TapeState::Replay(player) = &mut *self.lock() {
            player.unrecorded(call, args);
        }
    }

    /// Record `call(args)` and its answer (live only).
    pub(super) fn record_call<T: Taped>(
        &self,
        call: &str,
        args: Vec<String>,
        answer: &Result<T, HostError>,
    ) {
        self.keep(|| {
            Some(HostCall {
                call: call.to_owned(),
                args,
                answer: match answer {
                    Ok(v) => Answer::Ok(v.to_json()),
                    Err(e) => Answer::Err(e.into()),
                },
            })
        });
    }

    /// Count a call whose answer is known not to fit the per-call bound:
    /// the recording is truncated from it on (live only).
    pub(super) fn record_too_big(&self) {
        self.keep(|| None);
    }

    /// Record the call `build` makes (`None`: one too big to keep).
    fn keep(&self, build: impl FnOnce() -> Option<HostCall>) {
        let TapeState::Record(rec) = &mut *self.lock() else {
            return;
        };
        // Past the bound only the count grows: nothing more is built.
        if let Some(t) = &mut rec.recording.truncated {
            t.left_out += 1;
            return;
        }
        let r = &mut rec.recording;
        let call = build().map(|c| (json_len(&c), c));
        match call {
            Some((len, call)) if rec.bytes + len <= MAX_RECORDING_BYTES_PER_CALL => {
                rec.bytes += len;
                r.calls.push(call);
            }
            _ => {
                r.truncated = Some(Truncated {
                    from_call: r.calls.len(),
                    left_out: 1,
                    bound: "per call".into(),
                    max_bytes: MAX_RECORDING_BYTES_PER_CALL,
                });
            }
        }
    }

    /// What the call's tape has to report: the recording (live), the
    /// unrecorded calls (replay), nothing (off). The tape is off from then
    /// on, for every holder.
    pub(super) fn finish(&self) -> Option<Recording> {
        match std::mem::take(&mut *self.lock()) {
            TapeState::Off => None,
            TapeState::Record(rec) => Some(rec.recording),
            TapeState::Replay(player) => Some(player.unrecorded),
        }
    }
}

impl Player {
    fn serve<T: Taped>(&mut self, call: &str, args: &[String]) -> Result<T, HostError> {
        let why = match &self.recorded {
            Err(why) => why.clone(),
            Ok(rec) => {
                let found = rec
                    .calls
                    .iter()
                    .enumerate()
                    .find(|(i, c)| !self.used[*i] && c.call == call && c.args == args);
                match found {
                    Some((i, c)) => {
                        self.used[i] = true;
                        return match &c.answer {
                            Answer::Ok(v) => T::from_json(v).ok_or_else(|| {
                                HostError::Unavailable(format!(
                                    "not recorded: the recorded answer of call {i} ({call}) does not fit its type"
                                ))
                            }),
                            Answer::Err(e) => Err(e.clone().into()),
                        };
                    }
                    None => match &rec.truncated {
                        Some(t) => format!(
                            "the recording was truncated from call {} on ({} bound of {} bytes)",
                            t.from_call, t.bound, t.max_bytes
                        ),
                        None => "the recorded delivery made no such call".into(),
                    },
                }
            }
        };
        self.unrecorded(call, args);
        Err(HostError::Unavailable(format!(
            "not recorded: {call}({}): {why}",
            args.join(", ")
        )))
    }

    /// List `call(args)` as unrecorded (up to [`MAX_UNRECORDED_LISTED`]).
    fn unrecorded(&mut self, call: &str, args: &[String]) {
        let u = &mut self.unrecorded;
        u.unrecorded_total += 1;
        if u.unrecorded.len() < MAX_UNRECORDED_LISTED {
            u.unrecorded.push(Unrecorded {
                call: call.to_owned(),
                args: args.to_vec(),
            });
        }
    }
}

/// The recordings of a logged delivery, by plugin, served to the plugin
/// calls of its replay (lent to them through `Services::replay`).
#[derive(Debug, Default)]
pub struct Replay {
    /// Per plugin name, the recordings of its calls in chain order (`Err`:
    /// why it has none).
    plugins: Mutex<HashMap<String, VecDeque<Result<Recording, String>>>>,
}

impl Replay {
    /// Serve `recordings` (plugin name, its recording or why there is
    /// none), in chain order.
    pub fn new(recordings: impl IntoIterator<Item = (String, Result<Recording, String>)>) -> Self {
        let mut plugins: HashMap<_, VecDeque<_>> = HashMap::new();
        for (name, rec) in recordings {
            plugins.entry(name).or_default().push_back(rec);
        }
        Replay {
            plugins: Mutex::new(plugins),
        }
    }

    /// The tape of the next call of `plugin`.
    pub(super) fn tape(&self, plugin: &str) -> Tape {
        let next = self
            .plugins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(plugin)
            .and_then(VecDeque::pop_front);
        let recorded = next.unwrap_or_else(|| {
            Err(format!(
                "plugin {plugin:?} has no entry in the recorded delivery's record"
            ))
        });
        let used = vec![false; recorded.as_ref().map_or(0, |r| r.calls.len())];
        Tape::new(TapeState::Replay(Player {
            recorded,
            used,
            unrecorded: Recording::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn calls_are_recorded_in_order_and_round_trip_as_json() {
        let tape = Tape::record();
        let answer = Some(crm::CrmAnswer {
            fields: vec![(s("tier"), s("gold"))],
            provenance: crm::Provenance::Stale,
            age_ms: 7,
            source: s("crm"),
        });
        tape.record_call("crm.lookup-email", vec![s("a@b.c")], &Ok(answer.clone()));
        tape.record_call::<Option<String>>(
            "kv.get",
            vec![s("k")],
            &Err(HostError::Unavailable(s("down"))),
        );
        let rec = tape.finish().unwrap();
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["calls"][0]["call"], "crm.lookup-email");
        assert_eq!(json["calls"][0]["ok"]["provenance"], "stale");
        assert_eq!(json["calls"][1]["err"]["kind"], "unavailable");
        let back: Recording = serde_json::from_value(json).unwrap();
        assert_eq!(back, rec);
        let replay = Replay::new([(s("p"), Ok(back))]);
        let tape = replay.tape("p");
        let served: Option<crm::CrmAnswer> = tape
            .serve("crm.lookup-email", &[s("a@b.c")])
            .unwrap()
            .unwrap();
        assert_eq!(served.map(|a| a.age_ms), answer.map(|a| a.age_ms));
    }

    #[test]
    fn the_kth_call_gets_the_kth_answer_and_an_unrecorded_one_is_unavailable() {
        let live = Tape::record();
        for v in ["one", "two"] {
            live.record_call("kv.get", vec![s("k")], &Ok(Some(s(v))));
        }
        let replay = Replay::new([(s("p"), Ok(live.finish().unwrap()))]);
        let tape = replay.tape("p");
        let get = |k: &str| tape.serve::<Option<String>>("kv.get", &[s(k)]).unwrap();
        assert_eq!(get("k").unwrap(), Some(s("one")));
        assert_eq!(get("k").unwrap(), Some(s("two")));
        assert!(matches!(get("k"), Err(HostError::Unavailable(m)) if m.contains("no such call")));
        assert!(
            matches!(get("other"), Err(HostError::Unavailable(m)) if m.starts_with("not recorded: kv.get(other)"))
        );
        let out = tape.finish().unwrap();
        assert_eq!(out.unrecorded_total, 2);
        assert_eq!(out.unrecorded[1].args, vec![s("other")]);
    }

    #[test]
    fn issue_12_the_per_call_bound_is_obeyed_then_marks_the_cut() {
        let tape = Tape::record();
        let value = "v".repeat(MAX_RECORDING_BYTES_PER_CALL / 4);
        for _ in 0..3 {
            tape.record_call("kv.get", vec![s("k")], &Ok(Some(value.clone())));
        }
        let rec = tape.finish().unwrap();
        assert_eq!(rec.calls.len(), 3, "three quarters fit whole");
        assert!(rec.truncated.is_none());
        assert!(json_len(&rec.calls) <= MAX_RECORDING_BYTES_PER_CALL);

        let tape = Tape::record();
        for _ in 0..6 {
            tape.record_call("kv.get", vec![s("k")], &Ok(Some(value.clone())));
        }
        let rec = tape.finish().unwrap();
        assert_eq!(rec.calls.len(), 3);
        let t = rec.truncated.clone().unwrap();
        assert_eq!(
            (t.from_call, t.left_out, t.bound.as_str()),
            (3, 3, "per call")
        );
        let replay = Replay::new([(s("p"), Ok(rec))]);
        let tape = replay.tape("p");
        for _ in 0..3 {
            assert!(tape
                .serve::<Option<String>>("kv.get", &[s("k")])
                .unwrap()
                .is_ok());
        }
        let fourth = tape.serve::<Option<String>>("kv.get", &[s("k")]).unwrap();
        assert!(
            matches!(&fourth, Err(HostError::Unavailable(m)) if m.contains("truncated from call 3 on")),
            "{fourth:?}"
        );
    }

    #[test]
    fn a_recording_limited_per_delivery_says_where() {
        let mut rec = Recording::default();
        for i in 0..4 {
            rec.calls.push(HostCall {
                call: s("config.get"),
                args: vec![format!("k{i}")],
                answer: Answer::Ok(Value::from("x".repeat(100))),
            });
        }
        let one = json_len(&rec.calls[0]);
        assert_eq!(rec.limit_to(2 * one + 1, "per delivery", 9999), 2 * one);
        let t = rec.truncated.unwrap();
        assert_eq!((t.from_call, t.left_out), (2, 2));
        assert_eq!(rec.calls.len(), 2);
    }

    #[test]
    fn a_plugin_without_a_recording_is_not_recorded_for_every_call() {
        let replay = Replay::new([(s("p"), Err(s("stored before recordings")))]);
        let tape = replay.tape("p");
        let e = tape
            .serve::<Option<String>>("config.get", &[s("k")])
            .unwrap();
        assert!(
            matches!(e, Err(HostError::Unavailable(m)) if m.contains("stored before recordings"))
        );
        let other = replay.tape("q");
        let e = other.serve::<Option<String>>("kv.get", &[s("k")]).unwrap();
        assert!(matches!(e, Err(HostError::Unavailable(m)) if m.contains("no entry")));
    }
}
