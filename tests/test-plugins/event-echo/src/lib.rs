//! # event-echo (test plugin)
//!
//! An event plugin (world `event-plugin`) that records every EngageLab event
//! it is given in its own kv namespace, so the integration tests can check
//! which fields reach event plugins and how many times an event was handled.
//!
//! For each event, in this order:
//!
//! 1. `kv::set("<kind-name>:<message-id>", <json>)`, where `<json>` is an
//!    object with the keys (serde_json sorts them alphabetically)
//!    `address`, `custom-args`, `email-id`, `error-code`, `from`, `itime`,
//!    `kind-name`, `message`, `sub-stat`, `sub-stat-desc`, `subject`, `url`.
//!    Strings stay strings (`custom-args` too, exactly as given), `itime`,
//!    `error-code` and `sub-stat` are numbers, an absent option is `null`.
//! 2. `kv::set("count", <n>)`, where `<n>` (decimal) is one more than the
//!    stored count (0 when unset): every call counts, redeliveries included.
//!
//! Capabilities: `kv` (required). A `denied` / `unavailable` kv call returns
//! `dependency("event-echo: kv <op> <key>: <kind>: <reason>")`, an `invalid`
//! one `internal(…)` with the same text; an unparsable `count` is `internal`.
//! Config keys: none.

wit_bindgen::generate!({
    world: "event-plugin",
    path: "../../../wit",
});

use enrichd::plugin::kv;
use enrichd::plugin::types::{HostError, PluginError};
use exports::enrichd::plugin::events::{EngagelabEvent, Guest};

/// The kv key an event is stored under.
pub fn event_key(e: &EngagelabEvent) -> String {
    format!("{}:{}", e.kind_name, e.message_id)
}

/// The stored JSON of an event.
pub fn event_json(e: &EngagelabEvent) -> String {
    serde_json::json!({
        "kind-name": e.kind_name,
        "address": e.address,
        "from": e.from,
        "subject": e.subject,
        "itime": e.itime,
        "email-id": e.email_id,
        "error-code": e.error_code,
        "sub-stat": e.sub_stat,
        "sub-stat-desc": e.sub_stat_desc,
        "message": e.message,
        "url": e.url,
        "custom-args": e.custom_args,
    })
    .to_string()
}

/// A failed kv call as a plugin error.
fn kv_error(op: &str, key: &str, e: HostError) -> PluginError {
    let text = |kind: &str, r: String| format!("event-echo: kv {op} {key}: {kind}: {r}");
    match e {
        HostError::Denied(r) => PluginError::Dependency(text("denied", r)),
        HostError::Unavailable(r) => PluginError::Dependency(text("unavailable", r)),
        HostError::Invalid(r) => PluginError::Internal(text("invalid", r)),
        HostError::OverLimit(r) => PluginError::Dependency(text("over-limit", r)),
    }
}

/// The plugin; exported as the `events` interface.
struct EventEcho;

impl Guest for EventEcho {
    fn handle_event(event: EngagelabEvent) -> Result<(), PluginError> {
        let key = event_key(&event);
        kv::set(&key, &event_json(&event)).map_err(|e| kv_error("set", &key, e))?;
        let count = match kv::get("count").map_err(|e| kv_error("get", "count", e))? {
            Some(n) => n.trim().parse::<u64>().map_err(|_| {
                PluginError::Internal(format!("event-echo: stored count `{n}` is not a number"))
            })?,
            None => 0,
        };
        kv::set("count", &(count + 1).to_string()).map_err(|e| kv_error("set", "count", e))
    }
}

export!(EventEcho);

#[cfg(test)]
mod tests {
    use super::*;
    use exports::enrichd::plugin::events::EventKind;

    #[test]
    fn stores_every_field() {
        let e = EngagelabEvent {
            kind: EventKind::SoftBounce,
            kind_name: "soft_bounce".to_string(),
            message_id: "m-1".to_string(),
            address: "a@x.com".to_string(),
            from: "news@shop.com".to_string(),
            subject: "Hi".to_string(),
            itime: 1_771_314_770_000,
            email_id: Some("e1".to_string()),
            error_code: Some(421),
            sub_stat: None,
            sub_stat_desc: Some("mailbox full".to_string()),
            message: None,
            url: None,
            custom_args: r#"{"k":"v"}"#.to_string(),
            raw_json: "{}".to_string(),
        };
        assert_eq!(event_key(&e), "soft_bounce:m-1");
        assert_eq!(
            event_json(&e),
            r#"{"address":"a@x.com","custom-args":"{\"k\":\"v\"}","email-id":"e1","error-code":421,"from":"news@shop.com","itime":1771314770000,"kind-name":"soft_bounce","message":null,"sub-stat":null,"sub-stat-desc":"mailbox full","subject":"Hi","url":null}"#
        );
    }
}
