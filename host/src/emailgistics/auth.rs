//! Authentication of Emailgistics deliveries (`Authorization: Bearer <secret>`).
//!
//! Secrets are compared as SHA-256 digests with `subtle`'s constant-time
//! equality. Hashing first makes the comparison length-safe: a token that is
//! a prefix of the secret, or of another length, costs the same as any other
//! wrong token, and no early exit reveals how many bytes matched. Every
//! configured secret is checked (no short-circuit), so during a rotation the
//! time taken does not tell which secret matched.

use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// A configured secret, kept only as its digest.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Digest a secret for later comparison.
    pub fn new(secret: &str) -> Self {
        Secret(Sha256::digest(secret.as_bytes()).into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a request was refused. Each answers 401 with no detail in the body
/// (the detail is logged), so a prober learns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("Authorization header is not a Bearer token")]
    NotBearer,
    /// The token matches no configured secret.
    #[error("bearer token does not match any configured secret")]
    Mismatch,
}

/// Check a request's `Authorization` header against the route's secrets.
/// An empty secret list means the route was configured without a secret,
/// and every request is accepted (Emailgistics then sends no header).
pub fn check_bearer(header: Option<&HeaderValue>, secrets: &[Secret]) -> Result<(), AuthError> {
    if secrets.is_empty() {
        return Ok(());
    }
    let value = header.ok_or(AuthError::Missing)?.as_bytes();
    // RFC 9110: the scheme is case-insensitive; one or more spaces follow it.
    let (scheme, token) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], &value[i..]),
        None => return Err(AuthError::NotBearer),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::NotBearer);
    }
    if matches(token.trim_ascii_start(), secrets) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// Whether `token` is one of `secrets`, compared in constant time (see the
/// module docs); never with an empty list.
pub fn matches(token: &[u8], secrets: &[Secret]) -> bool {
    let digest: [u8; 32] = Sha256::digest(token).into();
    let matched = secrets
        .iter()
        .fold(Choice::from(0), |acc, s| acc | s.0.ct_eq(&digest));
    bool::from(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>, secrets: &[&str]) -> Result<(), AuthError> {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(s)).collect();
        let header = header.map(|h| HeaderValue::from_str(h).unwrap());
        check_bearer(header.as_ref(), &secrets)
    }

    #[test]
    fn matching_secret_is_accepted_with_any_scheme_case() {
        assert_eq!(
            check(Some("Bearer s3cret-value"), &["s3cret-value"]),
            Ok(())
        );
        assert_eq!(
            check(Some("bearer s3cret-value"), &["s3cret-value"]),
            Ok(())
        );
        assert_eq!(
            check(Some("BEARER   s3cret-value"), &["s3cret-value"]),
            Ok(())
        );
    }

    #[test]
    fn wrong_missing_prefix_and_other_schemes_are_refused() {
        let s = &["s3cret-value"];
        assert_eq!(check(None, s), Err(AuthError::Missing));
        assert_eq!(check(Some("Bearer wrong"), s), Err(AuthError::Mismatch));
        assert_eq!(check(Some("Bearer s3cret"), s), Err(AuthError::Mismatch));
        assert_eq!(
            check(Some("Bearer s3cret-value2"), s),
            Err(AuthError::Mismatch)
        );
        assert_eq!(check(Some("Bearer "), s), Err(AuthError::Mismatch));
        assert_eq!(
            check(Some("Basic s3cret-value"), s),
            Err(AuthError::NotBearer)
        );
        assert_eq!(check(Some("s3cret-value"), s), Err(AuthError::NotBearer));
        assert_eq!(
            check(Some("Bearers3cret-value"), s),
            Err(AuthError::NotBearer)
        );
    }

    #[test]
    fn any_secret_of_a_rotation_is_accepted() {
        let s = &["old-secret-0123456", "new-secret-6543210"];
        assert_eq!(check(Some("Bearer old-secret-0123456"), s), Ok(()));
        assert_eq!(check(Some("Bearer new-secret-6543210"), s), Ok(()));
        assert_eq!(check(Some("Bearer other"), s), Err(AuthError::Mismatch));
    }

    #[test]
    fn no_configured_secret_means_no_check() {
        assert_eq!(check(None, &[]), Ok(()));
        assert_eq!(check(Some("Bearer anything"), &[]), Ok(()));
    }
}
