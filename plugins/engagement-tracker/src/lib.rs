//! # engagement-tracker
//!
//! An enrichd event plugin (world `event-plugin`): it records, per recipient
//! address, what EngageLab reports about the mail a customer sent — bounces,
//! unsubscribes, spam reports, opens, clicks, replies — so that the
//! `engagement-enrich` delivery plugin can flag the sender of an incoming
//! Emailgistics message.
//!
//! ## Storage
//!
//! In its own kv namespace, key = the event's `address` (the host lower-cases
//! it), value = JSON:
//!
//! ```json
//! {"hardBounces": 0, "softBounces": 0, "unsubscribed": false, "spamReports": 0,
//!  "lastOpen": null, "lastClick": null, "lastReply": null, "lastDelivered": null,
//!  "lastEvent": 0, "lastBounceReason": null, "seen": ["<dedupe ids>"]}
//! ```
//!
//! `last*` are EngageLab `itime`s (unix ms) and only move forward. Mapping:
//! `invalid-email` → `hardBounces`+1, `soft-bounce` → `softBounces`+1 (both
//! set `lastBounceReason` from `sub-stat-desc`, else `message`),
//! `unsubscribe` → `unsubscribed`, `report-spam` → `spamReports`+1,
//! `open`/`click`/`route`/`delivered` → `lastOpen`/`lastClick`/`lastReply`/
//! `lastDelivered`; every event → `lastEvent`.
//!
//! Events arrive at least once, so `seen` keeps the ids
//! (`<kind-name>:<message-id>:<itime>`) of the last 64 events applied; an
//! event whose id is there changes nothing and nothing is written.
//! Events with an empty address are skipped (`Ok`).
//!
//! ## Capabilities
//!
//! - `kv` (required): `denied` / `unavailable` →
//!   `plugin-error::dependency("engagement-tracker: kv <op> of <address> failed: <kind>: <reason>")`;
//!   `invalid` → `internal(…)` with the same text.
//! - `log` (optional): one debug line per event; log errors are ignored.
//! - `config`, `crm`: not used. There are no config keys.
//!
//! A stored value that is not valid JSON is an `internal` error (the event is
//! not applied, so the stored data is never overwritten).
//!
//! Built on `enrichd-pdk`: [`EngagementTracker`] is an [`Events`] handler
//! written against the [`Host`] trait and unit-tested below with
//! `FakeHost`; the state and its JSON live in [`logic`].

pub mod logic;

use enrichd_pdk::{EngagelabEvent, Events, Failure, Host, HostFailure};
use logic::{Applied, Event};

/// The plugin; exported as the `events` interface.
pub struct EngagementTracker;

impl Events for EngagementTracker {
    fn handle_event(host: &impl Host, event: EngagelabEvent) -> Result<(), Failure> {
        let address = event.address.clone();
        if address.is_empty() {
            host.debug(&format!("skipped {}: no address", event.kind_name));
            return Ok(());
        }
        let event = Event {
            kind: event.kind,
            kind_name: event.kind_name,
            message_id: event.message_id,
            itime: event.itime,
            sub_stat_desc: event.sub_stat_desc,
            message: event.message,
        };
        let state = match host
            .kv_get(&address)
            .map_err(|e| kv_error("get", &address, e))?
        {
            Some(json) => logic::decode(&json).map_err(|e| {
                Failure::Internal(format!(
                    "engagement-tracker: stored state of {address} is not valid JSON: {e}"
                ))
            })?,
            None => logic::State::default(),
        };
        match logic::apply(&state, &event) {
            Applied::Duplicate => {
                host.debug(&format!(
                    "{} for {address}: already seen",
                    event.dedupe_id()
                ));
                Ok(())
            }
            Applied::Updated(next) => {
                host.kv_set(&address, &logic::encode(&next))
                    .map_err(|e| kv_error("set", &address, e))?;
                host.debug(&format!("{} for {address}: recorded", event.dedupe_id()));
                Ok(())
            }
        }
    }
}

/// A failed kv call: the store being denied or down is a dependency failure
/// (worth retrying later); a rejected request is a bug here.
fn kv_error(op: &str, address: &str, e: HostFailure) -> Failure {
    let text = format!("engagement-tracker: kv {op} of {address} failed: {e}");
    match e {
        // A full namespace is the operator's to fix (quota), like a store
        // that is down: a dependency failure, worth retrying later.
        HostFailure::Denied(_) | HostFailure::Unavailable(_) | HostFailure::OverLimit(_) => {
            Failure::Dependency(text)
        }
        HostFailure::Invalid(_) => Failure::Internal(text),
    }
}

enrichd_pdk::export_events!(EngagementTracker);

#[cfg(test)]
mod tests {
    use super::*;
    use enrichd_pdk::testing::{event, FakeHost};
    use enrichd_pdk::EventKind;

    const ANN: &str = "ann@x.com";

    fn bounce(itime: i64) -> EngagelabEvent {
        EngagelabEvent {
            sub_stat_desc: Some("mailbox full".into()),
            ..event(EventKind::InvalidEmail, "invalid_email", ANN, itime)
        }
    }

    #[test]
    fn records_an_event_once() {
        let host = FakeHost::new();
        EngagementTracker::handle_event(&host, bounce(100)).unwrap();
        let state = logic::decode(&host.kv_value(ANN).unwrap()).unwrap();
        assert_eq!(state.hard_bounces, 1);
        assert_eq!(state.last_bounce_reason.as_deref(), Some("mailbox full"));
        // The same callback again: read, nothing written.
        EngagementTracker::handle_event(&host, bounce(100)).unwrap();
        assert_eq!(
            host.calls(),
            ["kv.get ann@x.com", "kv.set ann@x.com", "kv.get ann@x.com"]
        );
        let again = logic::decode(&host.kv_value(ANN).unwrap()).unwrap();
        assert_eq!(again, state);
    }

    #[test]
    fn an_event_without_address_is_skipped() {
        let host = FakeHost::new();
        EngagementTracker::handle_event(&host, event(EventKind::Sent, "sent", "", 1)).unwrap();
        assert!(host.calls().is_empty());
    }

    #[test]
    fn kv_failures_map_to_dependency_or_internal() {
        let fail = |import: &str, failure: HostFailure| {
            let host = FakeHost::new().fail(import, failure);
            EngagementTracker::handle_event(&host, bounce(1)).unwrap_err()
        };
        assert_eq!(
            fail("kv", HostFailure::Denied("no kv".into())),
            Failure::Dependency(
                "engagement-tracker: kv get of ann@x.com failed: denied: no kv".into()
            )
        );
        assert_eq!(
            fail("kv.set", HostFailure::OverLimit("namespace full".into())),
            Failure::Dependency(
                "engagement-tracker: kv set of ann@x.com failed: over limit: namespace full".into()
            )
        );
        assert!(matches!(
            fail("kv.set", HostFailure::Invalid("key too long".into())),
            Failure::Internal(_)
        ));
    }

    #[test]
    fn corrupt_state_is_internal_and_not_overwritten() {
        let host = FakeHost::new().kv(ANN, "not json");
        let err = EngagementTracker::handle_event(&host, bounce(1)).unwrap_err();
        assert!(matches!(err, Failure::Internal(m) if m.contains("not valid JSON")));
        assert_eq!(host.kv_value(ANN).as_deref(), Some("not json"));
    }
}
