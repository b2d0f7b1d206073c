//! The tracker's decisions that need no host: folding an event into a
//! recipient's state, and the state's JSON.
//!
//! [`apply`] folds one event into a recipient's [`State`]; [`decode`] and
//! [`encode`] turn the state into the JSON stored in kv and back.

use serde::{Deserialize, Serialize};

/// How many dedupe ids a state keeps (the most recent ones).
pub const SEEN_LIMIT: usize = 64;

/// The host's limit on a kv value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// What the tracker knows about one address. Stored as camelCase JSON; the
/// `engagement-enrich` plugin reads it, so the field names are a contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct State {
    /// Hard bounces (`invalid-email`).
    pub hard_bounces: u64,
    /// Soft bounces (`soft-bounce`).
    pub soft_bounces: u64,
    /// Whether the recipient unsubscribed.
    pub unsubscribed: bool,
    /// Spam reports (`report-spam`).
    pub spam_reports: u64,
    /// Latest `open`, unix ms.
    pub last_open: Option<i64>,
    /// Latest `click`, unix ms.
    pub last_click: Option<i64>,
    /// Latest `route` (a reply from this address), unix ms.
    pub last_reply: Option<i64>,
    /// Latest `delivered`, unix ms.
    pub last_delivered: Option<i64>,
    /// Latest event of any kind, unix ms (0 before the first).
    pub last_event: i64,
    /// The reason given for the latest bounce.
    pub last_bounce_reason: Option<String>,
    /// Dedupe ids of the last [`SEEN_LIMIT`] events applied, oldest first.
    pub seen: Vec<String>,
}

/// The WIT `event-kind`.
pub use enrichd_pdk::EventKind as Kind;

/// The parts of an `engagelab-event` the tracker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The kind.
    pub kind: Kind,
    /// The kind as EngageLab wrote it.
    pub kind_name: String,
    /// EngageLab's message id.
    pub message_id: String,
    /// When the event happened, unix ms.
    pub itime: i64,
    /// `sub_stat_desc`.
    pub sub_stat_desc: Option<String>,
    /// EngageLab's message.
    pub message: Option<String>,
}

impl Event {
    /// `<kind-name>:<message-id>:<itime>`: the same callback delivered twice
    /// has the same id, two different events practically never do.
    pub fn dedupe_id(&self) -> String {
        format!("{}:{}:{}", self.kind_name, self.message_id, self.itime)
    }

    /// The bounce reason: `sub-stat-desc`, else `message` (non-blank).
    fn reason(&self) -> Option<String> {
        [&self.sub_stat_desc, &self.message]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was already applied: nothing to write.
    Duplicate,
    /// The new state, to store.
    Updated(State),
}

/// `max(existing, itime)`, treating "none" as older than anything.
fn latest(existing: Option<i64>, itime: i64) -> Option<i64> {
    Some(existing.map_or(itime, |e| e.max(itime)))
}

/// Folds `event` into `state`. Timestamps only move forward (events may
/// arrive out of order); counters count each distinct event once.
pub fn apply(state: &State, event: &Event) -> Applied {
    let id = event.dedupe_id();
    if state.seen.contains(&id) {
        return Applied::Duplicate;
    }
    let mut next = state.clone();
    let t = event.itime;
    match event.kind {
        Kind::InvalidEmail | Kind::SoftBounce => {
            if event.kind == Kind::InvalidEmail {
                next.hard_bounces += 1;
            } else {
                next.soft_bounces += 1;
            }
            // Without a stored bounce time, "latest" is approximated: a bounce
            // older than what we already know does not replace a known reason.
            if let Some(reason) = event.reason() {
                if state.last_bounce_reason.is_none() || t >= state.last_event {
                    next.last_bounce_reason = Some(reason);
                }
            }
        }
        Kind::Unsubscribe => next.unsubscribed = true,
        Kind::ReportSpam => next.spam_reports += 1,
        Kind::Open => next.last_open = latest(state.last_open, t),
        Kind::Click => next.last_click = latest(state.last_click, t),
        Kind::Route => next.last_reply = latest(state.last_reply, t),
        Kind::Delivered => next.last_delivered = latest(state.last_delivered, t),
        Kind::Target | Kind::Sent | Kind::Other => {}
    }
    next.last_event = state.last_event.max(t);
    next.seen.push(id);
    if next.seen.len() > SEEN_LIMIT {
        let excess = next.seen.len() - SEEN_LIMIT;
        next.seen.drain(..excess);
    }
    Applied::Updated(next)
}

/// Parses a stored state (missing fields take their defaults).
pub fn decode(json: &str) -> Result<State, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// The JSON to store. Should huge message ids push it over the host's value
/// limit, the oldest dedupe ids are dropped until it fits: losing old ids
/// only weakens dedupe of very late redeliveries, losing the write loses data.
pub fn encode(state: &State) -> String {
    let mut state = state.clone();
    loop {
        let json = serde_json::to_string(&state).expect("a State always serializes");
        if json.len() <= MAX_VALUE_BYTES || state.seen.is_empty() {
            return json;
        }
        let drop = (state.seen.len() / 4).max(1);
        state.seen.drain(..drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, name: &str, msg: &str, itime: i64) -> Event {
        Event {
            kind,
            kind_name: name.to_string(),
            message_id: msg.to_string(),
            itime,
            sub_stat_desc: None,
            message: None,
        }
    }

    fn updated(state: &State, e: &Event) -> State {
        match apply(state, e) {
            Applied::Updated(s) => s,
            Applied::Duplicate => panic!("unexpected duplicate: {e:?}"),
        }
    }

    #[test]
    fn fresh_state_serializes_to_the_documented_schema() {
        let json = encode(&State::default());
        assert_eq!(
            json,
            r#"{"hardBounces":0,"softBounces":0,"unsubscribed":false,"spamReports":0,"lastOpen":null,"lastClick":null,"lastReply":null,"lastDelivered":null,"lastEvent":0,"lastBounceReason":null,"seen":[]}"#
        );
        assert_eq!(decode(&json).unwrap(), State::default());
        assert_eq!(decode("{}").unwrap(), State::default());
        assert!(decode("not json").is_err());
    }

    #[test]
    fn each_kind_updates_its_field() {
        let s0 = State::default();
        let s = updated(&s0, &event(Kind::InvalidEmail, "invalid_email", "m", 10));
        assert_eq!((s.hard_bounces, s.last_event), (1, 10));
        let s = updated(&s0, &event(Kind::SoftBounce, "soft_bounce", "m", 11));
        assert_eq!(s.soft_bounces, 1);
        let s = updated(&s0, &event(Kind::Unsubscribe, "unsubscribe", "m", 12));
        assert!(s.unsubscribed);
        let s = updated(&s0, &event(Kind::ReportSpam, "report_spam", "m", 13));
        assert_eq!(s.spam_reports, 1);
        let s = updated(&s0, &event(Kind::Open, "open", "m", 14));
        assert_eq!(s.last_open, Some(14));
        let s = updated(&s0, &event(Kind::Click, "click", "m", 15));
        assert_eq!(s.last_click, Some(15));
        let s = updated(&s0, &event(Kind::Route, "route", "m", 16));
        assert_eq!(s.last_reply, Some(16));
        let s = updated(&s0, &event(Kind::Delivered, "delivered", "m", 17));
        assert_eq!(s.last_delivered, Some(17));
        for (kind, name) in [
            (Kind::Target, "target"),
            (Kind::Sent, "sent"),
            (Kind::Other, "newfangled"),
        ] {
            let s = updated(&s0, &event(kind, name, "m", 18));
            let want = State {
                last_event: 18,
                seen: vec![format!("{name}:m:18")],
                ..State::default()
            };
            assert_eq!(s, want);
        }
    }

    #[test]
    fn a_redelivered_event_changes_nothing() {
        let e = event(Kind::InvalidEmail, "invalid_email", "m1", 100);
        let s = updated(&State::default(), &e);
        assert_eq!(s.seen, vec!["invalid_email:m1:100".to_string()]);
        assert_eq!(apply(&s, &e), Applied::Duplicate);
        // The same kind for another message, or at another time, is new.
        let s = updated(&s, &event(Kind::InvalidEmail, "invalid_email", "m2", 100));
        let s = updated(&s, &event(Kind::InvalidEmail, "invalid_email", "m1", 101));
        assert_eq!(s.hard_bounces, 3);
    }

    #[test]
    fn timestamps_only_move_forward() {
        let s = updated(&State::default(), &event(Kind::Open, "open", "a", 500));
        let s = updated(&s, &event(Kind::Open, "open", "b", 300));
        assert_eq!((s.last_open, s.last_event), (Some(500), 500));
        let s = updated(&s, &event(Kind::Click, "click", "c", 200));
        assert_eq!((s.last_click, s.last_event), (Some(200), 500));
        let s = updated(&s, &event(Kind::Open, "open", "d", 900));
        assert_eq!((s.last_open, s.last_event), (Some(900), 900));
    }

    #[test]
    fn bounce_reason_prefers_sub_stat_desc_and_the_latest_bounce() {
        let mut e = event(Kind::SoftBounce, "soft_bounce", "a", 100);
        e.message = Some("mailbox full".to_string());
        let s = updated(&State::default(), &e);
        assert_eq!(s.last_bounce_reason.as_deref(), Some("mailbox full"));

        let mut e = event(Kind::InvalidEmail, "invalid_email", "b", 200);
        e.sub_stat_desc = Some("user unknown".to_string());
        e.message = Some("550 5.1.1".to_string());
        let s = updated(&s, &e);
        assert_eq!(s.last_bounce_reason.as_deref(), Some("user unknown"));

        // An older bounce arriving late keeps the newer reason.
        let mut e = event(Kind::SoftBounce, "soft_bounce", "c", 150);
        e.message = Some("greylisted".to_string());
        let s = updated(&s, &e);
        assert_eq!(s.last_bounce_reason.as_deref(), Some("user unknown"));
        assert_eq!(s.soft_bounces, 2);

        // A bounce without any reason keeps the previous one.
        let s = updated(&s, &event(Kind::SoftBounce, "soft_bounce", "d", 300));
        assert_eq!(s.last_bounce_reason.as_deref(), Some("user unknown"));
    }

    #[test]
    fn seen_keeps_the_last_64_ids() {
        let mut s = State::default();
        for i in 0..70 {
            s = updated(&s, &event(Kind::Sent, "sent", &format!("m{i}"), i));
        }
        assert_eq!(s.seen.len(), SEEN_LIMIT);
        assert_eq!(s.seen[0], "sent:m6:6");
        assert_eq!(s.seen[63], "sent:m69:69");
        // An id that fell out of the window is applied again (by design).
        assert!(matches!(
            apply(&s, &event(Kind::Sent, "sent", "m0", 0)),
            Applied::Updated(_)
        ));
        assert_eq!(
            apply(&s, &event(Kind::Sent, "sent", "m69", 69)),
            Applied::Duplicate
        );
    }

    #[test]
    fn encode_stays_under_the_value_limit() {
        let mut s = State::default();
        let long = "x".repeat(4000);
        for i in 0..SEEN_LIMIT {
            s = updated(&s, &event(Kind::Sent, "sent", &format!("{long}{i}"), 1));
        }
        let json = encode(&s);
        assert!(json.len() <= MAX_VALUE_BYTES);
        let back = decode(&json).unwrap();
        assert!(!back.seen.is_empty());
        assert_eq!(back.seen.last(), s.seen.last());
    }
}
