//! The plugin's decisions, in plain Rust with no dependency on the generated
//! bindings, so that they can be unit-tested on the host target.
//!
//! Host calls are passed in as closures; their failures are described by
//! [`HostFailure`], a mirror of the WIT `host-error`.

use enrichd_plugin_support::{candidate_emails, read_config, split_list, Failure, HostFailure};

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

/// A flat CRM record or custom-field map, in order.
pub type Pairs = Vec<(String, String)>;

/// Where a CRM answer came from (mirror of the WIT `provenance`, with the
/// answer's age where it matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The CRM's current answer.
    Fresh,
    /// The last value the CRM gave, this many milliseconds old.
    Stale {
        /// Age of the data.
        age_ms: u64,
    },
    /// A match on the address's domain, not on the address.
    Domain,
}

/// A CRM answer (mirror of the WIT `crm-answer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The record.
    pub record: Pairs,
    /// Where it came from.
    pub provenance: Provenance,
}

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

impl Default for Settings {
    fn default() -> Self {
        Settings {
            vip_tiers: split_list(DEFAULT_VIP_TIERS)
                .into_iter()
                .map(|t| t.to_lowercase())
                .collect(),
            vip_tag: DEFAULT_VIP_TAG.to_string(),
            fields: split_list(DEFAULT_FIELDS),
            stale_tag: DEFAULT_STALE_TAG.to_string(),
            domain_fields: split_list(DEFAULT_DOMAIN_FIELDS),
        }
    }
}

/// Reads the settings through `get` (the `config::get` import).
///
/// Unset keys take their default. If the `config` capability is denied, all
/// defaults are used; any other config failure, or an empty `vip-tag`, is a
/// dependency error. An explicitly empty `vip-tiers` disables VIP tagging; an
/// explicitly empty `fields` copies no fields.
pub fn read_settings(
    get: impl FnMut(&str) -> Result<Option<String>, HostFailure>,
) -> Result<Settings, Failure> {
    let keys = [
        "vip-tiers",
        "vip-tag",
        "fields",
        "stale-tag",
        "domain-fields",
    ];
    read_config(
        "crm-enrich",
        &keys,
        get,
        |settings: &mut Settings, key, value| {
            match key {
                "vip-tiers" => {
                    settings.vip_tiers = split_list(&value)
                        .into_iter()
                        .map(|t| t.to_lowercase())
                        .collect()
                }
                "vip-tag" | "stale-tag" => {
                    let tag = value.trim();
                    if tag.is_empty() {
                        return Err(Failure::Dependency(format!(
                            "crm-enrich config: `{key}` is empty"
                        )));
                    }
                    if key == "vip-tag" {
                        settings.vip_tag = tag.to_string();
                    } else {
                        settings.stale_tag = tag.to_string();
                    }
                }
                "domain-fields" => settings.domain_fields = split_list(&value),
                _ => settings.fields = split_list(&value),
            }
            Ok(())
        },
    )
}

/// The value of `key` in a record (first occurrence, exact key).
pub fn record_value<'a>(record: &'a [(String, String)], key: &str) -> Option<&'a str> {
    record
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The custom fields to set: the configured keys present in the record, in
/// the configured order (each key at most once).
pub fn custom_fields(record: &[(String, String)], fields: &[String]) -> Pairs {
    let mut out: Pairs = Vec::new();
    for key in fields {
        if out.iter().any(|(k, _)| k == key) {
            continue;
        }
        if let Some(value) = record_value(record, key) {
            out.push((key.clone(), value.to_string()));
        }
    }
    out
}

/// Whether the record's `tier` is one of `vip_tiers` (case-insensitive).
pub fn is_vip(record: &[(String, String)], vip_tiers: &[String]) -> bool {
    match record_value(record, TIER_KEY) {
        Some(tier) => {
            let tier = tier.trim().to_lowercase();
            !tier.is_empty() && vip_tiers.iter().any(|t| t.to_lowercase() == tier)
        }
        None => false,
    }
}

/// One action the plugin returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// `set-custom-fields` named [`FIELDS_ACTION_NAME`].
    SetCustomFields(Pairs),
    /// `tag` named [`TAG_ACTION_NAME`].
    Tag(Vec<String>),
    /// `tag` named [`STALE_ACTION_NAME`].
    StaleTag(Vec<String>),
    /// `set-custom-fields` named [`DOMAIN_ACTION_NAME`].
    DomainFields(Pairs),
}

/// The plugin's answer for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Actions, in order.
    pub actions: Vec<Planned>,
    /// The note for the delivery record.
    pub message: String,
}

/// The whole flow: look the sender up (from, then sender), and turn the
/// answer into actions according to where it came from:
///
/// - fresh: the configured fields, and the VIP tag for VIP tiers;
/// - stale: the same, plus the stale tag, so agents know the CRM could not
///   confirm it just now;
/// - domain: only the domain fields (e.g. region), and only when neither
///   address has a record of its own.
///
/// `lookup` is the `crm::lookup-email` import; `debug` writes a debug log
/// line (best effort).
pub fn enrich(
    from: &str,
    sender: &str,
    settings: &Settings,
    mut lookup: impl FnMut(&str) -> Result<Option<Found>, HostFailure>,
    mut debug: impl FnMut(&str),
) -> Result<Plan, Failure> {
    let candidates = candidate_emails(from, sender);
    if candidates.is_empty() {
        return Err(Failure::InvalidDelivery(
            "delivery has neither a from nor a sender address".to_string(),
        ));
    }
    let mut domain_match: Option<(String, Pairs)> = None;
    for email in &candidates {
        debug(&format!("looking up {email} in the CRM"));
        let found = match lookup(email) {
            Ok(Some(found)) => found,
            Ok(None) => {
                debug(&format!("no CRM record for {email}"));
                continue;
            }
            Err(e) => {
                return Err(Failure::Dependency(format!(
                    "crm lookup of {email} failed: {}",
                    e.describe()
                )))
            }
        };
        match found.provenance {
            Provenance::Domain => {
                debug(&format!("only a domain match for {email}"));
                domain_match.get_or_insert((email.clone(), found.record));
            }
            Provenance::Fresh => return Ok(person_plan(email, &found.record, settings, None)),
            Provenance::Stale { age_ms } => {
                return Ok(person_plan(email, &found.record, settings, Some(age_ms)))
            }
        }
    }
    if let Some((email, record)) = domain_match {
        let fields = custom_fields(&record, &settings.domain_fields);
        let actions = if fields.is_empty() {
            Vec::new()
        } else {
            vec![Planned::DomainFields(fields)]
        };
        return Ok(Plan {
            actions,
            message: format!("no CRM record for {email}; used its domain's record"),
        });
    }
    Ok(Plan {
        actions: Vec::new(),
        message: format!("no CRM record for {}", candidates.join(" or ")),
    })
}

/// Actions for a person-level record; `stale_ms` is the age of stale data.
fn person_plan(email: &str, record: &Pairs, settings: &Settings, stale_ms: Option<u64>) -> Plan {
    let mut actions = Vec::new();
    let fields = custom_fields(record, &settings.fields);
    if !fields.is_empty() {
        actions.push(Planned::SetCustomFields(fields));
    }
    if is_vip(record, &settings.vip_tiers) {
        actions.push(Planned::Tag(vec![settings.vip_tag.clone()]));
    }
    let message = match stale_ms {
        None => format!("enriched from CRM record for {email}"),
        Some(age_ms) => {
            actions.push(Planned::StaleTag(vec![settings.stale_tag.clone()]));
            format!(
                "enriched from a stale CRM record for {email} ({} s old)",
                age_ms / 1000
            )
        }
    };
    Plan { actions, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Pairs {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full_record() -> Pairs {
        pairs(&[
            ("tier", "Gold"),
            ("region", "EMEA"),
            ("policyNumber", "POL-889900"),
            ("claimNumber", "CLM-556677"),
            ("name", "Rob Storrie"),
        ])
    }

    fn no_log(_: &str) {}

    fn fresh(record: Pairs) -> Found {
        Found {
            record,
            provenance: Provenance::Fresh,
        }
    }

    #[test]
    fn stale_answers_are_tagged_and_say_their_age() {
        let plan = enrich(
            "a@x.com",
            "a@x.com",
            &Settings::default(),
            |_| {
                Ok(Some(Found {
                    record: pairs(&[("region", "NA"), ("tier", "gold")]),
                    provenance: Provenance::Stale { age_ms: 90_500 },
                }))
            },
            no_log,
        )
        .unwrap();
        assert_eq!(
            plan.actions,
            vec![
                Planned::SetCustomFields(pairs(&[("region", "NA")])),
                Planned::Tag(vec!["VIP".to_string()]),
                Planned::StaleTag(vec!["CRM-stale".to_string()]),
            ]
        );
        assert_eq!(
            plan.message,
            "enriched from a stale CRM record for a@x.com (90 s old)"
        );
    }

    #[test]
    fn a_domain_match_sets_only_domain_fields_and_a_person_record_wins() {
        let domain = Found {
            record: pairs(&[("region", "EMEA"), ("tier", "gold"), ("claimNumber", "X")]),
            provenance: Provenance::Domain,
        };
        let plan = enrich(
            "a@x.com",
            "a@x.com",
            &Settings::default(),
            |_| Ok(Some(domain.clone())),
            no_log,
        )
        .unwrap();
        assert_eq!(
            plan.actions,
            vec![Planned::DomainFields(pairs(&[("region", "EMEA")]))]
        );
        assert_eq!(
            plan.message,
            "no CRM record for a@x.com; used its domain's record"
        );

        // The sender's own record beats the from address's domain match.
        let plan = enrich(
            "assistant@x.com",
            "boss@y.com",
            &Settings::default(),
            |email| {
                Ok(Some(if email == "boss@y.com" {
                    fresh(pairs(&[("claimNumber", "C-1")]))
                } else {
                    domain.clone()
                }))
            },
            no_log,
        )
        .unwrap();
        assert_eq!(plan.message, "enriched from CRM record for boss@y.com");
    }

    #[test]
    fn defaults() {
        let s = Settings::default();
        assert_eq!(s.vip_tiers, vec!["vip", "gold", "platinum"]);
        assert_eq!(s.vip_tag, "VIP");
        assert_eq!(s.fields, vec!["claimNumber", "policyNumber", "region"]);
    }

    #[test]
    fn settings_unset_keys_use_defaults() {
        let s = read_settings(|_| Ok(None)).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn settings_from_config() {
        let s = read_settings(|key| {
            Ok(match key {
                "vip-tiers" => Some(" Diamond , PLATINUM".to_string()),
                "vip-tag" => Some(" Priority ".to_string()),
                "fields" => Some("region, accountId".to_string()),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(s.vip_tiers, vec!["diamond", "platinum"]);
        assert_eq!(s.vip_tag, "Priority");
        assert_eq!(s.fields, vec!["region", "accountId"]);
    }

    #[test]
    fn settings_denied_config_uses_defaults() {
        let s = read_settings(|_| Err(HostFailure::Denied("no config".into()))).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn settings_unavailable_config_is_dependency_error() {
        let err = read_settings(|_| Err(HostFailure::Unavailable("down".into()))).unwrap_err();
        assert_eq!(
            err,
            Failure::Dependency(
                "crm-enrich config: cannot read `vip-tiers`: unavailable: down".into()
            )
        );
    }

    #[test]
    fn settings_empty_vip_tag_is_rejected() {
        let err = read_settings(|k| Ok((k == "vip-tag").then(|| " ".to_string()))).unwrap_err();
        assert!(matches!(err, Failure::Dependency(m) if m.contains("vip-tag")));
    }

    #[test]
    fn custom_fields_keep_configured_order_and_skip_missing() {
        let fields = split_list(DEFAULT_FIELDS);
        assert_eq!(
            custom_fields(&full_record(), &fields),
            pairs(&[
                ("claimNumber", "CLM-556677"),
                ("policyNumber", "POL-889900"),
                ("region", "EMEA"),
            ])
        );
        let partial = pairs(&[("region", "APAC"), ("claimNumber", "CLM-1")]);
        assert_eq!(
            custom_fields(&partial, &fields),
            pairs(&[("claimNumber", "CLM-1"), ("region", "APAC")])
        );
        let dup = split_list("region,region");
        assert_eq!(custom_fields(&partial, &dup), pairs(&[("region", "APAC")]));
    }

    #[test]
    fn vip_detection_is_case_insensitive() {
        let tiers = Settings::default().vip_tiers;
        assert!(is_vip(&pairs(&[("tier", "GOLD")]), &tiers));
        assert!(is_vip(&pairs(&[("tier", " Platinum ")]), &tiers));
        assert!(!is_vip(&pairs(&[("tier", "silver")]), &tiers));
        assert!(!is_vip(&pairs(&[("tier", "")]), &tiers));
        assert!(!is_vip(&pairs(&[("region", "EMEA")]), &tiers));
        assert!(!is_vip(&pairs(&[("tier", "gold")]), &[]));
    }

    #[test]
    fn enrich_vip_record_from_address() {
        let mut looked_up = Vec::new();
        let plan = enrich(
            "rstorrie@pinnilly.com",
            "rstorrie@pinnilly.com",
            &Settings::default(),
            |email| {
                looked_up.push(email.to_string());
                Ok(Some(fresh(full_record())))
            },
            no_log,
        )
        .unwrap();
        assert_eq!(looked_up, vec!["rstorrie@pinnilly.com"]);
        assert_eq!(
            plan.actions,
            vec![
                Planned::SetCustomFields(pairs(&[
                    ("claimNumber", "CLM-556677"),
                    ("policyNumber", "POL-889900"),
                    ("region", "EMEA"),
                ])),
                Planned::Tag(vec!["VIP".to_string()]),
            ]
        );
        assert_eq!(
            plan.message,
            "enriched from CRM record for rstorrie@pinnilly.com"
        );
    }

    #[test]
    fn enrich_non_vip_record_has_no_tag() {
        let record = pairs(&[("claimNumber", "CLM-1"), ("tier", "bronze")]);
        let plan = enrich(
            "a@x.com",
            "a@x.com",
            &Settings::default(),
            |_| Ok(Some(fresh(record.clone()))),
            no_log,
        )
        .unwrap();
        assert_eq!(
            plan.actions,
            vec![Planned::SetCustomFields(pairs(&[("claimNumber", "CLM-1")]))]
        );
    }

    #[test]
    fn enrich_falls_back_to_sender() {
        let mut looked_up = Vec::new();
        let plan = enrich(
            "assistant@x.com",
            "boss@x.com",
            &Settings::default(),
            |email| {
                looked_up.push(email.to_string());
                Ok((email == "boss@x.com")
                    .then(|| fresh(pairs(&[("region", "NA"), ("tier", "vip")]))))
            },
            no_log,
        )
        .unwrap();
        assert_eq!(looked_up, vec!["assistant@x.com", "boss@x.com"]);
        assert_eq!(plan.message, "enriched from CRM record for boss@x.com");
        assert_eq!(
            plan.actions,
            vec![
                Planned::SetCustomFields(pairs(&[("region", "NA")])),
                Planned::Tag(vec!["VIP".to_string()]),
            ]
        );
    }

    #[test]
    fn enrich_no_record() {
        let plan = enrich(
            "a@x.com",
            "a@x.com",
            &Settings::default(),
            |_| Ok(None),
            no_log,
        )
        .unwrap();
        assert!(plan.actions.is_empty());
        assert_eq!(plan.message, "no CRM record for a@x.com");

        let plan = enrich(
            "a@x.com",
            "b@x.com",
            &Settings::default(),
            |_| Ok(None),
            no_log,
        )
        .unwrap();
        assert_eq!(plan.message, "no CRM record for a@x.com or b@x.com");
    }

    #[test]
    fn enrich_record_without_configured_fields_only_tags() {
        let plan = enrich(
            "a@x.com",
            "a@x.com",
            &Settings::default(),
            |_| Ok(Some(fresh(pairs(&[("tier", "Platinum")])))),
            no_log,
        )
        .unwrap();
        assert_eq!(plan.actions, vec![Planned::Tag(vec!["VIP".to_string()])]);
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
            let err = enrich(
                "a@x.com",
                "b@x.com",
                &Settings::default(),
                |_| Err(failure.clone()),
                no_log,
            )
            .unwrap_err();
            assert_eq!(
                err,
                Failure::Dependency(format!("crm lookup of a@x.com failed: {text}"))
            );
        }
    }

    #[test]
    fn enrich_without_addresses_is_invalid_delivery() {
        let err = enrich("", " ", &Settings::default(), |_| Ok(None), no_log).unwrap_err();
        assert!(matches!(err, Failure::InvalidDelivery(_)));
    }

    #[test]
    fn enrich_logs_at_least_the_lookup() {
        let mut lines = Vec::new();
        enrich(
            "a@x.com",
            "a@x.com",
            &Settings::default(),
            |_| Ok(None),
            |line| lines.push(line.to_string()),
        )
        .unwrap();
        assert!(lines.iter().any(|l| l.contains("looking up a@x.com")));
    }
}
