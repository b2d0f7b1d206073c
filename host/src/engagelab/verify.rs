//! Authentication of EngageLab email callbacks.
//!
//! EngageLab signs every status and response callback with three headers:
//!
//! - `X-WebHook-Timestamp`: when the callback was signed (an integer, seconds
//!   or milliseconds since the Unix epoch);
//! - `X-WebHook-AppKey`: the fixed value `email`;
//! - `X-WebHook-Signature`: hex of HMAC-SHA256, keyed with the customer's
//!   app key, over the timestamp header exactly as sent.
//!
//! [`verify`] checks, in this order: all three headers are present, the
//! AppKey header says `email`, the timestamp is an integer, the signature
//! matches one of the configured app keys, and only then that the timestamp
//! lies within the replay window. Checking the signature before the window
//! means that [`VerifyError::Stale`] is only reported for a request EngageLab
//! really signed: a stale error in the log points at clock skew or a replay,
//! never at a stranger's junk.
//!
//! Several app keys may be configured at once (a rotation). Every key is
//! checked, without early exit, and each comparison runs in constant time
//! (`subtle`), so neither the time taken nor the answer tells which key
//! matched or how many bytes of a forged signature were right.
//!
//! # What the signature does not cover
//!
//! EngageLab signs the timestamp only, not the body. Anyone who captures one
//! signed request can send another body with the same headers until the
//! timestamp leaves the replay window. TLS on the callback URL is what keeps
//! the headers secret; the window bounds how long a leaked pair is useful, and
//! the queue's duplicate suppression (see `queue`) absorbs exact replays.

use std::time::Duration;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "X-WebHook-Timestamp";
/// Header carrying the fixed app key name.
pub const APP_KEY_HEADER: &str = "X-WebHook-AppKey";
/// Header carrying the hex signature.
pub const SIGNATURE_HEADER: &str = "X-WebHook-Signature";
/// The value EngageLab sends in [`APP_KEY_HEADER`] for email callbacks.
pub const APP_KEY_HEADER_VALUE: &str = "email";

/// Timestamps below this are seconds, others milliseconds: 10^11 s is the
/// year 5138, while 10^11 ms is March 1973, long before EngageLab existed. So
/// no real timestamp is ambiguous.
const SECONDS_LIMIT: u64 = 100_000_000_000;

/// SHA-256's block size: HMAC keys are padded (or first hashed) to this.
const BLOCK_SIZE: usize = 64;

/// Replay window by default: 5 minutes either way. NTP-synchronised clocks
/// agree within a second, and EngageLab posts as soon as it signs, so an
/// honest callback arrives well inside it even through slow networks or a
/// skewed clock. A request replayed later than this is refused; one replayed
/// sooner is an exact duplicate that the queue suppresses (its dedupe window
/// is far longer), or a forged body that TLS should have made impossible.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(5 * 60);

/// A configured app key (the HMAC secret). Kept as ready-keyed HMAC state;
/// `Debug` redacts it.
#[derive(Clone)]
pub struct AppKey(HmacSha256);

impl AppKey {
    /// Prepare an app key for signing and verification.
    pub fn new(key: &str) -> Self {
        AppKey(keyed(key.as_bytes()))
    }

    /// The raw signature of `timestamp` under this key.
    fn mac(&self, timestamp: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(timestamp);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

/// HMAC-SHA256 keyed with `key`, built without a fallible constructor: as
/// RFC 2104 says, a key longer than the block is replaced by its digest, and
/// the key is then zero-padded to the block size.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; BLOCK_SIZE];
    if key.len() > BLOCK_SIZE {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// Why a callback was refused. The caller answers 401 for each, with no
/// detail in the body, and logs the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent; holds its name.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// `X-WebHook-AppKey` is not `email`.
    #[error("X-WebHook-AppKey header is not \"email\"")]
    WrongAppKeyHeader,
    /// `X-WebHook-Timestamp` is not a non-negative integer.
    #[error("X-WebHook-Timestamp header is not an integer")]
    BadTimestamp,
    /// The signature is valid but the timestamp is outside the replay window.
    /// `skew_ms` is timestamp minus now: negative when in the past.
    #[error("X-WebHook-Timestamp is outside the replay window (skew {skew_ms} ms)")]
    Stale {
        /// Timestamp minus now, in ms (saturated to the `i64` range).
        skew_ms: i64,
    },
    /// The signature is not hex of the right length, or matches no app key.
    /// With no app key configured, every request ends here.
    #[error("X-WebHook-Signature does not match any configured app key")]
    BadSignature,
}

/// Check a callback's three headers against the configured app keys.
///
/// `now_ms` is the current Unix time in ms; `window` is the largest accepted
/// distance between the timestamp and now, either way (the boundary itself is
/// accepted). Any of `keys` may match. With no keys, every request fails with
/// [`VerifyError::BadSignature`]: whether to skip verification is the
/// caller's decision, not this function's.
pub fn verify(
    headers: &HeaderMap,
    keys: &[AppKey],
    now_ms: u64,
    window: Duration,
) -> Result<(), VerifyError> {
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    let app_key = header(headers, APP_KEY_HEADER)?;
    let signature = header(headers, SIGNATURE_HEADER)?;

    if app_key != APP_KEY_HEADER_VALUE.as_bytes() {
        return Err(VerifyError::WrongAppKeyHeader);
    }
    let timestamp_ms = parse_timestamp(timestamp)?;

    // The length of a signature is no secret (always 32 bytes): refusing a
    // malformed one early reveals nothing about the keys.
    let claimed: [u8; 32] = hex::decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(VerifyError::BadSignature)?;
    let mut matched = Choice::from(0);
    for key in keys {
        // `|=` on `Choice`, not `||`: every key is checked.
        matched |= key.mac(timestamp).ct_eq(&claimed);
    }
    if !bool::from(matched) {
        return Err(VerifyError::BadSignature);
    }

    let skew = i128::from(timestamp_ms) - i128::from(now_ms);
    if skew.unsigned_abs() > window.as_millis() {
        let skew_ms = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
        return Err(VerifyError::Stale { skew_ms });
    }
    Ok(())
}

/// The current Unix time in ms from the system clock, read per request: what
/// [`verify`]'s `now_ms` must be.
///
/// Not the host's start-up-anchored `Clock` (wall time read once, then
/// advanced monotonically): EngageLab stamps callbacks with *its* wall clock,
/// so the only meaningful comparison is with *our* wall clock as it is now.
/// After an NTP step the anchored clock stays off by the step, and with a
/// step over the window every genuine callback would be refused until a
/// restart. A monotonic clock cannot be compared with a Unix timestamp at
/// all. A clock before 1970 reads as 0 (everything is then refused as
/// stale, which the log shows as a skew).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The signature of `timestamp` under `app_key`, as lowercase hex: what
/// EngageLab sends in `X-WebHook-Signature`. For tests, and for operators
/// checking their setup.
pub fn sign(app_key: &str, timestamp: &str) -> String {
    hex::encode(AppKey::new(app_key).mac(timestamp.as_bytes()))
}

/// A header's bytes, or which header is missing.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a [u8], VerifyError> {
    headers
        .get(name)
        .map(|value| value.as_bytes())
        .ok_or(VerifyError::Missing(name))
}

/// A timestamp header in Unix ms: ASCII digits only (no sign, no spaces, no
/// fraction), read as seconds below [`SECONDS_LIMIT`] and as ms otherwise.
fn parse_timestamp(raw: &[u8]) -> Result<u64, VerifyError> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::BadTimestamp);
    }
    let value: u64 = std::str::from_utf8(raw)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(VerifyError::BadTimestamp)?;
    Ok(if value < SECONDS_LIMIT {
        value * 1000
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const KEY: &str = "f3b1c2d4e5a6978812345678";
    const OTHER: &str = "an-older-app-key";
    /// 2023-02-17T07:00:00Z, in ms.
    const NOW_MS: u64 = 1_676_617_200_000;
    const WINDOW: Duration = DEFAULT_REPLAY_WINDOW;

    fn headers(timestamp: &str, app_key: &str, signature: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(TIMESTAMP_HEADER, HeaderValue::from_str(timestamp).unwrap());
        map.insert(APP_KEY_HEADER, HeaderValue::from_str(app_key).unwrap());
        map.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        map
    }

    fn signed(timestamp: &str) -> HeaderMap {
        headers(timestamp, "email", &sign(KEY, timestamp))
    }

    fn check(map: &HeaderMap) -> Result<(), VerifyError> {
        verify(map, &[AppKey::new(KEY)], NOW_MS, WINDOW)
    }

    #[test]
    fn sign_matches_rfc_4231_vectors() {
        // RFC 4231 test case 2 (short key).
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6 (a key longer than the block, hashed first).
        let mac = keyed(&[0xaa; 131])
            .chain_update(b"Test Using Larger Than Block-Size Key - Hash Key First")
            .finalize();
        assert_eq!(
            hex::encode(mac.into_bytes()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn keyed_agrees_with_the_library_constructor() {
        for len in [0, 1, 32, 63, 64, 65, 200] {
            let key = vec![0x5c; len];
            let ours = keyed(&key).chain_update(b"1676617200").finalize();
            let theirs = <HmacSha256 as Mac>::new_from_slice(&key)
                .unwrap()
                .chain_update(b"1676617200")
                .finalize();
            assert_eq!(ours.into_bytes(), theirs.into_bytes(), "key length {len}");
        }
    }

    #[test]
    fn valid_millisecond_timestamp_is_accepted() {
        assert_eq!(check(&signed(&NOW_MS.to_string())), Ok(()));
    }

    #[test]
    fn valid_second_timestamp_is_accepted() {
        assert_eq!(check(&signed(&(NOW_MS / 1000).to_string())), Ok(()));
    }

    #[test]
    fn either_hex_case_is_accepted() {
        let ts = NOW_MS.to_string();
        let lower = sign(KEY, &ts);
        assert_eq!(lower, lower.to_ascii_lowercase());
        assert_eq!(check(&headers(&ts, "email", &lower)), Ok(()));
        assert_eq!(
            check(&headers(&ts, "email", &lower.to_ascii_uppercase())),
            Ok(())
        );
    }

    #[test]
    fn any_key_of_a_rotation_matches() {
        let ts = NOW_MS.to_string();
        let keys = [AppKey::new(OTHER), AppKey::new(KEY)];
        assert_eq!(verify(&signed(&ts), &keys, NOW_MS, WINDOW), Ok(()));
        let by_old = headers(&ts, "email", &sign(OTHER, &ts));
        assert_eq!(verify(&by_old, &keys, NOW_MS, WINDOW), Ok(()));
        // Without the old key, its signature is refused.
        assert_eq!(check(&by_old), Err(VerifyError::BadSignature));
    }

    #[test]
    fn no_keys_refuses_everything() {
        let ts = NOW_MS.to_string();
        assert_eq!(
            verify(&signed(&ts), &[], NOW_MS, WINDOW),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn each_missing_header_is_named() {
        for name in [TIMESTAMP_HEADER, APP_KEY_HEADER, SIGNATURE_HEADER] {
            let mut map = signed(&NOW_MS.to_string());
            map.remove(name);
            assert_eq!(check(&map), Err(VerifyError::Missing(name)));
        }
        assert_eq!(
            check(&HeaderMap::new()),
            Err(VerifyError::Missing(TIMESTAMP_HEADER))
        );
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let ts = NOW_MS.to_string();
        let mut map = HeaderMap::new();
        map.insert("x-webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
        map.insert("X-WEBHOOK-APPKEY", HeaderValue::from_static("email"));
        map.insert(
            "x-webhook-signature",
            HeaderValue::from_str(&sign(KEY, &ts)).unwrap(),
        );
        assert_eq!(check(&map), Ok(()));
    }

    #[test]
    fn wrong_app_key_header_is_refused() {
        let ts = NOW_MS.to_string();
        for value in ["sms", "Email", "email ", ""] {
            let map = headers(&ts, value, &sign(KEY, &ts));
            assert_eq!(
                check(&map),
                Err(VerifyError::WrongAppKeyHeader),
                "{value:?}"
            );
        }
    }

    #[test]
    fn wrong_signature_is_refused() {
        let ts = NOW_MS.to_string();
        let good = sign(KEY, &ts);
        let mut flipped = good.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        for sig in [
            sign("not-the-key", &ts),
            flipped,
            good[..62].to_string(),
            format!("{good}00"),
            "zz".repeat(32),
            String::new(),
        ] {
            assert_eq!(
                check(&headers(&ts, "email", &sig)),
                Err(VerifyError::BadSignature),
                "{sig:?}"
            );
        }
    }

    #[test]
    fn signature_of_another_timestamp_is_refused() {
        let ts = NOW_MS.to_string();
        let other = (NOW_MS - 1).to_string();
        assert_eq!(
            check(&headers(&ts, "email", &sign(KEY, &other))),
            Err(VerifyError::BadSignature)
        );
        // Same instant, other spelling: the signature covers the text as sent.
        let seconds = (NOW_MS / 1000).to_string();
        assert_eq!(
            check(&headers(&ts, "email", &sign(KEY, &seconds))),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn non_numeric_timestamp_is_refused() {
        for ts in [
            "",
            "abc",
            "-1676617200",
            "+1676617200",
            "1676617200.5",
            "1e12",
            " 1",
        ] {
            assert_eq!(check(&signed(ts)), Err(VerifyError::BadTimestamp), "{ts:?}");
        }
        // Too large for u64.
        assert_eq!(
            check(&signed("99999999999999999999999")),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn stale_timestamps_are_refused_both_ways() {
        let window_ms = WINDOW.as_millis() as u64;
        let past = NOW_MS - window_ms - 1;
        assert_eq!(
            check(&signed(&past.to_string())),
            Err(VerifyError::Stale {
                skew_ms: -(window_ms as i64) - 1
            })
        );
        let future = NOW_MS + window_ms + 1;
        assert_eq!(
            check(&signed(&future.to_string())),
            Err(VerifyError::Stale {
                skew_ms: window_ms as i64 + 1
            })
        );
        // In seconds: an hour ago.
        assert_eq!(
            check(&signed(&(NOW_MS / 1000 - 3600).to_string())),
            Err(VerifyError::Stale {
                skew_ms: -3_600_000
            })
        );
        // Far from now (a seconds value of 0 is 1970).
        assert_eq!(
            check(&signed("0")),
            Err(VerifyError::Stale {
                skew_ms: -(NOW_MS as i64)
            })
        );
    }

    #[test]
    fn stale_is_only_reported_for_a_valid_signature() {
        let past = (NOW_MS - 3_600_000).to_string();
        assert_eq!(
            check(&headers(&past, "email", &sign("forger", &past))),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn window_boundary_is_accepted() {
        let window_ms = WINDOW.as_millis() as u64;
        for ts in [NOW_MS - window_ms, NOW_MS + window_ms] {
            assert_eq!(check(&signed(&ts.to_string())), Ok(()), "{ts}");
        }
        let secs = (NOW_MS - window_ms) / 1000;
        assert_eq!(check(&signed(&secs.to_string())), Ok(()));
    }

    #[test]
    fn debug_redacts_the_key() {
        let shown = format!("{:?}", AppKey::new(KEY));
        assert_eq!(shown, "AppKey(<redacted>)");
    }

    #[test]
    fn the_window_is_judged_against_the_clock_as_it_is_now() {
        // A genuine callback signed now.
        let ts = wall_clock_ms().to_string();
        let map = signed(&ts);
        let keys = [AppKey::new(KEY)];
        assert_eq!(verify(&map, &keys, wall_clock_ms(), WINDOW), Ok(()));
        // A clock anchored before a 10-minute NTP step would refuse it.
        let anchored_before_step = wall_clock_ms() - 10 * 60 * 1000;
        assert!(matches!(
            verify(&map, &keys, anchored_before_step, WINDOW),
            Err(VerifyError::Stale { .. })
        ));
    }
}
