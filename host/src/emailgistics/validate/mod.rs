//! Validation of Emailgistics response actions before they leave the host.
//!
//! Every action a plugin returns passes through [`check`] before it goes into
//! the response envelope. The check either accepts the action (possibly
//! repaired, with a note per repair) or rejects it with a one-line reason
//! that names the offending field.
//!
//! Why be stricter than Emailgistics? The platform is lenient and silent: it
//! drops unknown users, tags and custom-field keys without a trace, truncates
//! long custom-field values, and throws away a malformed `sendMessage` whole,
//! recording that only in the rule's admin log. A plugin author never sees
//! any of it. Catching the mistakes we *can* detect here (empty lists,
//! both/neither modes, tags that can never match, broken addresses or
//! base64) turns them into log lines on our side instead of silent no-ops on
//! theirs. What this module cannot know is whether a user, tag, key or
//! template exists in the mailbox; that needs mailbox configuration the host
//! does not have.
//!
//! A plugin is untrusted, so validation is also a budget: every list of an
//! action is capped ([`Caps::max_list_items`]) and so is every name-like
//! value ([`Caps::max_name_bytes`], addresses [`MAX_ADDRESS_BYTES`]). The
//! caps are checked before any per-item work, so a 90 000-key action costs
//! O(1) to refuse; everything else is linear (hash sets, no pairwise
//! comparisons). Over a cap the whole action is dropped with a reason naming
//! the limit and its value, never truncated silently; a reason or note never
//! quotes a value longer than the name cap.

use std::collections::HashSet;
use std::fmt;

use super::actions::{
    Action, ActionKind, Assign, AssignmentSpec, BodyType, EmailAddress, ForwardMessage,
    InlineAsset, SendMessage, Tag,
};
use crate::plugin::policy::{Limits, DEFAULT_MAX_LIST_ITEMS, DEFAULT_MAX_NAME_BYTES};

/// An action that passed validation, possibly adjusted (e.g. truncated values), with notes on what was adjusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The action to send, after any adjustments.
    pub action: Action,
    /// One line per adjustment or warning; empty when the action was sent as written.
    pub notes: Vec<String>,
}

/// Why an action was dropped; `Display` gives a one-line reason naming the field, e.g. "assign.mainAssignment: set either users or assignToAnyUser, not both".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Maximum length of a custom-field value, in Unicode characters (runes), per the setCustomFields reference.
pub const MAX_CUSTOM_FIELD_CHARS: usize = 100;

pub use crate::text::MAX_ADDRESS_BYTES;

/// Longest `sendMessage.subject`, in bytes: RFC 5322's limit for one line
/// of a header; a longer subject is a bug or an attack, not a subject.
pub const MAX_SUBJECT_BYTES: usize = 998;

/// The per-plugin caps validation applies (from the plugin's [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Items in one list of one action (tags, custom-field keys, users,
    /// backup assignments, to/cc/bcc recipients, inline assets).
    pub max_list_items: usize,
    /// Bytes of one name-like value (tag name, custom-field key, user name,
    /// template name, display name, action label, asset id, filename and
    /// content type).
    pub max_name_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_list_items: DEFAULT_MAX_LIST_ITEMS,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
        }
    }
}

impl From<&Limits> for Caps {
    fn from(l: &Limits) -> Self {
        Caps {
            max_list_items: l.max_list_items,
            max_name_bytes: l.max_name_bytes,
        }
    }
}

/// Validates one action under `caps`, returning it (possibly adjusted, with
/// notes) or the reason it must be dropped.
pub fn check(action: Action, caps: &Caps) -> Result<Checked, Rejected> {
    check_list_caps(&action, caps)?;
    let mut notes = Vec::new();
    if let Some(n) = &action.name {
        cap_name("name", n, caps)?;
    }
    let name = normalise_name(action.name, &mut notes);
    let kind = match action.kind {
        ActionKind::Assign(v) => ActionKind::Assign(check_assign(v, caps, &mut notes)?),
        ActionKind::Tag(v) => ActionKind::Tag(check_tag(v, caps, &mut notes)?),
        ActionKind::SetCustomFields(v) => {
            ActionKind::SetCustomFields(check_custom_fields(v, caps, &mut notes)?)
        }
        ActionKind::SendMessage(v) => {
            ActionKind::SendMessage(check_send_message(v, caps, &mut notes)?)
        }
        ActionKind::ForwardMessage(v) => {
            check_forward_message(&v, caps)?;
            ActionKind::ForwardMessage(v)
        }
    };
    Ok(Checked {
        action: Action { name, kind },
        notes,
    })
}

/// Refuses an action with a list longer than `max_list_items`, looking at
/// list lengths only (no per-item work): the first step of [`check`], and
/// cheap enough to screen an output before anything else is done with it.
pub fn check_list_caps(action: &Action, caps: &Caps) -> Result<(), Rejected> {
    let users = |path: &str, spec: &AssignmentSpec| match &spec.users {
        Some(u) => cap_list(&format!("{path}.users"), "users", u.len(), caps),
        None => Ok(()),
    };
    match &action.kind {
        ActionKind::Assign(a) => {
            users("assign.mainAssignment", &a.main_assignment)?;
            let backups = a.backup_assignments.as_deref().unwrap_or(&[]);
            let path = "assign.backupAssignments";
            cap_list(path, "backup assignments", backups.len(), caps)?;
            for (i, spec) in backups.iter().enumerate() {
                users(&format!("{path}[{i}]"), spec)?;
            }
            Ok(())
        }
        ActionKind::Tag(t) => cap_list("tag.tags", "tags", t.tags.len(), caps),
        ActionKind::SetCustomFields(f) => cap_list("setCustomFields", "keys", f.len(), caps),
        ActionKind::SendMessage(m) => {
            let lists = [
                (
                    "sendMessage.toAddresses",
                    "recipients",
                    Some(&m.to_addresses),
                ),
                (
                    "sendMessage.ccAddresses",
                    "recipients",
                    m.cc_addresses.as_ref(),
                ),
                (
                    "sendMessage.bccAddresses",
                    "recipients",
                    m.bcc_addresses.as_ref(),
                ),
            ];
            for (path, what, list) in lists {
                cap_list(path, what, list.map_or(0, Vec::len), caps)?;
            }
            let assets = m.inline_assets.as_ref().map_or(0, Vec::len);
            cap_list("sendMessage.inlineAssets", "inline assets", assets, caps)
        }
        ActionKind::ForwardMessage(f) => cap_list(
            "forwardMessage.toAddresses",
            "recipients",
            f.to_addresses.len(),
            caps,
        ),
    }
}

fn reject(path: &str, why: impl fmt::Display) -> Rejected {
    Rejected(format!("{path}: {why}"))
}

/// Refuses a list longer than `max_list_items`, before any per-item work.
fn cap_list(path: &str, what: &str, len: usize, caps: &Caps) -> Result<(), Rejected> {
    if len > caps.max_list_items {
        return Err(reject(
            path,
            format_args!(
                "{len} {what}, more than max_list_items = {}",
                caps.max_list_items
            ),
        ));
    }
    Ok(())
}

/// Refuses a name-like value longer than `max_name_bytes`; the reason gives
/// its size, never the value.
fn cap_name(path: &str, value: &str, caps: &Caps) -> Result<(), Rejected> {
    cap_bytes(path, value, "max_name_bytes", caps.max_name_bytes)
}

fn cap_bytes(path: &str, value: &str, limit: &str, max: usize) -> Result<(), Rejected> {
    if value.len() > max {
        return Err(reject(
            path,
            format_args!("{} bytes, more than {limit} = {max}", value.len()),
        ));
    }
    Ok(())
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// A blank label is useless in Admin logs; leaving it out reads the same.
fn normalise_name(name: Option<String>, notes: &mut Vec<String>) -> Option<String> {
    match name {
        Some(n) if is_blank(&n) => {
            notes.push(format!("name: blank label {n:?} removed"));
            None
        }
        other => other,
    }
}

// ---------------------------------------------------------------- addresses

/// Deliberately simple: catches typos and empty values, not every RFC 5322 corner.
fn is_email_address(s: &str) -> bool {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.contains('@') && domain.split('.').all(|l| !l.is_empty())
        }
        None => false,
    }
}

fn check_addresses(path: &str, list: &[EmailAddress], caps: &Caps) -> Result<(), Rejected> {
    for (i, a) in list.iter().enumerate() {
        cap_name(&format!("{path}[{i}].name"), &a.name, caps)?;
        let at = format!("{path}[{i}].address");
        cap_bytes(&at, &a.address, "the address limit", MAX_ADDRESS_BYTES)?;
        if !is_email_address(&a.address) {
            return Err(reject(
                &at,
                format_args!("{:?} is not an email address", a.address),
            ));
        }
    }
    Ok(())
}

/// Like [`check_addresses`], but the list must name at least one recipient.
fn check_recipients(path: &str, list: &[EmailAddress], caps: &Caps) -> Result<(), Rejected> {
    if list.is_empty() {
        return Err(reject(path, "no recipients"));
    }
    check_addresses(path, list, caps)
}

// ------------------------------------------------------------------- assign

fn check_assign(
    mut assign: Assign,
    caps: &Caps,
    notes: &mut Vec<String>,
) -> Result<Assign, Rejected> {
    check_spec("assign.mainAssignment", &assign.main_assignment, caps)?;
    if assign
        .backup_assignments
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        assign.backup_assignments = None;
        notes.push("assign.backupAssignments: empty list removed".into());
    }
    if let Some(backups) = &assign.backup_assignments {
        for (i, spec) in backups.iter().enumerate() {
            check_spec(&format!("assign.backupAssignments[{i}]"), spec, caps)?;
        }
    }
    Ok(assign)
}

/// The docs require exactly one of a `users` list or `assignToAnyUser: true`, "not both".
fn check_spec(path: &str, spec: &AssignmentSpec, caps: &Caps) -> Result<(), Rejected> {
    let any_user = spec.assign_to_any_user == Some(true);
    match &spec.users {
        Some(users) if users.is_empty() => {
            return Err(reject(&format!("{path}.users"), "empty list"));
        }
        Some(users) => {
            for (i, u) in users.iter().enumerate() {
                cap_name(&format!("{path}.users[{i}]"), u, caps)?;
                if is_blank(u) {
                    return Err(reject(&format!("{path}.users[{i}]"), "empty user name"));
                }
            }
            if any_user {
                return Err(reject(
                    path,
                    "set either users or assignToAnyUser, not both",
                ));
            }
        }
        None if !any_user => {
            return Err(reject(path, "set either users or assignToAnyUser: true"));
        }
        None => {}
    }
    non_negative(
        path,
        "assignIfUserAvailableWithinMinutes",
        spec.assign_if_user_available_within_minutes,
    )?;
    non_negative(path, "aaMethod", spec.aa_method)
}

fn non_negative(path: &str, field: &str, value: Option<i64>) -> Result<(), Rejected> {
    match value {
        Some(v) if v < 0 => Err(reject(
            &format!("{path}.{field}"),
            format_args!("must be >= 0, got {v}"),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------- tag

/// Tags match case-sensitively and exactly, so padded or empty names are dead weight.
fn check_tag(tag: Tag, caps: &Caps, notes: &mut Vec<String>) -> Result<Tag, Rejected> {
    if tag.tags.is_empty() {
        return Err(reject("tag.tags", "empty list"));
    }
    for (i, t) in tag.tags.iter().enumerate() {
        cap_name(&format!("tag.tags[{i}]"), t, caps)?;
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(tag.tags.len());
    let mut kept: Vec<String> = Vec::with_capacity(tag.tags.len());
    for (i, t) in tag.tags.into_iter().enumerate() {
        if t.is_empty() || t.trim() != t {
            notes.push(format!(
                "tag.tags[{i}]: dropped {t:?}: tags match exactly, so an empty or space-padded name never matches"
            ));
        } else if !seen.insert(t.clone()) {
            notes.push(format!("tag.tags[{i}]: dropped duplicate {t:?}"));
        } else {
            kept.push(t);
        }
    }
    if kept.is_empty() {
        return Err(reject("tag.tags", "no usable tag left"));
    }
    Ok(Tag { tags: kept })
}

// ---------------------------------------------------------- setCustomFields

fn check_custom_fields(
    fields: Vec<(String, String)>,
    caps: &Caps,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, String)>, Rejected> {
    if fields.is_empty() {
        return Err(reject("setCustomFields", "no fields"));
    }
    for (i, (key, _)) in fields.iter().enumerate() {
        // The path names the entry, not the key: the key is what is too long.
        cap_name(&format!("setCustomFields: key of entry {i}"), key, caps)?;
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(fields.len());
    let mut kept: Vec<(String, String)> = Vec::with_capacity(fields.len());
    for (i, (key, mut value)) in fields.into_iter().enumerate() {
        if key.is_empty() {
            notes.push(format!(
                "setCustomFields[\"\"]: dropped entry {i} (empty key)"
            ));
            continue;
        }
        // The JSON object can hold each key once; the first one wins.
        if !seen.insert(key.clone()) {
            notes.push(format!(
                "setCustomFields[{key:?}]: dropped duplicate key (entry {i})"
            ));
            continue;
        }
        // Emailgistics truncates too (§10.1); doing it here makes it visible.
        if let Some(original) = truncate_chars(&mut value, MAX_CUSTOM_FIELD_CHARS) {
            notes.push(format!(
                "setCustomFields[{key:?}]: value truncated from {original} to {MAX_CUSTOM_FIELD_CHARS} characters"
            ));
        }
        kept.push((key, value));
    }
    if kept.is_empty() {
        return Err(reject("setCustomFields", "no usable field left"));
    }
    Ok(kept)
}

/// Cuts `s` to its first `max` chars (Unicode scalar values, as Emailgistics
/// counts runes). Returns the original char count if anything was cut.
fn truncate_chars(s: &mut String, max: usize) -> Option<usize> {
    let (cut, _) = s.char_indices().nth(max)?;
    let original = s.chars().count();
    s.truncate(cut);
    Some(original)
}

// -------------------------------------------------------------- sendMessage

/// Which of the two mutually exclusive `sendMessage` modes an action uses.
enum Mode {
    Template,
    Inline(BodyType),
}

fn check_send_message(
    mut msg: SendMessage,
    caps: &Caps,
    notes: &mut Vec<String>,
) -> Result<SendMessage, Rejected> {
    if let Some(t) = &msg.template_name {
        cap_name("sendMessage.templateName", t, caps)?;
    }
    if let Some(s) = &msg.subject {
        cap_bytes(
            "sendMessage.subject",
            s,
            "the subject limit",
            MAX_SUBJECT_BYTES,
        )?;
    }
    let mode = send_mode(&msg)?;
    check_recipients("sendMessage.toAddresses", &msg.to_addresses, caps)?;
    check_addresses(
        "sendMessage.ccAddresses",
        msg.cc_addresses.as_deref().unwrap_or(&[]),
        caps,
    )?;
    check_addresses(
        "sendMessage.bccAddresses",
        msg.bcc_addresses.as_deref().unwrap_or(&[]),
        caps,
    )?;

    if msg.inline_assets.as_ref().is_some_and(Vec::is_empty) {
        msg.inline_assets = None;
        notes.push("sendMessage.inlineAssets: empty list removed".into());
    }
    if let Some(assets) = &msg.inline_assets {
        if !matches!(mode, Mode::Inline(BodyType::Html)) {
            return Err(reject(
                "sendMessage.inlineAssets",
                "only allowed with an inline HTML body (bodyType html)",
            ));
        }
        check_assets(assets, caps)?;
    }
    if let (Mode::Inline(BodyType::Html), Some(body)) = (&mode, &msg.body) {
        note_cid_mismatches(
            body,
            msg.inline_assets.as_deref().unwrap_or(&[]),
            caps,
            notes,
        );
    }
    Ok(msg)
}

/// Emailgistics drops the whole action when both modes or neither are present.
fn send_mode(msg: &SendMessage) -> Result<Mode, Rejected> {
    let inline = msg.body.is_some() || msg.body_type.is_some();
    match (&msg.template_name, inline) {
        (Some(_), true) => Err(reject(
            "sendMessage",
            "set either templateName or body+bodyType, not both",
        )),
        (None, false) => Err(reject(
            "sendMessage",
            "set either templateName or body+bodyType",
        )),
        (Some(name), false) if is_blank(name) => {
            Err(reject("sendMessage.templateName", "empty template name"))
        }
        (Some(_), false) => Ok(Mode::Template),
        (None, true) => match (&msg.body, msg.body_type) {
            (Some(_), Some(body_type)) => Ok(Mode::Inline(body_type)),
            (Some(_), None) => Err(reject(
                "sendMessage.bodyType",
                "missing; inline mode needs both body and bodyType",
            )),
            (None, _) => Err(reject(
                "sendMessage.body",
                "missing; inline mode needs both body and bodyType",
            )),
        },
    }
}

fn check_assets(assets: &[InlineAsset], caps: &Caps) -> Result<(), Rejected> {
    let mut ids: HashSet<&str> = HashSet::with_capacity(assets.len());
    for (i, asset) in assets.iter().enumerate() {
        let path = format!("sendMessage.inlineAssets[{i}]");
        check_asset(&path, asset, caps)?;
        if !ids.insert(&asset.id) {
            return Err(reject(
                &format!("{path}.id"),
                format_args!("duplicate id {:?}", asset.id),
            ));
        }
    }
    Ok(())
}

fn check_asset(path: &str, asset: &InlineAsset, caps: &Caps) -> Result<(), Rejected> {
    cap_name(&format!("{path}.id"), &asset.id, caps)?;
    cap_name(&format!("{path}.filename"), &asset.filename, caps)?;
    cap_name(&format!("{path}.contentType"), &asset.content_type, caps)?;
    if is_blank(&asset.id) {
        return Err(reject(&format!("{path}.id"), "empty"));
    }
    if is_blank(&asset.filename) {
        return Err(reject(&format!("{path}.filename"), "empty"));
    }
    let is_mime = asset
        .content_type
        .split_once('/')
        .is_some_and(|(kind, sub)| !is_blank(kind) && !is_blank(sub));
    if !is_mime {
        return Err(reject(
            &format!("{path}.contentType"),
            format_args!("{:?} is not a MIME type", asset.content_type),
        ));
    }
    check_base64(&asset.base64_content).map_err(|why| reject(&format!("{path}.base64Content"), why))
}

/// Standard base64 (RFC 4648 §4) with padding; ASCII whitespace (line breaks) is ignored.
fn check_base64(s: &str) -> Result<(), String> {
    let chars: Vec<char> = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if chars.is_empty() {
        return Err("empty".into());
    }
    if !chars.len().is_multiple_of(4) {
        return Err(format!(
            "not base64: length {} is not a multiple of 4",
            chars.len()
        ));
    }
    let data_len = chars.iter().rposition(|&c| c != '=').map_or(0, |i| i + 1);
    if chars.len() - data_len > 2 {
        return Err("not base64: more than two '=' padding characters".into());
    }
    let is_alphabet = |c: &char| c.is_ascii_alphanumeric() || *c == '+' || *c == '/';
    match chars[..data_len].iter().find(|c| !is_alphabet(c)) {
        Some(c) => Err(format!("not base64: invalid character {c:?}")),
        None => Ok(()),
    }
}

/// Warns (does not reject) on unused assets and on `cid:` references that
/// point nowhere: the message still goes out, just with a broken image or an
/// unused attachment. A body can hold any number of references, so the
/// notes stop at `max_list_items` with a count of the rest, and quoted ids
/// are cut to `max_name_bytes`.
fn note_cid_mismatches(body: &str, assets: &[InlineAsset], caps: &Caps, notes: &mut Vec<String>) {
    let refs = cid_refs(body);
    let referenced: HashSet<&str> = refs.iter().copied().collect();
    let ids: HashSet<&str> = assets.iter().map(|a| a.id.as_str()).collect();
    let unused: Vec<&str> = assets
        .iter()
        .map(|a| a.id.as_str())
        .filter(|id| !referenced.contains(id))
        .collect();
    let dangling: Vec<&str> = refs.into_iter().filter(|r| !ids.contains(r)).collect();
    let total = unused.len() + dangling.len();
    let unused = unused.into_iter().map(|id| {
        format!(
            "sendMessage.inlineAssets: asset {id:?} is never referenced as \"cid:{id}\" in the body"
        )
    });
    let dangling = dangling.into_iter().map(|r| {
        let r = crate::text::cut(
            r,
            caps.max_name_bytes,
            "max_name_bytes",
            caps.max_name_bytes,
        );
        format!("sendMessage.body: \"cid:{r}\" has no matching inline asset")
    });
    notes.extend(unused.chain(dangling).take(caps.max_list_items));
    if total > caps.max_list_items {
        notes.push(format!(
            "sendMessage: {} more cid mismatches not listed (max_list_items = {})",
            total - caps.max_list_items,
            caps.max_list_items
        ));
    }
}

/// The distinct ids of `cid:<id>` references in an HTML body, in order of appearance.
fn cid_refs(body: &str) -> Vec<&str> {
    // ASCII lowercasing keeps byte offsets, so indices found in `lower` are valid in `body`.
    let lower = body.to_ascii_lowercase();
    let mut refs: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("cid:") {
        let scheme_at = from + at;
        let start = scheme_at + "cid:".len();
        let rest = &body[start..];
        let len = rest
            .find(|c: char| c.is_whitespace() || "\"'<>()".contains(c))
            .unwrap_or(rest.len());
        // Skip words that merely end in "cid:" (e.g. "lucid:").
        let part_of_word = body[..scheme_at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric());
        let id = &rest[..len];
        if !part_of_word && !id.is_empty() && seen.insert(id) {
            refs.push(id);
        }
        from = start + len;
    }
    refs
}

// ----------------------------------------------------------- forwardMessage

/// `comment` is plain text and may be anything; only the recipients can be wrong.
fn check_forward_message(fwd: &ForwardMessage, caps: &Caps) -> Result<(), Rejected> {
    check_recipients("forwardMessage.toAddresses", &fwd.to_addresses, caps)
}

#[cfg(test)]
mod tests;
