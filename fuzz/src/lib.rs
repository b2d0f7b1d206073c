//! Shared pieces of the fuzz targets: building [`Action`]s from fuzz input
//! and the properties every target asserts.
//!
//! Actions have no `Deserialize` (plugins hand them over as WIT values), so
//! the `validate` target builds them from raw bytes with `arbitrary`. Plain
//! random strings almost never form an email address, base64 or a `cid:`
//! reference, so [`text`] mixes them with a small vocabulary of the shapes
//! validation branches on.

use arbitrary::{Result, Unstructured};
use enrichd::emailgistics::actions::{
    Action, ActionKind, Assign, AssignmentSpec, BodyType, EmailAddress, ForwardMessage,
    InlineAsset, SendMessage, Tag,
};
use enrichd::emailgistics::validate::{self, MAX_CUSTOM_FIELD_CHARS};

/// Strings validation treats specially.
const WORDS: &[&str] = &[
    "",
    " ",
    "\t",
    "a@b.c",
    "client@example.com",
    "a@@b.c",
    "@b.c",
    "a@b..c",
    "a @b.c",
    "VIP",
    " VIP",
    "Joe Cool",
    "image/png",
    "png",
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
    "é",
    "😀",
];

/// A string: random, from [`WORDS`], or a concatenation of both.
pub fn text(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary::<String>()?,
        1 => (*u.choose(WORDS)?).to_owned(),
        2 => format!("{}{}", u.choose(WORDS)?, u.choose(WORDS)?),
        _ => {
            // Long values exercise truncation and the char-count limit.
            let unit = u.choose(WORDS)?;
            unit.repeat(u.int_in_range(0..=120)?)
        }
    })
}

fn list<T>(
    u: &mut Unstructured,
    max: usize,
    mut item: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| item(u)).collect()
}

fn maybe<T>(
    u: &mut Unstructured,
    item: impl FnOnce(&mut Unstructured) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.arbitrary()? { Some(item(u)?) } else { None })
}

fn address(u: &mut Unstructured) -> Result<EmailAddress> {
    Ok(EmailAddress {
        name: text(u)?,
        address: text(u)?,
    })
}

fn spec(u: &mut Unstructured) -> Result<AssignmentSpec> {
    Ok(AssignmentSpec {
        users: maybe(u, |u| list(u, 4, text))?,
        assign_to_any_user: u.arbitrary()?,
        ignore_availability: u.arbitrary()?,
        ignore_max_messages: u.arbitrary()?,
        assign_if_user_available_within_minutes: u.arbitrary()?,
        aa_method: u.arbitrary()?,
    })
}

fn asset(u: &mut Unstructured) -> Result<InlineAsset> {
    Ok(InlineAsset {
        id: text(u)?,
        filename: text(u)?,
        content_type: text(u)?,
        base64_content: text(u)?,
    })
}

/// An action of any type with any contents.
pub fn action(u: &mut Unstructured) -> Result<Action> {
    let kind = match u.int_in_range(0..=4)? {
        0 => ActionKind::Assign(Assign {
            main_assignment: spec(u)?,
            backup_assignments: maybe(u, |u| list(u, 3, spec))?,
        }),
        1 => ActionKind::Tag(Tag {
            tags: list(u, 6, text)?,
        }),
        2 => ActionKind::SetCustomFields(list(u, 6, |u| Ok((text(u)?, text(u)?)))?),
        3 => ActionKind::SendMessage(SendMessage {
            template_name: maybe(u, text)?,
            body: maybe(u, text)?,
            body_type: maybe(u, |u| {
                Ok(if u.arbitrary()? {
                    BodyType::Html
                } else {
                    BodyType::Text
                })
            })?,
            subject: maybe(u, text)?,
            to_addresses: list(u, 3, address)?,
            cc_addresses: maybe(u, |u| list(u, 3, address))?,
            bcc_addresses: maybe(u, |u| list(u, 3, address))?,
            inline_assets: maybe(u, |u| list(u, 3, asset))?,
        }),
        _ => ActionKind::ForwardMessage(ForwardMessage {
            to_addresses: list(u, 3, address)?,
            comment: maybe(u, text)?,
        }),
    };
    Ok(Action {
        name: maybe(u, text)?,
        kind,
    })
}

/// Caps for one run: small enough to be reached, up to the defaults.
pub fn caps(u: &mut Unstructured) -> Result<validate::Caps> {
    Ok(validate::Caps {
        max_list_items: u.int_in_range(1..=100)?,
        max_name_bytes: u.int_in_range(16..=256)?,
    })
}

/// The properties of [`validate::check`]: it never panics; what it accepts
/// passes again unchanged and with no new notes (idempotent); what it accepts
/// keeps the documented limits and the plugin's caps; the result serializes
/// to JSON with one key per custom field.
pub fn check_validate(action: Action, caps: &validate::Caps) {
    let Ok(checked) = validate::check(action, caps) else {
        return;
    };
    let again = validate::check(checked.action.clone(), caps)
        .unwrap_or_else(|why| panic!("accepted action rejected on a second pass: {why}"));
    assert_eq!(
        again.action, checked.action,
        "second pass changed the action"
    );
    // Warnings about what was left as is (unused assets, dangling `cid:`
    // references) recur; nothing new may appear, and the third pass is a
    // fixed point.
    for note in &again.notes {
        assert!(checked.notes.contains(note), "second pass noted {note:?}");
    }
    assert_eq!(validate::check(again.action.clone(), caps), Ok(again));
    if let Some(name) = &checked.action.name {
        assert!(!name.trim().is_empty(), "blank name kept");
    }
    match &checked.action.kind {
        ActionKind::Tag(tag) => {
            assert!(!tag.tags.is_empty());
            assert!(tag.tags.len() <= caps.max_list_items, "tags over the cap");
            assert!(tag.tags.iter().all(|t| t.len() <= caps.max_name_bytes));
            for (i, t) in tag.tags.iter().enumerate() {
                assert!(!t.is_empty() && t.trim() == t, "unusable tag {t:?} kept");
                assert!(!tag.tags[..i].contains(t), "duplicate tag {t:?} kept");
            }
        }
        ActionKind::SetCustomFields(fields) => {
            assert!(!fields.is_empty());
            assert!(fields.len() <= caps.max_list_items, "keys over the cap");
            assert!(fields.iter().all(|(k, _)| k.len() <= caps.max_name_bytes));
            for (i, (k, v)) in fields.iter().enumerate() {
                assert!(!k.is_empty(), "empty key kept");
                assert!(
                    v.chars().count() <= MAX_CUSTOM_FIELD_CHARS,
                    "value too long"
                );
                assert!(!fields[..i].iter().any(|(o, _)| o == k), "duplicate key");
            }
        }
        ActionKind::SendMessage(m) => assert!(!m.to_addresses.is_empty()),
        ActionKind::ForwardMessage(f) => assert!(!f.to_addresses.is_empty()),
        ActionKind::Assign(_) => {}
    }
    let json = serde_json::to_value(&checked.action).expect("an action serializes");
    assert_eq!(json["type"], checked.action.kind.type_name());
    if let ActionKind::SetCustomFields(fields) = &checked.action.kind {
        assert_eq!(
            json["value"].as_object().map(|o| o.len()),
            Some(fields.len())
        );
    }
}

/// A candidate `X-WebHook-Timestamp`: random bytes, or seconds or
/// milliseconds near `now_ms` (within twice the window either way).
fn timestamp(u: &mut Unstructured, now_ms: u64, window_ms: u64) -> Result<Vec<u8>> {
    let near = |u: &mut Unstructured| -> Result<u64> {
        let delta = u.int_in_range(0..=window_ms.saturating_mul(2))?;
        Ok(if u.arbitrary()? {
            now_ms.saturating_add(delta)
        } else {
            now_ms.saturating_sub(delta)
        })
    };
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary::<Vec<u8>>()?,
        1 => (near(u)? / 1000).to_string().into_bytes(),
        2 => near(u)?.to_string().into_bytes(),
        _ => format!("{}{}", near(u)?, u.choose(WORDS)?).into_bytes(),
    })
}

/// Draws EngageLab headers, app keys, a clock and a window from `u`, and
/// checks [`verify`](enrichd::engagelab::verify::verify) against the
/// documented rules: headers present, AppKey `email`, an all-digit
/// timestamp (seconds below 10^11, else ms), a hex HMAC-SHA256 of the
/// timestamp under one of the keys, and only then the replay window.
pub fn check_verify(u: &mut Unstructured) -> Result<()> {
    use enrichd::engagelab::verify::{
        sign, verify, AppKey, VerifyError, APP_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
    };
    use hyper::header::{HeaderMap, HeaderValue};
    use std::time::Duration;

    let keys: Vec<String> = list(u, 3, text)?;
    let now_ms: u64 = u.int_in_range(0..=5_000_000_000_000)?;
    let window_ms = u64::from(u.int_in_range(0..=7200u32)?) * 1000;
    let ts = timestamp(u, now_ms, window_ms)?;
    let app_key = if u.ratio(7, 8)? {
        b"email".to_vec()
    } else {
        u.arbitrary::<Vec<u8>>()?
    };
    let ts_text = String::from_utf8_lossy(&ts).into_owned();
    let signature = match (u.int_in_range(0..=4)?, keys.is_empty()) {
        (0, _) | (_, true) => u.arbitrary::<Vec<u8>>()?,
        (1, false) => sign(u.choose(&keys)?, &ts_text).into_bytes(),
        (2, false) => sign(u.choose(&keys)?, &ts_text)
            .to_ascii_uppercase()
            .into_bytes(),
        (3, false) => sign(&text(u)?, &ts_text).into_bytes(),
        (_, false) => {
            let mut sig = sign(u.choose(&keys)?, &ts_text).into_bytes();
            let at = u.choose_index(sig.len())?;
            sig[at] = if sig[at] == b'0' { b'1' } else { b'0' };
            sig
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (TIMESTAMP_HEADER, &ts),
        (APP_KEY_HEADER, &app_key),
        (SIGNATURE_HEADER, &signature),
    ] {
        // Values hyper would refuse never reach verify; a missing header may.
        match HeaderValue::from_bytes(value) {
            Ok(v) if u.ratio(15, 16)? => {
                headers.insert(name, v);
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    let app_keys: Vec<AppKey> = keys.iter().map(|k| AppKey::new(k)).collect();
    let got = verify(
        &headers,
        &app_keys,
        now_ms,
        Duration::from_millis(window_ms),
    );

    let expected = (|| {
        for name in [TIMESTAMP_HEADER, APP_KEY_HEADER, SIGNATURE_HEADER] {
            if !headers.contains_key(name) {
                return Err(VerifyError::Missing(name));
            }
        }
        if app_key != b"email" {
            return Err(VerifyError::WrongAppKeyHeader);
        }
        let value: u64 = match std::str::from_utf8(&ts) {
            Ok(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                t.parse().map_err(|_| VerifyError::BadTimestamp)?
            }
            _ => return Err(VerifyError::BadTimestamp),
        };
        let ts_ms = if value < 100_000_000_000 {
            value * 1000
        } else {
            value
        };
        let claimed = signature.to_ascii_lowercase();
        if !keys.iter().any(|k| sign(k, &ts_text).as_bytes() == claimed) {
            return Err(VerifyError::BadSignature);
        }
        let skew = i128::from(ts_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(window_ms) {
            let skew_ms = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
            return Err(VerifyError::Stale { skew_ms });
        }
        Ok(())
    })();
    assert_eq!(
        got, expected,
        "ts {ts_text:?} now {now_ms} window {window_ms} ms"
    );
    Ok(())
}
