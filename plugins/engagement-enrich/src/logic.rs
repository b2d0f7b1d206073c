//! The plugin's decisions, in plain Rust with no dependency on the generated
//! bindings, so that they can be unit-tested on the host target.
//!
//! Host calls are passed in as closures; their failures are described by
//! [`HostFailure`], a mirror of the WIT `host-error`.

use enrichd_plugin_support::{candidate_emails, read_config, Failure, HostFailure};
use serde::Deserialize;

/// Default for the `tracker` config key.
pub const DEFAULT_TRACKER: &str = "engagement-tracker";
/// Default for the `soft-bounce-threshold` config key.
pub const DEFAULT_SOFT_BOUNCE_THRESHOLD: u64 = 3;
/// Default for the `bounced-tag` config key.
pub const DEFAULT_BOUNCED_TAG: &str = "Bounced";
/// Default for the `soft-bounced-tag` config key.
pub const DEFAULT_SOFT_BOUNCED_TAG: &str = "Soft-bounced";
/// Default for the `unsubscribed-tag` config key.
pub const DEFAULT_UNSUBSCRIBED_TAG: &str = "Unsubscribed";
/// Default for the `spam-tag` config key.
pub const DEFAULT_SPAM_TAG: &str = "Spam-reported";

/// Name of the `tag` action.
pub const TAG_ACTION_NAME: &str = "Engagement flags";
/// Name of the `set-custom-fields` action.
pub const FIELDS_ACTION_NAME: &str = "Engagement context";
/// The custom field holding the latest open, click or reply.
pub const LAST_ENGAGEMENT_FIELD: &str = "lastEngagement";

/// The plugin's settings, read from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The tracker's kv namespace.
    pub tracker: String,
    /// Soft bounces from which the soft-bounced tag applies (at least 1).
    pub soft_bounce_threshold: u64,
    /// Tag for a hard bounce.
    pub bounced_tag: String,
    /// Tag for repeated soft bounces.
    pub soft_bounced_tag: String,
    /// Tag for an unsubscribed address.
    pub unsubscribed_tag: String,
    /// Tag for a spam report.
    pub spam_tag: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tracker: DEFAULT_TRACKER.to_string(),
            soft_bounce_threshold: DEFAULT_SOFT_BOUNCE_THRESHOLD,
            bounced_tag: DEFAULT_BOUNCED_TAG.to_string(),
            soft_bounced_tag: DEFAULT_SOFT_BOUNCED_TAG.to_string(),
            unsubscribed_tag: DEFAULT_UNSUBSCRIBED_TAG.to_string(),
            spam_tag: DEFAULT_SPAM_TAG.to_string(),
        }
    }
}

/// Reads the settings through `get` (the `config::get` import).
///
/// Unset keys take their default; a denied `config` capability means all
/// defaults. Other config failures, a blank value, or a threshold that is
/// not a positive integer are dependency errors.
pub fn read_settings(
    get: impl FnMut(&str) -> Result<Option<String>, HostFailure>,
) -> Result<Settings, Failure> {
    let config_error =
        |problem: String| Failure::Dependency(format!("engagement-enrich config: {problem}"));
    let keys = [
        "tracker",
        "soft-bounce-threshold",
        "bounced-tag",
        "soft-bounced-tag",
        "unsubscribed-tag",
        "spam-tag",
    ];
    read_config(
        "engagement-enrich",
        &keys,
        get,
        |s: &mut Settings, key, value| {
            let value = value.trim().to_string();
            if value.is_empty() {
                return Err(config_error(format!("`{key}` is empty")));
            }
            match key {
                "tracker" => s.tracker = value,
                "soft-bounce-threshold" => {
                    s.soft_bounce_threshold = match value.parse::<u64>() {
                        Ok(n) if n >= 1 => n,
                        _ => {
                            return Err(config_error(format!(
                                "`{key}` must be a positive integer, not `{value}`"
                            )))
                        }
                    }
                }
                "bounced-tag" => s.bounced_tag = value,
                "soft-bounced-tag" => s.soft_bounced_tag = value,
                "unsubscribed-tag" => s.unsubscribed_tag = value,
                _ => s.spam_tag = value,
            }
            Ok(())
        },
    )
}

/// The parts of the tracker's state this plugin reads. Lenient: missing
/// fields take defaults and unknown ones are ignored, so the tracker may
/// grow its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Recorded {
    /// Hard bounces.
    pub hard_bounces: u64,
    /// Soft bounces.
    pub soft_bounces: u64,
    /// Whether the address unsubscribed.
    pub unsubscribed: bool,
    /// Spam reports.
    pub spam_reports: u64,
    /// Latest open, unix ms.
    pub last_open: Option<i64>,
    /// Latest click, unix ms.
    pub last_click: Option<i64>,
    /// Latest reply, unix ms.
    pub last_reply: Option<i64>,
}

/// The tags that apply, in the documented order.
pub fn tags(r: &Recorded, s: &Settings) -> Vec<String> {
    let checks = [
        (r.hard_bounces > 0, &s.bounced_tag),
        (
            r.soft_bounces >= s.soft_bounce_threshold,
            &s.soft_bounced_tag,
        ),
        (r.unsubscribed, &s.unsubscribed_tag),
        (r.spam_reports > 0, &s.spam_tag),
    ];
    checks
        .into_iter()
        .filter(|(applies, _)| *applies)
        .map(|(_, tag)| tag.clone())
        .collect()
}

/// The latest of open, click and reply, unix ms.
pub fn last_engagement(r: &Recorded) -> Option<i64> {
    [r.last_open, r.last_click, r.last_reply]
        .into_iter()
        .flatten()
        .max()
}

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic
/// Gregorian), after Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as RFC 3339 UTC with whole seconds (rounded down),
/// e.g. `2026-02-17T07:52:50Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The addresses to read, lower-cased (the tracker's keys are): `from`, then
/// `sender` when it differs. Empty addresses are skipped.
pub fn candidate_keys(from: &str, sender: &str) -> Vec<String> {
    let mut keys: Vec<String> = candidate_emails(from, sender)
        .iter()
        .map(|a| a.to_lowercase())
        .collect();
    // Addresses that differ only in the case of non-ASCII letters.
    keys.dedup();
    keys
}

/// One action the plugin returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// `tag` named [`TAG_ACTION_NAME`].
    Flags(Vec<String>),
    /// `set-custom-fields` named [`FIELDS_ACTION_NAME`].
    Context(Vec<(String, String)>),
}

/// The plugin's answer for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Actions, in order.
    pub actions: Vec<Planned>,
    /// The note for the delivery record.
    pub message: String,
}

/// The actions for a recorded state.
pub fn actions(r: &Recorded, s: &Settings) -> Vec<Planned> {
    let mut out = Vec::new();
    let tags = tags(r, s);
    if !tags.is_empty() {
        out.push(Planned::Flags(tags));
    }
    if let Some(ms) = last_engagement(r) {
        out.push(Planned::Context(vec![(
            LAST_ENGAGEMENT_FIELD.to_string(),
            format_rfc3339(ms),
        )]));
    }
    out
}

/// The whole flow: read the tracker's state for `from`, then `sender`, and
/// turn the first one found into actions. `get_from` is `kv::get-from`.
pub fn enrich(
    from: &str,
    sender: &str,
    settings: &Settings,
    mut get_from: impl FnMut(&str, &str) -> Result<Option<String>, HostFailure>,
) -> Result<Plan, Failure> {
    let keys = candidate_keys(from, sender);
    if keys.is_empty() {
        return Err(Failure::InvalidDelivery(
            "engagement-enrich: delivery has neither a from nor a sender address".to_string(),
        ));
    }
    for key in &keys {
        let json = match get_from(&settings.tracker, key) {
            Ok(Some(json)) => json,
            Ok(None) => continue,
            Err(HostFailure::Denied(r)) => {
                return Err(Failure::Dependency(format!(
                    "engagement-enrich: reading the tracker's namespace was denied: {r}"
                )))
            }
            Err(e) => {
                return Err(Failure::Dependency(format!(
                    "engagement-enrich: reading the tracker's namespace failed: {}",
                    e.describe()
                )))
            }
        };
        let recorded: Recorded = serde_json::from_str(&json).map_err(|e| {
            Failure::Dependency(format!(
                "engagement-enrich: the tracker's state for {key} is not valid JSON: {e}"
            ))
        })?;
        return Ok(Plan {
            actions: actions(&recorded, settings),
            message: format!("engagement recorded for {key}"),
        });
    }
    Ok(Plan {
        actions: Vec::new(),
        message: format!("no engagement recorded for {}", keys.join(" or ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_771_314_770_123), "2026-02-17T07:52:50Z");
        // Leap day, and the second before the next day.
        assert_eq!(format_rfc3339(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(format_rfc3339(1_709_251_200_000), "2024-03-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_868_800_000), "2000-03-01T00:00:00Z");
        // Before the epoch, milliseconds round down too.
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn civil_dates_round_trip_around_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    #[test]
    fn candidate_keys_are_lower_cased_and_distinct() {
        assert_eq!(
            candidate_keys(" Rob@X.com ", "boss@x.com"),
            strings(&["rob@x.com", "boss@x.com"])
        );
        assert_eq!(candidate_keys("A@X.COM", "a@x.com"), strings(&["a@x.com"]));
        assert_eq!(candidate_keys("É@x.com", "é@x.com"), strings(&["é@x.com"]));
        assert_eq!(candidate_keys("", " B@x.com"), strings(&["b@x.com"]));
        assert!(candidate_keys(" ", "").is_empty());
    }

    #[test]
    fn tags_follow_thresholds_and_order() {
        let s = Settings::default();
        let mut r = Recorded {
            soft_bounces: 2,
            ..Recorded::default()
        };
        assert!(tags(&r, &s).is_empty());
        r.soft_bounces = 3;
        assert_eq!(tags(&r, &s), strings(&["Soft-bounced"]));
        r.hard_bounces = 1;
        r.unsubscribed = true;
        r.spam_reports = 2;
        assert_eq!(
            tags(&r, &s),
            strings(&["Bounced", "Soft-bounced", "Unsubscribed", "Spam-reported"])
        );
    }

    #[test]
    fn reads_config_with_defaults_and_checks() {
        let s = read_settings(|k| {
            Ok(match k {
                "soft-bounce-threshold" => Some(" 1 ".to_string()),
                "spam-tag" => Some("Spam".to_string()),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(s.soft_bounce_threshold, 1);
        assert_eq!(s.spam_tag, "Spam");
        assert_eq!(s.tracker, "engagement-tracker");
        let denied = read_settings(|_| Err(HostFailure::Denied("no".into()))).unwrap();
        assert_eq!(denied, Settings::default());
        for bad in ["0", "-1", "x"] {
            let got = read_settings(|k| Ok((k == "soft-bounce-threshold").then(|| bad.into())));
            assert!(matches!(got, Err(Failure::Dependency(_))), "{bad}");
        }
        let got = read_settings(|k| Ok((k == "bounced-tag").then(|| " ".into())));
        assert!(matches!(got, Err(Failure::Dependency(m)) if m.contains("`bounced-tag` is empty")));
        let got = read_settings(|_| Err(HostFailure::Unavailable("down".into())));
        assert!(matches!(got, Err(Failure::Dependency(_))));
    }

    #[test]
    fn enriches_from_the_first_recorded_address() {
        let state = r#"{"hardBounces":1,"softBounces":0,"unsubscribed":false,"spamReports":0,
            "lastOpen":1000,"lastClick":1771314770000,"lastReply":null,"lastDelivered":5,
            "lastEvent":1771314770000,"lastBounceReason":"x","seen":[]}"#;
        let mut asked = Vec::new();
        let plan = enrich("Rob@X.com", "boss@x.com", &Settings::default(), |ns, k| {
            asked.push(format!("{ns}/{k}"));
            Ok((k == "boss@x.com").then(|| state.to_string()))
        })
        .unwrap();
        assert_eq!(
            asked,
            strings(&[
                "engagement-tracker/rob@x.com",
                "engagement-tracker/boss@x.com"
            ])
        );
        assert_eq!(
            plan.actions,
            vec![
                Planned::Flags(strings(&["Bounced"])),
                Planned::Context(vec![(
                    "lastEngagement".to_string(),
                    "2026-02-17T07:52:50Z".to_string()
                )]),
            ]
        );
        assert_eq!(plan.message, "engagement recorded for boss@x.com");
    }

    #[test]
    fn nothing_recorded_means_no_actions() {
        let plan = enrich("a@x.com", "A@X.COM", &Settings::default(), |_, _| Ok(None)).unwrap();
        assert!(plan.actions.is_empty());
        assert_eq!(plan.message, "no engagement recorded for a@x.com");
        let plan = enrich("a@x.com", "b@x.com", &Settings::default(), |_, _| Ok(None)).unwrap();
        assert_eq!(
            plan.message,
            "no engagement recorded for a@x.com or b@x.com"
        );
        // A state without flags or engagement: recorded, but nothing to do.
        let plan = enrich("a@x.com", "", &Settings::default(), |_, _| {
            Ok(Some(r#"{"softBounces":1,"lastDelivered":7}"#.to_string()))
        })
        .unwrap();
        assert!(plan.actions.is_empty());
    }

    #[test]
    fn host_failures_are_dependency_errors() {
        let denied = enrich("a@x.com", "", &Settings::default(), |_, _| {
            Err(HostFailure::Denied("not granted".into()))
        });
        assert_eq!(
            denied,
            Err(Failure::Dependency(
                "engagement-enrich: reading the tracker's namespace was denied: not granted"
                    .to_string()
            ))
        );
        let bad = enrich("a@x.com", "", &Settings::default(), |_, _| {
            Ok(Some("nope".to_string()))
        });
        assert!(matches!(bad, Err(Failure::Dependency(m)) if m.contains("not valid JSON")));
        let none = enrich(" ", "", &Settings::default(), |_, _| Ok(None));
        assert!(matches!(none, Err(Failure::InvalidDelivery(_))));
    }
}
