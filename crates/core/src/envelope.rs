//! Checks that what a client calls ciphertext is a well-formed compact JWE
//! under a key of the right KMS, without being able to read it.

use jose::{Jwe, JwePolicy};
use kms_protocol::{Kind, KmsUri};

use crate::error::ApiError;

/// Checks `ciphertext` is a compact JWE (`dir`, `A256GCM`) of at most `max`
/// bytes whose `kid` is `key_uri`, a key of the KMS at `kms_domain`.
pub fn check(ciphertext: &str, key_uri: &str, kms_domain: &str, max: usize) -> Result<(), ApiError> {
    if ciphertext.len() > max {
        return Err(ApiError::too_large(format!("ciphertext is larger than {max} bytes")));
    }
    let key = KmsUri::parse_absolute(key_uri)
        .map_err(|_| ApiError::bad("bad_key_uri", "key_uri must be a kms:// key URI"))?;
    if !key.is_object(Kind::Keys) {
        return Err(ApiError::bad("bad_key_uri", "key_uri must name a key (kms://<domain>/keys/<id>)"));
    }
    if key.domain() != kms_domain {
        return Err(ApiError::bad("wrong_kms", "the key belongs to another KMS than the space's"));
    }
    let jwe = Jwe::parse(ciphertext, &JwePolicy { max_len: max, ..JwePolicy::DIR })
        .map_err(|e| ApiError::bad("bad_ciphertext", format!("ciphertext is not a compact JWE (dir, A256GCM): {e}")))?;
    match jwe.header().kid.as_deref().map(KmsUri::parse_absolute) {
        Some(Ok(k)) if k == key => Ok(()),
        _ => Err(ApiError::bad("kid_mismatch", "the ciphertext's kid is not key_uri")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jose::jwe::EncryptKey;
    use jose::{ContentEnc, HeaderParams, OctKey};

    const KEY: &str = "kms://kms.acme.example/keys/k1";

    fn jwe(kid: &str) -> String {
        let k = OctKey::generate(32, None).unwrap();
        jose::jwe::encrypt(EncryptKey::Dir(&k), ContentEnc::A256Gcm, &HeaderParams::kid(kid), b"hello").unwrap()
    }

    #[test]
    fn accepts_and_refuses() {
        check(&jwe(KEY), KEY, "kms.acme.example", 65536).unwrap();
        let e = |c: &str, k: &str| check(c, k, "kms.acme.example", 65536).unwrap_err().code;
        assert_eq!(e(&jwe(KEY), "kms://kms.other.example/keys/k1"), "wrong_kms");
        assert_eq!(e(&jwe(KEY), "kms://kms.acme.example/resources/r"), "bad_key_uri");
        assert_eq!(e(&jwe("kms://kms.acme.example/keys/k2"), KEY), "kid_mismatch");
        assert_eq!(e("hello world", KEY), "bad_ciphertext");
        assert_eq!(e("a.b.c.d.e", KEY), "bad_ciphertext");
        assert_eq!(check(&jwe(KEY), KEY, "kms.acme.example", 10).unwrap_err().code, "too_large");
        // The error never echoes the ciphertext.
        let c = "eyJhbGciOiJub25lIn0.SECRETSECRET.x.y.z";
        assert!(!check(c, KEY, "kms.acme.example", 65536).unwrap_err().message.contains("SECRET"));
    }
}
