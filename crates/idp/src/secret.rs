//! Secrets from the configuration and from requests: zeroized on drop, never printed,
//! compared in constant time.

use std::fmt;

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A password or client secret. `Debug` prints `[redacted]`; the memory is
/// zeroized when the value is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    /// The secret itself. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals this secret, in time that depends on neither
    /// value: both are hashed first, so not even the length leaks.
    pub fn matches(&self, candidate: &str) -> bool {
        ct_eq_str(self.expose(), candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Constant-time string comparison over SHA-256 digests (equal digests mean
/// equal strings, and comparing fixed-size digests hides the lengths).
pub(crate) fn ct_eq_str(a: &str, b: &str) -> bool {
    let da = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a.as_bytes());
    let db = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b.as_bytes());
    bool::from(da.as_ref().ct_eq(db.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_and_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter"));
        assert!(!s.matches(""));
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
