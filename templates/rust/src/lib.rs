//! # {{ name }}
//!
//! An enrichd plugin (world `{{ world }}`).
{% if handler %}
//!
//! For each Emailgistics delivery it looks the sender up in the CRM and,
//! when the record's `tier` is `vip`, returns one `tag` action with the tag
//! of config key `vip-tag` (default `VIP`).
{% endif %}
{% if events %}
//!
//! For each EngageLab event it counts the events seen per address in its kv
//! namespace (key = address, value = the count).
{% endif %}
//!
//! The logic is written against `enrichd_pdk::Host`, so the tests below run
//! it with `FakeHost` on your machine (`cargo test`); in wasm the same code
//! calls enrichd's imports.

{% if handler %}
use enrichd_pdk::{Action, Config, Delivery, Handler, PluginOutput};
{% endif %}
{% if events %}
use enrichd_pdk::{EngagelabEvent, Events};
{% endif %}
use enrichd_pdk::{Failure, Host};

/// The plugin.
pub struct {{ camel_name }};
{% if handler %}

impl Handler for {{ camel_name }} {
    fn handle(host: &impl Host, delivery: Delivery) -> Result<PluginOutput, Failure> {
        // Unset (or a denied `config` capability) means the default.
        let tag: String = Config::new(host, "{{ name }}").get_or("vip-tag", "VIP".to_string())?;
        let email = delivery.from.address.trim();
        let answer = host
            .crm_lookup_email(email)
            .map_err(|e| Failure::Dependency(format!("crm lookup of {email} failed: {e}")))?;
        match answer {
            Some(record) if record.field("tier") == Some("vip") => Ok(PluginOutput::new(
                vec![Action::tag([tag]).named("Tag VIP customers")],
                format!("{email} is a VIP"),
            )),
            _ => Ok(PluginOutput::new(
                Vec::new(),
                format!("{email} is not a VIP"),
            )),
        }
    }
}
{% endif %}
{% if events %}

impl Events for {{ camel_name }} {
    fn handle_event(host: &impl Host, event: EngagelabEvent) -> Result<(), Failure> {
        if event.address.is_empty() {
            return Ok(());
        }
        let kv = |e| Failure::Dependency(format!("kv of {} failed: {e}", event.address));
        let seen: u64 = match host.kv_get(&event.address).map_err(kv)? {
            Some(count) => count
                .parse()
                .map_err(|e| Failure::Internal(format!("stored count: {e}")))?,
            None => 0,
        };
        host.kv_set(&event.address, &(seen + 1).to_string())
            .map_err(kv)?;
        host.debug(&format!("{}: {} events", event.address, seen + 1));
        Ok(())
    }
}
{% endif %}

{% if handler and events %}
enrichd_pdk::export_plugin!({{ camel_name }});
{% elif handler %}
enrichd_pdk::export_delivery!({{ camel_name }});
{% else %}
enrichd_pdk::export_events!({{ camel_name }});
{% endif %}

#[cfg(test)]
mod tests {
    use super::*;
{% if handler and events %}
    use enrichd_pdk::testing::{answer, delivery, event, FakeHost};
    use enrichd_pdk::{EventKind, HostFailure, Provenance};
{% elif handler %}
    use enrichd_pdk::testing::{answer, delivery, FakeHost};
    use enrichd_pdk::{HostFailure, Provenance};
{% else %}
    use enrichd_pdk::testing::{event, FakeHost};
    use enrichd_pdk::{EventKind, HostFailure};
{% endif %}
{% if handler %}

    #[test]
    fn tags_a_vip_sender() {
        // The seed delivery is from rstorrie@pinnilly.com.
        let vip = answer([("tier", "vip")], Provenance::Fresh);
        let host = FakeHost::new()
            .config("vip-tag", "Priority")
            .crm_email("rstorrie@pinnilly.com", vip);
        let out = {{ camel_name }}::handle(&host, delivery()).unwrap();
        assert_eq!(
            out.actions,
            vec![Action::tag(["Priority"]).named("Tag VIP customers")]
        );
    }

    #[test]
    fn no_record_no_action_and_a_failing_crm_is_a_dependency_error() {
        let out = {{ camel_name }}::handle(&FakeHost::new(), delivery()).unwrap();
        assert!(out.actions.is_empty());
        let down = FakeHost::new().fail("crm", HostFailure::Unavailable("timeout".into()));
        assert!(matches!(
            {{ camel_name }}::handle(&down, delivery()),
            Err(Failure::Dependency(_))
        ));
    }
{% endif %}
{% if events %}

    #[test]
    fn counts_events_per_address() {
        let host = FakeHost::new();
        for itime in [1, 2] {
            let open = event(EventKind::Open, "open", "ann@x.com", itime);
            {{ camel_name }}::handle_event(&host, open).unwrap();
        }
        assert_eq!(host.kv_value("ann@x.com").as_deref(), Some("2"));
        let denied = FakeHost::new().fail("kv", HostFailure::Denied("no kv".into()));
        let open = event(EventKind::Open, "open", "ann@x.com", 3);
        assert!({{ camel_name }}::handle_event(&denied, open).is_err());
    }
{% endif %}
}
