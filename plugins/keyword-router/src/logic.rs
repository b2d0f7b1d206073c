//! The plugin's decisions that need no host: parsing the rules and
//! matching keywords in a subject.

use enrichd_pdk::{split_list, NonEmpty};

/// One routing rule: any of `keywords` in the subject routes to `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Keywords (trimmed, as written), tried in order.
    pub keywords: Vec<String>,
    /// Candidate users (trimmed), in order.
    pub users: NonEmpty<String>,
}

/// What the `backup` config key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    /// No backup assignment.
    None,
    /// `backup = any`: one backup assignment to any user of the mailbox.
    AnyUser,
}

/// A matched rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The keyword that matched (as written in the config).
    pub keyword: &'a str,
    /// The users to assign to.
    pub users: &'a NonEmpty<String>,
}

/// The action name for a route by `keyword`.
pub fn action_name(keyword: &str) -> String {
    format!("Route by keyword \"{keyword}\"")
}

/// Parses the `rules` config value:
/// `kw1, kw2 => user1, user2; kw3 => user3`.
///
/// Rules are separated by `;` (blank rules, e.g. after a trailing `;`, are
/// skipped); rule numbers in errors count every `;`-separated part from 1.
/// Errors describe the problem without the `keyword-router config:` prefix.
pub fn parse_rules(value: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (index, part) in value.split(';').enumerate() {
        let n = index + 1;
        if part.trim().is_empty() {
            continue;
        }
        let Some((keywords, users)) = part.split_once("=>") else {
            return Err(format!("rule {n} has no `=>`"));
        };
        if users.contains("=>") {
            return Err(format!("rule {n} has more than one `=>`"));
        }
        let keywords = split_list(keywords);
        if keywords.is_empty() {
            return Err(format!("rule {n} has no keywords before `=>`"));
        }
        let Some(users) = NonEmpty::new(split_list(users)) else {
            return Err(format!("rule {n} has no users after `=>`"));
        };
        rules.push(Rule { keywords, users });
    }
    if rules.is_empty() {
        return Err("`rules` has no rules".to_string());
    }
    Ok(rules)
}

/// Parses the optional `backup` config value: unset or blank → none,
/// `any` (case-insensitive) → any user; anything else is an error.
pub fn parse_backup(value: Option<&str>) -> Result<Backup, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(Backup::None),
        Some(v) if v.eq_ignore_ascii_case("any") => Ok(Backup::AnyUser),
        Some(v) => Err(format!("`backup` must be `any` or unset, not `{v}`")),
    }
}

/// Lower-cases `text` and collapses every run of whitespace to one space.
fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether `keyword` occurs in `subject` as a whole word (or words),
/// case-insensitively: the characters next to the occurrence must not be
/// letters or digits. Runs of whitespace count as one space on both sides,
/// so `car accident` matches `Car   Accident!`.
pub fn contains_word(subject: &str, keyword: &str) -> bool {
    let keyword = normalize(keyword);
    if keyword.is_empty() {
        return false;
    }
    let subject = normalize(subject);
    let mut from = 0;
    while let Some(pos) = subject[from..].find(&keyword) {
        let start = from + pos;
        let end = start + keyword.len();
        let before_ok = subject[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let after_ok = subject[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        // Step past the first character of this occurrence.
        from = start + subject[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The first rule (in order) any of whose keywords appears in `subject`;
/// within that rule, the first keyword (in order) that appears.
pub fn route<'a>(rules: &'a [Rule], subject: &str) -> Option<Route<'a>> {
    rules.iter().find_map(|rule| {
        rule.keywords
            .iter()
            .find(|kw| contains_word(subject, kw))
            .map(|kw| Route {
                keyword: kw,
                users: &rule.users,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_rules() {
        let rules =
            parse_rules(" claim , car accident => Joe Cool, ann@contoso.com ; invoice=>Billing ;")
                .unwrap();
        assert_eq!(
            rules,
            vec![
                Rule {
                    keywords: strings(&["claim", "car accident"]),
                    users: NonEmpty::from(["Joe Cool", "ann@contoso.com"]),
                },
                Rule {
                    keywords: strings(&["invoice"]),
                    users: NonEmpty::from(["Billing"]),
                },
            ]
        );
    }

    #[test]
    fn rule_errors_name_the_rule() {
        assert_eq!(
            parse_rules("a => b; c, d").unwrap_err(),
            "rule 2 has no `=>`"
        );
        assert_eq!(
            parse_rules("a => b => c").unwrap_err(),
            "rule 1 has more than one `=>`"
        );
        assert_eq!(
            parse_rules(" , => b").unwrap_err(),
            "rule 1 has no keywords before `=>`"
        );
        assert_eq!(
            parse_rules("a => b; ; c =>  , ").unwrap_err(),
            "rule 3 has no users after `=>`"
        );
        assert_eq!(parse_rules(" ; ").unwrap_err(), "`rules` has no rules");
        assert_eq!(parse_rules("").unwrap_err(), "`rules` has no rules");
    }

    #[test]
    fn parses_backup() {
        assert_eq!(parse_backup(None), Ok(Backup::None));
        assert_eq!(parse_backup(Some(" ")), Ok(Backup::None));
        assert_eq!(parse_backup(Some("any")), Ok(Backup::AnyUser));
        assert_eq!(parse_backup(Some(" ANY ")), Ok(Backup::AnyUser));
        assert!(parse_backup(Some("all")).unwrap_err().contains("`all`"));
    }

    #[test]
    fn whole_word_matching() {
        assert!(contains_word("New claim for policy 12", "claim"));
        assert!(contains_word("CLAIM: urgent", "claim"));
        assert!(contains_word("re: claim", "Claim"));
        assert!(contains_word("(claim)", "claim"));
        assert!(!contains_word("Claims department", "claim"));
        assert!(!contains_word("reclaim this", "claim"));
        assert!(!contains_word("", "claim"));
        assert!(!contains_word("claim", " "));
    }

    #[test]
    fn multi_word_keywords() {
        assert!(contains_word("Report: car accident on I-5", "car accident"));
        assert!(contains_word("CAR   ACCIDENT", "car accident"));
        assert!(contains_word("car\taccident", "car  accident"));
        assert!(!contains_word("scar accidents", "car accident"));
        assert!(!contains_word("car, accident", "car accident"));
    }

    #[test]
    fn later_occurrence_can_match() {
        assert!(contains_word("claims and one claim", "claim"));
        assert!(contains_word("ééclaim claim", "claim"));
        assert!(!contains_word("éclaim", "claim"));
    }

    #[test]
    fn first_rule_in_order_wins() {
        let rules = parse_rules("invoice, billing => Bill; claim, accident => Joe, Ann").unwrap();
        let r = route(&rules, "Accident claim and an invoice").unwrap();
        assert_eq!(r.keyword, "invoice");
        assert_eq!(r.users[..], strings(&["Bill"]));

        let r = route(&rules, "Accident and claim").unwrap();
        assert_eq!(r.keyword, "claim");
        assert_eq!(r.users[..], strings(&["Joe", "Ann"]));

        assert!(route(&rules, "Hello there").is_none());
    }

    #[test]
    fn action_names() {
        assert_eq!(
            action_name("car accident"),
            "Route by keyword \"car accident\""
        );
    }
}
