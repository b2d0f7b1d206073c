//! Bounding untrusted text (a plugin's message, a guest error, a trap's
//! stderr line, a label in a rejection reason) before the host keeps it.
//!
//! A cut is never silent: the kept prefix ends with a marker giving the
//! original size and the limit that cut it, e.g.
//! `mmmm… (20971520 bytes, cut at max_message_bytes = 2048)`, so a reader of
//! the log or the record knows the text went on, and why.
//!
//! Also here: refusing a field over its length ([`check_len`]), the
//! subject, address and domain lengths the mail standards fix (one
//! definition for payloads, actions and CRM lookups), and [`json_len`],
//! the size of a value as JSON, for bounds counted in JSON bytes.

/// Longest email address, in bytes: RFC 5321 allows a 64-byte local part,
/// the `@` and a 255-byte domain (RFC 3696 errata give 320 as the total).
/// Anything longer is not an address, wherever it comes from: a payload, an
/// action, a CRM lookup.
pub const MAX_ADDRESS_BYTES: usize = 320;
/// Longest domain name in text, bytes (RFC 1035: 253).
pub const MAX_DOMAIN_BYTES: usize = 253;

/// Longest mail subject, bytes (a delivery's `subject`, a callback's). RFC 5322 recommends 78-character header lines
/// and forbids lines over 998; a subject of a few folded lines is the most
/// a real mail has. It is copied into every delivery record and log line,
/// so 4 KiB bounds those without refusing any honest mail.
pub const MAX_SUBJECT_BYTES: usize = 4096;

/// A field longer than its limit (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` is {len} bytes, more than the {limit} allowed")]
pub struct FieldTooLong {
    /// The field, as named in the payload (`id`, `to[2].address`, …).
    pub field: String,
    /// Its length, bytes.
    pub len: usize,
    /// The limit, bytes.
    pub limit: usize,
}

/// `Err` naming `field` when `value` is longer than `limit` bytes.
pub fn check_len(field: &str, value: &str, limit: usize) -> Result<(), FieldTooLong> {
    if value.len() > limit {
        return Err(FieldTooLong {
            field: field.to_owned(),
            len: value.len(),
            limit,
        });
    }
    Ok(())
}

/// The length of `value` as JSON, counted without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    /// Counts what serde_json writes.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// `text` as it is when it fits in `max_bytes`; otherwise its longest prefix
/// that fits together with the cut marker, ending on a char boundary. The
/// marker names the limit as `{limit} = {value}`.
pub fn cut(text: &str, max_bytes: usize, limit: &str, value: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let marker = format!("… ({} bytes, cut at {limit} = {value})", text.len());
    let keep = text.floor_char_boundary(max_bytes.saturating_sub(marker.len()));
    format!("{}{marker}", &text[..keep])
}

/// Like [`cut`], in place; a no-op (no copy) when `text` fits.
pub fn cut_in_place(text: &mut String, max_bytes: usize, limit: &str) {
    if text.len() > max_bytes {
        *text = cut(text, max_bytes, limit, max_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_fits_is_unchanged() {
        assert_eq!(cut("short", 5, "l", 5), "short");
        assert_eq!(cut("", 0, "l", 0), "");
    }

    #[test]
    fn long_text_is_cut_within_the_bound_and_marked() {
        let long = "m".repeat(20 << 20);
        let kept = cut(&long, 2048, "max_message_bytes", 2048);
        assert!(kept.len() <= 2048, "{}", kept.len());
        assert!(
            kept.ends_with("… (20971520 bytes, cut at max_message_bytes = 2048)"),
            "{kept}"
        );
        assert!(kept.starts_with("mmmm"));
    }

    #[test]
    fn the_cut_falls_on_a_char_boundary() {
        let long = "😀".repeat(1000);
        for max in 50..70 {
            let kept = cut(&long, max, "l", max);
            assert!(kept.len() <= max, "{max}: {}", kept.len());
            assert!(kept.contains("(4000 bytes, cut at l = "), "{kept}");
        }
        let mut s = "漢".repeat(100);
        cut_in_place(&mut s, 64, "l");
        assert!(s.len() <= 64 && s.starts_with('漢'), "{s}");
    }
}
