//! Running a route's plugin chain for one delivery and merging the results.
//!
//! Plugins run one after another, in the configured order; each one's
//! actions are validated ([`crate::validate`]) and appended in order, so the
//! envelope lists the first plugin's actions first. A plugin that fails
//! contributes nothing and the chain goes on. Everything that happened is
//! kept in a [`DeliveryRecord`]: the envelope's `message` summarises it in
//! one line, the record itself goes to the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actions::Action;
use crate::plugin::{Failure, Plugin, Services, WitDelivery};
use crate::validate;

/// The whole time enrichd allows itself per delivery. Emailgistics gives up
/// after 100 s; answering at 90 s at the latest leaves room for the network
/// and for a slow TLS terminator in front of enrichd.
pub const DEFAULT_DELIVERY_BUDGET: Duration = Duration::from_secs(90);

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
    /// The plugin did not run (mailbox filter, or no time left).
    Skipped,
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
}

impl PluginRecord {
    fn new(plugin: &str, outcome: Outcome) -> Self {
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
        }
    }
}

/// Run `chain` for one delivery that arrived at `arrived`, within `budget`.
pub async fn run(
    chain: &[ChainEntry],
    delivery: &WitDelivery,
    services: &Services,
    arrived: Instant,
    budget: Duration,
) -> (Envelope, Vec<PluginRecord>) {
    let mut records = Vec::with_capacity(chain.len());
    for entry in chain {
        let info = entry.plugin.info();
        if !entry.applies_to(&delivery.mailbox) {
            let mut r = PluginRecord::new(&info.name, Outcome::Skipped);
            r.skipped = Some("mailbox not in this entry's filter".into());
            records.push(r);
            continue;
        }
        let left = budget.saturating_sub(arrived.elapsed());
        if left.is_zero() {
            let mut r = PluginRecord::new(&info.name, Outcome::Skipped);
            r.skipped = Some("delivery budget exhausted".into());
            records.push(r);
            continue;
        }
        let started = Instant::now();
        let result = entry
            .plugin
            .call(delivery, services, info.timeout.min(left))
            .await;
        let mut r = match result {
            Ok(output) => merge_output(&info.name, output),
            Err(failure) => {
                let mut r = PluginRecord::new(&info.name, Outcome::Failed);
                r.failure = Some(failure);
                r
            }
        };
        r.elapsed_us = started.elapsed().as_micros() as u64;
        records.push(r);
    }
    let envelope = Envelope {
        status: Status::Success,
        message: summarize(&records),
        actions: records.iter().flat_map(|r| r.actions.clone()).collect(),
    };
    (envelope, records)
}

/// Validate a plugin's output into its record.
fn merge_output(plugin: &str, output: crate::plugin::Output) -> PluginRecord {
    let mut r = PluginRecord::new(plugin, Outcome::Applied);
    r.message = output.message;
    for (index, action) in output.actions.into_iter().enumerate() {
        let (action_type, name) = (action.kind.type_name(), action.name.clone());
        match validate::check(action) {
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
/// which plugins failed or ran out of time.
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
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{} ({})", r.plugin, f.kind()))
        })
        .collect();
    if !failed.is_empty() {
        parts.push(format!("failed: {}", failed.join(", ")));
    }
    let late: Vec<&str> = records
        .iter()
        .filter(|r| r.skipped.as_deref() == Some("delivery budget exhausted"))
        .map(|r| r.plugin.as_str())
        .collect();
    if !late.is_empty() {
        parts.push(format!("not run, out of time: {}", late.join(", ")));
    }
    let line = parts.join("; ");
    match line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::{ActionKind, Tag};

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
