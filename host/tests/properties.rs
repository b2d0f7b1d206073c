//! Property tests of everything a sender or a plugin hands the host as data:
//! Emailgistics payloads, plugin actions, EngageLab callbacks and their
//! signatures, and the config file; and of the stored form of answers
//! (storage's codec), which a shared Redis or a damaged disk hands back.
//! Public API only.
//!
//! They run in the normal `cargo test` with a fixed seed and a small number
//! of cases, so they are deterministic and take seconds in a debug build;
//! the open-ended search is `scripts/fuzz` (cargo-fuzz, same properties).
//! Each generator mixes random text with the few shapes the code branches
//! on (addresses, base64, `cid:` references, extreme numbers), since random
//! text alone almost never reaches those branches.

use std::path::Path;
use std::time::Duration;

use enrichd::config::{Config, ConfigError, RawConfig};
use enrichd::emailgistics::actions::{
    Action, ActionKind, Assign, AssignmentSpec, BodyType, EmailAddress, ForwardMessage,
    InlineAsset, SendMessage, Tag,
};
use enrichd::emailgistics::payload::{self, Parsed, PayloadError};
use enrichd::emailgistics::validate::{self, MAX_CUSTOM_FIELD_CHARS};
use enrichd::engagelab::event::{self, Kind};
use enrichd::engagelab::verify::{
    self, sign, AppKey, VerifyError, APP_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use hyper::header::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{json, Value};

const SEED_PAYLOAD: &str = include_str!("../../examples/seed-payload.json");
const EXAMPLE_CONFIG: &str = include_str!("../../examples/enrichd.toml");
const CALLBACKS: [&str; 4] = [
    include_str!("../../examples/engagelab/route.json"),
    include_str!("../../examples/engagelab/soft_bounce.json"),
    include_str!("../../examples/engagelab/target.json"),
    include_str!("../../examples/engagelab/click.json"),
];

/// Fixed seed and case count: the same inputs on every run (CI must not
/// flake on a fresh random draw), few enough for a debug build. The seed is
/// arbitrary; `scripts/fuzz` is where new inputs are searched for.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x0e91_c4d5),
        // No regression files in the source tree: failures are reproduced
        // by the fixed seed, and fixed ones get a named unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- generators

/// Strings the host treats specially.
const WORDS: &[&str] = &[
    "",
    " ",
    "\t",
    "a@b.c",
    "client@example.com",
    "Ann <A@B.example>",
    "a@@b.c",
    "@b.c",
    "a@b..c",
    "a @b.c",
    "VIP",
    " VIP",
    "image/png",
    "image/",
    "iVBORw0KGgo=",
    "AA==",
    "A===",
    "AAA",
    "iVBO\r\nRw0K",
    "logo",
    "<img src=\"cid:logo\">",
    "CID:logo",
    "lucid:dream",
    "cid:",
    "received",
    "é",
    "😀",
];

/// Random text, a special word, two of them, or one repeated up to 120
/// times (long enough to cross the 100-character custom-field limit).
fn text() -> impl Strategy<Value = String> {
    let word = || proptest::sample::select(WORDS);
    prop_oneof![
        any::<String>(),
        "\\PC{0,12}",
        word().prop_map(str::to_owned),
        (word(), word()).prop_map(|(a, b)| format!("{a}{b}")),
        (word(), 0..120usize).prop_map(|(w, n)| w.repeat(n)),
    ]
}

/// Mostly a well-formed value, else any [`text`]: an action is accepted only
/// when all of its parts are, so parts must be valid far more often than
/// random text would be.
fn mostly(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![4 => valid, 1 => text()]
}

fn address() -> impl Strategy<Value = EmailAddress> {
    let address = mostly("[a-z]{1,6}(\\.[a-z]{1,4})?@[a-z]{1,6}\\.[a-z]{2,3}");
    (text(), address).prop_map(|(name, address)| EmailAddress { name, address })
}

fn addresses() -> impl Strategy<Value = Vec<EmailAddress>> {
    prop::collection::vec(address(), 0..3)
}

fn spec() -> impl Strategy<Value = AssignmentSpec> {
    (
        prop::option::of(prop::collection::vec(text(), 0..3)),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<i64>>(),
        any::<Option<i64>>(),
    )
        .prop_map(
            |(users, any_user, avail, max, within, method)| AssignmentSpec {
                users,
                assign_to_any_user: any_user,
                ignore_availability: avail,
                ignore_max_messages: max,
                assign_if_user_available_within_minutes: within,
                aa_method: method,
            },
        )
}

fn asset() -> impl Strategy<Value = InlineAsset> {
    (
        mostly("logo|banner|[a-z]{1,4}"),
        mostly("[a-z]{1,6}\\.png"),
        mostly("image/(png|gif|jpeg)"),
        mostly("([A-Za-z0-9+/]{4}){1,4}([A-Za-z0-9+/]{2}==)?"),
    )
        .prop_map(|(id, filename, content_type, b64)| InlineAsset {
            id,
            filename,
            content_type,
            base64_content: b64,
        })
}

fn send_message() -> impl Strategy<Value = SendMessage> {
    let body_type = || prop_oneof![Just(BodyType::Html), Just(BodyType::Text)];
    // (templateName, body, bodyType): mostly one of the two valid modes.
    let mode = prop_oneof![
        text().prop_map(|t| (Some(t), None, None)),
        (text(), body_type()).prop_map(|(b, t)| (None, Some(b), Some(t))),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(body_type()),
        ),
    ];
    (
        mode,
        prop::option::of(text()),
        addresses(),
        prop::option::of(addresses()),
        prop::option::of(addresses()),
        prop::option::of(prop::collection::vec(asset(), 0..3)),
    )
        .prop_map(
            |((template, body, body_type), subject, to, cc, bcc, assets)| SendMessage {
                template_name: template,
                body,
                body_type,
                subject,
                to_addresses: to,
                cc_addresses: cc,
                bcc_addresses: bcc,
                inline_assets: assets,
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    let kind = prop_oneof![
        (
            spec(),
            prop::option::of(prop::collection::vec(spec(), 0..3))
        )
            .prop_map(|(main, backup)| ActionKind::Assign(Assign {
                main_assignment: main,
                backup_assignments: backup,
            })),
        prop::collection::vec(text(), 0..6).prop_map(|tags| ActionKind::Tag(Tag { tags })),
        prop::collection::vec((text(), text()), 0..6).prop_map(ActionKind::SetCustomFields),
        send_message().prop_map(ActionKind::SendMessage),
        (addresses(), prop::option::of(text())).prop_map(|(to, comment)| {
            ActionKind::ForwardMessage(ForwardMessage {
                to_addresses: to,
                comment,
            })
        }),
    ];
    (prop::option::of(text()), kind).prop_map(|(name, kind)| Action { name, kind })
}

/// `base` with a few random byte edits (replace, insert, delete): inputs
/// that are almost valid, where parsers are most likely to go wrong.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
    prop::collection::vec(edit, 1..8).prop_map(move |edits| {
        let mut bytes = base.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        bytes
    })
}

// ------------------------------------------------------------------ payload

fn payload_value() -> impl Strategy<Value = Value> {
    let addr =
        || (text(), text()).prop_map(|(n, a)| json!({"emailAddress": {"name": n, "address": a}}));
    let list = move || {
        prop_oneof![
            Just(Value::Null),
            prop::collection::vec(addr(), 0..3).prop_map(Value::from)
        ]
    };
    let fields = prop::option::of(prop::collection::btree_map(text(), text(), 0..4));
    (
        (text(), text(), text(), text()),
        (addr(), addr(), list(), list()),
        (prop::option::of(text()), fields, any::<bool>()),
    )
        .prop_map(
            |((id, mailbox, subject, conv), (sender, from, to, cc), (body, fields, att))| {
                json!({
                    "id": id, "event": "received", "mailbox": mailbox, "subject": subject,
                    "conversationId": conv, "sender": sender, "from": from, "to": to, "cc": cc,
                    "bodyText": body, "customFields": fields, "hasAttachments": att,
                    "someFutureField": {"nested": [1, "two"]},
                })
            },
        )
}

/// Whether a generated payload has a keyed field over its documented cap.
fn over_a_length_cap(v: &Value) -> bool {
    let len = |v: &Value| v.as_str().map_or(0, str::len);
    let addresses = ["to", "cc"].into_iter().flat_map(|key| {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| len(&a["emailAddress"]["address"]))
    });
    len(&v["id"]) > payload::MAX_ID_BYTES
        || len(&v["conversationId"]) > payload::MAX_ID_BYTES
        || len(&v["mailbox"]) > payload::MAX_ADDRESS_BYTES
        || len(&v["subject"]) > payload::MAX_SUBJECT_BYTES
        || len(&v["internetMessageId"]) > payload::MAX_MESSAGE_ID_BYTES
        || len(&v["sender"]["emailAddress"]["address"]) > payload::MAX_ADDRESS_BYTES
        || len(&v["from"]["emailAddress"]["address"]) > payload::MAX_ADDRESS_BYTES
        || addresses
            .into_iter()
            .any(|n| n > payload::MAX_ADDRESS_BYTES)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn payload_parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = payload::parse(&body);
    }

    #[test]
    fn payload_parse_never_panics_on_a_mutated_seed(body in mutated(SEED_PAYLOAD)) {
        if let Ok(Parsed::Received(d)) = payload::parse(&body) {
            prop_assert_eq!(d.raw_json.as_bytes(), &body[..]);
        }
    }

    /// Generated payload → JSON text → parse gives back every field; one
    /// with a keyed field over its length cap is refused, naming a field.
    #[test]
    fn payload_round_trips(v in payload_value()) {
        let text = v.to_string();
        if over_a_length_cap(&v) {
            let refused = payload::parse(text.as_bytes());
            prop_assert!(
                matches!(&refused, Err(PayloadError::TooLong(e)) if e.to_string().starts_with("field `")),
                "{:?}", refused.map(|_| ())
            );
            return Ok(());
        }
        let Ok(Parsed::Received(d)) = payload::parse(text.as_bytes()) else {
            panic!("a well-formed payload was refused: {text}");
        };
        prop_assert_eq!(&d.id, &v["id"]);
        prop_assert_eq!(&d.mailbox, &v["mailbox"]);
        prop_assert_eq!(&d.subject, &v["subject"]);
        prop_assert_eq!(&d.conversation_id, &v["conversationId"]);
        prop_assert_eq!(&d.from.address, &v["from"]["emailAddress"]["address"]);
        prop_assert_eq!(&d.sender.name, &v["sender"]["emailAddress"]["name"]);
        let addresses = |key: &str| -> Vec<String> {
            v[key].as_array().into_iter().flatten()
                .map(|a| a["emailAddress"]["address"].as_str().unwrap().to_owned())
                .collect()
        };
        prop_assert_eq!(d.to.iter().map(|a| a.address.clone()).collect::<Vec<_>>(), addresses("to"));
        prop_assert_eq!(d.cc.iter().map(|a| a.address.clone()).collect::<Vec<_>>(), addresses("cc"));
        prop_assert_eq!(d.body_text.as_deref(), v["bodyText"].as_str());
        prop_assert_eq!(d.has_attachments, v["hasAttachments"].as_bool().unwrap());
        prop_assert_eq!(
            d.custom_fields.map(|f| serde_json::to_value(f).unwrap()).unwrap_or(Value::Null),
            v["customFields"].clone()
        );
        prop_assert_eq!(d.raw_json, text);
    }
}

// ----------------------------------------------------------------- validate

/// Caps small enough for the generated actions to reach them.
const SMALL_CAPS: validate::Caps = validate::Caps {
    max_list_items: 4,
    max_name_bytes: 64,
};

proptest! {
    #![proptest_config(config(512))]

    /// `check` never panics; what it accepts passes again unchanged, with
    /// no new notes (only the warnings about what it left as is: unused
    /// assets, dangling `cid:` references), and a third pass changes
    /// nothing (a fixed point); it keeps the documented limits; it
    /// serializes with one JSON key per custom field; and no list or name
    /// it accepts is over the caps (small caps here, so they are reached).
    #[test]
    fn validate_is_idempotent_and_keeps_the_limits(
        action in action(),
        caps in prop_oneof![Just(validate::Caps::default()), Just(SMALL_CAPS)],
    ) {
        let caps = &caps;
        let Ok(checked) = validate::check(action, caps) else { return Ok(()) };
        let again = validate::check(checked.action.clone(), caps).expect("accepted twice");
        prop_assert_eq!(&again.action, &checked.action);
        for note in &again.notes {
            prop_assert!(checked.notes.contains(note), "new note {:?}", note);
        }
        prop_assert_eq!(validate::check(again.action.clone(), caps), Ok(again));
        if let Some(name) = &checked.action.name {
            prop_assert!(!name.trim().is_empty());
        }
        match &checked.action.kind {
            ActionKind::Tag(tag) => {
                prop_assert!(!tag.tags.is_empty());
                prop_assert!(tag.tags.len() <= caps.max_list_items);
                prop_assert!(tag.tags.iter().all(|t| t.len() <= caps.max_name_bytes));
                for (i, t) in tag.tags.iter().enumerate() {
                    prop_assert!(!t.is_empty() && t.trim() == t, "kept {:?}", t);
                    prop_assert!(!tag.tags[..i].contains(t), "duplicate {:?}", t);
                }
            }
            ActionKind::SetCustomFields(fields) => {
                prop_assert!(!fields.is_empty());
                prop_assert!(fields.len() <= caps.max_list_items);
                prop_assert!(fields.iter().all(|(k, _)| k.len() <= caps.max_name_bytes));
                for (i, (k, v)) in fields.iter().enumerate() {
                    prop_assert!(!k.is_empty());
                    prop_assert!(v.chars().count() <= MAX_CUSTOM_FIELD_CHARS);
                    prop_assert!(!fields[..i].iter().any(|(o, _)| o == k));
                }
                let json = serde_json::to_value(&checked.action).unwrap();
                prop_assert_eq!(json["value"].as_object().map(|o| o.len()), Some(fields.len()));
            }
            ActionKind::SendMessage(m) => prop_assert!(!m.to_addresses.is_empty()),
            ActionKind::ForwardMessage(f) => prop_assert!(!f.to_addresses.is_empty()),
            ActionKind::Assign(_) => {}
        }
    }
}

// ---------------------------------------------------------------- engagelab

const KIND_NAMES: &[&str] = &[
    "target",
    "sent",
    "delivered",
    "invalid_email",
    "soft_bounce",
    "open",
    "click",
    "unsubscribe",
    "report_spam",
    "route",
    "deferred",
    "Open",
];

fn callback_value() -> impl Strategy<Value = Value> {
    let kind = proptest::sample::select(KIND_NAMES);
    (
        (kind, any::<bool>(), text(), text()),
        (text(), text(), any::<i64>(), prop::option::of(text())),
    )
        .prop_map(
            |((kind, as_status, message_id, from), (subject, url, itime, arg))| {
                let mut v = json!({
                    "server": "email", "message_id": message_id, "from": from,
                    "subject": subject, "to": "x@y.example", "itime": itime,
                    "custom_args": {"arg": arg},
                });
                if as_status {
                    v["status"] = json!({"message_status": kind, "status_data": {"url": url}});
                } else {
                    v["response"] = json!({"event": kind, "response_data": {"url": url}});
                }
                v
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn callback_parse_never_panics(body in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(c) = event::parse(&body) {
            let _ = (c.address(), enrichd::engagelab::wit_event(&c));
        }
    }

    #[test]
    fn callback_parse_never_panics_on_mutated_examples(
        body in (0..CALLBACKS.len()).prop_flat_map(|i| mutated(CALLBACKS[i]))
    ) {
        if let Ok(c) = event::parse(&body) {
            prop_assert_eq!(c.raw.as_bytes(), &body[..]);
            prop_assert_eq!(Kind::from_name(c.kind.name()), c.kind.clone());
            let address = c.address();
            prop_assert!(address.is_empty() || address.contains('@'));
            prop_assert_eq!(enrichd::engagelab::wit_event(&c).address, address);
        }
    }

    /// Generated callback → JSON text → parse gives back the fields.
    #[test]
    fn callback_round_trips(v in callback_value()) {
        let text = v.to_string();
        let c = event::parse(text.as_bytes()).unwrap();
        let kind = v["status"]["message_status"].as_str()
            .or(v["response"]["event"].as_str()).unwrap();
        prop_assert_eq!(c.kind.name(), kind);
        prop_assert_eq!(&c.message_id, &v["message_id"]);
        prop_assert_eq!(&c.from, &v["from"]);
        prop_assert_eq!(&c.subject, &v["subject"]);
        prop_assert_eq!(&c.itime, &v["itime"]);
        prop_assert_eq!(&c.custom_args, &v["custom_args"]);
        // A route's address is the reply's sender, which this body lacks.
        let address = if c.kind == Kind::Route { "" } else { "x@y.example" };
        prop_assert_eq!(c.address(), address);
        let url = v["response"]["response_data"]["url"].as_str().map(str::to_owned);
        prop_assert_eq!(c.url, url);
    }
}

// ------------------------------------------------------------------- verify

const NOW_MS: u64 = 1_676_617_200_000;

fn headers(timestamp: &str, signature: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(TIMESTAMP_HEADER, HeaderValue::from_str(timestamp).unwrap());
    map.insert(APP_KEY_HEADER, HeaderValue::from_static("email"));
    map.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
    map
}

/// A non-empty app key of printable ASCII (what a config can hold).
fn app_key() -> impl Strategy<Value = String> {
    "[!-~]{1,80}"
}

proptest! {
    #![proptest_config(config(256))]

    /// A correctly signed timestamp, in seconds or ms, is accepted exactly
    /// when it lies within the window (the boundary included).
    #[test]
    fn verify_accepts_a_signed_timestamp_exactly_within_the_window(
        key in app_key(),
        window_secs in 0..3600u64,
        skew_ms in -8_000_000i64..8_000_000,
        in_seconds in any::<bool>(),
        uppercase in any::<bool>(),
    ) {
        let window = Duration::from_secs(window_secs);
        let mut ts_ms = NOW_MS.checked_add_signed(skew_ms).unwrap();
        let timestamp = if in_seconds {
            ts_ms -= ts_ms % 1000;
            (ts_ms / 1000).to_string()
        } else {
            ts_ms.to_string()
        };
        let mut sig = sign(&key, &timestamp);
        if uppercase {
            sig = sig.to_ascii_uppercase();
        }
        let skew = ts_ms as i64 - NOW_MS as i64;
        let result = verify::verify(&headers(&timestamp, &sig), &[AppKey::new(&key)], NOW_MS, window);
        if skew.unsigned_abs() <= window_secs * 1000 {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert_eq!(result, Err(VerifyError::Stale { skew_ms: skew }));
        }
    }

    /// Any other signature is refused as such, whatever the timestamp: one
    /// under another key, a tampered one, or junk.
    #[test]
    fn verify_refuses_every_other_signature(
        key in app_key(),
        other in app_key(),
        skew_ms in -8_000_000i64..8_000_000,
        flip in 0..64usize,
        junk in prop_oneof!["[ -~]{0,70}", "[0-9a-fA-F]{64}"],
        case in 0..3u8,
    ) {
        prop_assume!(key != other);
        let timestamp = NOW_MS.checked_add_signed(skew_ms).unwrap().to_string();
        let sig = match case {
            0 => sign(&other, &timestamp),
            1 => {
                let mut sig = sign(&key, &timestamp).into_bytes();
                sig[flip] = if sig[flip] == b'0' { b'1' } else { b'0' };
                String::from_utf8(sig).unwrap()
            }
            _ => junk,
        };
        prop_assume!(HeaderValue::from_str(&sig).is_ok());
        prop_assume!(!sig.eq_ignore_ascii_case(&sign(&key, &timestamp)));
        let result = verify::verify(
            &headers(&timestamp, &sig), &[AppKey::new(&key)], NOW_MS, Duration::from_secs(3600),
        );
        prop_assert_eq!(result, Err(VerifyError::BadSignature));
    }

    /// A timestamp that is not all ASCII digits is refused before the
    /// signature is looked at, even when it is signed.
    #[test]
    fn verify_refuses_a_timestamp_that_is_not_digits(key in app_key(), junk in "[ -~]{0,20}") {
        prop_assume!(junk.is_empty() || !junk.bytes().all(|b| b.is_ascii_digit()));
        let timestamp = format!("{}{junk}", NOW_MS / 1000);
        let result = verify::verify(
            &headers(&timestamp, &sign(&key, &timestamp)), &[AppKey::new(&key)], NOW_MS,
            Duration::from_secs(3600),
        );
        let expected = if junk.is_empty() { Ok(()) } else { Err(VerifyError::BadTimestamp) };
        prop_assert_eq!(result, expected);
    }
}

// ------------------------------------------------------------------- config

/// Numbers a config may hold, extremes included (TOML integers are i64).
fn number() -> impl Strategy<Value = i64> {
    // Mostly non-negative: a negative one is a TOML type error, refused
    // before resolve, and would hide the rest of the config from it.
    prop_oneof![
        2 => Just(0i64),
        2 => Just(1),
        1 => Just(-1),
        2 => Just(i64::MAX),
        4 => 0..200_000i64,
        4 => 0..=i64::MAX,
    ]
}

/// `key = number` lines for one table, each key present or not.
fn lines(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    // Each key mostly absent, so that most configs resolve and the numbers
    // that are present reach the checks after them.
    let value = prop::option::weighted(0.3, number());
    prop::collection::vec(value, keys.len()).prop_map(move |values| {
        keys.iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}\n")))
            .collect()
    })
}

/// A config with every numeric key random or absent; otherwise valid.
fn config_text() -> impl Strategy<Value = String> {
    (
        lines(&["max_body_bytes", "delivery_budget_ms"]),
        lines(&["retention_hours", "max_records", "flush_every_ms"]),
        lines(&["dedupe_hours", "max_attempts"]),
        lines(&[
            "ttl_secs",
            "negative_ttl_secs",
            "max_capacity",
            "refresh_every_secs",
        ]),
        lines(&[
            "timeout_ms",
            "fuel",
            "max_memory_bytes",
            "max_table_elements",
            "max_instances",
            "max_actions",
            "max_output_bytes",
        ]),
        lines(&["replay_window_secs"]),
    )
        .prop_map(|(top, idem, events, cache, plugin, engagelab)| {
            format!(
                "{top}[idempotency]\n{idem}[events]\n{events}\
                 [[crm]]\nname = \"main\"\nkind = \"embedded\"\n[crm.cache]\n{cache}\
                 [[plugin]]\nname = \"p\"\npath = \"p.wasm\"\n{plugin}\
                 [[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"p\" }}]\n\
                 [[engagelab]]\npath = \"/el\"\napp_keys = [{{ value = \"k\" }}]\n{engagelab}"
            )
        })
}

/// Parse and resolve as `Config::load` does, without the file; refusals
/// come back as the `ConfigError` the caller would see.
fn resolve(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: "enrichd.toml".into(),
        source: Box::new(e),
    })?;
    raw.resolve(Path::new("/etc/enrichd"), &|name| {
        (name == "SET").then(|| "from-env".to_owned())
    })
}

/// What an accepted config always holds.
fn assert_consistent(c: &Config) {
    assert!(!c.routes.is_empty() || !c.event_routes.is_empty());
    assert!(c.data_dir.is_absolute() && c.cache_dir.is_absolute());
    assert!(c.max_body_bytes > 0 && !c.delivery_budget.is_zero());
    for p in &c.plugins {
        assert!(p.path.is_absolute() && !p.timeout.is_zero() && p.limits.max_actions > 0);
    }
    for r in &c.routes {
        assert!(r.chain.iter().all(|e| e.plugin < c.plugins.len()));
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn config_resolve_never_panics_on_numbers(text in config_text()) {
        if let Ok(c) = resolve(&text) {
            assert_consistent(&c);
        }
    }

    #[test]
    fn config_never_panics_on_a_mutated_example(bytes in mutated(EXAMPLE_CONFIG)) {
        let Ok(text) = std::str::from_utf8(&bytes) else { return Ok(()) };
        if let Ok(c) = resolve(text) {
            assert_consistent(&c);
        }
    }
}

/// A file that is not a config is refused through `Config::load` with the
/// `Parse` variant naming the file, never a panic.
#[test]
fn config_load_refuses_garbage_with_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enrichd.toml");
    std::fs::write(&path, "listen = [\n").unwrap();
    match Config::load(&path) {
        Err(ConfigError::Parse { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// The properties above return early on refused input, so they would pass
/// vacuously if the generators never produced anything acceptable. This
/// checks that a fair share of each generator's output gets through.
#[test]
fn generators_reach_the_accepting_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    fn share<T: std::fmt::Debug>(
        strategy: impl Strategy<Value = T>,
        ok: impl Fn(T) -> bool,
    ) -> usize {
        let mut runner = TestRunner::new(config(200));
        (0..200)
            .filter(|_| ok(strategy.new_tree(&mut runner).unwrap().current()))
            .count()
    }
    let per_kind = |kind: &'static str| {
        share(action(), move |a| {
            a.kind.type_name() == kind && validate::check(a, &validate::Caps::default()).is_ok()
        })
    };
    for kind in [
        "assign",
        "tag",
        "setCustomFields",
        "sendMessage",
        "forwardMessage",
    ] {
        assert!(
            per_kind(kind) >= 2,
            "too few valid {kind} actions generated"
        );
    }
    let configs = share(config_text(), |t| resolve(&t).is_ok());
    assert!(configs >= 20, "{configs} of 200 configs resolve");
    let payloads = share(mutated(SEED_PAYLOAD), |b| payload::parse(&b).is_ok());
    let callbacks = (0..CALLBACKS.len()).prop_flat_map(|i| mutated(CALLBACKS[i]));
    let callbacks = share(callbacks, |b| event::parse(&b).is_ok());
    assert!(
        payloads >= 10 && callbacks >= 10,
        "{payloads} payloads and {callbacks} callbacks of 200 mutated ones parse"
    );
}

// ------------------------------------------------------------ stored answers

use enrichd::emailgistics::chain::{Envelope, Status};
use enrichd::emailgistics::record::MAX_RECORD_BYTES;
use enrichd::plugin::policy::DEFAULT_MAX_OUTPUT_BYTES;
use enrichd::storage::{codec, StoredDelivery};

/// Any JSON value, floats and extreme integers included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An answer shaped like the chain's: an envelope of every plugin's
/// actions, and a record whose plugins list them again, each entry kept
/// as the chain writes it (0), without its actions (1, as a bounded record
/// leaves them out), with other actions (2), or with an extra field (3).
fn chain_answer() -> impl Strategy<Value = StoredDelivery> {
    let plugin = (prop::collection::vec(action(), 0..3), 0..4u8, json_value());
    (
        prop::collection::vec(plugin, 0..5),
        text(),
        any::<u64>(),
        prop::sample::select(vec![200u16, 400, 413, 503]),
    )
        .prop_map(|(plugins, message, stamp, status)| {
            let envelope = Envelope {
                status: Status::Success,
                message: message.clone(),
                actions: plugins.iter().flat_map(|(a, _, _)| a.clone()).collect(),
            };
            let entries: Vec<Value> = plugins
                .iter()
                .enumerate()
                .map(|(i, (actions, edit, other))| {
                    let mut entry = json!({"plugin": format!("p{i}"), "outcome": "applied",
                        "actions": actions, "dropped": [], "notes": []});
                    match edit {
                        1 => drop(entry.as_object_mut().unwrap().remove("actions")),
                        2 => entry["actions"] = other.clone(),
                        3 => entry["extra"] = other.clone(),
                        _ => {}
                    }
                    entry
                })
                .collect();
            StoredDelivery {
                route: "/hook".into(),
                id: message.clone(),
                stored_at_ms: stamp,
                status,
                body: serde_json::to_string(&envelope).unwrap(),
                record: json!({"message": message, "plugins": entries}),
            }
        })
}

fn any_answer() -> impl Strategy<Value = StoredDelivery> {
    (
        text(),
        text(),
        any::<u64>(),
        any::<u16>(),
        text(),
        json_value(),
    )
        .prop_map(
            |(route, id, stored_at_ms, status, body, record)| StoredDelivery {
                route,
                id,
                stored_at_ms,
                status,
                body,
                record,
            },
        )
}

fn assert_round_trip(d: &StoredDelivery) -> Result<(), TestCaseError> {
    let bytes = codec::encode(d);
    let back = codec::decode(&d.route, &d.id, &bytes);
    prop_assert!(back.is_ok(), "{:?}", back);
    let back = back.unwrap();
    prop_assert_eq!(back.body.as_bytes(), d.body.as_bytes());
    prop_assert_eq!(&back, d);
    prop_assert_eq!(codec::stored_at_ms(&bytes), Some(d.stored_at_ms));
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn chain_answers_round_trip_through_the_codec(d in chain_answer()) {
        assert_round_trip(&d)?;
    }

    #[test]
    fn any_answer_round_trips_through_the_codec(d in any_answer()) {
        assert_round_trip(&d)?;
    }

    #[test]
    fn codec_decode_never_panics(kind in 0..3u8, rest in prop::collection::vec(any::<u8>(), 0..300)) {
        // A v1 header (raw, zstd, unknown encoding) before random bytes, and
        // the random bytes alone.
        let mut value = vec![codec::VERSION_1];
        value.extend_from_slice(&[0; 10]);
        value.push(kind);
        value.extend_from_slice(&rest);
        let _ = codec::decode("/r", "i", &value);
        let _ = codec::decode("/r", "i", &rest);
        let _ = codec::stored_at_ms(&rest);
    }

    #[test]
    fn codec_decode_never_panics_on_a_damaged_value(
        d in chain_answer(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = codec::encode(&d);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = codec::decode(&d.route, &d.id, &bytes);
    }
}

#[test]
fn the_codec_compresses_every_whole_record_and_a_default_plugin_output() {
    // The codec (storage) may not name emailgistics: its bound is checked
    // here. A payload over it is stored raw (nothing lost), so this keeps
    // every record and a plugin's default output compressed.
    const { assert!(MAX_RECORD_BYTES + DEFAULT_MAX_OUTPUT_BYTES < codec::MAX_ZSTD_PAYLOAD_BYTES) }
}
