//! Round trips and known answers for the jose crate: JWE (`dir`, `RSA-OAEP`),
//! JWS (`PS256`, `RS256`, `ES256`), JWK serde, PEM, `ecdh_hkdf`, and `Debug`
//! redaction. Where possible the other side of a round trip is computed
//! independently (aws-lc-rs used directly, OpenSSL-made fixtures, RFC vectors).

mod common;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::{hkdf, rsa as lc_rsa, signature as lc_sig};
use common::*;
use jose::jwe::{self, DecryptKey, EncryptKey};
use jose::jws::{self, SignKey, VerifyKey};
use jose::{
    ecdh_hkdf, ContentEnc, EcPrivateKey, EcPublicKey, HeaderParams, Jwe, JwePolicy, Jwk, Jws, JwsPolicy, Key, KeyAlg,
    OctKey, RsaPrivateKey, RsaPublicKey, SigAlg,
};
use proptest::prelude::*;

fn header_json(compact: &str) -> serde_json::Value {
    let h = unb64(compact.split('.').next().unwrap());
    serde_json::from_slice(&h).expect("emitted header is JSON")
}

fn big_plaintext() -> Vec<u8> {
    (0..100 * 1024).map(|i| (i * 31 % 251) as u8).collect()
}

// ================================================================ JWE dir

#[test]
fn jwe_dir_roundtrip_sizes() {
    let key = oct();
    for pt in [Vec::new(), b"x".to_vec(), b"hello, world".to_vec(), vec![0u8; 4096], big_plaintext()] {
        let c = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::default(), &pt).unwrap();
        let segs = segments(&c);
        assert_eq!(segs.len(), 5);
        assert_eq!(segs[1], "", "dir has an empty encrypted key");
        assert_eq!(unb64(&segs[2]).len(), 12, "96-bit IV");
        assert_eq!(unb64(&segs[3]).len(), pt.len(), "GCM ciphertext is as long as the plaintext");
        assert_eq!(unb64(&segs[4]).len(), 16, "128-bit tag");
        let parsed = Jwe::parse(&c, &JwePolicy::DIR).unwrap();
        assert_eq!(parsed.header().alg, KeyAlg::Dir);
        assert_eq!(parsed.header().enc, ContentEnc::A256Gcm);
        let out = parsed.decrypt(DecryptKey::Dir(&key)).unwrap();
        assert_eq!(&out[..], &pt[..], "len {}", pt.len());
    }
}

#[test]
fn jwe_dir_header_params_preserved() {
    let key = oct();
    let params = HeaderParams {
        kid: Some("key-7".into()),
        typ: Some("custos-req+jwe".into()),
        cty: Some("application/json".into()),
    };
    let c = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &params, b"{}").unwrap();
    assert_eq!(
        header_json(&c),
        serde_json::json!({"alg":"dir","enc":"A256GCM","kid":"key-7","typ":"custos-req+jwe","cty":"application/json"})
    );
    let parsed = Jwe::parse(&c, &JwePolicy::DIR).unwrap();
    let h = parsed.header();
    assert_eq!(h.kid.as_deref(), Some("key-7"));
    assert_eq!(h.typ.as_deref(), Some("custos-req+jwe"));
    assert_eq!(h.cty.as_deref(), Some("application/json"));

    // HeaderParams::kid + with_typ, and absent members stay absent.
    let c =
        jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::kid("k").with_typ("t"), b"").unwrap();
    assert_eq!(header_json(&c), serde_json::json!({"alg":"dir","enc":"A256GCM","kid":"k","typ":"t"}));
    let c = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::default(), b"").unwrap();
    assert_eq!(header_json(&c), serde_json::json!({"alg":"dir","enc":"A256GCM"}));
    let h = Jwe::parse(&c, &JwePolicy::DIR).unwrap().header().clone();
    assert_eq!((h.kid, h.typ, h.cty), (None, None, None));
}

#[test]
fn jwe_fresh_iv_every_time() {
    let key = oct();
    let a = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::default(), b"same").unwrap();
    let b = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::default(), b"same").unwrap();
    assert_ne!(segments(&a)[2], segments(&b)[2], "IVs must differ");
    assert_ne!(a, b);
}

/// The AAD is the header exactly as transmitted: decrypt our JWE with aws-lc directly.
#[test]
fn jwe_dir_matches_independent_aes_gcm() {
    let key = oct();
    let c = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::kid("k1"), b"interop").unwrap();
    let s = segments(&c);
    let lc = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose()).unwrap());
    let mut buf = unb64(&s[3]);
    buf.extend(unb64(&s[4]));
    let iv: [u8; 12] = unb64(&s[2]).try_into().unwrap();
    let pt = lc.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(s[0].as_bytes()), &mut buf).unwrap();
    assert_eq!(pt, b"interop");

    // And the reverse: a JWE sealed by hand (with a header we wrote, key order and all) decrypts.
    let header = b64(br#"{"enc":"A256GCM","kid":"hand","alg":"dir"}"#);
    let iv = [7u8; 12];
    let mut buf = b"made by hand".to_vec();
    let tag = lc
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(header.as_bytes()), &mut buf)
        .unwrap();
    let compact = join(&[header, String::new(), b64(iv), b64(&buf), b64(tag.as_ref())]);
    let parsed = Jwe::parse(&compact, &JwePolicy::DIR).unwrap();
    assert_eq!(parsed.header().kid.as_deref(), Some("hand"));
    assert_eq!(&parsed.decrypt(DecryptKey::Dir(&key)).unwrap()[..], b"made by hand");
}

// ================================================================ JWE RSA-OAEP

#[test]
fn jwe_rsa_oaep_roundtrip_sizes() {
    let sk = rsa();
    let pk = rsa_public();
    for pt in [Vec::new(), b"secret".to_vec(), big_plaintext()] {
        let c = jwe::encrypt(EncryptKey::RsaOaep(&pk), ContentEnc::A256Gcm, &HeaderParams::kid("rsa-1"), &pt).unwrap();
        assert_eq!(header_json(&c), serde_json::json!({"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}));
        assert_eq!(unb64(&segments(&c)[1]).len(), 256, "2048-bit RSA-OAEP output");
        let parsed = Jwe::parse(&c, &JwePolicy::RSA_OAEP).unwrap();
        assert_eq!(parsed.header().alg, KeyAlg::RsaOaep);
        assert_eq!(parsed.header().kid.as_deref(), Some("rsa-1"));
        assert_eq!(&parsed.decrypt(DecryptKey::RsaOaep(&sk)).unwrap()[..], &pt[..]);
    }
    // A policy allowing both algorithms accepts both.
    let both = JwePolicy { algs: &[KeyAlg::Dir, KeyAlg::RsaOaep], encs: &[ContentEnc::A256Gcm], max_len: 1 << 20 };
    let c = jwe::encrypt(EncryptKey::RsaOaep(sk.public_key()), ContentEnc::A256Gcm, &HeaderParams::default(), b"x")
        .unwrap();
    assert_eq!(&Jwe::parse(&c, &both).unwrap().decrypt(DecryptKey::RsaOaep(&sk)).unwrap()[..], b"x");
}

#[test]
fn jwe_rsa_oaep_fresh_cek_every_time() {
    let pk = rsa_public();
    let a = jwe::encrypt(EncryptKey::RsaOaep(&pk), ContentEnc::A256Gcm, &HeaderParams::default(), b"same").unwrap();
    let b = jwe::encrypt(EncryptKey::RsaOaep(&pk), ContentEnc::A256Gcm, &HeaderParams::default(), b"same").unwrap();
    assert_ne!(segments(&a)[1], segments(&b)[1]);
    assert_ne!(segments(&a)[3], segments(&b)[3], "different CEK and IV give different ciphertext");
}

/// Unwrap the CEK with aws-lc's OAEP (SHA-1/MGF1-SHA-1) directly, then open with AES-GCM.
#[test]
fn jwe_rsa_oaep_matches_independent_unwrap() {
    let sk = rsa();
    let c =
        jwe::encrypt(EncryptKey::RsaOaep(sk.public_key()), ContentEnc::A256Gcm, &HeaderParams::default(), b"interop")
            .unwrap();
    let s = segments(&c);
    let dk =
        lc_rsa::OaepPrivateDecryptingKey::new(lc_rsa::PrivateDecryptingKey::from_pkcs8(&sk.to_pkcs8_der()).unwrap())
            .unwrap();
    let mut cek = vec![0u8; dk.min_output_size()];
    let cek = dk.decrypt(&lc_rsa::OAEP_SHA1_MGF1SHA1, &unb64(&s[1]), &mut cek, None).unwrap().to_vec();
    assert_eq!(cek.len(), 32, "A256GCM CEK");
    let lc = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cek).unwrap());
    let mut buf = unb64(&s[3]);
    buf.extend(unb64(&s[4]));
    let iv: [u8; 12] = unb64(&s[2]).try_into().unwrap();
    assert_eq!(
        lc.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(s[0].as_bytes()), &mut buf).unwrap(),
        b"interop"
    );
}

// ================================================================ JWS

#[test]
fn jws_roundtrip_all_algs() {
    let rsa = rsa();
    let ec = ec_a();
    let payloads: [&[u8]; 4] = [b"", b"hello", &[0, 255, 1, 254, b'.', b'='], &[b'z'; 10_000]];
    for (alg, sk, vk, policy) in [
        (SigAlg::PS256, SignKey::Rsa(&rsa), VerifyKey::Rsa(rsa.public_key()), JwsPolicy::PS256),
        (SigAlg::RS256, SignKey::Rsa(&rsa), VerifyKey::Rsa(rsa.public_key()), JwsPolicy::RSA),
        (SigAlg::ES256, SignKey::Ec(&ec), VerifyKey::Ec(ec.public_key()), JwsPolicy::ES256),
    ] {
        for p in payloads {
            let params = HeaderParams { kid: Some("sig-1".into()), typ: Some("custos-resp+jws".into()), cty: None };
            let t = jws::sign(alg, sk, &params, p).unwrap();
            assert_eq!(header_json(&t), serde_json::json!({"alg": alg.name(), "kid":"sig-1", "typ":"custos-resp+jws"}));
            assert_eq!(segments(&t)[1], b64(p));
            let sig_len = unb64(&segments(&t)[2]).len();
            assert_eq!(sig_len, if alg == SigAlg::ES256 { 64 } else { 256 }, "{alg:?}");
            let parsed = Jws::parse(&t, &policy).unwrap();
            assert_eq!(parsed.header().alg, alg);
            assert_eq!(parsed.header().kid.as_deref(), Some("sig-1"));
            assert_eq!(parsed.header().typ.as_deref(), Some("custos-resp+jws"));
            assert_eq!(parsed.header().cty, None);
            assert_eq!(parsed.verify(vk).unwrap(), p, "{alg:?}");
        }
    }
}

#[test]
fn jws_determinism() {
    let rsa = rsa();
    let ec = ec_a();
    let p = HeaderParams::default();
    // PKCS#1 v1.5 is deterministic; PSS and ECDSA are randomized.
    assert_eq!(
        jws::sign(SigAlg::RS256, SignKey::Rsa(&rsa), &p, b"m").unwrap(),
        jws::sign(SigAlg::RS256, SignKey::Rsa(&rsa), &p, b"m").unwrap()
    );
    assert_ne!(
        jws::sign(SigAlg::PS256, SignKey::Rsa(&rsa), &p, b"m").unwrap(),
        jws::sign(SigAlg::PS256, SignKey::Rsa(&rsa), &p, b"m").unwrap()
    );
    assert_ne!(
        jws::sign(SigAlg::ES256, SignKey::Ec(&ec), &p, b"m").unwrap(),
        jws::sign(SigAlg::ES256, SignKey::Ec(&ec), &p, b"m").unwrap()
    );
}

/// Our signatures verify with aws-lc used directly (PSS salt = 32 bytes, ECDSA fixed r||s).
#[test]
fn jws_signatures_verify_independently() {
    let rsa = rsa();
    let ec = ec_a();
    let spki_rsa = rsa.public_key().to_spki_der();
    let n = unb64(rsa.public_key().to_jwk().n.as_deref().unwrap());
    let e = unb64(rsa.public_key().to_jwk().e.as_deref().unwrap());
    for (alg, params) in
        [(SigAlg::PS256, &lc_sig::RSA_PSS_2048_8192_SHA256), (SigAlg::RS256, &lc_sig::RSA_PKCS1_2048_8192_SHA256)]
    {
        let t = jws::sign(alg, SignKey::Rsa(&rsa), &HeaderParams::kid("x"), b"payload").unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        lc_sig::RsaPublicKeyComponents { n: &n[..], e: &e[..] }.verify(params, input.as_bytes(), &unb64(sig)).unwrap();
        // SPKI DER is what aws-lc's UnparsedPublicKey wants for RSA.
        lc_sig::UnparsedPublicKey::new(params, &spki_rsa[..]).verify(input.as_bytes(), &unb64(sig)).unwrap();
    }
    let t = jws::sign(SigAlg::ES256, SignKey::Ec(&ec), &HeaderParams::default(), b"payload").unwrap();
    let (input, sig) = t.rsplit_once('.').unwrap();
    lc_sig::UnparsedPublicKey::new(&lc_sig::ECDSA_P256_SHA256_FIXED, &ec.public_key().sec1()[..])
        .verify(input.as_bytes(), &unb64(sig))
        .unwrap();
}

#[test]
fn rfc7515_a2_rs256_known_answer() {
    let jwk = jwk(RFC7515_A2_JWK);
    let public = jwk.to_rsa_public().unwrap();
    assert_eq!(public.bits(), 2048);
    let parsed = Jws::parse(RFC7515_A2_JWS, &JwsPolicy::RSA).unwrap();
    assert_eq!(parsed.header().alg, SigAlg::RS256);
    assert_eq!(parsed.verify(VerifyKey::Rsa(&public)).unwrap(), RFC7515_PAYLOAD);
    // RS256 is deterministic and our header for {"alg":"RS256"} is byte-identical
    // to the RFC's, so signing the RFC payload with the RFC key reproduces it exactly.
    let private = jwk.to_rsa_private().unwrap();
    assert_eq!(
        jws::sign(SigAlg::RS256, SignKey::Rsa(&private), &HeaderParams::default(), RFC7515_PAYLOAD).unwrap(),
        RFC7515_A2_JWS
    );
    // Not accepted as PS256, nor under a PS256-only policy.
    assert!(Jws::parse(RFC7515_A2_JWS, &JwsPolicy::PS256).is_err());
}

#[test]
fn rfc7515_a3_es256_known_answer() {
    let jwk = jwk(RFC7515_A3_JWK);
    let public = jwk.to_ec_public().unwrap();
    let parsed = Jws::parse(RFC7515_A3_JWS, &JwsPolicy::ES256).unwrap();
    assert_eq!(parsed.header().alg, SigAlg::ES256);
    assert_eq!(parsed.verify(VerifyKey::Ec(&public)).unwrap(), RFC7515_PAYLOAD);
    // The private key from the RFC derives the same public point and signs verifiably.
    let private = jwk.to_ec_private().unwrap();
    assert_eq!(private.public_key(), &public);
    let t = jws::sign(SigAlg::ES256, SignKey::Ec(&private), &HeaderParams::default(), RFC7515_PAYLOAD).unwrap();
    assert_eq!(Jws::parse(&t, &JwsPolicy::ES256).unwrap().verify(VerifyKey::Ec(&public)).unwrap(), RFC7515_PAYLOAD);
}

// ================================================================ JWK serde

fn json_roundtrip(jwk: &Jwk) -> Jwk {
    let s = jwk.to_json();
    let back = Jwk::from_json(s.as_bytes()).unwrap();
    assert_eq!(&back, jwk, "JSON round trip of {s:.60}…");
    back
}

#[test]
fn jwk_oct_roundtrip() {
    let key = oct();
    let jwk = key.to_jwk();
    assert_eq!(jwk.kty, "oct");
    assert_eq!(jwk.kid.as_deref(), Some("oct-1"));
    assert_eq!(jwk.k.as_ref().unwrap().expose(), b64((0u8..32).collect::<Vec<_>>()));
    assert!(jwk.has_private());
    let back = json_roundtrip(&jwk);
    match back.to_key().unwrap() {
        Key::Oct(k) => assert_eq!(k, key),
        other => panic!("expected oct, got {other:?}"),
    }
    assert_eq!(back.to_oct().unwrap(), key);
    // Generated keys round trip too, and equality includes the kid.
    let g = OctKey::generate(32, None).unwrap();
    assert_eq!(g.to_jwk().to_oct().unwrap(), g);
    assert_ne!(g.clone().with_kid("other"), g);
    assert_eq!(g.clone().with_kid("x").kid(), Some("x"));
}

#[test]
fn jwk_rsa_public_roundtrip() {
    let pk = rsa_public();
    let jwk = pk.to_jwk();
    assert_eq!(jwk.kty, "RSA");
    assert_eq!(jwk.e.as_deref(), Some("AQAB"));
    assert!(!jwk.has_private());
    assert!(jwk.d.is_none() && jwk.p.is_none() && jwk.qi.is_none());
    let back = json_roundtrip(&jwk);
    match back.to_key().unwrap() {
        Key::RsaPublic(k) => {
            assert_eq!(k, pk);
            assert_eq!(k.kid(), Some("rsa-1"));
        }
        other => panic!("expected RSA public, got {other:?}"),
    }
    assert_eq!(back.to_rsa_public().unwrap(), pk);
}

#[test]
fn jwk_rsa_private_roundtrip() {
    let sk = rsa();
    let jwk = sk.to_jwk();
    assert!(jwk.has_private());
    for m in [&jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi] {
        assert!(m.is_some());
    }
    let back = json_roundtrip(&jwk);
    let key = match back.to_key().unwrap() {
        Key::RsaPrivate(k) => k,
        other => panic!("expected RSA private, got {other:?}"),
    };
    assert_eq!(key.to_jwk(), jwk, "private JWK -> key -> JWK");
    assert_eq!(&key.to_pkcs8_der()[..], &sk.to_pkcs8_der()[..]);
    assert_eq!(key.public_key(), sk.public_key());
    assert_eq!(key.kid(), Some("rsa-1"));
    // The public half of the private JWK.
    assert_eq!(back.to_rsa_public().unwrap(), *sk.public_key());

    // The RFC 7515 A.2 private JWK survives key -> JWK unchanged (minimal encodings throughout).
    let rfc = common::jwk(RFC7515_A2_JWK);
    let k = rfc.to_rsa_private().unwrap();
    assert_eq!(k.to_jwk(), rfc);
}

#[test]
fn jwk_ec_roundtrip() {
    let sk = ec_a();
    let pub_jwk = sk.public_key().to_jwk();
    assert_eq!(pub_jwk.crv.as_deref(), Some("P-256"));
    assert!(!pub_jwk.has_private());
    match json_roundtrip(&pub_jwk).to_key().unwrap() {
        Key::EcPublic(k) => assert_eq!(&k, sk.public_key()),
        other => panic!("expected EC public, got {other:?}"),
    }
    let priv_jwk = sk.to_jwk();
    assert!(priv_jwk.has_private());
    assert_eq!(unb64(priv_jwk.d.as_ref().unwrap().expose()).len(), 32);
    let back = json_roundtrip(&priv_jwk);
    match back.to_key().unwrap() {
        Key::EcPrivate(k) => {
            assert_eq!(k.to_jwk(), priv_jwk);
            assert_eq!(k.public_key(), sk.public_key());
            assert_eq!(k.kid(), Some("ec-a"));
        }
        other => panic!("expected EC private, got {other:?}"),
    }
    // to_ec_public on a private JWK ignores d.
    assert_eq!(&back.to_ec_public().unwrap(), sk.public_key());
    // RFC 7515 A.3 key.
    let rfc = common::jwk(RFC7515_A3_JWK);
    assert_eq!(rfc.to_ec_private().unwrap().to_jwk(), rfc);
}

#[test]
fn jwk_optional_members_and_unknown_members() {
    let j = Jwk::from_json(
        br#"{"kty":"oct","kid":"a","alg":"dir","use":"enc","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","ext":true,"key_ops":["encrypt"]}"#,
    )
    .unwrap();
    assert_eq!(j.alg.as_deref(), Some("dir"));
    assert_eq!(j.use_.as_deref(), Some("enc"));
    let s = j.to_json();
    assert!(s.contains(r#""use":"enc""#), "{}", s.len());
    assert!(!s.contains("key_ops"), "unknown members are dropped");
    assert_eq!(j.to_oct().unwrap(), oct().with_kid("a"));
    // x5c survives serde.
    let j = Jwk { kty: "EC".into(), x5c: Some(vec!["MIIB".into(), "MIIC".into()]), ..Default::default() };
    json_roundtrip(&j);
}

#[test]
fn thumbprints_are_rfc7638_shaped() {
    // The thumbprint is SHA-256 over the canonical JSON of the required members.
    let pk = rsa_public();
    let jwk = pk.to_jwk();
    let canon = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, jwk.e.unwrap(), jwk.n.unwrap());
    assert_eq!(pk.thumbprint(), b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canon.as_bytes())));
    // kid does not enter the thumbprint.
    assert_eq!(pk.clone().with_kid("zz").thumbprint(), pk.thumbprint());
    let ec = ec_a();
    let jwk = ec.public_key().to_jwk();
    let canon = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, jwk.x.unwrap(), jwk.y.unwrap());
    assert_eq!(
        ec.public_key().thumbprint(),
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canon.as_bytes()))
    );
}

// ================================================================ PEM

#[test]
fn pem_rsa_pkcs1_and_pkcs8_are_the_same_key() {
    let from_p1 = RsaPrivateKey::from_pem(RSA_PKCS1_PEM, None).unwrap();
    let from_p8 = RsaPrivateKey::from_pem(RSA_PKCS8_PEM, None).unwrap();
    assert_eq!(from_p1.to_jwk(), from_p8.to_jwk());
    // Export is always PKCS#8 and re-imports to the same key.
    let pem = from_p1.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", &pem[..30]);
    let again = RsaPrivateKey::from_pem(&pem, None).unwrap();
    assert_eq!(again.to_jwk(), from_p1.to_jwk());
    assert_eq!(&again.to_pkcs8_der()[..], &from_p1.to_pkcs8_der()[..]);
    // Surrounding whitespace is tolerated.
    RsaPrivateKey::from_pem(&format!("\n\n{}\n\n", RSA_PKCS8_PEM), None).unwrap();
    // The PKCS#1-loaded key decrypts for, and signs as, the SPKI public key.
    let pk = RsaPublicKey::from_pem(RSA_SPKI_PEM, None).unwrap();
    assert_eq!(from_p1.public_key(), &pk);
    let c = jwe::encrypt(EncryptKey::RsaOaep(&pk), ContentEnc::A256Gcm, &HeaderParams::default(), b"pem").unwrap();
    assert_eq!(
        &Jwe::parse(&c, &JwePolicy::RSA_OAEP).unwrap().decrypt(DecryptKey::RsaOaep(&from_p1)).unwrap()[..],
        b"pem"
    );
    let t = jws::sign(SigAlg::PS256, SignKey::Rsa(&from_p1), &HeaderParams::default(), b"pem").unwrap();
    assert_eq!(Jws::parse(&t, &JwsPolicy::PS256).unwrap().verify(VerifyKey::Rsa(&pk)).unwrap(), b"pem");
}

#[test]
fn pem_rsa_public_spki_and_pkcs1() {
    let pk = RsaPublicKey::from_pem(RSA_SPKI_PEM, None).unwrap();
    assert_eq!(pk.bits(), 2048);
    // Our SPKI export is byte-identical to OpenSSL's.
    assert_eq!(pk.to_pem().trim(), RSA_SPKI_PEM.trim());
    assert_eq!(RsaPublicKey::from_pem(&pk.to_pem(), None).unwrap(), pk);
    assert_eq!(RsaPublicKey::from_der(&pk.to_spki_der(), None).unwrap(), pk);
    // "RSA PUBLIC KEY" (PKCS#1) from `openssl rsa -RSAPublicKey_out`.
    let p1 = include_str!("fixtures/rsa2048_pkcs1_public.pem");
    assert_eq!(RsaPublicKey::from_pem(p1, None).unwrap(), pk);
    assert_eq!(rsa().public_key().to_pem(), pk.to_pem());
}

#[test]
fn pem_ec_sec1_and_pkcs8_are_the_same_key() {
    let sec1 = EcPrivateKey::from_pem(EC_A_SEC1_PEM, None).unwrap();
    let p8 = EcPrivateKey::from_pem(EC_A_PKCS8_PEM, None).unwrap();
    assert_eq!(sec1.to_jwk(), p8.to_jwk());
    let pem = sec1.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let again = EcPrivateKey::from_pem(&pem, None).unwrap();
    assert_eq!(again.to_jwk(), sec1.to_jwk());
    assert_eq!(EcPrivateKey::from_der(&sec1.to_pkcs8_der(), None).unwrap().to_jwk(), sec1.to_jwk());
    // Public: SPKI equals OpenSSL's byte for byte, and round trips.
    let pk = EcPublicKey::from_pem(EC_A_SPKI_PEM, None).unwrap();
    assert_eq!(sec1.public_key(), &pk);
    assert_eq!(pk.to_pem().trim(), EC_A_SPKI_PEM.trim());
    assert_eq!(EcPublicKey::from_pem(&pk.to_pem(), None).unwrap(), pk);
    assert_eq!(EcPublicKey::from_spki_der(&pk.to_spki_der(), None).unwrap(), pk);
    assert_eq!(EcPublicKey::from_sec1(pk.sec1(), None).unwrap(), pk);
    // A SEC1-loaded key signs verifiably.
    let t = jws::sign(SigAlg::ES256, SignKey::Ec(&sec1), &HeaderParams::default(), b"pem").unwrap();
    assert_eq!(Jws::parse(&t, &JwsPolicy::ES256).unwrap().verify(VerifyKey::Ec(&pk)).unwrap(), b"pem");
}

#[test]
fn generated_keys_roundtrip_through_pem() {
    let rsa = RsaPrivateKey::generate(2048, Some("g".into())).unwrap();
    assert_eq!(RsaPrivateKey::from_pem(&rsa.to_pem(), Some("g".into())).unwrap().to_jwk(), rsa.to_jwk());
    let ec = EcPrivateKey::generate(Some("g".into())).unwrap();
    assert_eq!(EcPrivateKey::from_pem(&ec.to_pem(), Some("g".into())).unwrap().to_jwk(), ec.to_jwk());
    assert!(RsaPrivateKey::generate(1024, None).is_err());
}

// ================================================================ ecdh_hkdf

/// HKDF-SHA-256 with an empty salt and empty info, computed with aws-lc's hkdf.
fn manual_hkdf(ikm: &[u8], len: usize) -> Vec<u8> {
    struct L(usize);
    impl hkdf::KeyType for L {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(ikm);
    let mut out = vec![0u8; len];
    prk.expand(&[], L(len)).unwrap().fill(&mut out).unwrap();
    out
}

#[test]
fn manual_hkdf_matches_rfc5869_test_case_3() {
    // RFC 5869 A.3: IKM = 22 x 0x0b, salt and info empty, L = 42.
    assert_eq!(
        hex(&manual_hkdf(&[0x0b; 22], 42)),
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    );
    // node-jose's "empty salt" is HashLen zero bytes; RFC 5869 §2.2 says they are the same.
    let prk_a = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&[1, 2, 3]);
    let prk_b = hkdf::Salt::new(hkdf::HKDF_SHA256, &[0u8; 32]).extract(&[1, 2, 3]);
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    struct L32;
    impl hkdf::KeyType for L32 {
        fn len(&self) -> usize {
            32
        }
    }
    prk_a.expand(&[], L32).unwrap().fill(&mut a).unwrap();
    prk_b.expand(&[], L32).unwrap().fill(&mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn ecdh_hkdf_agreement_and_known_answer() {
    let a = ec_a();
    let b = ec_b();
    let ab = ecdh_hkdf(&a, b.public_key(), Some("chan".into())).unwrap();
    let ba = ecdh_hkdf(&b, a.public_key(), Some("chan".into())).unwrap();
    assert_eq!(ab, ba, "both sides derive the same key");
    assert_eq!(ab.kid(), Some("chan"));
    assert_eq!(ab.expose().len(), 32);
    // Z matches OpenSSL's `pkeyutl -derive`, the key matches OpenSSL's `kdf HKDF`.
    let z = a.ecdh(&ec_b_public()).unwrap();
    assert_eq!(hex(&z[..]), ECDH_AB_Z_HEX);
    assert_eq!(hex(&manual_hkdf(&z[..], 32)), ECDH_AB_HKDF_HEX);
    assert_eq!(hex(ab.expose()), ECDH_AB_HKDF_HEX);
    // A different peer gives a different key; so does a fresh key.
    let c = EcPrivateKey::generate(None).unwrap();
    let ac = ecdh_hkdf(&a, c.public_key(), None).unwrap();
    assert_ne!(ac.expose(), ab.expose());
    assert_eq!(ac.expose(), ecdh_hkdf(&c, a.public_key(), None).unwrap().expose());
    assert_eq!(ac.expose(), &manual_hkdf(&c.ecdh(a.public_key()).unwrap()[..], 32)[..]);
    // The derived key is usable for dir JWE in both directions.
    let msg = jwe::encrypt(EncryptKey::Dir(&ab), ContentEnc::A256Gcm, &HeaderParams::kid("chan"), b"over the channel")
        .unwrap();
    assert_eq!(
        &Jwe::parse(&msg, &JwePolicy::DIR).unwrap().decrypt(DecryptKey::Dir(&ba)).unwrap()[..],
        b"over the channel"
    );
}

// ================================================================ Debug redaction

fn assert_hidden(what: &str, shown: &str, secrets: &[String]) {
    for s in secrets {
        assert!(s.len() >= 8, "secret too short to search for");
        assert!(!shown.contains(s.as_str()), "{what}: Debug output contains secret material");
        // Also no long-enough prefix of it.
        assert!(!shown.contains(&s[..8]), "{what}: Debug output contains a prefix of secret material");
    }
}

#[test]
fn debug_never_shows_secrets() {
    let rsa = rsa();
    let rj = rsa.to_jwk();
    let rsa_secrets: Vec<String> =
        [&rj.d, &rj.p, &rj.q, &rj.dp, &rj.dq, &rj.qi].iter().map(|m| m.as_ref().unwrap().expose().to_owned()).collect();
    let mut rsa_all = rsa_secrets.clone();
    rsa_all.push(hex(&rsa.to_pkcs8_der()[100..140]));
    assert_hidden("RsaPrivateKey", &format!("{rsa:?} {rsa:#?}"), &rsa_all);
    assert_hidden("RSA private Jwk", &format!("{rj:?} {rj:#?}"), &rsa_secrets);
    assert_hidden("Key::RsaPrivate", &format!("{:?}", rj.to_key().unwrap()), &rsa_all);
    assert_hidden("DecryptKey::RsaOaep", &format!("{:?}", DecryptKey::RsaOaep(&rsa)), &rsa_all);
    assert_hidden("SignKey::Rsa", &format!("{:?}", SignKey::Rsa(&rsa)), &rsa_all);

    let ec = ec_a();
    let ej = ec.to_jwk();
    let d = ej.d.as_ref().unwrap().expose().to_owned();
    let ec_secrets = vec![d.clone(), hex(&unb64(&d))];
    assert_hidden("EcPrivateKey", &format!("{ec:?} {ec:#?}"), &ec_secrets);
    assert_hidden("EC private Jwk", &format!("{ej:?}"), &ec_secrets);
    assert_hidden("Key::EcPrivate", &format!("{:?}", ej.to_key().unwrap()), &ec_secrets);
    assert_hidden("SignKey::Ec", &format!("{:?}", SignKey::Ec(&ec)), &ec_secrets);

    let k = OctKey::new(b"\x13\x37supersecretkeybytes0123456789ab".to_vec(), Some("o".into())).unwrap();
    let kj = k.to_jwk();
    let oct_secrets =
        vec![kj.k.as_ref().unwrap().expose().to_owned(), hex(k.expose()), "supersecret".into(), "19, 55, 115".into()];
    assert_hidden("OctKey", &format!("{k:?} {k:#?}"), &oct_secrets);
    assert_hidden("oct Jwk", &format!("{kj:?}"), &oct_secrets);
    assert_hidden("Key::Oct", &format!("{:?}", kj.to_key().unwrap()), &oct_secrets);
    assert_hidden("DecryptKey::Dir", &format!("{:?}", DecryptKey::Dir(&k)), &oct_secrets);
    assert_hidden("EncryptKey::Dir", &format!("{:?}", EncryptKey::Dir(&k)), &oct_secrets);
    assert_hidden("SecretString", &format!("{:?}", kj.k), &oct_secrets);
    // A derived channel key is an OctKey too.
    let ck = ecdh_hkdf(&ec, ec_b().public_key(), None).unwrap();
    assert_hidden("ecdh_hkdf key", &format!("{ck:?}"), &[hex(ck.expose())]);

    // The useful public facts are still there.
    assert!(format!("{rsa:?}").contains("2048"));
    assert!(format!("{k:?}").contains(&format!("bits: {}", k.expose().len() * 8)));
    assert!(format!("{kj:?}").contains("[redacted]"));
}

// ================================================================ proptest

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn prop_dir_roundtrip(pt in proptest::collection::vec(any::<u8>(), 0..2048), kid in "\\PC{0,40}") {
        let key = oct();
        let c = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::kid(kid.clone()), &pt).unwrap();
        let parsed = Jwe::parse(&c, &JwePolicy::DIR).unwrap();
        prop_assert_eq!(parsed.header().kid.as_deref(), Some(kid.as_str()));
        prop_assert_eq!(&parsed.decrypt(DecryptKey::Dir(&key)).unwrap()[..], &pt[..]);
    }

    #[test]
    fn prop_parsers_never_panic_on_any_string(s in "\\PC{0,300}") {
        let _ = Jwe::parse(&s, &JwePolicy::DIR);
        let _ = Jwe::parse(&s, &JwePolicy::RSA_OAEP);
        let _ = Jws::parse(&s, &JwsPolicy::RSA);
        let _ = Jws::parse(&s, &JwsPolicy::ES256);
        if let Ok(j) = Jwk::from_json(s.as_bytes()) {
            let _ = j.to_key();
        }
        let _ = RsaPrivateKey::from_pem(&s, None);
        let _ = EcPublicKey::from_pem(&s, None);
    }

    /// Strings over the compact alphabet, so that many reach the later checks.
    #[test]
    fn prop_parsers_never_panic_on_compact_like(s in "[A-Za-z0-9_.-]{0,400}") {
        if let Ok(j) = Jwe::parse(&s, &JwePolicy::DIR) {
            let _ = j.decrypt(DecryptKey::Dir(&oct()));
        }
        let _ = Jws::parse(&s, &JwsPolicy::ES256);
        let _ = Jws::parse(&s, &JwsPolicy::RSA);
    }

    /// Well-formed headers with arbitrary segments behind them.
    #[test]
    fn prop_structured_jwe_never_panics(
        hdr in prop_oneof![
            Just(r#"{"alg":"dir","enc":"A256GCM"}"#.to_string()),
            Just(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#.to_string()),
            "\\PC{0,40}",
        ],
        ek in proptest::collection::vec(any::<u8>(), 0..300),
        iv in proptest::collection::vec(any::<u8>(), 0..20),
        ct in proptest::collection::vec(any::<u8>(), 0..64),
        tag in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let both = JwePolicy { algs: &[KeyAlg::Dir, KeyAlg::RsaOaep], encs: &[ContentEnc::A256Gcm], max_len: 1 << 20 };
        let c = join(&[b64(hdr.as_bytes()), b64(&ek), b64(&iv), b64(&ct), b64(&tag)]);
        if let Ok(j) = Jwe::parse(&c, &both) {
            let r = match j.header().alg {
                KeyAlg::Dir => j.decrypt(DecryptKey::Dir(&oct())),
                KeyAlg::RsaOaep => j.decrypt(DecryptKey::RsaOaep(rsa_key())),
            };
            prop_assert_eq!(r.unwrap_err(), jose::Error::DecryptionFailed);
        }
    }

    #[test]
    fn prop_jwk_from_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(j) = Jwk::from_json(&bytes) {
            let _ = j.to_key();
        }
    }

    /// JWKs with every member drawn from short arbitrary byte strings.
    #[test]
    fn prop_jwk_to_key_never_panics(
        kty in prop_oneof![Just("RSA"), Just("EC"), Just("oct"), Just("OKP")],
        crv in proptest::option::of(prop_oneof![Just("P-256"), Just("P-384")]),
        members in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 10),
        big_n in any::<bool>(),
    ) {
        let m = |i: usize| members[i].as_ref().map(b64);
        let s = |i: usize| members[i].as_ref().map(|v| jose::SecretString::new(b64(v)));
        let n = if big_n { members[0].as_ref().map(|v| { let mut n = v.clone(); n.resize(256, 0xA5); b64(n) }) } else { m(0) };
        let jwk = Jwk {
            kty: kty.into(), crv: crv.map(Into::into), n, e: m(1), x: m(2), y: m(3),
            d: s(4), p: s(5), q: s(6), dp: s(7), dq: s(8), qi: s(9), k: s(4),
            ..Default::default()
        };
        let _ = jwk.to_key();
        let _ = jwk.to_rsa_public();
        let _ = jwk.to_ec_public();
        let _ = jwk.to_oct();
    }
}

fn rsa_key() -> &'static RsaPrivateKey {
    static K: std::sync::OnceLock<RsaPrivateKey> = std::sync::OnceLock::new();
    K.get_or_init(rsa)
}
