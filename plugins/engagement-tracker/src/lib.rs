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
//! The decisions live in [`logic`], which does not depend on the generated
//! bindings and is unit-tested on the host target.

pub mod logic;

wit_bindgen::generate!({
    world: "event-plugin",
    path: "../../wit",
});

use enrichd::plugin::log::Level;
use enrichd::plugin::types::{HostError, PluginError};
use enrichd::plugin::{kv, log};
use enrichd_plugin_support::HostFailure;
use exports::enrichd::plugin::events::{EngagelabEvent, EventKind, Guest};
use logic::{Applied, Event, Kind};

/// The plugin; exported as the `events` interface.
struct EngagementTracker;

impl Guest for EngagementTracker {
    fn handle_event(event: EngagelabEvent) -> Result<(), PluginError> {
        let address = event.address.clone();
        if address.is_empty() {
            debug(&format!("skipped {}: no address", event.kind_name));
            return Ok(());
        }
        let event = to_logic(event);
        let state = match kv::get(&address).map_err(|e| kv_error("get", &address, e))? {
            Some(json) => logic::decode(&json).map_err(|e| {
                PluginError::Internal(format!(
                    "engagement-tracker: stored state of {address} is not valid JSON: {e}"
                ))
            })?,
            None => logic::State::default(),
        };
        match logic::apply(&state, &event) {
            Applied::Duplicate => {
                debug(&format!(
                    "{} for {address}: already seen",
                    event.dedupe_id()
                ));
                Ok(())
            }
            Applied::Updated(next) => {
                kv::set(&address, &logic::encode(&next))
                    .map_err(|e| kv_error("set", &address, e))?;
                debug(&format!("{} for {address}: recorded", event.dedupe_id()));
                Ok(())
            }
        }
    }
}

/// Best-effort debug line: a denied `log` capability is fine.
fn debug(line: &str) {
    let _ = log::log(Level::Debug, line);
}

fn to_logic(e: EngagelabEvent) -> Event {
    let kind = match e.kind {
        EventKind::Target => Kind::Target,
        EventKind::Sent => Kind::Sent,
        EventKind::Delivered => Kind::Delivered,
        EventKind::InvalidEmail => Kind::InvalidEmail,
        EventKind::SoftBounce => Kind::SoftBounce,
        EventKind::Open => Kind::Open,
        EventKind::Click => Kind::Click,
        EventKind::Unsubscribe => Kind::Unsubscribe,
        EventKind::ReportSpam => Kind::ReportSpam,
        EventKind::Route => Kind::Route,
        EventKind::Other => Kind::Other,
    };
    Event {
        kind,
        kind_name: e.kind_name,
        message_id: e.message_id,
        itime: e.itime,
        sub_stat_desc: e.sub_stat_desc,
        message: e.message,
    }
}

/// A failed kv call: the store being denied or down is a dependency failure
/// (worth retrying later); a rejected request is a bug here.
fn kv_error(op: &str, address: &str, e: HostError) -> PluginError {
    let failure = HostFailure::from(e);
    let text = format!(
        "engagement-tracker: kv {op} of {address} failed: {}",
        failure.describe()
    );
    match failure {
        // A full namespace is the operator's to fix (quota), like a store
        // that is down: a dependency failure, worth retrying later.
        HostFailure::Denied(_) | HostFailure::Unavailable(_) | HostFailure::OverLimit(_) => {
            PluginError::Dependency(text)
        }
        HostFailure::Invalid(_) => PluginError::Internal(text),
    }
}

enrichd_plugin_support::host_failure_from!(HostError);

export!(EngagementTracker);
