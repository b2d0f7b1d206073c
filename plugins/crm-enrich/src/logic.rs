//! The plugin's decisions, written against the [`Host`] trait so that they
//! are unit-tested with `FakeHost` on the host target.

use enrichd_pdk::{
    split_list, Action, Config, CrmAnswer, Delivery, Failure, Host, NonEmpty, PluginOutput,
    Provenance,
};

/// Default for the `vip-tiers` config key.
pub const DEFAULT_VIP_TIERS: &str = "vip,gold,platinum";
/// Default for the `vip-tag` config key.
pub const DEFAULT_VIP_TAG: &str = "VIP";
/// Default for the `fields` config key.
pub const DEFAULT_FIELDS: &str = "claimNumber,policyNumber,region";
/// Default for the `stale-tag` config key.
pub const DEFAULT_STALE_TAG: &str = "CRM-stale";
/// Default for the `domain-fields` config key: only company-level fields
/// make sense from a domain match (no claim or policy of this sender).
pub const DEFAULT_DOMAIN_FIELDS: &str = "region";

/// Name of the `set-custom-fields` action.
pub const FIELDS_ACTION_NAME: &str = "Apply CRM context";
/// Name of the `tag` action.
pub const TAG_ACTION_NAME: &str = "Tag VIP customers";
/// Name of the `tag` action marking data the CRM could not confirm now.
pub const STALE_ACTION_NAME: &str = "Tag stale CRM data";
/// Name of the `set-custom-fields` action from a domain match.
pub const DOMAIN_ACTION_NAME: &str = "Apply CRM context from the sender's domain";
/// The record key holding the customer's tier.
pub const TIER_KEY: &str = "tier";

/// The plugin's settings, read from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Tiers (lower-cased) that earn the VIP tag.
    pub vip_tiers: Vec<String>,
    /// The tag applied to VIP customers.
    pub vip_tag: String,
    /// Record keys copied into custom fields, in order.
    pub fields: Vec<String>,
    /// The tag marking data the CRM could not confirm now.
    pub stale_tag: String,
    /// Record keys copied from a domain match.
    pub domain_fields: Vec<String>,
}

fn lower(items: Vec<String>) -> Vec<String> {
    items.into_iter().map(|t| t.to_lowercase()).collect()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            vip_tiers: lower(split_list(DEFAULT_VIP_TIERS)),
            vip_tag: DEFAULT_VIP_TAG.to_string(),
            fields: split_list(DEFAULT_FIELDS),
            stale_tag: DEFAULT_STALE_TAG.to_string(),
            domain_fields: split_list(DEFAULT_DOMAIN_FIELDS),
        }
    }
}

/// Reads the settings from the plugin's config.
///
/// Unset keys take their default. If the `config` capability is denied, all
/// defaults are used; any other config failure, or an empty `vip-tag` or
/// `stale-tag`, is a dependency error. An explicitly empty `vip-tiers`
/// disables VIP tagging; an explicitly empty `fields` copies no fields.
pub fn read_settings(host: &impl Host) -> Result<Settings, Failure> {
    let config = Config::new(host, "crm-enrich");
    Ok(Settings {
        vip_tiers: lower(config.list("vip-tiers", DEFAULT_VIP_TIERS)?),
        vip_tag: config.get_or("vip-tag", DEFAULT_VIP_TAG.to_string())?,
        fields: config.list("fields", DEFAULT_FIELDS)?,
        stale_tag: config.get_or("stale-tag", DEFAULT_STALE_TAG.to_string())?,
        domain_fields: config.list("domain-fields", DEFAULT_DOMAIN_FIELDS)?,
    })
}

/// The custom fields to set: the configured keys present in the record, in
/// the configured order (each key at most once); `None` when there are none.
pub fn custom_fields(answer: &CrmAnswer, fields: &[String]) -> Option<NonEmpty<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for key in fields {
        if out.iter().any(|(k, _)| k == key) {
            continue;
        }
        if let Some(value) = answer.field(key) {
            out.push((key.clone(), value.to_string()));
        }
    }
    NonEmpty::new(out)
}

/// Whether the record's `tier` is one of `vip_tiers` (case-insensitive).
pub fn is_vip(answer: &CrmAnswer, vip_tiers: &[String]) -> bool {
    match answer.field(TIER_KEY) {
        Some(tier) => {
            let tier = tier.trim().to_lowercase();
            !tier.is_empty() && vip_tiers.iter().any(|t| t.to_lowercase() == tier)
        }
        None => false,
    }
}

/// The whole flow: look the sender up (from, then sender), and turn the
/// answer into actions according to where it came from:
///
/// - fresh: the configured fields, and the VIP tag for VIP tiers;
/// - stale: the same, plus the stale tag, so agents know the CRM could not
///   confirm it just now;
/// - domain: only the domain fields (e.g. region), and only when neither
///   address has a record of its own.
pub fn enrich(
    host: &impl Host,
    delivery: &Delivery,
    settings: &Settings,
) -> Result<PluginOutput, Failure> {
    let candidates = delivery.sender_addresses();
    if candidates.is_empty() {
        return Err(Failure::InvalidDelivery(
            "delivery has neither a from nor a sender address".to_string(),
        ));
    }
    let mut domain_match: Option<(String, CrmAnswer)> = None;
    for email in &candidates {
        host.debug(&format!("looking up {email} in the CRM"));
        let found = match host.crm_lookup_email(email) {
            Ok(Some(found)) => found,
            Ok(None) => {
                host.debug(&format!("no CRM record for {email}"));
                continue;
            }
            Err(e) => {
                return Err(Failure::Dependency(format!(
                    "crm lookup of {email} failed: {e}"
                )))
            }
        };
        match found.provenance {
            Provenance::Domain => {
                host.debug(&format!("only a domain match for {email}"));
                domain_match.get_or_insert((email.clone(), found));
            }
            Provenance::Fresh | Provenance::Stale => {
                return Ok(person_output(email, &found, settings))
            }
        }
    }
    if let Some((email, answer)) = domain_match {
        let actions = custom_fields(&answer, &settings.domain_fields)
            .map(|f| Action::set_custom_fields(f).named(DOMAIN_ACTION_NAME));
        return Ok(PluginOutput::new(
            actions.into_iter().collect(),
            format!("no CRM record for {email}; used its domain's record"),
        ));
    }
    Ok(PluginOutput::new(
        Vec::new(),
        format!("no CRM record for {}", candidates.join(" or ")),
    ))
}

/// Actions for a person-level record, fresh or stale.
fn person_output(email: &str, answer: &CrmAnswer, settings: &Settings) -> PluginOutput {
    let mut actions = Vec::new();
    if let Some(fields) = custom_fields(answer, &settings.fields) {
        actions.push(Action::set_custom_fields(fields).named(FIELDS_ACTION_NAME));
    }
    if is_vip(answer, &settings.vip_tiers) {
        actions.push(Action::tag([settings.vip_tag.clone()]).named(TAG_ACTION_NAME));
    }
    let message = if answer.provenance == Provenance::Stale {
        actions.push(Action::tag([settings.stale_tag.clone()]).named(STALE_ACTION_NAME));
        format!(
            "enriched from a stale CRM record for {email} ({} s old)",
            answer.age_ms / 1000
        )
    } else {
        format!("enriched from CRM record for {email}")
    };
    PluginOutput::new(actions, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use enrichd_pdk::testing::{answer, delivery, delivery_from as from, FakeHost};
    use enrichd_pdk::{HostFailure, Level};

    fn full_record() -> CrmAnswer {
        answer(
            [
                ("tier", "Gold"),
                ("region", "EMEA"),
                ("policyNumber", "POL-889900"),
                ("claimNumber", "CLM-556677"),
                ("name", "Rob Storrie"),
            ],
            Provenance::Fresh,
        )
    }

    fn run(host: &FakeHost, d: &Delivery) -> Result<PluginOutput, Failure> {
        enrich(host, d, &Settings::default())
    }

    fn fields(items: &[(&str, &str)]) -> Action {
        Action::set_custom_fields(NonEmpty::new(items.iter().copied()).unwrap())
            .named(FIELDS_ACTION_NAME)
    }

    fn vip() -> Action {
        Action::tag(["VIP"]).named(TAG_ACTION_NAME)
    }

    #[test]
    fn stale_answers_are_tagged_and_say_their_age() {
        let stale = CrmAnswer {
            age_ms: 90_500,
            ..answer([("region", "NA"), ("tier", "gold")], Provenance::Stale)
        };
        let host = FakeHost::new().crm_email("a@x.com", stale);
        let out = run(&host, &from("a@x.com", "a@x.com")).unwrap();
        assert_eq!(
            out.actions,
            vec![
                fields(&[("region", "NA")]),
                vip(),
                Action::tag(["CRM-stale"]).named(STALE_ACTION_NAME),
            ]
        );
        assert_eq!(
            out.message.as_deref(),
            Some("enriched from a stale CRM record for a@x.com (90 s old)")
        );
    }

    #[test]
    fn a_domain_match_sets_only_domain_fields_and_a_person_record_wins() {
        let domain = answer(
            [("region", "EMEA"), ("tier", "gold"), ("claimNumber", "X")],
            Provenance::Fresh,
        );
        let host = FakeHost::new().crm_domain("x.com", domain);
        let out = run(&host, &from("a@x.com", "a@x.com")).unwrap();
        assert_eq!(
            out.actions,
            vec![Action::set_custom_fields([("region", "EMEA")]).named(DOMAIN_ACTION_NAME)]
        );
        assert_eq!(
            out.message.as_deref(),
            Some("no CRM record for a@x.com; used its domain's record")
        );

        // The sender's own record beats the from address's domain match.
        let host = host.crm_email(
            "boss@y.com",
            answer([("claimNumber", "C-1")], Provenance::Fresh),
        );
        let out = run(&host, &from("assistant@x.com", "boss@y.com")).unwrap();
        assert_eq!(
            out.message.as_deref(),
            Some("enriched from CRM record for boss@y.com")
        );
    }

    #[test]
    fn defaults() {
        let s = Settings::default();
        assert_eq!(s.vip_tiers, vec!["vip", "gold", "platinum"]);
        assert_eq!(s.vip_tag, "VIP");
        assert_eq!(s.fields, vec!["claimNumber", "policyNumber", "region"]);
        assert_eq!(read_settings(&FakeHost::new()), Ok(s));
    }

    #[test]
    fn settings_from_config() {
        let host = FakeHost::new()
            .config("vip-tiers", " Diamond , PLATINUM")
            .config("vip-tag", " Priority ")
            .config("fields", "region, accountId");
        let s = read_settings(&host).unwrap();
        assert_eq!(s.vip_tiers, vec!["diamond", "platinum"]);
        assert_eq!(s.vip_tag, "Priority");
        assert_eq!(s.fields, vec!["region", "accountId"]);
    }

    #[test]
    fn settings_denied_config_uses_defaults() {
        let host = FakeHost::new()
            .config("vip-tag", "Other")
            .fail("config", HostFailure::Denied("no config".into()));
        assert_eq!(read_settings(&host), Ok(Settings::default()));
    }

    #[test]
    fn settings_unavailable_config_is_dependency_error() {
        let host = FakeHost::new().fail("config", HostFailure::Unavailable("down".into()));
        assert_eq!(
            read_settings(&host),
            Err(Failure::Dependency(
                "crm-enrich config: cannot read `vip-tiers`: unavailable: down".into()
            ))
        );
    }

    #[test]
    fn settings_empty_vip_tag_is_rejected() {
        let host = FakeHost::new().config("vip-tag", " ");
        assert_eq!(
            read_settings(&host),
            Err(Failure::Dependency(
                "crm-enrich config: `vip-tag` is empty".into()
            ))
        );
    }

    #[test]
    fn custom_fields_keep_configured_order_and_skip_missing() {
        let configured = split_list(DEFAULT_FIELDS);
        let got = custom_fields(&full_record(), &configured).unwrap();
        assert_eq!(
            got[..],
            [
                ("claimNumber".into(), "CLM-556677".into()),
                ("policyNumber".into(), "POL-889900".into()),
                ("region".into(), "EMEA".into()),
            ]
        );
        let partial = answer(
            [("region", "APAC"), ("claimNumber", "CLM-1")],
            Provenance::Fresh,
        );
        let got = custom_fields(&partial, &configured).unwrap();
        assert_eq!(
            got[..],
            [
                ("claimNumber".into(), "CLM-1".into()),
                ("region".into(), "APAC".into())
            ]
        );
        let dup = split_list("region,region");
        assert_eq!(custom_fields(&partial, &dup).unwrap().len(), 1);
        assert_eq!(custom_fields(&partial, &split_list("tier")), None);
    }

    #[test]
    fn vip_detection_is_case_insensitive() {
        let tiers = Settings::default().vip_tiers;
        let tier = |t: &str| answer([("tier", t)], Provenance::Fresh);
        assert!(is_vip(&tier("GOLD"), &tiers));
        assert!(is_vip(&tier(" Platinum "), &tiers));
        assert!(!is_vip(&tier("silver"), &tiers));
        assert!(!is_vip(&tier(""), &tiers));
        assert!(!is_vip(
            &answer([("region", "EMEA")], Provenance::Fresh),
            &tiers
        ));
        assert!(!is_vip(&tier("gold"), &[]));
    }

    #[test]
    fn enrich_vip_record_from_address() {
        let host = FakeHost::new().crm_email("rstorrie@pinnilly.com", full_record());
        let out = run(&host, &delivery()).unwrap();
        assert_eq!(host.calls(), ["crm.lookup-email rstorrie@pinnilly.com"]);
        assert_eq!(
            out.actions,
            vec![
                fields(&[
                    ("claimNumber", "CLM-556677"),
                    ("policyNumber", "POL-889900"),
                    ("region", "EMEA"),
                ]),
                vip(),
            ]
        );
        assert_eq!(
            out.message.as_deref(),
            Some("enriched from CRM record for rstorrie@pinnilly.com")
        );
    }

    #[test]
    fn enrich_non_vip_record_has_no_tag() {
        let record = answer(
            [("claimNumber", "CLM-1"), ("tier", "bronze")],
            Provenance::Fresh,
        );
        let host = FakeHost::new().crm_email("a@x.com", record);
        let out = run(&host, &from("a@x.com", "a@x.com")).unwrap();
        assert_eq!(out.actions, vec![fields(&[("claimNumber", "CLM-1")])]);
    }

    #[test]
    fn enrich_falls_back_to_sender() {
        let record = answer([("region", "NA"), ("tier", "vip")], Provenance::Fresh);
        let host = FakeHost::new().crm_email("boss@x.com", record);
        let out = run(&host, &from("assistant@x.com", "boss@x.com")).unwrap();
        assert_eq!(
            host.calls(),
            [
                "crm.lookup-email assistant@x.com",
                "crm.lookup-email boss@x.com"
            ]
        );
        assert_eq!(
            out.message.as_deref(),
            Some("enriched from CRM record for boss@x.com")
        );
        assert_eq!(out.actions, vec![fields(&[("region", "NA")]), vip()]);
    }

    #[test]
    fn enrich_no_record() {
        let host = FakeHost::new();
        let out = run(&host, &from("a@x.com", "a@x.com")).unwrap();
        assert!(out.actions.is_empty());
        assert_eq!(out.message.as_deref(), Some("no CRM record for a@x.com"));
        let out = run(&host, &from("a@x.com", "b@x.com")).unwrap();
        assert_eq!(
            out.message.as_deref(),
            Some("no CRM record for a@x.com or b@x.com")
        );
    }

    #[test]
    fn enrich_record_without_configured_fields_only_tags() {
        let host =
            FakeHost::new().crm_email("a@x.com", answer([("tier", "Platinum")], Provenance::Fresh));
        let out = run(&host, &from("a@x.com", "a@x.com")).unwrap();
        assert_eq!(out.actions, vec![vip()]);
    }

    #[test]
    fn enrich_crm_errors_are_dependency_errors() {
        for (failure, text) in [
            (
                HostFailure::Denied("crm not granted".into()),
                "denied: crm not granted",
            ),
            (
                HostFailure::Unavailable("timeout".into()),
                "unavailable: timeout",
            ),
            (
                HostFailure::Invalid("bad email".into()),
                "invalid: bad email",
            ),
        ] {
            let host = FakeHost::new().fail("crm.lookup-email", failure);
            assert_eq!(
                run(&host, &from("a@x.com", "b@x.com")),
                Err(Failure::Dependency(format!(
                    "crm lookup of a@x.com failed: {text}"
                )))
            );
        }
    }

    #[test]
    fn enrich_without_addresses_is_invalid_delivery() {
        let err = run(&FakeHost::new(), &from("", " ")).unwrap_err();
        assert!(matches!(err, Failure::InvalidDelivery(_)));
    }

    #[test]
    fn enrich_logs_the_lookup_and_survives_a_denied_log() {
        let host = FakeHost::new();
        run(&host, &from("a@x.com", "a@x.com")).unwrap();
        assert!(host
            .logs()
            .iter()
            .any(|(level, l)| *level == Level::Debug && l.contains("looking up a@x.com")));
        let mute = FakeHost::new().fail("log", HostFailure::Denied("no log".into()));
        assert!(run(&mute, &from("a@x.com", "a@x.com")).is_ok());
    }
}
