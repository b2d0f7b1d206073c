//! Typed reading of EngageLab email callbacks.
//!
//! EngageLab posts two families of callbacks, both JSON objects with the
//! same top level (`server`, `message_id`, `from`, `subject`, `to`, `itime`
//! in ms, `custom_args`):
//!
//! - status callbacks carry `status.message_status`, one of `target`, `sent`,
//!   `delivered`, `invalid_email` and `soft_bounce`, with `status.status_data`;
//!   the two bounces add `status.error_code` and `status.error_detail`
//!   (`sub_stat`, `message`, `sub_stat_desc`);
//! - response callbacks carry `response.event`, one of `open`, `click`,
//!   `unsubscribe`, `report_spam` and `route`, with `response.response_data`.
//!
//! # Leniency
//!
//! The docs disagree with their own examples (`task_id` is documented as an
//! int and sent as `"-1"`; route `headers` is documented as a string and sent
//! as an object; the bounce `message` is documented in `status_data` and sent
//! in `error_detail`). So [`parse`] reads each field it extracts from the
//! place the examples use, then the documented place; accepts integers as
//! numbers or numeric strings; and defaults any field that is missing or of
//! an unexpected type. Only two things are refused: a body that is not JSON,
//! and one that names no kind at all. Unknown kinds become [`Kind::Other`],
//! unknown fields are ignored, and [`Callback::raw`] keeps the body whole, so
//! nothing EngageLab sent is lost.

use serde_json::Value;

use crate::text::{check_len, FieldTooLong, MAX_SUBJECT_BYTES};

/// Longest `message_id` and `email_id`, bytes. EngageLab's ids are about 80
/// characters followed by the recipient's address (up to 320), and plugins
/// key their records by them: 1 KiB leaves room without letting a sender
/// make a key as large as the body.
pub const MAX_EVENT_ID_BYTES: usize = 1024;
/// Longest kind name (`status.message_status` / `response.event`), bytes:
/// the known ones are at most 13 characters; an unknown one is logged and
/// handed to plugins as is.
pub const MAX_KIND_BYTES: usize = 64;
/// Longest `to` and `from`, bytes: header values that may list several
/// mailboxes with display names (a route callback's `to`), so several
/// addresses' worth rather than one.
pub const MAX_EVENT_ADDRESSES_BYTES: usize = 4096;

/// What a callback reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Status: the send request was accepted.
    Target,
    /// Status: EngageLab sent the message.
    Sent,
    /// Status: the recipient's server accepted it.
    Delivered,
    /// Status: delivery failed (invalid address; `sub_stat` 4xx).
    InvalidEmail,
    /// Status: the message came back after reaching the server (`sub_stat` 5xx).
    SoftBounce,
    /// Response: the recipient opened the message.
    Open,
    /// Response: the recipient clicked a link.
    Click,
    /// Response: the recipient unsubscribed.
    Unsubscribe,
    /// Response: the recipient reported the message as spam.
    ReportSpam,
    /// Response: a reply (or other mail) reached an inbound route.
    Route,
    /// A kind this version does not know, by its name.
    Other(String),
}

/// Every known kind with EngageLab's spelling, status kinds first.
const NAMES: [(Kind, &str); 10] = [
    (Kind::Target, "target"),
    (Kind::Sent, "sent"),
    (Kind::Delivered, "delivered"),
    (Kind::InvalidEmail, "invalid_email"),
    (Kind::SoftBounce, "soft_bounce"),
    (Kind::Open, "open"),
    (Kind::Click, "click"),
    (Kind::Unsubscribe, "unsubscribe"),
    (Kind::ReportSpam, "report_spam"),
    (Kind::Route, "route"),
];

impl Kind {
    /// The kind EngageLab spells `name` (exactly, case included), or
    /// [`Kind::Other`].
    pub fn from_name(name: &str) -> Kind {
        NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(kind, _)| kind.clone())
            .unwrap_or_else(|| Kind::Other(name.to_string()))
    }

    /// EngageLab's spelling (`invalid_email`, `report_spam`, …), or the
    /// unknown name as received.
    pub fn name(&self) -> &str {
        match self {
            Kind::Other(name) => name,
            known => NAMES
                .iter()
                .find(|(kind, _)| kind == known)
                .map_or("", |(_, name)| name),
        }
    }

    /// Whether this is a status callback (target … soft_bounce). False for
    /// response callbacks and for [`Kind::Other`], whichever object named it.
    pub fn is_status(&self) -> bool {
        matches!(
            self,
            Kind::Target | Kind::Sent | Kind::Delivered | Kind::InvalidEmail | Kind::SoftBounce
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One callback, with the fields a consumer usually needs. Everything else is
/// in [`Callback::raw`].
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// What happened.
    pub kind: Kind,
    /// `message_id` ("" if absent).
    pub message_id: String,
    /// `from` (empty in target and route callbacks).
    pub from: String,
    /// `subject` (empty in target and route callbacks).
    pub subject: String,
    /// `to`, as sent (a route's may list several mailboxes).
    pub to: String,
    /// `server` (`email`).
    pub server: String,
    /// `itime`: when EngageLab generated the callback, Unix ms (0 if absent).
    pub itime: i64,
    /// `custom_args` as sent, any JSON (`Null` if absent).
    pub custom_args: Value,
    /// `email_id` of the status or response data; for a target callback the
    /// first of `status_data.email_ids`.
    pub email_id: Option<String>,
    /// The bounce's `error_detail.message` (the mailbox's log), else the
    /// data's `message` ("successfully delivered", "open email", …).
    pub message: Option<String>,
    /// `status.error_code` (bounces), else `status_data.error_code`.
    pub error_code: Option<i64>,
    /// `status.error_detail.sub_stat` (bounces), else `status_data.sub_stat`.
    pub sub_stat: Option<i64>,
    /// `status.error_detail.sub_stat_desc`, else `status_data.sub_stat_desc`.
    pub sub_stat_desc: Option<String>,
    /// `response_data.url` (click).
    pub url: Option<String>,
    /// The body exactly as received.
    pub raw: String,
}

/// Why a body is not a callback.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The body is not UTF-8 (JSON must be).
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// Neither `status.message_status` nor `response.event` is a non-empty
    /// string (this includes a JSON body that is not an object).
    #[error("body has neither status.message_status nor response.event")]
    NoKind,
}

/// Read a callback body.
pub fn parse(body: &[u8]) -> Result<Callback, EventError> {
    let raw = std::str::from_utf8(body).map_err(|_| EventError::NotUtf8)?;
    let root: Value = serde_json::from_str(raw).map_err(EventError::NotJson)?;

    let status = &root["status"];
    let response = &root["response"];
    let kind = [&status["message_status"], &response["event"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|name| !name.is_empty())
        .map(Kind::from_name)
        .ok_or(EventError::NoKind)?;

    let status_data = &status["status_data"];
    let response_data = &response["response_data"];
    let error_detail = &status["error_detail"];
    // Indexing a non-object `Value` yields `Null`, so every path below is
    // safe whatever shape the body has.
    Ok(Callback {
        kind,
        message_id: string(&root["message_id"]).unwrap_or_default(),
        from: string(&root["from"]).unwrap_or_default(),
        subject: string(&root["subject"]).unwrap_or_default(),
        to: string(&root["to"]).unwrap_or_default(),
        server: string(&root["server"]).unwrap_or_default(),
        itime: int(&root["itime"]).unwrap_or_default(),
        custom_args: root["custom_args"].clone(),
        email_id: first_string(&[
            &status_data["email_id"],
            &response_data["email_id"],
            &status_data["email_ids"][0],
        ]),
        message: first_string(&[
            &error_detail["message"],
            &status_data["message"],
            &response_data["message"],
        ]),
        error_code: first_int(&[&status["error_code"], &status_data["error_code"]]),
        sub_stat: first_int(&[
            &error_detail["sub_stat"],
            &status_data["sub_stat"],
            &status_data["error_detail"]["sub_stat"],
        ]),
        sub_stat_desc: first_string(&[
            &error_detail["sub_stat_desc"],
            &status_data["sub_stat_desc"],
            &status_data["error_detail"]["sub_stat_desc"],
        ]),
        url: first_string(&[&response_data["url"]]),
        raw: raw.to_string(),
    })
}

impl Callback {
    /// Check the fields that become keys, log fields or plugin inputs
    /// against their length limits; the caller answers 400 naming the field.
    /// Only new callbacks are checked: one queued by an older version is
    /// still processed.
    pub fn check_lengths(&self) -> Result<(), FieldTooLong> {
        check_len("message_id", &self.message_id, MAX_EVENT_ID_BYTES)?;
        check_len(
            "email_id",
            self.email_id.as_deref().unwrap_or(""),
            MAX_EVENT_ID_BYTES,
        )?;
        check_len("kind", self.kind.name(), MAX_KIND_BYTES)?;
        check_len("subject", &self.subject, MAX_SUBJECT_BYTES)?;
        check_len("to", &self.to, MAX_EVENT_ADDRESSES_BYTES)?;
        check_len("from", &self.from, MAX_EVENT_ADDRESSES_BYTES)?;
        Ok(())
    }

    /// The address the event is about, as a lower-cased bare address, or ""
    /// when there is none.
    ///
    /// For a route callback that is the sender of the reply:
    /// `response_data.from` (`"Archimonde <12345@outlook.com>"` gives
    /// `12345@outlook.com`), else `response_data.x_mx_mailfrom`. For every
    /// other kind it is the recipient: `to` (the first mailbox if it lists
    /// several), else the first of `status_data.tos` (target callbacks have
    /// an empty `to`). The data fields live only in [`Callback::raw`],
    /// which is read again here (callbacks are small, and this is called
    /// once per event); if `raw` does not parse, only `to` is used.
    pub fn address(&self) -> String {
        let root: Value = serde_json::from_str(&self.raw).unwrap_or(Value::Null);
        let to = Value::String(self.to.clone());
        let candidates = if self.kind == Kind::Route {
            let data = &root["response"]["response_data"];
            [&data["from"], &data["x_mx_mailfrom"]]
        } else {
            [&to, &root["status"]["status_data"]["tos"][0]]
        };
        let address = candidates
            .into_iter()
            .filter_map(Value::as_str)
            .map(bare_address)
            .find(|address| !address.is_empty());
        address.unwrap_or_default()
    }
}

/// The first mailbox of an address header value, bare and lower-cased:
/// `"Goblin <A@x.com>;Illidan <b@y.com>"` gives `a@x.com`. "" if it holds no
/// `@`.
fn bare_address(text: &str) -> String {
    let text = text.trim();
    let address = match text.find('<') {
        Some(open) => {
            let rest = &text[open + 1..];
            rest.find('>').map_or(rest, |close| &rest[..close])
        }
        None => text.split([';', ',']).next().unwrap_or_default(),
    };
    let address = address.trim();
    if address.contains('@') {
        address.to_lowercase()
    } else {
        String::new()
    }
}

/// A string field; a number is taken as its decimal text.
fn string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer field, as a JSON integer or a string holding one.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The first of `values` that reads as a string.
fn first_string(values: &[&Value]) -> Option<String> {
    values.iter().find_map(|value| string(value))
}

/// The first of `values` that reads as an integer.
fn first_int(values: &[&Value]) -> Option<i64> {
    values.iter().find_map(|value| int(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = include_str!("../../../examples/engagelab/target.json");
    const SENT: &str = include_str!("../../../examples/engagelab/sent.json");
    const DELIVERED: &str = include_str!("../../../examples/engagelab/delivered.json");
    const INVALID_EMAIL: &str = include_str!("../../../examples/engagelab/invalid_email.json");
    const SOFT_BOUNCE: &str = include_str!("../../../examples/engagelab/soft_bounce.json");
    const OPEN: &str = include_str!("../../../examples/engagelab/open.json");
    const CLICK: &str = include_str!("../../../examples/engagelab/click.json");
    const UNSUBSCRIBE: &str = include_str!("../../../examples/engagelab/unsubscribe.json");
    const REPORT_SPAM: &str = include_str!("../../../examples/engagelab/report_spam.json");
    const ROUTE: &str = include_str!("../../../examples/engagelab/route.json");

    fn parsed(body: &str) -> Callback {
        let callback = parse(body.as_bytes()).unwrap();
        assert_eq!(callback.raw, body);
        callback
    }

    #[test]
    fn target_fixture() {
        let c = parsed(TARGET);
        assert_eq!(c.kind, Kind::Target);
        assert!(c.kind.is_status());
        assert_eq!(
            c.message_id,
            "1676615711309_104117_18546_8821.sc-10_43_7_16-inbound"
        );
        assert_eq!(c.itime, 1676615711325);
        assert_eq!(
            (c.to.as_str(), c.from.as_str(), c.subject.as_str()),
            ("", "", "")
        );
        assert_eq!(c.address(), "12345@hotmail.com");
        assert_eq!(
            c.email_id.as_deref(),
            Some("1676615711309_104117_18546_8821.sc-10_43_7_16-inbound0$12345@hotmail.com")
        );
        assert_eq!(c.message.as_deref(), Some("successfully request"));
        assert_eq!(c.server, "email");
        assert_eq!(c.custom_args, serde_json::json!({}));
        assert_eq!(
            (c.error_code, c.sub_stat, c.url.as_deref()),
            (None, None, None)
        );
    }

    #[test]
    fn sent_fixture() {
        let c = parsed(SENT);
        assert_eq!(c.kind, Kind::Sent);
        assert_eq!(
            c.message_id,
            "1676615711309_104117_18546_8821.sc-10_43_7_16-inbound0$12345@hotmail.com"
        );
        assert_eq!(c.itime, 1676615714397);
        assert_eq!(c.address(), "12345@hotmail.com");
        assert_eq!(c.from, "newsletter@mail.engagelab.com");
        assert_eq!(
            c.subject,
            "Template interface sending-dynamic_vars-Unicast sending"
        );
        assert_eq!(c.email_id.as_deref(), Some(c.message_id.as_str()));
        assert_eq!(c.message.as_deref(), Some("successfully sent"));
    }

    #[test]
    fn delivered_fixture() {
        let c = parsed(DELIVERED);
        assert_eq!(c.kind, Kind::Delivered);
        assert_eq!(
            c.message_id,
            "1675758375681_15_6393_8309.sc-10_2_226_96-test0$12345@gmail.com"
        );
        assert_eq!(c.itime, 1675758376586);
        assert_eq!(c.address(), "12345@gmail.com");
        assert_eq!(c.message.as_deref(), Some("successfully delivered"));
        assert_eq!(c.error_code, None);
    }

    #[test]
    fn invalid_email_fixture() {
        let c = parsed(INVALID_EMAIL);
        assert_eq!(c.kind, Kind::InvalidEmail);
        assert_eq!(c.kind.name(), "invalid_email");
        assert_eq!(
            c.message_id,
            "1676537131885_95_4921_8644.sc-10_2_226_96-test0$12345@gmail.com"
        );
        assert_eq!(c.itime, 1676537132783);
        assert_eq!(c.address(), "12345@gmail.com");
        assert_eq!(c.error_code, Some(409));
        assert_eq!(c.sub_stat, Some(409));
        assert_eq!(c.sub_stat_desc.as_deref(), Some("Other"));
        assert!(c
            .message
            .as_deref()
            .unwrap()
            .starts_with("Domain may not exist or DNS check failed"));
    }

    #[test]
    fn soft_bounce_fixture() {
        let c = parsed(SOFT_BOUNCE);
        assert_eq!(c.kind, Kind::SoftBounce);
        assert_eq!(c.kind.name(), "soft_bounce");
        assert_eq!(c.itime, 1676537132783);
        assert_eq!(c.address(), "12345@gmail.com");
        assert_eq!(c.error_code, Some(509));
        assert_eq!(c.sub_stat, Some(509));
        assert_eq!(c.sub_stat_desc.as_deref(), Some("Other"));
    }

    #[test]
    fn open_fixture() {
        let c = parsed(OPEN);
        assert_eq!(c.kind, Kind::Open);
        assert!(!c.kind.is_status());
        assert_eq!(
            c.message_id,
            "1676618583015_104117_18546_8822.sc-10_43_7_16-inbound0$12345@hotmail.com"
        );
        assert_eq!(c.itime, 1676620370426);
        assert_eq!(c.address(), "12345@hotmail.com");
        assert_eq!(c.message.as_deref(), Some("open email"));
        assert_eq!(c.email_id.as_deref(), Some(c.message_id.as_str()));
        assert_eq!(c.url, None);
    }

    #[test]
    fn click_fixture() {
        let c = parsed(CLICK);
        assert_eq!(c.kind, Kind::Click);
        assert_eq!(c.itime, 1676620370426);
        assert_eq!(c.address(), "12345@hotmail.com");
        assert_eq!(
            c.url.as_deref(),
            Some("https://www.engagelab.com/zh_CN/email/")
        );
        assert_eq!(c.message.as_deref(), Some("click email"));
    }

    #[test]
    fn unsubscribe_fixture() {
        let c = parsed(UNSUBSCRIBE);
        assert_eq!(c.kind, Kind::Unsubscribe);
        assert_eq!(
            c.message_id,
            "1676460128030_100669_28018_8253.sg-10_1_253_26-inbound86$12345@gmail.com"
        );
        assert_eq!(c.itime, 1676623616503);
        assert_eq!(c.address(), "12345@gmail.com");
        assert_eq!(c.message.as_deref(), Some("unsubscribe email"));
    }

    #[test]
    fn report_spam_fixture() {
        let c = parsed(REPORT_SPAM);
        assert_eq!(c.kind, Kind::ReportSpam);
        assert_eq!(c.kind.name(), "report_spam");
        assert_eq!(c.itime, 1677548340323);
        assert_eq!(c.address(), "12345@gmail.com");
        // The example's email_id names another recipient than `to`: kept as sent.
        assert_eq!(
            c.email_id.as_deref(),
            Some("1676857822846_15_23558_89.sg-10_1_253_26-inbound0$1406064670@gmail.com")
        );
        assert_eq!(c.message, None);
    }

    #[test]
    fn route_fixture() {
        let c = parsed(ROUTE);
        assert_eq!(c.kind, Kind::Route);
        assert_eq!(c.message_id, "01b6f68b-da52-4f6f-a049-68d0ca01dd8c");
        assert_eq!(c.itime, 1676618346192);
        assert_eq!(c.to, "Goblin <12345@gmail.com>;Illidan <12345@hotmail.com>");
        // The sender of the reply, not the recipient.
        assert_eq!(c.address(), "12345@outlook.com");
        assert_eq!(c.message.as_deref(), Some("mx route"));
        assert_eq!(c.from, "");
    }

    #[test]
    fn route_address_falls_back_to_the_envelope_sender() {
        let mut body: Value = serde_json::from_str(ROUTE).unwrap();
        body["response"]["response_data"]["from"] = Value::String(String::new());
        let c = parsed(&body.to_string());
        assert_eq!(c.address(), "12345@hotmail.com");
        body["response"]["response_data"]
            .as_object_mut()
            .unwrap()
            .retain(|key, _| key != "from" && key != "x_mx_mailfrom");
        assert_eq!(parsed(&body.to_string()).address(), "");
    }

    #[test]
    fn route_headers_may_be_a_string() {
        let mut body: Value = serde_json::from_str(ROUTE).unwrap();
        body["response"]["response_data"]["headers"] = Value::String("From: x@y.z".into());
        assert_eq!(parsed(&body.to_string()).kind, Kind::Route);
    }

    #[test]
    fn every_kind_name_round_trips() {
        for (kind, name) in NAMES {
            assert_eq!(kind.name(), name);
            assert_eq!(Kind::from_name(name), kind);
            assert_eq!(kind.to_string(), name);
        }
        assert_eq!(Kind::from_name("Open"), Kind::Other("Open".into()));
    }

    #[test]
    fn unknown_kind_is_kept() {
        let body = r#"{"message_id":"m1","to":"A@B.example","itime":5,"response":{"event":"xyz","response_data":{"new":1}}}"#;
        let c = parsed(body);
        assert_eq!(c.kind, Kind::Other("xyz".into()));
        assert_eq!(c.kind.name(), "xyz");
        assert!(!c.kind.is_status());
        assert_eq!(c.address(), "a@b.example");
        assert_eq!(c.itime, 5);

        let status = r#"{"status":{"message_status":"deferred"}}"#;
        assert_eq!(parsed(status).kind, Kind::Other("deferred".into()));
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut body: Value = serde_json::from_str(DELIVERED).unwrap();
        body["brand_new"] = serde_json::json!({"nested": [1, 2, 3]});
        body["status"]["status_data"]["shard"] = serde_json::json!(7);
        body["status"]["extra"] = Value::Null;
        let text = body.to_string();
        let c = parsed(&text);
        assert_eq!(c.kind, Kind::Delivered);
        assert_eq!(c.address(), "12345@gmail.com");
        assert!(c.raw.contains("brand_new"));
    }

    #[test]
    fn numbers_may_be_strings_and_strings_numbers() {
        let body = r#"{"message_id":12,"to":"x@y.z","itime":"1676537132783",
            "status":{"message_status":"soft_bounce","error_code":"509",
            "error_detail":{"sub_stat":" 512 ","sub_stat_desc":"Full"},
            "status_data":{"task_id":-1,"label_id":"7"}}}"#;
        let c = parsed(body);
        assert_eq!(c.message_id, "12");
        assert_eq!(c.itime, 1676537132783);
        assert_eq!(c.error_code, Some(509));
        assert_eq!(c.sub_stat, Some(512));
        assert_eq!(c.sub_stat_desc.as_deref(), Some("Full"));
    }

    #[test]
    fn documented_places_are_read_too() {
        // The docs put the bounce fields in status_data.
        let body = r#"{"to":"x@y.z","status":{"message_status":"invalid_email",
            "status_data":{"error_code":401,"sub_stat":401,"sub_stat_desc":"No such user",
            "message":"550 no such user"}}}"#;
        let c = parsed(body);
        assert_eq!(c.error_code, Some(401));
        assert_eq!(c.sub_stat, Some(401));
        assert_eq!(c.sub_stat_desc.as_deref(), Some("No such user"));
        assert_eq!(c.message.as_deref(), Some("550 no such user"));
    }

    #[test]
    fn missing_and_mistyped_fields_default() {
        let c = parsed(r#"{"itime":{"no":1},"custom_args":"a=b","response":{"event":"open"}}"#);
        assert_eq!(c.kind, Kind::Open);
        assert_eq!(c.message_id, "");
        assert_eq!(c.itime, 0);
        assert_eq!(c.custom_args, Value::String("a=b".into()));
        assert_eq!(c.address(), "");
        assert_eq!((c.email_id, c.message, c.url), (None, None, None));
    }

    #[test]
    fn bare_address_forms() {
        assert_eq!(
            bare_address("Archimonde <12345@Outlook.com>"),
            "12345@outlook.com"
        );
        assert_eq!(bare_address("  A@B.C  "), "a@b.c");
        assert_eq!(bare_address("a@b.c; d@e.f"), "a@b.c");
        assert_eq!(
            bare_address("\"Doe, John\" <j@d.example>, x@y.z"),
            "j@d.example"
        );
        assert_eq!(bare_address("undisclosed-recipients"), "");
        assert_eq!(bare_address(""), "");
    }

    #[test]
    fn not_json_is_refused() {
        for body in ["", "not json", "{\"status\":", "{} {}"] {
            assert!(
                matches!(parse(body.as_bytes()), Err(EventError::NotJson(_))),
                "{body:?}"
            );
        }
        // The spec's route example as printed (a comma missing).
        let broken = ROUTE.replace(
            r#""https://......eml", "label_id""#,
            r#""https://......eml" "label_id""#,
        );
        assert_ne!(broken, ROUTE);
        assert!(matches!(
            parse(broken.as_bytes()),
            Err(EventError::NotJson(_))
        ));
    }

    #[test]
    fn not_utf8_is_refused() {
        assert!(matches!(
            parse(b"{\"to\":\"\xff\"}"),
            Err(EventError::NotUtf8)
        ));
    }

    #[test]
    fn no_kind_is_refused() {
        for body in [
            "{}",
            "[]",
            "42",
            r#"{"message_id":"m"}"#,
            r#"{"status":{"message_status":""}}"#,
            r#"{"status":{"message_status":3}}"#,
            r#"{"response":{"response_data":{}}}"#,
            r#"{"status":"delivered"}"#,
        ] {
            assert!(
                matches!(parse(body.as_bytes()), Err(EventError::NoKind)),
                "{body:?}"
            );
        }
    }

    #[test]
    fn keyed_fields_at_their_limit_pass_and_over_it_are_named() {
        let cases: [(&str, &str, usize); 6] = [
            ("/message_id", "message_id", MAX_EVENT_ID_BYTES),
            (
                "/status/status_data/email_id",
                "email_id",
                MAX_EVENT_ID_BYTES,
            ),
            ("/status/message_status", "kind", MAX_KIND_BYTES),
            ("/subject", "subject", MAX_SUBJECT_BYTES),
            ("/to", "to", MAX_EVENT_ADDRESSES_BYTES),
            ("/from", "from", MAX_EVENT_ADDRESSES_BYTES),
        ];
        for (pointer, field, limit) in cases {
            let mut body: Value = serde_json::from_str(DELIVERED).unwrap();
            *body.pointer_mut(pointer).unwrap() = "a".repeat(limit).into();
            parsed(&body.to_string()).check_lengths().unwrap();
            *body.pointer_mut(pointer).unwrap() = "a".repeat(limit + 1).into();
            let err = parsed(&body.to_string()).check_lengths().unwrap_err();
            assert_eq!(
                (err.field.as_str(), err.len, err.limit),
                (field, limit + 1, limit)
            );
        }
        for fixture in [
            TARGET,
            SENT,
            DELIVERED,
            INVALID_EMAIL,
            SOFT_BOUNCE,
            OPEN,
            CLICK,
            UNSUBSCRIBE,
            REPORT_SPAM,
            ROUTE,
        ] {
            parsed(fixture).check_lengths().unwrap();
        }
    }
}
