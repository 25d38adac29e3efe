//! Compact JWE: `Jwe::parse` under several policies, then `decrypt` with fixed
//! `dir` and RSA keys (right and wrong types). Also round-trips the input as a
//! plaintext through `dir` encryption.
#![no_main]

use std::sync::OnceLock;

use jose::jwe::{self, DecryptKey, EncryptKey};
use jose::{ContentEnc, Error, HeaderParams, Jwe, JwePolicy, KeyAlg, OctKey, RsaPrivateKey};
use libfuzzer_sys::fuzz_target;

/// Test-only key shared with the jose integration tests.
const RSA_PEM: &str = include_str!("../../crates/jose/tests/fixtures/rsa2048_pkcs8.pem");

const BOTH: JwePolicy<'static> =
    JwePolicy { algs: &[KeyAlg::Dir, KeyAlg::RsaOaep], encs: &[ContentEnc::A256Gcm], max_len: jose::DEFAULT_MAX_LEN };
const SMALL: JwePolicy<'static> = JwePolicy { algs: &[KeyAlg::Dir, KeyAlg::RsaOaep], encs: &[ContentEnc::A256Gcm], max_len: 200 };
const NO_ENC: JwePolicy<'static> = JwePolicy { algs: &[KeyAlg::Dir, KeyAlg::RsaOaep], encs: &[], max_len: jose::DEFAULT_MAX_LEN };

struct Keys {
    oct: OctKey,
    oct16: OctKey,
    rsa: RsaPrivateKey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        oct: OctKey::new((0u8..32).collect(), Some("k1".into())).unwrap(),
        oct16: OctKey::new(vec![1; 16], None).unwrap(),
        rsa: RsaPrivateKey::from_pem(RSA_PEM, None).unwrap(),
    })
}

fuzz_target!(|data: &[u8]| {
    let k = keys();

    // Any bytes are a valid plaintext.
    let c = jwe::encrypt(EncryptKey::Dir(&k.oct), ContentEnc::A256Gcm, &HeaderParams::kid("k1"), data).unwrap();
    let back = Jwe::parse(&c, &JwePolicy::DIR).unwrap().decrypt(DecryptKey::Dir(&k.oct)).unwrap();
    assert_eq!(&back[..], data);

    let Ok(s) = std::str::from_utf8(data) else { return };
    for policy in [&JwePolicy::DIR, &JwePolicy::RSA_OAEP, &BOTH, &SMALL, &NO_ENC] {
        let jwe = match Jwe::parse(s, policy) {
            Ok(j) => j,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        assert!(policy.algs.contains(&jwe.header().alg));
        assert!(policy.encs.contains(&jwe.header().enc));
        assert!(s.len() <= policy.max_len);
        match jwe.header().alg {
            KeyAlg::Dir => {
                let _ = jwe.decrypt(DecryptKey::Dir(&k.oct));
                assert!(matches!(jwe.decrypt(DecryptKey::Dir(&k.oct16)), Err(Error::KeySize { .. })));
                assert!(matches!(jwe.decrypt(DecryptKey::RsaOaep(&k.rsa)), Err(Error::WrongKeyType { .. })));
            }
            KeyAlg::RsaOaep => {
                // Every failure after parsing must be the single DecryptionFailed.
                if let Err(e) = jwe.decrypt(DecryptKey::RsaOaep(&k.rsa)) {
                    assert_eq!(e, Error::DecryptionFailed);
                }
                assert!(matches!(jwe.decrypt(DecryptKey::Dir(&k.oct)), Err(Error::WrongKeyType { .. })));
            }
        }
    }
});
