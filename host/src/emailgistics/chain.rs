//! Running a route's plugin chain for one delivery and merging the results.
//!
//! Plugins run one after another, in the configured order; each one's
//! actions are validated ([`super::validate`]) and appended in order, so
//! the envelope lists the first plugin's actions first. A plugin that fails
//! contributes nothing and the chain goes on. Everything that happened is
//! kept in [`PluginRecord`]s, which go into the delivery's
//! [`DeliveryRecord`](super::record::DeliveryRecord): the envelope's
//! `message` summarises them in one line, the record goes to the log.

use std::sync::Arc;
use std::time::Duration;

// Every deadline is on tokio's clock, so timers and deadlines agree (also
// under tokio's test clock).
use tokio::time::Instant;

use serde::Serialize;

use super::actions::Action;
use super::{convert, validate};
use crate::plugin::recording::Recording;
use crate::plugin::OnError;
use crate::plugin::{CallLimit, Failure, Plugin, PluginInfo, Services, Slot, WitDelivery};

/// Longest envelope `message`: it is shown in a single line in Emailgistics
/// Admin, and the full detail is in the log anyway.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// One entry of a route's chain.
#[derive(Clone)]
pub struct ChainEntry {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// Lower-cased mailboxes this entry is limited to; `None`: all.
    pub mailboxes: Option<Vec<String>>,
}

impl ChainEntry {
    fn applies_to(&self, mailbox: &str) -> bool {
        match &self.mailboxes {
            None => true,
            Some(list) => list.iter().any(|m| m.eq_ignore_ascii_case(mailbox.trim())),
        }
    }
}

/// How the delivery is to be answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// HTTP 200 with this envelope.
    Answer(Envelope),
    /// HTTP 503 so that Emailgistics retries: a plugin with
    /// `on_error = "retry"` failed. The reason is for the log.
    Retry(String),
}

/// The response envelope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// `success` or `error`.
    pub status: Status,
    /// One line saying what happened.
    pub message: String,
    /// Actions to apply, in order (left out when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

/// Envelope status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Emailgistics applies the actions.
    Success,
    /// Emailgistics ignores the actions and does not retry.
    Error,
}

impl Envelope {
    /// A success envelope with no actions, e.g. for ignored events.
    pub fn message_only(message: impl Into<String>) -> Self {
        Envelope {
            status: Status::Success,
            message: message.into(),
            actions: Vec::new(),
        }
    }
}

/// An action validation refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropped {
    /// Position in the plugin's output (0-based).
    pub index: usize,
    /// The action's `type`.
    #[serde(rename = "type")]
    pub action_type: &'static str,
    /// The action's `name`, if any.
    pub name: Option<String>,
    /// Why it was dropped.
    pub reason: String,
}

/// What became of one chain entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The plugin ran and its valid actions were merged.
    Applied,
    /// The plugin failed; its output was discarded.
    Failed,
    /// The plugin did not run (mailbox filter, no time left, or an earlier
    /// plugin's failure decided the answer).
    Skipped,
    /// The delivery's budget ran out while the plugin ran.
    OutOfTime,
}

/// The record of one plugin for one delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginRecord {
    /// Plugin name.
    pub plugin: String,
    /// What happened.
    pub outcome: Outcome,
    /// Wall time spent in the plugin, in microseconds.
    pub elapsed_us: u64,
    /// Actions merged into the envelope.
    pub actions: Vec<Action>,
    /// Actions validation dropped, with reasons.
    pub dropped: Vec<Dropped>,
    /// Adjustments validation made (truncations, normalisations).
    pub notes: Vec<String>,
    /// Why the plugin failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Why the plugin did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The plugin's own note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-call host budgets the plugin ran into (config keys such as
    /// `kv_write_bytes_per_call`); it got `over-limit` for each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits_hit: Vec<&'static str>,
    /// What the call used (fuel, peak memory, stdout/stderr bytes); absent
    /// when the plugin never ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::plugin::Usage>,
    /// The size of the actions it returned, as `max_output_bytes` counts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    /// Its outbound HTTP requests (capability `http`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<crate::plugin::http::HttpExchange>,
    /// The host calls the plugin made and their answers, bounded (see
    /// [`crate::plugin::recording`]); in a replay, the calls its recording
    /// could not answer. Absent when the plugin did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_calls: Option<Recording>,
}

impl PluginRecord {
    pub(crate) fn new(plugin: &str, outcome: Outcome) -> Self {
        PluginRecord {
            plugin: plugin.to_owned(),
            outcome,
            elapsed_us: 0,
            actions: Vec::new(),
            dropped: Vec::new(),
            notes: Vec::new(),
            failure: None,
            skipped: None,
            message: None,
            limits_hit: Vec::new(),
            usage: None,
            output_bytes: None,
            http: Vec::new(),
            host_calls: None,
        }
    }
}

/// Why a chain entry did not run.
const SKIP_MAILBOX: &str = "mailbox not in this entry's filter";
const SKIP_NO_TIME: &str = "delivery budget exhausted before it could run";
const SKIP_DECIDED: &str = "an earlier plugin's failure policy decided the answer";

/// Run `chain` for one delivery that arrived at `arrived`, within `budget`.
/// Each plugin gets min(its timeout, what is left of the budget).
pub async fn run(
    chain: &[ChainEntry],
    delivery: &WitDelivery,
    services: &Services,
    arrived: Instant,
    budget: Duration,
) -> (Verdict, Vec<PluginRecord>) {
    let budget_end = arrived + budget;
    // The plugins run one at a time: one instance slot serves the whole
    // chain. It is waited for here, on the async worker (a delivery queued
    // for one holds no thread), within the first plugin's time limit; then
    // the chain is handed off the async workers once for all its plugins,
    // not once per plugin.
    let started = Instant::now();
    let slot = match chain.iter().find(|e| e.applies_to(&delivery.mailbox)) {
        Some(first) if started < budget_end => Some(
            first
                .plugin
                .reserve_slot(call_limit(first, started, budget_end))
                .await,
        ),
        _ => None,
    };
    // No plugin runs without a slot (an empty chain, none for this mailbox,
    // no time, or busy): then there is nothing to hand off.
    let runs_plugins = matches!(slot, Some(Ok(_)));
    let entries = run_entries(chain, delivery, services, budget_end, slot, started);
    if runs_plugins {
        crate::plugin::off_the_workers(entries).await
    } else {
        entries.await
    }
}

/// The time limit of a call of `entry` that starts at `started`.
fn call_limit(entry: &ChainEntry, started: Instant, budget_end: Instant) -> CallLimit {
    let own_end = started + entry.plugin.info().timeout;
    CallLimit {
        deadline: own_end.min(budget_end),
        budget_bound: budget_end < own_end,
    }
}

/// Every entry of `chain` in turn, in `slot` (none when no entry runs;
/// `Busy` when none became free); the first entry that runs started
/// waiting for it at `first_started`.
async fn run_entries(
    chain: &[ChainEntry],
    delivery: &WitDelivery,
    services: &Services,
    budget_end: Instant,
    slot: Option<Result<Slot, Failure>>,
    first_started: Instant,
) -> (Verdict, Vec<PluginRecord>) {
    let mut first_started = Some(first_started);
    let mut records = Vec::with_capacity(chain.len());
    let mut decided: Option<Verdict> = None;
    for entry in chain {
        let info = entry.plugin.info();
        let skip = if decided.is_some() {
            Some(SKIP_DECIDED)
        } else if !entry.applies_to(&delivery.mailbox) {
            Some(SKIP_MAILBOX)
        // A chain that found no slot says so (503), even when its wait
        // took the budget.
        } else if Instant::now() >= budget_end && !matches!(slot, Some(Err(_))) {
            Some(SKIP_NO_TIME)
        } else {
            None
        };
        if let Some(reason) = skip {
            let mut r = PluginRecord::new(&info.name, Outcome::Skipped);
            r.skipped = Some(reason.into());
            records.push(r);
            continue;
        }
        // The first plugin's time includes its wait for the slot.
        let started = first_started.take().unwrap_or_else(Instant::now);
        let limit = call_limit(entry, started, budget_end);
        let crate::plugin::Called {
            result: called,
            limits_hit,
            usage,
            http,
            host_calls,
        } = match &slot {
            Some(Ok(slot)) => {
                entry
                    .plugin
                    .call_in_slot(slot, delivery, services, limit, convert::output)
                    .await
            }
            Some(Err(busy)) => crate::plugin::Called {
                result: Err(busy.clone()),
                limits_hit: Vec::new(),
                usage: Default::default(),
                http: Vec::new(),
                host_calls: None,
            },
            // Not reached: an entry runs, so a slot was reserved.
            None => {
                entry
                    .plugin
                    .call_reporting(delivery, services, limit, convert::output)
                    .await
            }
        };
        let ran = !matches!(called, Err(Failure::Busy(_) | Failure::Quarantined(_)));
        let mut r = settle(info, called, limit, started, &mut decided);
        r.elapsed_us = started.elapsed().as_micros() as u64;
        r.limits_hit = limits_hit;
        r.usage = ran.then_some(usage);
        r.http = http;
        r.host_calls = host_calls;
        records.push(r);
    }
    let verdict = decided.unwrap_or_else(|| {
        Verdict::Answer(Envelope {
            status: Status::Success,
            message: summarize(&records),
            actions: records.iter().flat_map(|r| r.actions.clone()).collect(),
        })
    });
    (verdict, records)
}

/// The record of a plugin's call that started at `started` under `limit`,
/// its output validated; a failure that decides the delivery's answer is
/// put in `decided`.
fn settle(
    info: &PluginInfo,
    called: Result<convert::Output, Failure>,
    limit: CallLimit,
    started: Instant,
    decided: &mut Option<Verdict>,
) -> PluginRecord {
    // Validating the output is the plugin's time too: an output that
    // takes past the deadline to check counts as the plugin's overrun.
    let caps = validate::Caps::from(&info.limits);
    let merged = called
        .map(|output| merge_output(&info.name, output, &caps))
        .and_then(|r| match overrun(limit, started) {
            Some(failure) => Err(failure),
            None => Ok(r),
        });
    let failure = match merged {
        Ok(r) => return r,
        Err(failure) => failure,
    };
    let out_of_time = matches!(failure, Failure::OutOfTime(_));
    let mut r = PluginRecord::new(
        &info.name,
        if out_of_time {
            Outcome::OutOfTime
        } else {
            Outcome::Failed
        },
    );
    // Running out of the delivery's time is not the plugin's
    // failure: the answer carries what was merged so far.
    if matches!(failure, Failure::Busy(_)) {
        // The host was saturated and the plugin never ran:
        // whatever its policy, the sender retries (503).
        *decided = Some(Verdict::Retry(format!(
            "plugin {} could not run ({}): {failure}",
            info.name,
            failure.kind()
        )));
    } else if !out_of_time {
        *decided = policy_verdict(info.on_error, &info.name, &failure);
    }
    r.failure = Some(failure);
    r
}

/// The failure of a call whose output was checked after `limit.deadline`:
/// the plugin's timeout, or the delivery's budget when that was the bound.
fn overrun(limit: CallLimit, started: Instant) -> Option<Failure> {
    let now = Instant::now();
    (now > limit.deadline).then(|| limit.overrun(started, now))
}

/// What a failure means for the delivery under the plugin's policy; `None`
/// when the chain goes on.
fn policy_verdict(policy: OnError, plugin: &str, failure: &Failure) -> Option<Verdict> {
    let reason = format!("plugin {plugin} failed ({}): {failure}", failure.kind());
    match policy {
        OnError::Skip => None,
        OnError::Error => Some(Verdict::Answer(Envelope {
            status: Status::Error,
            message: bounded(reason),
            actions: Vec::new(),
        })),
        // The reason becomes the 503 body and a log line: bounded like the
        // envelope message.
        OnError::Retry => Some(Verdict::Retry(bounded(reason))),
    }
}

/// Validate a plugin's output into its record, under the plugin's caps.
fn merge_output(plugin: &str, output: convert::Output, caps: &validate::Caps) -> PluginRecord {
    let mut r = PluginRecord::new(plugin, Outcome::Applied);
    r.message = output.message;
    r.output_bytes = Some(output.bytes);
    for (index, action) in output.actions.into_iter().enumerate() {
        let action_type = action.kind.type_name();
        // The label of a dropped action may be what was over the cap.
        let name = action.name.as_deref().map(|n| {
            crate::text::cut(
                n,
                caps.max_name_bytes,
                "max_name_bytes",
                caps.max_name_bytes,
            )
        });
        match validate::check(action, caps) {
            Ok(checked) => {
                r.notes.extend(
                    checked
                        .notes
                        .into_iter()
                        .map(|n| format!("action {index} ({action_type}): {n}")),
                );
                r.actions.push(checked.action);
            }
            Err(rejected) => r.dropped.push(Dropped {
                index,
                action_type,
                name,
                reason: rejected.to_string(),
            }),
        }
    }
    r
}

/// The envelope message: one line naming what each plugin contributed and
/// which plugins failed, were quarantined (bypassed by their circuit
/// breaker: `quarantined: <plugin>`, apart from `failed:`) or ran out of
/// time.
pub fn summarize(records: &[PluginRecord]) -> String {
    let applied: Vec<String> = records
        .iter()
        .filter(|r| !r.actions.is_empty())
        .map(|r| format!("{} ({})", r.plugin, r.actions.len()))
        .collect();
    let total: usize = records.iter().map(|r| r.actions.len()).sum();
    let mut parts = vec![if total == 0 {
        "no actions".to_owned()
    } else {
        format!(
            "{total} action{} from {}",
            if total == 1 { "" } else { "s" },
            applied.join(", ")
        )
    }];
    let dropped: usize = records.iter().map(|r| r.dropped.len()).sum();
    if dropped > 0 {
        parts.push(format!("{dropped} invalid dropped"));
    }
    let failed: Vec<String> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .filter_map(|r| {
            r.failure
                .as_ref()
                .filter(|f| !matches!(f, Failure::Quarantined(_)))
                .map(|f| format!("{} ({})", r.plugin, f.kind()))
        })
        .collect();
    if !failed.is_empty() {
        parts.push(format!("failed: {}", failed.join(", ")));
    }
    // Named apart from `failed`: these plugins did not run at all, their
    // circuit breaker is open after earlier failures.
    let quarantined: Vec<&str> = records
        .iter()
        .filter(|r| matches!(r.failure, Some(Failure::Quarantined(_))))
        .map(|r| r.plugin.as_str())
        .collect();
    if !quarantined.is_empty() {
        parts.push(format!("quarantined: {}", quarantined.join(", ")));
    }
    let cut: Vec<&str> = records
        .iter()
        .filter(|r| r.outcome == Outcome::OutOfTime)
        .map(|r| r.plugin.as_str())
        .collect();
    if !cut.is_empty() {
        parts.push(format!("out of time in: {}", cut.join(", ")));
    }
    let late: Vec<&str> = records
        .iter()
        .filter(|r| r.skipped.as_deref() == Some(SKIP_NO_TIME))
        .map(|r| r.plugin.as_str())
        .collect();
    if !late.is_empty() {
        parts.push(format!("not run, out of time: {}", late.join(", ")));
    }
    bounded(parts.join("; "))
}

/// Cut a message to [`MAX_MESSAGE_CHARS`].
fn bounded(line: String) -> String {
    match line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emailgistics::actions::{ActionKind, Tag};

    fn record(plugin: &str, actions: usize) -> PluginRecord {
        let mut r = PluginRecord::new(plugin, Outcome::Applied);
        r.actions = (0..actions)
            .map(|i| Action {
                name: None,
                kind: ActionKind::Tag(Tag {
                    tags: vec![format!("t{i}")],
                }),
            })
            .collect();
        r
    }

    #[test]
    fn summary_names_contributions_drops_and_failures() {
        let mut failed = PluginRecord::new("flaky", Outcome::Failed);
        failed.failure = Some(Failure::Trap("unreachable".into()));
        let mut with_drop = record("b", 1);
        with_drop.dropped.push(Dropped {
            index: 1,
            action_type: "tag",
            name: None,
            reason: "tag.tags: empty".into(),
        });
        let line = summarize(&[record("a", 2), failed, with_drop]);
        assert_eq!(
            line,
            "3 actions from a (2), b (1); 1 invalid dropped; failed: flaky (trap)"
        );
        assert_eq!(summarize(&[record("a", 0)]), "no actions");
        assert_eq!(summarize(&[record("a", 1)]), "1 action from a (1)");
    }

    #[test]
    fn summary_names_plugins_cut_or_skipped_by_the_budget() {
        let mut cut = PluginRecord::new("slow", Outcome::OutOfTime);
        cut.failure = Some(Failure::OutOfTime(1000));
        let mut late = PluginRecord::new("later", Outcome::Skipped);
        late.skipped = Some(SKIP_NO_TIME.into());
        assert_eq!(
            summarize(&[record("a", 1), cut, late]),
            "1 action from a (1); out of time in: slow; not run, out of time: later"
        );
    }

    #[test]
    fn summary_names_quarantined_plugins_apart_from_failed_ones() {
        let mut failed = PluginRecord::new("flaky", Outcome::Failed);
        failed.failure = Some(Failure::Trap("unreachable".into()));
        let mut bypassed = PluginRecord::new("sick", Outcome::Failed);
        bypassed.failure = Some(Failure::Quarantined(1200));
        assert_eq!(
            summarize(&[record("a", 1), failed, bypassed.clone()]),
            "1 action from a (1); failed: flaky (trap); quarantined: sick"
        );
        assert_eq!(
            summarize(&[record("a", 1), bypassed]),
            "1 action from a (1); quarantined: sick"
        );
    }

    #[test]
    fn quarantine_follows_the_plugins_failure_policy() {
        let f = Failure::Quarantined(1200);
        assert_eq!(policy_verdict(OnError::Skip, "p", &f), None);
        assert!(matches!(
            policy_verdict(OnError::Error, "p", &f),
            Some(Verdict::Answer(Envelope { status: Status::Error, message, .. }))
                if message == "plugin p failed (quarantined): quarantined after repeated failures; 1200 ms of cool-down left"
        ));
        assert!(matches!(
            policy_verdict(OnError::Retry, "p", &f),
            Some(Verdict::Retry(r)) if r.starts_with("plugin p failed (quarantined)")
        ));
    }

    #[test]
    fn policies_decide_the_answer() {
        let f = Failure::Trap("unreachable".into());
        assert_eq!(policy_verdict(OnError::Skip, "p", &f), None);
        match policy_verdict(OnError::Error, "p", &f) {
            Some(Verdict::Answer(env)) => {
                assert_eq!(env.status, Status::Error);
                assert_eq!(env.message, "plugin p failed (trap): trap: unreachable");
                assert!(env.actions.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(policy_verdict(OnError::Retry, "p", &f), Some(Verdict::Retry(r)) if r.contains("plugin p failed (trap)"))
        );
    }

    #[test]
    fn an_output_checked_past_the_deadline_is_the_plugins_overrun() {
        let started = Instant::now() - Duration::from_millis(30);
        let limit = |deadline, budget_bound| CallLimit {
            deadline,
            budget_bound,
        };
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(overrun(limit(later, false), started), None);
        let past = Instant::now() - Duration::from_millis(10);
        assert!(matches!(
            overrun(limit(past, false), started),
            Some(Failure::Timeout(ms)) if ms >= 30
        ));
        assert!(matches!(
            overrun(limit(past, true), started),
            Some(Failure::OutOfTime(_))
        ));
    }

    #[test]
    fn the_retry_reason_is_bounded() {
        let f = Failure::Guest("x".repeat(100_000));
        match policy_verdict(OnError::Retry, "p", &f) {
            Some(Verdict::Retry(reason)) => {
                assert_eq!(reason.chars().count(), MAX_MESSAGE_CHARS + 1);
                assert!(reason.starts_with("plugin p failed (guest error)"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dropped_actions_long_label_is_cut_in_the_record() {
        let output = convert::Output {
            actions: vec![Action {
                name: Some("n".repeat(10_000)),
                kind: ActionKind::Tag(Tag { tags: vec![] }),
            }],
            message: None,
            bytes: 0,
        };
        let r = merge_output("p", output, &validate::Caps::default());
        let name = r.dropped[0].name.as_deref().unwrap();
        assert!(
            name.len() <= crate::plugin::policy::DEFAULT_MAX_NAME_BYTES,
            "{name}"
        );
        assert!(name.ends_with("(10000 bytes, cut at max_name_bytes = 256)"));
        assert!(r.dropped[0]
            .reason
            .starts_with("name: 10000 bytes, more than max_name_bytes"));
    }

    #[test]
    fn summary_is_one_bounded_line() {
        let many: Vec<PluginRecord> = (0..200)
            .map(|i| record(&format!("plugin-{i}"), 1))
            .collect();
        let line = summarize(&many);
        assert_eq!(line.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(line.ends_with('…') && !line.contains('\n'));
    }

    #[test]
    fn mailbox_filter_ignores_case_and_absence_means_all() {
        let filter =
            |m: Option<Vec<&str>>| m.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
        let applies = |mailboxes: Option<Vec<String>>, mailbox: &str| match &mailboxes {
            None => true,
            Some(list) => list.iter().any(|m| m.eq_ignore_ascii_case(mailbox.trim())),
        };
        assert!(applies(filter(None), "x@y.com"));
        assert!(applies(filter(Some(vec!["claims@y.com"])), "Claims@Y.com"));
        assert!(!applies(filter(Some(vec!["claims@y.com"])), "info@y.com"));
    }
}
