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

use std::fmt;

use crate::actions::{
    Action, ActionKind, Assign, AssignmentSpec, BodyType, EmailAddress, ForwardMessage,
    InlineAsset, SendMessage, Tag,
};

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

/// Validates one action, returning it (possibly adjusted, with notes) or the reason it must be dropped.
pub fn check(action: Action) -> Result<Checked, Rejected> {
    let mut notes = Vec::new();
    let name = normalise_name(action.name, &mut notes);
    let kind = match action.kind {
        ActionKind::Assign(v) => ActionKind::Assign(check_assign(v, &mut notes)?),
        ActionKind::Tag(v) => ActionKind::Tag(check_tag(v, &mut notes)?),
        ActionKind::SetCustomFields(v) => {
            ActionKind::SetCustomFields(check_custom_fields(v, &mut notes)?)
        }
        ActionKind::SendMessage(v) => ActionKind::SendMessage(check_send_message(v, &mut notes)?),
        ActionKind::ForwardMessage(v) => {
            check_forward_message(&v)?;
            ActionKind::ForwardMessage(v)
        }
    };
    Ok(Checked {
        action: Action { name, kind },
        notes,
    })
}

fn reject(path: &str, why: impl fmt::Display) -> Rejected {
    Rejected(format!("{path}: {why}"))
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

fn check_addresses(path: &str, list: &[EmailAddress]) -> Result<(), Rejected> {
    match list.iter().position(|a| !is_email_address(&a.address)) {
        Some(i) => Err(reject(
            &format!("{path}[{i}].address"),
            format_args!("{:?} is not an email address", list[i].address),
        )),
        None => Ok(()),
    }
}

/// Like [`check_addresses`], but the list must name at least one recipient.
fn check_recipients(path: &str, list: &[EmailAddress]) -> Result<(), Rejected> {
    if list.is_empty() {
        return Err(reject(path, "no recipients"));
    }
    check_addresses(path, list)
}

// ------------------------------------------------------------------- assign

fn check_assign(mut assign: Assign, notes: &mut Vec<String>) -> Result<Assign, Rejected> {
    check_spec("assign.mainAssignment", &assign.main_assignment)?;
    if assign
        .backup_assignments
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        assign.backup_assignments = None;
        notes.push("assign.backupAssignments: empty list removed".into());
    }
    for (i, spec) in assign.backup_assignments.iter().flatten().enumerate() {
        check_spec(&format!("assign.backupAssignments[{i}]"), spec)?;
    }
    Ok(assign)
}

/// The docs require exactly one of a `users` list or `assignToAnyUser: true`, "not both".
fn check_spec(path: &str, spec: &AssignmentSpec) -> Result<(), Rejected> {
    let any_user = spec.assign_to_any_user == Some(true);
    match &spec.users {
        Some(users) if users.is_empty() => {
            return Err(reject(&format!("{path}.users"), "empty list"));
        }
        Some(users) => {
            if let Some(i) = users.iter().position(|u| is_blank(u)) {
                return Err(reject(&format!("{path}.users[{i}]"), "empty user name"));
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
fn check_tag(tag: Tag, notes: &mut Vec<String>) -> Result<Tag, Rejected> {
    if tag.tags.is_empty() {
        return Err(reject("tag.tags", "empty list"));
    }
    let mut kept: Vec<String> = Vec::with_capacity(tag.tags.len());
    for (i, t) in tag.tags.into_iter().enumerate() {
        if t.is_empty() || t.trim() != t {
            notes.push(format!(
                "tag.tags[{i}]: dropped {t:?}: tags match exactly, so an empty or space-padded name never matches"
            ));
        } else if kept.contains(&t) {
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
    notes: &mut Vec<String>,
) -> Result<Vec<(String, String)>, Rejected> {
    if fields.is_empty() {
        return Err(reject("setCustomFields", "no fields"));
    }
    let mut kept: Vec<(String, String)> = Vec::with_capacity(fields.len());
    for (i, (key, mut value)) in fields.into_iter().enumerate() {
        if key.is_empty() {
            notes.push(format!(
                "setCustomFields[\"\"]: dropped entry {i} (empty key)"
            ));
            continue;
        }
        // The JSON object can hold each key once; the first one wins.
        if kept.iter().any(|(k, _)| *k == key) {
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
    notes: &mut Vec<String>,
) -> Result<SendMessage, Rejected> {
    let mode = send_mode(&msg)?;
    check_recipients("sendMessage.toAddresses", &msg.to_addresses)?;
    check_addresses(
        "sendMessage.ccAddresses",
        msg.cc_addresses.as_deref().unwrap_or(&[]),
    )?;
    check_addresses(
        "sendMessage.bccAddresses",
        msg.bcc_addresses.as_deref().unwrap_or(&[]),
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
        check_assets(assets)?;
    }
    if let (Mode::Inline(BodyType::Html), Some(body)) = (&mode, &msg.body) {
        note_cid_mismatches(body, msg.inline_assets.as_deref().unwrap_or(&[]), notes);
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

fn check_assets(assets: &[InlineAsset]) -> Result<(), Rejected> {
    for (i, asset) in assets.iter().enumerate() {
        let path = format!("sendMessage.inlineAssets[{i}]");
        check_asset(&path, asset)?;
        if assets[..i].iter().any(|a| a.id == asset.id) {
            return Err(reject(
                &format!("{path}.id"),
                format_args!("duplicate id {:?}", asset.id),
            ));
        }
    }
    Ok(())
}

fn check_asset(path: &str, asset: &InlineAsset) -> Result<(), Rejected> {
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
/// unused attachment.
fn note_cid_mismatches(body: &str, assets: &[InlineAsset], notes: &mut Vec<String>) {
    let refs = cid_refs(body);
    for asset in assets {
        if !refs.contains(&asset.id.as_str()) {
            notes.push(format!(
                "sendMessage.inlineAssets: asset {:?} is never referenced as \"cid:{}\" in the body",
                asset.id, asset.id
            ));
        }
    }
    for r in refs {
        if !assets.iter().any(|a| a.id == r) {
            notes.push(format!(
                "sendMessage.body: \"cid:{r}\" has no matching inline asset"
            ));
        }
    }
}

/// The distinct ids of `cid:<id>` references in an HTML body, in order of appearance.
fn cid_refs(body: &str) -> Vec<&str> {
    // ASCII lowercasing keeps byte offsets, so indices found in `lower` are valid in `body`.
    let lower = body.to_ascii_lowercase();
    let mut refs: Vec<&str> = Vec::new();
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
        if !part_of_word && !id.is_empty() && !refs.contains(&id) {
            refs.push(id);
        }
        from = start + len;
    }
    refs
}

// ----------------------------------------------------------- forwardMessage

/// `comment` is plain text and may be anything; only the recipients can be wrong.
fn check_forward_message(fwd: &ForwardMessage) -> Result<(), Rejected> {
    check_recipients("forwardMessage.toAddresses", &fwd.to_addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ------------------------------------------------------------ helpers

    fn action(kind: ActionKind) -> Action {
        Action { name: None, kind }
    }

    fn addr(address: &str) -> EmailAddress {
        EmailAddress {
            name: "Someone".into(),
            address: address.into(),
        }
    }

    /// Asserts the action passes untouched with no notes.
    fn assert_unchanged(kind: ActionKind) {
        let a = action(kind);
        let checked = check(a.clone()).expect("should pass");
        assert_eq!(checked.action, a);
        assert!(
            checked.notes.is_empty(),
            "unexpected notes: {:?}",
            checked.notes
        );
    }

    fn rejected(kind: ActionKind) -> String {
        match check(action(kind)) {
            Ok(c) => panic!("expected rejection, got {c:?}"),
            Err(Rejected(why)) => why,
        }
    }

    fn passed(kind: ActionKind) -> Checked {
        check(action(kind)).expect("should pass")
    }

    fn users(names: &[&str]) -> AssignmentSpec {
        AssignmentSpec {
            users: Some(names.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn any_user() -> AssignmentSpec {
        AssignmentSpec {
            assign_to_any_user: Some(true),
            ..Default::default()
        }
    }

    fn assign(main: AssignmentSpec, backups: Option<Vec<AssignmentSpec>>) -> ActionKind {
        ActionKind::Assign(Assign {
            main_assignment: main,
            backup_assignments: backups,
        })
    }

    fn tag(tags: &[&str]) -> ActionKind {
        ActionKind::Tag(Tag {
            tags: tags.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn fields(pairs: &[(&str, &str)]) -> ActionKind {
        ActionKind::SetCustomFields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn fields_of(checked: &Checked) -> &[(String, String)] {
        match &checked.action.kind {
            ActionKind::SetCustomFields(f) => f,
            other => panic!("not setCustomFields: {other:?}"),
        }
    }

    fn template() -> SendMessage {
        SendMessage {
            template_name: Some("Claim Received".into()),
            to_addresses: vec![addr("client@example.com")],
            ..Default::default()
        }
    }

    fn asset(id: &str) -> InlineAsset {
        InlineAsset {
            id: id.into(),
            filename: format!("{id}.png"),
            content_type: "image/png".into(),
            base64_content: "iVBORw0KGgo=".into(),
        }
    }

    fn html(body: &str, assets: Option<Vec<InlineAsset>>) -> SendMessage {
        SendMessage {
            body: Some(body.into()),
            body_type: Some(BodyType::Html),
            subject: Some("Re: Your enquiry".into()),
            to_addresses: vec![addr("client@example.com")],
            inline_assets: assets,
            ..Default::default()
        }
    }

    fn send(msg: SendMessage) -> ActionKind {
        ActionKind::SendMessage(msg)
    }

    fn forward(to: Vec<EmailAddress>) -> ActionKind {
        ActionKind::ForwardMessage(ForwardMessage {
            to_addresses: to,
            comment: None,
        })
    }

    // --------------------------------------------------------------- name

    #[test]
    fn blank_name_is_normalised_to_none_with_a_note() {
        for blank in ["", "  \t"] {
            let mut a = action(tag(&["VIP"]));
            a.name = Some(blank.into());
            let checked = check(a).expect("should pass");
            assert_eq!(checked.action.name, None);
            assert_eq!(checked.notes.len(), 1);
            assert!(checked.notes[0].starts_with("name:"), "{:?}", checked.notes);
        }
    }

    #[test]
    fn real_name_is_kept_without_notes() {
        let mut a = action(tag(&["VIP"]));
        a.name = Some("Tag VIP".into());
        let checked = check(a.clone()).expect("should pass");
        assert_eq!(checked.action, a);
        assert!(checked.notes.is_empty());
    }

    #[test]
    fn rejected_displays_its_reason() {
        let r = Rejected("tag.tags: empty list".into());
        assert_eq!(r.to_string(), "tag.tags: empty list");
    }

    // ---------------------------------------------------------- addresses

    #[test]
    fn valid_addresses_pass() {
        for a in [
            "a@b",
            "client@example.com",
            "first.last+tag@mail.example.co.uk",
        ] {
            assert!(is_email_address(a), "{a}");
        }
    }

    #[test]
    fn invalid_addresses_fail() {
        for a in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "bob@@example.com",
            "a@b@example.com",
            "bob smith@example.com",
            " bob@example.com",
            "bob@example.com\n",
            "bob@.example.com",
            "bob@example..com",
            "bob@example.com.",
        ] {
            assert!(!is_email_address(a), "{a:?}");
        }
    }

    #[test]
    fn empty_display_name_is_allowed() {
        assert_unchanged(forward(vec![EmailAddress {
            name: String::new(),
            address: "uw@example.com".into(),
        }]));
    }

    // ------------------------------------------------------------- assign

    #[test]
    fn valid_assign_passes_unchanged() {
        assert_unchanged(assign(users(&["Dana Whitfield", "sam@example.com"]), None));
        assert_unchanged(assign(any_user(), None));
        let mut main = users(&["Dana"]);
        main.ignore_max_messages = Some(true);
        main.aa_method = Some(1);
        let mut backup = any_user();
        backup.assign_if_user_available_within_minutes = Some(60);
        backup.aa_method = Some(2);
        assert_unchanged(assign(main, Some(vec![users(&["Lee Park"]), backup])));
    }

    #[test]
    fn assign_users_with_any_user_false_is_fine() {
        let mut spec = users(&["Dana"]);
        spec.assign_to_any_user = Some(false);
        assert_unchanged(assign(spec, None));
    }

    #[test]
    fn assign_zero_minutes_and_method_are_fine() {
        let mut spec = any_user();
        spec.assign_if_user_available_within_minutes = Some(0);
        spec.aa_method = Some(0);
        assert_unchanged(assign(spec, None));
    }

    #[test]
    fn assign_both_users_and_any_user_is_rejected() {
        let mut spec = users(&["Dana"]);
        spec.assign_to_any_user = Some(true);
        assert_eq!(
            rejected(assign(spec, None)),
            "assign.mainAssignment: set either users or assignToAnyUser, not both"
        );
    }

    #[test]
    fn assign_neither_users_nor_any_user_is_rejected() {
        let why = rejected(assign(AssignmentSpec::default(), None));
        assert!(why.starts_with("assign.mainAssignment: "), "{why}");
        let only_false = AssignmentSpec {
            assign_to_any_user: Some(false),
            ..Default::default()
        };
        let why = rejected(assign(only_false, None));
        assert!(why.starts_with("assign.mainAssignment: "), "{why}");
    }

    #[test]
    fn assign_empty_users_list_is_rejected() {
        assert_eq!(
            rejected(assign(users(&[]), None)),
            "assign.mainAssignment.users: empty list"
        );
    }

    #[test]
    fn assign_blank_user_entry_is_rejected() {
        for blank in ["", "   "] {
            assert_eq!(
                rejected(assign(users(&["Dana", blank]), None)),
                "assign.mainAssignment.users[1]: empty user name"
            );
        }
    }

    #[test]
    fn assign_negative_minutes_is_rejected() {
        let mut spec = any_user();
        spec.assign_if_user_available_within_minutes = Some(-5);
        assert_eq!(
            rejected(assign(spec, None)),
            "assign.mainAssignment.assignIfUserAvailableWithinMinutes: must be >= 0, got -5"
        );
    }

    #[test]
    fn assign_negative_aa_method_is_rejected() {
        let mut spec = any_user();
        spec.aa_method = Some(-1);
        assert_eq!(
            rejected(assign(spec, None)),
            "assign.mainAssignment.aaMethod: must be >= 0, got -1"
        );
    }

    #[test]
    fn assign_backups_are_validated_with_their_index() {
        let mut both = users(&["Lee"]);
        both.assign_to_any_user = Some(true);
        assert_eq!(
            rejected(assign(any_user(), Some(vec![users(&["Lee"]), both]))),
            "assign.backupAssignments[1]: set either users or assignToAnyUser, not both"
        );
        assert_eq!(
            rejected(assign(any_user(), Some(vec![users(&[])]))),
            "assign.backupAssignments[0].users: empty list"
        );
    }

    #[test]
    fn assign_empty_backups_become_none_with_a_note() {
        let checked = passed(assign(any_user(), Some(vec![])));
        assert_eq!(checked.action.kind, assign(any_user(), None));
        assert_eq!(
            checked.notes,
            ["assign.backupAssignments: empty list removed"]
        );
    }

    // ---------------------------------------------------------------- tag

    #[test]
    fn valid_tags_pass_unchanged() {
        assert_unchanged(tag(&["Priority", "New Client"]));
        // Matching is case-sensitive, so these are two different tags.
        assert_unchanged(tag(&["VIP", "vip"]));
    }

    #[test]
    fn empty_tag_list_is_rejected() {
        assert_eq!(rejected(tag(&[])), "tag.tags: empty list");
    }

    #[test]
    fn blank_or_padded_tags_are_dropped_with_a_note_each() {
        let checked = passed(tag(&["", "VIP", " Priority", "New ", "  "]));
        assert_eq!(checked.action.kind, tag(&["VIP"]));
        assert_eq!(checked.notes.len(), 4, "{:?}", checked.notes);
        for (note, i) in checked.notes.iter().zip([0, 2, 3, 4]) {
            assert!(
                note.starts_with(&format!("tag.tags[{i}]: dropped")),
                "{note}"
            );
        }
    }

    #[test]
    fn duplicate_tags_are_removed_with_a_note() {
        let checked = passed(tag(&["VIP", "Priority", "VIP"]));
        assert_eq!(checked.action.kind, tag(&["VIP", "Priority"]));
        assert_eq!(checked.notes, ["tag.tags[2]: dropped duplicate \"VIP\""]);
    }

    #[test]
    fn tag_with_nothing_usable_left_is_rejected() {
        assert_eq!(rejected(tag(&["", " VIP"])), "tag.tags: no usable tag left");
    }

    // ---------------------------------------------------- setCustomFields

    #[test]
    fn valid_custom_fields_pass_unchanged() {
        assert_unchanged(fields(&[
            ("claimNumber", "CLM-104233"),
            ("policyNumber", "POL-771200"),
            ("region", ""),
        ]));
        assert_unchanged(fields(&[("exact", &"x".repeat(MAX_CUSTOM_FIELD_CHARS))]));
    }

    #[test]
    fn empty_custom_field_list_is_rejected() {
        assert_eq!(rejected(fields(&[])), "setCustomFields: no fields");
    }

    #[test]
    fn empty_key_is_dropped_with_a_note() {
        let checked = passed(fields(&[("", "x"), ("region", "EU")]));
        assert_eq!(
            fields_of(&checked),
            fields_of(&passed(fields(&[("region", "EU")])))
        );
        assert_eq!(checked.notes.len(), 1);
        assert!(
            checked.notes[0].contains("empty key"),
            "{:?}",
            checked.notes
        );
    }

    #[test]
    fn duplicate_key_keeps_the_first_with_a_note() {
        let checked = passed(fields(&[
            ("region", "EU"),
            ("other", "1"),
            ("region", "US"),
        ]));
        assert_eq!(
            checked.action.kind,
            fields(&[("region", "EU"), ("other", "1")])
        );
        assert_eq!(checked.notes.len(), 1);
        assert!(
            checked.notes[0].starts_with("setCustomFields[\"region\"]: dropped duplicate"),
            "{:?}",
            checked.notes
        );
    }

    #[test]
    fn no_usable_custom_field_left_is_rejected() {
        assert_eq!(
            rejected(fields(&[("", "a"), ("", "b")])),
            "setCustomFields: no usable field left"
        );
    }

    #[test]
    fn long_ascii_value_is_truncated_with_a_note() {
        let long = "x".repeat(MAX_CUSTOM_FIELD_CHARS + 1);
        let checked = passed(fields(&[("notes", &long)]));
        assert_eq!(fields_of(&checked)[0].1, "x".repeat(MAX_CUSTOM_FIELD_CHARS));
        assert_eq!(
            checked.notes,
            ["setCustomFields[\"notes\"]: value truncated from 101 to 100 characters"]
        );
    }

    #[test]
    fn truncation_counts_chars_not_bytes() {
        // 100 four-byte emoji are 400 bytes but exactly at the limit.
        assert_unchanged(fields(&[("e", &"😀".repeat(100))]));
        assert_unchanged(fields(&[("cjk", &"漢".repeat(100))]));

        let checked = passed(fields(&[("e", &"😀".repeat(150))]));
        assert_eq!(fields_of(&checked)[0].1, "😀".repeat(100));
        assert!(
            checked.notes[0].contains("from 150 to 100"),
            "{:?}",
            checked.notes
        );

        let mixed = format!("{}{}", "a".repeat(99), "漢字");
        let checked = passed(fields(&[("cjk", &mixed)]));
        assert_eq!(fields_of(&checked)[0].1, format!("{}漢", "a".repeat(99)));
    }

    #[test]
    fn truncation_counts_combining_marks_as_chars() {
        // "e" + U+0301 is one grapheme but two runes; Emailgistics counts runes.
        let value = "e\u{301}".repeat(60);
        let checked = passed(fields(&[("accent", &value)]));
        let kept = &fields_of(&checked)[0].1;
        assert_eq!(kept.chars().count(), 100);
        assert_eq!(*kept, "e\u{301}".repeat(50));
        assert!(
            checked.notes[0].contains("from 120 to 100"),
            "{:?}",
            checked.notes
        );
    }

    // -------------------------------------------------------- sendMessage

    #[test]
    fn valid_send_messages_pass_unchanged() {
        let mut t = template();
        t.subject = Some("We received your claim".into());
        t.cc_addresses = Some(vec![addr("broker@example.com")]);
        t.bcc_addresses = Some(vec![]);
        assert_unchanged(send(t));
        assert_unchanged(send(html(
            "<p>Thanks</p><img src=\"cid:brand\" alt=\"Brand\"/>",
            Some(vec![asset("brand")]),
        )));
        assert_unchanged(send(html("<p>No images</p>", None)));
        assert_unchanged(send(SendMessage {
            body: Some("Thanks, we are on it.".into()),
            body_type: Some(BodyType::Text),
            to_addresses: vec![addr("client@example.com")],
            ..Default::default()
        }));
    }

    #[test]
    fn send_with_both_modes_is_rejected() {
        let mut m = template();
        m.body = Some("hi".into());
        assert_eq!(
            rejected(send(m)),
            "sendMessage: set either templateName or body+bodyType, not both"
        );
        let mut m = template();
        m.body_type = Some(BodyType::Text);
        assert!(rejected(send(m)).ends_with("not both"));
    }

    #[test]
    fn send_with_neither_mode_is_rejected() {
        let m = SendMessage {
            to_addresses: vec![addr("client@example.com")],
            ..Default::default()
        };
        assert_eq!(
            rejected(send(m)),
            "sendMessage: set either templateName or body+bodyType"
        );
    }

    #[test]
    fn send_inline_missing_half_names_the_missing_field() {
        let mut m = html("<p>hi</p>", None);
        m.body_type = None;
        assert!(rejected(send(m)).starts_with("sendMessage.bodyType: missing"));
        let mut m = html("<p>hi</p>", None);
        m.body = None;
        assert!(rejected(send(m)).starts_with("sendMessage.body: missing"));
    }

    #[test]
    fn send_empty_template_name_is_rejected() {
        for blank in ["", "  "] {
            let mut m = template();
            m.template_name = Some(blank.into());
            assert_eq!(
                rejected(send(m)),
                "sendMessage.templateName: empty template name"
            );
        }
    }

    #[test]
    fn send_without_recipients_is_rejected() {
        let mut m = template();
        m.to_addresses.clear();
        assert_eq!(rejected(send(m)), "sendMessage.toAddresses: no recipients");
    }

    #[test]
    fn send_checks_every_address_list() {
        let mut m = template();
        m.to_addresses.push(addr("bob"));
        assert_eq!(
            rejected(send(m)),
            "sendMessage.toAddresses[1].address: \"bob\" is not an email address"
        );
        let mut m = template();
        m.cc_addresses = Some(vec![addr("x@y.com"), addr("")]);
        assert_eq!(
            rejected(send(m)),
            "sendMessage.ccAddresses[1].address: \"\" is not an email address"
        );
        let mut m = template();
        m.bcc_addresses = Some(vec![addr("a b@c.com")]);
        assert_eq!(
            rejected(send(m)),
            "sendMessage.bccAddresses[0].address: \"a b@c.com\" is not an email address"
        );
    }

    #[test]
    fn assets_outside_inline_html_are_rejected() {
        let mut m = template();
        m.inline_assets = Some(vec![asset("logo")]);
        assert!(rejected(send(m)).starts_with("sendMessage.inlineAssets: only allowed"));
        let mut m = html("see cid:logo", Some(vec![asset("logo")]));
        m.body_type = Some(BodyType::Text);
        assert!(rejected(send(m)).starts_with("sendMessage.inlineAssets: only allowed"));
    }

    #[test]
    fn empty_asset_list_becomes_none_with_a_note() {
        let mut m = template();
        m.inline_assets = Some(vec![]);
        let checked = passed(send(m));
        assert_eq!(checked.action.kind, send(template()));
        assert_eq!(
            checked.notes,
            ["sendMessage.inlineAssets: empty list removed"]
        );
    }

    fn rejected_asset(edit: impl FnOnce(&mut InlineAsset)) -> String {
        let mut a = asset("logo");
        edit(&mut a);
        rejected(send(html("<img src=\"cid:logo\">", Some(vec![a]))))
    }

    #[test]
    fn asset_fields_are_required() {
        assert_eq!(
            rejected_asset(|a| a.id.clear()),
            "sendMessage.inlineAssets[0].id: empty"
        );
        assert_eq!(
            rejected_asset(|a| a.filename.clear()),
            "sendMessage.inlineAssets[0].filename: empty"
        );
        assert_eq!(
            rejected_asset(|a| a.base64_content.clear()),
            "sendMessage.inlineAssets[0].base64Content: empty"
        );
    }

    #[test]
    fn asset_content_type_must_be_a_mime_type() {
        for bad in ["", "png", "image/", "/png"] {
            assert_eq!(
                rejected_asset(|a| a.content_type = bad.into()),
                format!("sendMessage.inlineAssets[0].contentType: {bad:?} is not a MIME type")
            );
        }
    }

    #[test]
    fn asset_base64_must_be_valid() {
        let why = rejected_asset(|a| a.base64_content = "not base64!".into());
        assert!(
            why.starts_with("sendMessage.inlineAssets[0].base64Content: not base64"),
            "{why}"
        );
    }

    #[test]
    fn base64_checker_accepts_standard_base64() {
        for ok in [
            "iVBORw0KGgo=",
            "AA==",
            "AAA=",
            "AAAA",
            "ab+/",
            "iVBO\r\nRw0K\nGgo=",
            " AAAA ",
        ] {
            assert_eq!(check_base64(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn base64_checker_rejects_malformed_input() {
        for bad in [
            "", " \n ", "AAA", "A===", "====", "AA=A", "=AAA", "AA-_", "AAA!", "AAAé",
        ] {
            assert!(check_base64(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duplicate_asset_ids_are_rejected() {
        let m = html(
            "<img src=\"cid:logo\">",
            Some(vec![asset("logo"), asset("logo")]),
        );
        assert_eq!(
            rejected(send(m)),
            "sendMessage.inlineAssets[1].id: duplicate id \"logo\""
        );
    }

    #[test]
    fn unreferenced_asset_is_a_note_not_a_rejection() {
        let m = html(
            "<img src=\"cid:logo\">",
            Some(vec![asset("logo"), asset("banner")]),
        );
        let checked = passed(send(m.clone()));
        assert_eq!(checked.action.kind, send(m));
        assert_eq!(
            checked.notes,
            ["sendMessage.inlineAssets: asset \"banner\" is never referenced as \"cid:banner\" in the body"]
        );
    }

    #[test]
    fn dangling_cid_reference_is_a_note_not_a_rejection() {
        let m = html(
            "<img src='cid:logo'><img src=\"CID:missing\"><img src=\"cid:missing\">",
            Some(vec![asset("logo")]),
        );
        let checked = passed(send(m));
        assert_eq!(
            checked.notes,
            ["sendMessage.body: \"cid:missing\" has no matching inline asset"]
        );
        // Without any assets at all the reference is still broken.
        let checked = passed(send(html("<img src=\"cid:x\">", None)));
        assert_eq!(checked.notes.len(), 1, "{:?}", checked.notes);
    }

    #[test]
    fn cid_scheme_matches_case_insensitively() {
        // URL schemes are case-insensitive, so "CID:logo" uses the asset.
        assert_unchanged(send(html(
            "<img src=\"CID:logo\">",
            Some(vec![asset("logo")]),
        )));
    }

    #[test]
    fn cid_refs_are_exact_tokens() {
        assert_eq!(
            cid_refs("<img src=\"cid:logo1\"> lucid:dream url(cid:bg) cid: cid:logo1"),
            ["logo1", "bg"]
        );
        // "cid:logo1" does not count as a reference to an asset "logo".
        let checked = passed(send(html(
            "<img src=\"cid:logo1\">",
            Some(vec![asset("logo")]),
        )));
        assert_eq!(checked.notes.len(), 2, "{:?}", checked.notes);
    }

    #[test]
    fn text_body_cid_text_is_not_flagged() {
        assert_unchanged(send(SendMessage {
            body: Some("Reference cid:abc in plain text".into()),
            body_type: Some(BodyType::Text),
            to_addresses: vec![addr("client@example.com")],
            ..Default::default()
        }));
    }

    // ----------------------------------------------------- forwardMessage

    #[test]
    fn valid_forward_passes_unchanged() {
        assert_unchanged(forward(vec![
            addr("uw1@example.com"),
            addr("uw2@example.com"),
        ]));
        assert_unchanged(ActionKind::ForwardMessage(ForwardMessage {
            to_addresses: vec![addr("uw@example.com")],
            comment: Some("<b>not html</b> {{placeholder}} stays as written".into()),
        }));
    }

    #[test]
    fn forward_without_recipients_is_rejected() {
        assert_eq!(
            rejected(forward(vec![])),
            "forwardMessage.toAddresses: no recipients"
        );
    }

    #[test]
    fn forward_with_bad_address_names_the_field() {
        assert_eq!(
            rejected(forward(vec![addr("alice@example.com"), addr("bob")])),
            "forwardMessage.toAddresses[1].address: \"bob\" is not an email address"
        );
    }
}
