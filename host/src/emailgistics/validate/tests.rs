//! Unit tests of action validation: every rule, every cap at and over its
//! limit, and the cost of refusing oversized lists.

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
    let checked = check(a.clone(), &Caps::default()).expect("should pass");
    assert_eq!(checked.action, a);
    assert!(
        checked.notes.is_empty(),
        "unexpected notes: {:?}",
        checked.notes
    );
}

fn rejected(kind: ActionKind) -> String {
    match check(action(kind), &Caps::default()) {
        Ok(c) => panic!("expected rejection, got {c:?}"),
        Err(Rejected(why)) => why,
    }
}

fn passed(kind: ActionKind) -> Checked {
    check(action(kind), &Caps::default()).expect("should pass")
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
        let checked = check(a, &Caps::default()).expect("should pass");
        assert_eq!(checked.action.name, None);
        assert_eq!(checked.notes.len(), 1);
        assert!(checked.notes[0].starts_with("name:"), "{:?}", checked.notes);
    }
}

#[test]
fn real_name_is_kept_without_notes() {
    let mut a = action(tag(&["VIP"]));
    a.name = Some("Tag VIP".into());
    let checked = check(a.clone(), &Caps::default()).expect("should pass");
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

// ------------------------------------------------------------- caps

const MAX_ITEMS: usize = crate::plugin::policy::DEFAULT_MAX_LIST_ITEMS;
const MAX_NAME: usize = crate::plugin::policy::DEFAULT_MAX_NAME_BYTES;

fn strings(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn tags_of(n: usize) -> ActionKind {
    ActionKind::Tag(Tag {
        tags: strings(n, "t"),
    })
}

fn keys_of(n: usize) -> ActionKind {
    ActionKind::SetCustomFields(
        strings(n, "k")
            .into_iter()
            .map(|k| (k, "v".into()))
            .collect(),
    )
}

fn addrs(n: usize) -> Vec<EmailAddress> {
    (0..n).map(|i| addr(&format!("u{i}@example.com"))).collect()
}

/// The rejection names the limit and its value.
fn assert_list_cap(kind: ActionKind, path: &str, n: usize) {
    assert_eq!(
        rejected(kind),
        format!(
            "{path}: {n} {}, more than max_list_items = {MAX_ITEMS}",
            list_word(path)
        )
    );
}

fn list_word(path: &str) -> &'static str {
    match path {
        "tag.tags" => "tags",
        "setCustomFields" => "keys",
        "sendMessage.inlineAssets" => "inline assets",
        "assign.backupAssignments" => "backup assignments",
        p if p.ends_with(".users") => "users",
        _ => "recipients",
    }
}

fn assert_name_cap(why: String, path: &str, len: usize) {
    assert_eq!(
        why,
        format!("{path}: {len} bytes, more than max_name_bytes = {MAX_NAME}")
    );
}

#[test]
fn tag_list_at_the_cap_passes_and_over_it_is_refused() {
    assert_unchanged(tags_of(MAX_ITEMS));
    assert_list_cap(tags_of(MAX_ITEMS + 1), "tag.tags", MAX_ITEMS + 1);
}

#[test]
fn custom_field_keys_at_the_cap_pass_and_over_it_are_refused() {
    assert_unchanged(keys_of(MAX_ITEMS));
    assert_list_cap(keys_of(MAX_ITEMS + 1), "setCustomFields", MAX_ITEMS + 1);
}

#[test]
fn users_and_backups_at_the_cap_pass_and_over_it_are_refused() {
    let names = strings(MAX_ITEMS, "user ");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_unchanged(assign(users(&refs), None));
    let names = strings(MAX_ITEMS + 1, "user ");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_list_cap(
        assign(users(&refs), None),
        "assign.mainAssignment.users",
        MAX_ITEMS + 1,
    );
    assert_unchanged(assign(any_user(), Some(vec![any_user(); MAX_ITEMS])));
    assert_list_cap(
        assign(any_user(), Some(vec![any_user(); MAX_ITEMS + 1])),
        "assign.backupAssignments",
        MAX_ITEMS + 1,
    );
}

#[test]
fn recipients_at_the_cap_pass_and_over_it_are_refused() {
    let mut m = template();
    m.to_addresses = addrs(MAX_ITEMS);
    m.cc_addresses = Some(addrs(MAX_ITEMS));
    m.bcc_addresses = Some(addrs(MAX_ITEMS));
    assert_unchanged(send(m));
    let mut m = template();
    m.to_addresses = addrs(MAX_ITEMS + 1);
    assert_list_cap(send(m), "sendMessage.toAddresses", MAX_ITEMS + 1);
    let mut m = template();
    m.cc_addresses = Some(addrs(MAX_ITEMS + 1));
    assert_list_cap(send(m), "sendMessage.ccAddresses", MAX_ITEMS + 1);
    let mut m = template();
    m.bcc_addresses = Some(addrs(MAX_ITEMS + 1));
    assert_list_cap(send(m), "sendMessage.bccAddresses", MAX_ITEMS + 1);
    assert_unchanged(forward(addrs(MAX_ITEMS)));
    assert_list_cap(
        forward(addrs(MAX_ITEMS + 1)),
        "forwardMessage.toAddresses",
        MAX_ITEMS + 1,
    );
}

#[test]
fn inline_assets_at_the_cap_pass_and_over_it_are_refused() {
    let body = |n: usize| {
        (0..n)
            .map(|i| format!("<img src=\"cid:a{i}\">"))
            .collect::<String>()
    };
    let assets = |n: usize| (0..n).map(|i| asset(&format!("a{i}"))).collect();
    assert_unchanged(send(html(&body(MAX_ITEMS), Some(assets(MAX_ITEMS)))));
    assert_list_cap(
        send(html(&body(MAX_ITEMS + 1), Some(assets(MAX_ITEMS + 1)))),
        "sendMessage.inlineAssets",
        MAX_ITEMS + 1,
    );
}

#[test]
fn names_at_the_cap_pass_and_over_it_are_refused_without_quoting_them() {
    let at = "n".repeat(MAX_NAME);
    let over = "n".repeat(MAX_NAME + 1);
    assert_unchanged(tag(&[&at]));
    assert_name_cap(rejected(tag(&["ok", &over])), "tag.tags[1]", MAX_NAME + 1);
    assert_unchanged(fields(&[(&at, "v")]));
    assert_name_cap(
        rejected(fields(&[(&over, "v")])),
        "setCustomFields: key of entry 0",
        MAX_NAME + 1,
    );
    assert_unchanged(assign(users(&[&at]), None));
    assert_name_cap(
        rejected(assign(users(&[&over]), None)),
        "assign.mainAssignment.users[0]",
        MAX_NAME + 1,
    );
    let mut m = template();
    m.template_name = Some(at.clone());
    assert_unchanged(send(m.clone()));
    m.template_name = Some(over.clone());
    assert_name_cap(rejected(send(m)), "sendMessage.templateName", MAX_NAME + 1);
    let mut m = template();
    m.to_addresses[0].name = over.clone();
    assert_name_cap(
        rejected(send(m)),
        "sendMessage.toAddresses[0].name",
        MAX_NAME + 1,
    );
    for (field, edit) in [
        (
            "id",
            (|a: &mut InlineAsset, v: &str| a.id = v.into()) as fn(&mut InlineAsset, &str),
        ),
        ("filename", |a, v| a.filename = v.into()),
        ("contentType", |a, v| a.content_type = format!("image/{v}")),
    ] {
        assert_name_cap(
            rejected_asset(|a| edit(a, &over)),
            &format!("sendMessage.inlineAssets[0].{field}"),
            MAX_NAME + 1 + if field == "contentType" { 6 } else { 0 },
        );
    }
    let mut a = action(tag(&["VIP"]));
    a.name = Some(at);
    assert!(check(a.clone(), &Caps::default()).is_ok());
    a.name = Some(over);
    assert_name_cap(
        check(a, &Caps::default()).unwrap_err().0,
        "name",
        MAX_NAME + 1,
    );
}

#[test]
fn addresses_and_subjects_have_their_own_byte_limits() {
    let local = "a".repeat(64);
    let at_limit = format!("{local}@{}.com", "d".repeat(MAX_ADDRESS_BYTES - 64 - 1 - 4));
    assert_eq!(at_limit.len(), MAX_ADDRESS_BYTES);
    assert_unchanged(forward(vec![addr(&at_limit)]));
    let over = format!("x{at_limit}");
    assert_eq!(
        rejected(forward(vec![addr(&over)])),
        format!(
            "forwardMessage.toAddresses[0].address: {} bytes, more than the address limit = {MAX_ADDRESS_BYTES}",
            MAX_ADDRESS_BYTES + 1
        )
    );
    let mut m = template();
    m.subject = Some("s".repeat(MAX_SUBJECT_BYTES));
    assert_unchanged(send(m.clone()));
    m.subject = Some("s".repeat(MAX_SUBJECT_BYTES + 1));
    assert!(rejected(send(m)).starts_with("sendMessage.subject: 999 bytes, more than"));
}

#[test]
fn caps_come_from_the_plugins_limits() {
    let limits = Limits {
        max_list_items: 2,
        max_name_bytes: 20,
        ..Limits::default()
    };
    let caps = Caps::from(&limits);
    assert!(check(action(tags_of(2)), &caps).is_ok());
    assert_eq!(
        check(action(tags_of(3)), &caps).unwrap_err().0,
        "tag.tags: 3 tags, more than max_list_items = 2"
    );
    assert!(check(action(tag(&[&"x".repeat(21)])), &caps)
        .unwrap_err()
        .0
        .ends_with("21 bytes, more than max_name_bytes = 20"));
}

#[test]
fn a_900_kib_key_is_refused_with_a_short_reason() {
    let key = "k".repeat(900 * 1024);
    let why = rejected(fields(&[(&key, "v")]));
    assert!(why.len() < 100, "{why}");
    assert!(
        why.contains("921600 bytes, more than max_name_bytes = 256"),
        "{why}"
    );
}

#[test]
fn the_list_cap_is_checked_before_any_per_item_work() {
    // Every item would be refused on its own (over-long, blank,
    // duplicate); the reason is the list cap, so no item was looked at.
    let long = "x".repeat(MAX_NAME + 1);
    let tags = ActionKind::Tag(Tag {
        tags: vec![long.clone(); 90_000],
    });
    assert!(rejected(tags).starts_with("tag.tags: 90000 tags, more than max_list_items"));
    let keys = ActionKind::SetCustomFields(vec![(long, String::new()); 90_000]);
    assert!(rejected(keys).starts_with("setCustomFields: 90000 keys, more than"));
}

/// The fastest of a few runs of validating `n` distinct tags and `n`
/// distinct keys with the list cap out of the way.
fn fastest_check_of(n: usize) -> std::time::Duration {
    let caps = Caps {
        max_list_items: usize::MAX,
        max_name_bytes: MAX_NAME,
    };
    (0..3)
        .map(|_| {
            let (t, k) = (action(tags_of(n)), action(keys_of(n)));
            let started = std::time::Instant::now();
            assert!(check(t, &caps).is_ok() && check(k, &caps).is_ok());
            started.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn validation_is_linear_in_the_list_length() {
    // Ten times the items must cost about ten times the time; the old
    // pairwise duplicate checks cost a hundred times (and ~20 s at
    // 90 000). The bound is generous against noise on a shared machine.
    let small = fastest_check_of(9_000);
    let big = fastest_check_of(90_000);
    assert!(
        big < small * 40 + std::time::Duration::from_millis(50),
        "9 000 items: {small:?}, 90 000 items: {big:?}"
    );
}

#[test]
fn cid_mismatch_notes_are_bounded() {
    let body: String = (0..1000)
        .map(|i| format!("<img src=\"cid:x{i}\">"))
        .collect();
    let checked = passed(send(html(&body, None)));
    assert_eq!(checked.notes.len(), MAX_ITEMS + 1);
    assert_eq!(
        checked.notes.last().unwrap(),
        &format!(
            "sendMessage: {} more cid mismatches not listed (max_list_items = {MAX_ITEMS})",
            1000 - MAX_ITEMS
        )
    );
    let long = format!("<img src=\"cid:{}\">", "y".repeat(10_000));
    let checked = passed(send(html(&long, None)));
    assert!(
        checked.notes[0].len() < MAX_NAME + 100,
        "{}",
        checked.notes[0]
    );
}
