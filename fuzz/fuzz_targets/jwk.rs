//! JWK and PEM parsing: `Jwk::from_json` then `to_key` (and the narrower
//! conversions), with round-trip invariants for whatever parses; then the
//! input as a string through every PEM parser.
#![no_main]

use jose::{EcPrivateKey, EcPublicKey, Jwk, Key, RsaPrivateKey, RsaPublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(jwk) = Jwk::from_json(data) {
        // serde round trip.
        let again = Jwk::from_json(jwk.to_json().as_bytes()).expect("own JSON parses");
        assert_eq!(again, jwk);

        match jwk.to_key() {
            Ok(Key::RsaPublic(k)) => assert_eq!(k.to_jwk().to_rsa_public().unwrap(), k),
            Ok(Key::RsaPrivate(k)) => {
                let j = k.to_jwk();
                assert_eq!(j.to_rsa_private().unwrap().to_jwk(), j);
                assert_eq!(RsaPrivateKey::from_pem(&k.to_pem(), None).unwrap().to_jwk(), j);
            }
            Ok(Key::EcPublic(k)) => {
                assert_eq!(k.to_jwk().to_ec_public().unwrap(), k);
                assert_eq!(EcPublicKey::from_pem(&k.to_pem(), k.kid().map(Into::into)).unwrap(), k);
            }
            Ok(Key::EcPrivate(k)) => {
                let j = k.to_jwk();
                assert_eq!(j.to_ec_private().unwrap().to_jwk(), j);
            }
            Ok(Key::Oct(k)) => assert_eq!(k.to_jwk().to_oct().unwrap(), k),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = jwk.to_rsa_public();
        let _ = jwk.to_rsa_private();
        let _ = jwk.to_ec_public();
        let _ = jwk.to_ec_private();
        let _ = jwk.to_oct();
    }

    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(k) = RsaPrivateKey::from_pem(s, None) {
        assert_eq!(RsaPrivateKey::from_pem(&k.to_pem(), None).unwrap().to_jwk(), k.to_jwk());
    }
    if let Ok(k) = RsaPublicKey::from_pem(s, None) {
        assert_eq!(RsaPublicKey::from_pem(&k.to_pem(), None).unwrap(), k);
    }
    if let Ok(k) = EcPrivateKey::from_pem(s, None) {
        assert_eq!(EcPrivateKey::from_pem(&k.to_pem(), None).unwrap().to_jwk(), k.to_jwk());
    }
    if let Ok(k) = EcPublicKey::from_pem(s, None) {
        assert_eq!(EcPublicKey::from_pem(&k.to_pem(), None).unwrap(), k);
    }
});
