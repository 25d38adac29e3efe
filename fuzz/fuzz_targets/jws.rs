//! Compact JWS: `Jws::parse` under several policies, then `verify` with fixed
//! RSA and EC public keys (right and wrong types).
#![no_main]

use std::sync::OnceLock;

use jose::jws::VerifyKey;
use jose::{EcPrivateKey, EcPublicKey, Error, Jws, JwsPolicy, RsaPrivateKey, RsaPublicKey, SigAlg};
use libfuzzer_sys::fuzz_target;

/// Test-only keys shared with the jose integration tests.
const RSA_PEM: &str = include_str!("../../crates/jose/tests/fixtures/rsa2048_pkcs8.pem");
const EC_PEM: &str = include_str!("../../crates/jose/tests/fixtures/p256_a_sec1.pem");

const ALL: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256, SigAlg::RS256, SigAlg::ES256], max_len: jose::DEFAULT_MAX_LEN };
const SMALL: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256, SigAlg::RS256, SigAlg::ES256], max_len: 200 };

struct Keys {
    rsa: RsaPublicKey,
    ec: EcPublicKey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        rsa: RsaPrivateKey::from_pem(RSA_PEM, None).unwrap().public_key().clone(),
        ec: EcPrivateKey::from_pem(EC_PEM, None).unwrap().public_key().clone(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let k = keys();
    for policy in [&JwsPolicy::RSA, &JwsPolicy::PS256, &JwsPolicy::ES256, &ALL, &SMALL] {
        let jws = match Jws::parse(s, policy) {
            Ok(j) => j,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        let alg = jws.header().alg;
        assert!(policy.algs.contains(&alg));
        let rsa = jws.verify(VerifyKey::Rsa(&k.rsa));
        let ec = jws.verify(VerifyKey::Ec(&k.ec));
        match alg {
            SigAlg::PS256 | SigAlg::RS256 => assert!(matches!(ec, Err(Error::WrongKeyType { .. }))),
            SigAlg::ES256 => assert!(matches!(rsa, Err(Error::WrongKeyType { .. }))),
        }
        if let Err(e) = rsa.and(ec) {
            let _ = e.to_string();
        }
    }
});
