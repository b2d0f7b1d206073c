//! The plugin's decisions, written against the [`Host`] trait so that they
//! are unit-tested with `FakeHost` on the host target.

use enrichd_pdk::{Action, Config, Delivery, Failure, Host, HostFailure, NonEmpty, PluginOutput};
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

/// Reads the settings from the plugin's config.
///
/// Unset keys take their default; a denied `config` capability means all
/// defaults. Other config failures, a blank value, or a threshold that is
/// not a positive integer are dependency errors.
pub fn read_settings(host: &impl Host) -> Result<Settings, Failure> {
    let config = Config::new(host, "engagement-enrich");
    let tracker = config.get_or("tracker", DEFAULT_TRACKER.to_string())?;
    let threshold = config.get_or("soft-bounce-threshold", DEFAULT_SOFT_BOUNCE_THRESHOLD)?;
    if threshold == 0 {
        return Err(config.error("`soft-bounce-threshold` must be a positive integer, not `0`"));
    }
    Ok(Settings {
        tracker,
        soft_bounce_threshold: threshold,
        bounced_tag: config.get_or("bounced-tag", DEFAULT_BOUNCED_TAG.to_string())?,
        soft_bounced_tag: config
            .get_or("soft-bounced-tag", DEFAULT_SOFT_BOUNCED_TAG.to_string())?,
        unsubscribed_tag: config
            .get_or("unsubscribed-tag", DEFAULT_UNSUBSCRIBED_TAG.to_string())?,
        spam_tag: config.get_or("spam-tag", DEFAULT_SPAM_TAG.to_string())?,
    })
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
pub fn candidate_keys(delivery: &Delivery) -> Vec<String> {
    let mut keys: Vec<String> = delivery
        .sender_addresses()
        .iter()
        .map(|a| a.to_lowercase())
        .collect();
    // Addresses that differ only in the case of non-ASCII letters.
    keys.dedup();
    keys
}

/// The actions for a recorded state: the flags as a `tag`, the latest
/// engagement as a `set-custom-fields`, each only when there is one.
pub fn actions(r: &Recorded, s: &Settings) -> Vec<Action> {
    let flags = NonEmpty::new(tags(r, s)).map(|t| Action::tag(t).named(TAG_ACTION_NAME));
    let context = last_engagement(r).map(|ms| {
        Action::set_custom_fields([(LAST_ENGAGEMENT_FIELD, format_rfc3339(ms))])
            .named(FIELDS_ACTION_NAME)
    });
    flags.into_iter().chain(context).collect()
}

/// The whole flow: read the tracker's state for `from`, then `sender`, and
/// turn the first one found into actions.
pub fn enrich(
    host: &impl Host,
    delivery: &Delivery,
    settings: &Settings,
) -> Result<PluginOutput, Failure> {
    let keys = candidate_keys(delivery);
    if keys.is_empty() {
        return Err(Failure::InvalidDelivery(
            "engagement-enrich: delivery has neither a from nor a sender address".to_string(),
        ));
    }
    for key in &keys {
        let json = match host.kv_get_from(&settings.tracker, key) {
            Ok(Some(json)) => json,
            Ok(None) => continue,
            Err(HostFailure::Denied(r)) => {
                return Err(Failure::Dependency(format!(
                    "engagement-enrich: reading the tracker's namespace was denied: {r}"
                )))
            }
            Err(e) => {
                return Err(Failure::Dependency(format!(
                    "engagement-enrich: reading the tracker's namespace failed: {e}"
                )))
            }
        };
        let recorded: Recorded = serde_json::from_str(&json).map_err(|e| {
            Failure::Dependency(format!(
                "engagement-enrich: the tracker's state for {key} is not valid JSON: {e}"
            ))
        })?;
        return Ok(PluginOutput::new(
            actions(&recorded, settings),
            format!("engagement recorded for {key}"),
        ));
    }
    Ok(PluginOutput::new(
        Vec::new(),
        format!("no engagement recorded for {}", keys.join(" or ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use enrichd_pdk::testing::{delivery_from as from, FakeHost};

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
        let keys = |f: &str, s: &str| candidate_keys(&from(f, s));
        assert_eq!(
            keys(" Rob@X.com ", "boss@x.com"),
            strings(&["rob@x.com", "boss@x.com"])
        );
        assert_eq!(keys("A@X.COM", "a@x.com"), strings(&["a@x.com"]));
        assert_eq!(keys("É@x.com", "é@x.com"), strings(&["é@x.com"]));
        assert_eq!(keys("", " B@x.com"), strings(&["b@x.com"]));
        assert!(keys(" ", "").is_empty());
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
        let host = FakeHost::new()
            .config("soft-bounce-threshold", " 1 ")
            .config("spam-tag", "Spam");
        let s = read_settings(&host).unwrap();
        assert_eq!(s.soft_bounce_threshold, 1);
        assert_eq!(s.spam_tag, "Spam");
        assert_eq!(s.tracker, "engagement-tracker");
        let denied = FakeHost::new()
            .config("spam-tag", "Spam")
            .fail("config", HostFailure::Denied("no".into()));
        assert_eq!(read_settings(&denied), Ok(Settings::default()));
        for bad in ["0", "-1", "x"] {
            let host = FakeHost::new().config("soft-bounce-threshold", bad);
            assert!(
                matches!(read_settings(&host), Err(Failure::Dependency(_))),
                "{bad}"
            );
        }
        let host = FakeHost::new().config("bounced-tag", " ");
        assert!(
            matches!(read_settings(&host), Err(Failure::Dependency(m)) if m.contains("`bounced-tag` is empty"))
        );
        let down = FakeHost::new().fail("config", HostFailure::Unavailable("down".into()));
        assert!(matches!(read_settings(&down), Err(Failure::Dependency(_))));
    }

    const STATE: &str = r#"{"hardBounces":1,"softBounces":0,"unsubscribed":false,"spamReports":0,
        "lastOpen":1000,"lastClick":1771314770000,"lastReply":null,"lastDelivered":5,
        "lastEvent":1771314770000,"lastBounceReason":"x","seen":[]}"#;

    #[test]
    fn enriches_from_the_first_recorded_address() {
        let host = FakeHost::new().kv_in("engagement-tracker", "boss@x.com", STATE);
        let out = enrich(
            &host,
            &from("Rob@X.com", "boss@x.com"),
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(
            host.calls(),
            [
                "kv.get-from engagement-tracker rob@x.com",
                "kv.get-from engagement-tracker boss@x.com"
            ]
        );
        assert_eq!(
            out.actions,
            vec![
                Action::tag(["Bounced"]).named(TAG_ACTION_NAME),
                Action::set_custom_fields([("lastEngagement", "2026-02-17T07:52:50Z")])
                    .named(FIELDS_ACTION_NAME),
            ]
        );
        assert_eq!(
            out.message.as_deref(),
            Some("engagement recorded for boss@x.com")
        );
    }

    #[test]
    fn nothing_recorded_means_no_actions() {
        let host = FakeHost::new();
        let out = enrich(&host, &from("a@x.com", "A@X.COM"), &Settings::default()).unwrap();
        assert!(out.actions.is_empty());
        assert_eq!(
            out.message.as_deref(),
            Some("no engagement recorded for a@x.com")
        );
        let out = enrich(&host, &from("a@x.com", "b@x.com"), &Settings::default()).unwrap();
        assert_eq!(
            out.message.as_deref(),
            Some("no engagement recorded for a@x.com or b@x.com")
        );
        // A state without flags or engagement: recorded, but nothing to do.
        let host = FakeHost::new().kv_in(
            "engagement-tracker",
            "a@x.com",
            r#"{"softBounces":1,"lastDelivered":7}"#,
        );
        let out = enrich(&host, &from("a@x.com", ""), &Settings::default()).unwrap();
        assert!(out.actions.is_empty());
    }

    #[test]
    fn host_failures_are_dependency_errors() {
        let denied = FakeHost::new().fail("kv.get-from", HostFailure::Denied("not granted".into()));
        assert_eq!(
            enrich(&denied, &from("a@x.com", ""), &Settings::default()),
            Err(Failure::Dependency(
                "engagement-enrich: reading the tracker's namespace was denied: not granted"
                    .to_string()
            ))
        );
        let down = FakeHost::new().fail("kv", HostFailure::Unavailable("down".into()));
        assert_eq!(
            enrich(&down, &from("a@x.com", ""), &Settings::default()),
            Err(Failure::Dependency(
                "engagement-enrich: reading the tracker's namespace failed: unavailable: down"
                    .to_string()
            ))
        );
        let bad = FakeHost::new().kv_in("engagement-tracker", "a@x.com", "nope");
        let got = enrich(&bad, &from("a@x.com", ""), &Settings::default());
        assert!(matches!(got, Err(Failure::Dependency(m)) if m.contains("not valid JSON")));
        let none = enrich(&FakeHost::new(), &from(" ", ""), &Settings::default());
        assert!(matches!(none, Err(Failure::InvalidDelivery(_))));
    }
}
