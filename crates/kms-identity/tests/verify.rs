//! Verifier against an in-process IdP: every acceptance and rejection rule,
//! key rotation, refetch limits, discovery and the result cache.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kms_identity::{IdentityConfig, IdentityError, IssuerConfig, Verifier};
use serde_json::json;

#[tokio::test]
async fn valid_token_gives_org_qualified_identity() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let claims = idp.claims("alice");
    let id = v.verify(&RS.sign(&claims)).await.unwrap();
    assert_eq!(id.user_id, "alice@example.com");
    assert_eq!(id.issuer, idp.issuer);
    assert_eq!(id.subject, "alice");
    assert_eq!(id.expires_at, claims["exp"].as_i64().unwrap());
    assert_eq!(id.client_id.as_deref(), Some("custos-web"));
    assert_eq!(id.scope, ["kms.read", "kms.write"]);
    assert!(!id.client_credentials, "a person's token");
}

#[tokio::test]
async fn service_tokens_are_recognized_by_gty_or_sub_equal_to_client_id() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let mut gty = idp.claims("indexer");
    gty["gty"] = json!("client-credentials");
    assert!(v.verify(&RS.sign(&gty)).await.unwrap().client_credentials);
    let mut same = idp.claims("custos-web");
    same["client_id"] = json!("custos-web");
    assert!(v.verify(&RS.sign(&same)).await.unwrap().client_credentials, "RFC 9068: sub = client_id");
    let mut other = idp.claims("bob");
    other["gty"] = json!("password");
    assert!(!v.verify(&RS.sign(&other)).await.unwrap().client_credentials);
}

#[tokio::test]
async fn rs256_ps256_es256_are_all_accepted() {
    let idp = TestIdp::start(&[&RS, &PS, &ES]).await;
    let v = idp.verifier();
    for key in [&*RS, &*PS, &*ES] {
        let id = v.verify(&key.sign(&idp.claims("bob"))).await.unwrap();
        assert_eq!(id.user_id, "bob@example.com", "{:?}", key.alg);
    }
}

#[tokio::test]
async fn typ_variants_of_at_jwt_are_accepted() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let mut claims = idp.claims("carol");
        claims["jti"] = typ.into(); // a distinct token each time, not a cache hit
        assert!(v.verify(&RS.sign_typ(Some(typ), &claims)).await.is_ok(), "{typ}");
    }
}

#[tokio::test]
async fn typ_jwt_or_missing_is_rejected() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let claims = idp.claims("alice");
    for typ in [Some("JWT"), Some("jwt"), Some("application/jwt"), None] {
        assert_rejected(&v, &RS.sign_typ(typ, &claims), IdentityError::WrongType).await;
    }
}

#[tokio::test]
async fn hs256_token_is_rejected_even_keyed_with_public_key() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let claims = idp.claims("mallory");
    // The classic confusion attack: HMAC keyed with the RSA public key bytes.
    let secret = serde_json::to_vec(&RS.jwk).unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let mut header = Header::new(alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(RS.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert_rejected(&v, &token, IdentityError::AlgorithmNotAllowed).await;
    }
    assert_eq!(idp.jwks_hits(), 0, "rejected before any key lookup");
}

#[tokio::test]
async fn alg_none_and_other_algs_are_rejected() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let claims = idp.claims("mallory");
    for alg in ["none", "None", "NONE", "RS384", "RS512", "PS512", "ES384", "EdDSA", ""] {
        let token = unsigned(&json!({"alg": alg, "typ": "at+jwt", "kid": "rs-1"}), &claims);
        assert_rejected(&v, &token, IdentityError::AlgorithmNotAllowed).await;
    }
    // Well-signed with RS384 by the right key: still not on the allowlist.
    let mut header = Header::new(Algorithm::RS384);
    header.typ = Some("at+jwt".into());
    header.kid = Some(RS.kid.clone());
    let rsa = jose::RsaPrivateKey::generate(2048, None).unwrap();
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(rsa.to_pem().as_bytes()).unwrap()).unwrap();
    assert_rejected(&v, &token, IdentityError::AlgorithmNotAllowed).await;
}

#[tokio::test]
async fn untrusted_issuer_is_rejected_without_network() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    for iss in ["https://evil.example", "http://127.0.0.1:1", &format!("{}/", idp.issuer)] {
        let mut claims = idp.claims("alice");
        claims["iss"] = iss.into();
        assert_rejected(&v, &RS.sign(&claims), IdentityError::UnknownIssuer).await;
    }
    let mut claims = idp.claims("alice");
    claims.as_object_mut().unwrap().remove("iss");
    assert_rejected(&v, &RS.sign(&claims), IdentityError::MissingClaim("iss")).await;
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn audience_must_be_exactly_ours() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let with_aud = |aud: serde_json::Value| {
        let mut c = idp.claims("alice");
        c["aud"] = aud;
        RS.sign(&c)
    };
    assert!(v.verify(&with_aud(json!([AUDIENCE]))).await.is_ok());
    assert_rejected(&v, &with_aud(json!("kms://other.example.com")), IdentityError::WrongAudience).await;
    assert_rejected(&v, &with_aud(json!("kms://KMS.example.com")), IdentityError::WrongAudience).await;
    assert_rejected(&v, &with_aud(json!([])), IdentityError::WrongAudience).await;
    assert_rejected(&v, &with_aud(json!(["kms://other.example.com"])), IdentityError::WrongAudience).await;
    assert_rejected(&v, &with_aud(json!([AUDIENCE, "kms://other.example.com"])), IdentityError::MultipleAudiences)
        .await;
    assert_rejected(&v, &with_aud(json!([AUDIENCE, AUDIENCE])), IdentityError::MultipleAudiences).await;
    let mut c = idp.claims("alice");
    c.as_object_mut().unwrap().remove("aud");
    assert_rejected(&v, &RS.sign(&c), IdentityError::MissingClaim("aud")).await;
}

#[tokio::test]
async fn time_claims_are_enforced_with_leeway() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier(); // leeway 30 s
    let now = now();
    let with = |name: &str, value: i64| {
        let mut c = idp.claims("alice");
        c[name] = value.into();
        RS.sign(&c)
    };
    assert_rejected(&v, &with("exp", now - 120), IdentityError::Expired).await;
    assert!(v.verify(&with("exp", now - 5)).await.is_ok(), "within leeway");
    assert_rejected(&v, &with("nbf", now + 120), IdentityError::NotYetValid).await;
    assert!(v.verify(&with("nbf", now + 5)).await.is_ok(), "within leeway");
    assert_rejected(&v, &with("iat", now + 120), IdentityError::IssuedInFuture).await;
    assert!(v.verify(&with("iat", now + 5)).await.is_ok(), "within leeway");

    let mut c = idp.claims("alice");
    c.as_object_mut().unwrap().remove("exp");
    assert_rejected(&v, &RS.sign(&c), IdentityError::MissingClaim("exp")).await;
    c["exp"] = "tomorrow".into();
    assert_rejected(&v, &RS.sign(&c), IdentityError::MissingClaim("exp")).await;
}

#[tokio::test]
async fn tampered_or_foreign_signatures_are_rejected() {
    let idp = TestIdp::start(&[&RS, &ES]).await;
    let v = idp.verifier();
    let token = RS.sign(&idp.claims("alice"));

    // Claims swapped for others: the signature no longer covers them.
    let forged = RS.sign(&idp.claims("root"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
    assert_rejected(&v, &spliced, IdentityError::BadSignature).await;

    // A key the IdP never published, claiming a published kid.
    let impostor = SigningKey::rsa("rs-1", Algorithm::RS256);
    assert_rejected(&v, &impostor.sign(&idp.claims("alice")), IdentityError::BadSignature).await;

    // ES256 header pointing at the RSA key's kid: no key of that type.
    let wrong_type = ES.sign_with_kid("rs-1", &idp.claims("alice"));
    assert_rejected(&v, &wrong_type, IdentityError::UnknownKey).await;
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let good = RS.sign(&idp.claims("alice"));
    let long = "a".repeat(40 * 1024);
    let with_crit = {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some("rs-1".into());
        header.crit = Some(vec!["exp".into()]);
        // Signed by the wrong key on purpose: crit is refused before the signature.
        unsigned(&serde_json::to_value(&header).unwrap(), &idp.claims("alice")) + "sig"
    };
    for bad in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        &format!("{good}.extra"),
        &format!("{good}=="),
        &format!("Bearer {good}"),
        &long,
        &with_crit,
    ] {
        let err = v.verify(bad).await.expect_err("malformed");
        assert!(
            matches!(err, IdentityError::Malformed | IdentityError::BadSignature),
            "{err:?} for {:?}",
            &bad[..bad.len().min(20)]
        );
        assert_no_token_content(&err, bad);
    }
    assert_rejected(&v, "e30.e30.", IdentityError::Malformed).await;
    assert_rejected(&v, &with_crit, IdentityError::Malformed).await;
}

#[tokio::test]
async fn user_claim_domains_cannot_cross_orgs() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let id = v.verify(&RS.sign(&idp.claims("Dave@EXAMPLE.com"))).await.unwrap();
    assert_eq!(id.user_id, "Dave@example.com");
    assert_eq!(id.subject, "Dave@EXAMPLE.com");

    assert_rejected(&v, &RS.sign(&idp.claims("eve@other.org")), IdentityError::ForeignUserDomain).await;
    assert_rejected(&v, &RS.sign(&idp.claims("eve@example.com.evil.org")), IdentityError::ForeignUserDomain).await;
    assert_rejected(&v, &RS.sign(&idp.claims("eve@other.org@example.com")), IdentityError::InvalidUserId).await;
    assert_rejected(&v, &RS.sign(&idp.claims("eve smith")), IdentityError::InvalidUserId).await;
    // A token never becomes a certificate service or a KMS: those namespaces are reserved.
    for reserved in ["service:indexer@example.com", "service:indexer", "kms://kms.example.com"] {
        assert_rejected(&v, &RS.sign(&idp.claims(reserved)), IdentityError::ReservedUserId).await;
    }

    let mut c = idp.claims("x");
    c.as_object_mut().unwrap().remove("sub");
    assert_rejected(&v, &RS.sign(&c), IdentityError::MissingClaim("sub")).await;
}

#[tokio::test]
async fn configured_user_claim_is_used_and_required() {
    let idp = TestIdp::start(&[&RS]).await;
    let cfg = IdentityConfig::new(
        AUDIENCE,
        vec![IssuerConfig::new(&idp.issuer, "Example.COM").with_jwks_url(idp.jwks_url()).with_user_claim("email")],
    );
    let v = Verifier::new(cfg).unwrap();
    let mut c = idp.claims("00u1a2b3");
    c["email"] = "frank@example.com".into();
    let id = v.verify(&RS.sign(&c)).await.unwrap();
    assert_eq!((id.user_id.as_str(), id.subject.as_str()), ("frank@example.com", "00u1a2b3"));

    c["email"] = "frank@gmail.com".into();
    assert_rejected(&v, &RS.sign(&c), IdentityError::ForeignUserDomain).await;
    c["email"] = 42.into();
    assert_rejected(&v, &RS.sign(&c), IdentityError::InvalidUserId).await;
    c.as_object_mut().unwrap().remove("email");
    assert_rejected(&v, &RS.sign(&c), IdentityError::MissingUserClaim).await;
}

#[tokio::test]
async fn two_issuers_each_mint_only_their_own_org() {
    let a = TestIdp::start(&[&RS]).await;
    let b = TestIdp::start(&[&ES]).await;
    let cfg = IdentityConfig::new(
        AUDIENCE,
        vec![
            IssuerConfig::new(&a.issuer, "a.example").with_jwks_url(a.jwks_url()),
            IssuerConfig::new(&b.issuer, "b.example").with_jwks_url(b.jwks_url()),
        ],
    );
    let v = Verifier::new(cfg).unwrap();
    assert_eq!(v.verify(&RS.sign(&a.claims("sam"))).await.unwrap().user_id, "sam@a.example");
    assert_eq!(v.verify(&ES.sign(&b.claims("sam"))).await.unwrap().user_id, "sam@b.example");
    assert_rejected(&v, &RS.sign(&a.claims("sam@b.example")), IdentityError::ForeignUserDomain).await;
    // A's key cannot sign for B, even naming B as issuer.
    assert_rejected(&v, &RS.sign(&b.claims("sam")), IdentityError::UnknownKey).await;
}

#[tokio::test]
async fn token_without_kid_is_tried_against_fitting_keys() {
    let idp = TestIdp::start(&[&ROTATED, &RS, &ES]).await;
    let v = idp.verifier();
    assert!(v.verify(&RS.sign_without_kid(&idp.claims("alice"))).await.is_ok());
    let stranger = SigningKey::rsa("x", Algorithm::RS256);
    assert_rejected(&v, &stranger.sign_without_kid(&idp.claims("alice")), IdentityError::BadSignature).await;
}

#[tokio::test]
async fn unknown_kid_after_rotation_triggers_refetch() {
    let idp = TestIdp::start(&[&RS]).await;
    let mut cfg = idp.config();
    cfg.jwks_min_refetch_secs = 0;
    let v = Verifier::new(cfg).unwrap();
    v.verify(&RS.sign(&idp.claims("alice"))).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1);

    idp.set_keys(&[&ROTATED]);
    let id = v.verify(&ROTATED.sign(&idp.claims("alice"))).await.unwrap();
    assert_eq!(id.user_id, "alice@example.com");
    assert_eq!(idp.jwks_hits(), 2, "one refetch for the new kid");

    // The retired key is gone from the refreshed set.
    let mut c = idp.claims("alice");
    c["jti"] = "another".into();
    assert_rejected(&v, &RS.sign(&c), IdentityError::UnknownKey).await;
}

#[tokio::test]
async fn withdrawn_key_stops_working_once_the_key_set_is_old() {
    let idp = TestIdp::start(&[&RS]).await;
    let mut cfg = idp.config();
    cfg.jwks_max_age_secs = 1;
    cfg.jwks_min_refetch_secs = 0;
    let v = Verifier::new(cfg).unwrap();
    v.verify(&RS.sign(&idp.claims("alice"))).await.unwrap();
    idp.set_keys(&[&ROTATED]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_rejected(&v, &RS.sign(&idp.claims("bob")), IdentityError::UnknownKey).await;
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn garbage_kids_cannot_hammer_the_idp() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier(); // min refetch 30 s
    v.verify(&RS.sign(&idp.claims("alice"))).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1);
    for i in 0..50 {
        let token = RS.sign_with_kid(&format!("garbage-{i}"), &idp.claims("alice"));
        assert_rejected(&v, &token, IdentityError::UnknownKey).await;
    }
    assert_eq!(idp.jwks_hits(), 1, "no refetch within the minimum interval");
    // Even a legitimately rotated key must wait for the interval.
    idp.set_keys(&[&RS, &ROTATED]);
    assert_rejected(&v, &ROTATED.sign(&idp.claims("alice")), IdentityError::UnknownKey).await;
    assert_eq!(idp.jwks_hits(), 1);
    assert_eq!(v.stats().jwks_fetches, 1);
}

#[tokio::test]
async fn refetch_is_allowed_again_after_the_interval() {
    let idp = TestIdp::start(&[&RS]).await;
    let mut cfg = idp.config();
    cfg.jwks_min_refetch_secs = 1;
    let v = Verifier::new(cfg).unwrap();
    v.verify(&RS.sign(&idp.claims("alice"))).await.unwrap();
    for i in 0..10 {
        let token = RS.sign_with_kid(&format!("garbage-{i}"), &idp.claims("alice"));
        assert_rejected(&v, &token, IdentityError::UnknownKey).await;
    }
    assert_eq!(idp.jwks_hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.set_keys(&[&RS, &ROTATED]);
    v.verify(&ROTATED.sign(&idp.claims("alice"))).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn concurrent_first_verifications_fetch_once() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let v = v.clone();
            let token = RS.sign(&idp.claims(&format!("user{i}")));
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn second_verify_is_a_cache_hit() {
    let idp = TestIdp::start(&[&RS]).await;
    let v = idp.verifier();
    let token = RS.sign(&idp.claims("alice"));
    let first = v.verify(&token).await.unwrap();
    let hits = idp.jwks_hits();

    let started = Instant::now();
    let second = v.verify(&token).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(first, second);
    assert_eq!(idp.jwks_hits(), hits, "no key set request");
    let stats = v.stats();
    assert_eq!((stats.cache_hits, stats.cache_misses, stats.cache_entries), (1, 1, 1));
    // A hash and a map lookup; generous bound for a loaded CI machine.
    assert!(elapsed < Duration::from_millis(100), "cache hit took {elapsed:?}");
}

#[tokio::test]
async fn cached_result_dies_at_exp() {
    let idp = TestIdp::start(&[&RS]).await;
    let mut cfg = idp.config();
    cfg.leeway_secs = 0;
    let v = Verifier::new(cfg).unwrap();
    let mut c = idp.claims("alice");
    let exp = now() + 2;
    c["exp"] = exp.into();
    let token = RS.sign(&c);
    v.verify(&token).await.unwrap();
    v.verify(&token).await.unwrap();
    assert_eq!(v.stats().cache_hits, 1);

    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_rejected(&v, &token, IdentityError::Expired).await;
    assert_eq!(v.stats().cache_hits, 1, "the expired entry was not used");
}

#[tokio::test]
async fn cache_is_bounded() {
    let idp = TestIdp::start(&[&RS]).await;
    let mut cfg = idp.config();
    cfg.cache_capacity = 3;
    let v = Verifier::new(cfg).unwrap();
    for i in 0..10 {
        v.verify(&RS.sign(&idp.claims(&format!("user{i}")))).await.unwrap();
    }
    assert_eq!(v.stats().cache_entries, 3);
}

#[tokio::test]
async fn discovery_finds_the_jwks() {
    let idp = TestIdp::start(&[&ES]).await;
    let v = Verifier::new(IdentityConfig::new(AUDIENCE, vec![IssuerConfig::new(&idp.issuer, ORG)])).unwrap();
    let id = v.verify(&ES.sign(&idp.claims("alice"))).await.unwrap();
    assert_eq!(id.user_id, "alice@example.com");
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn discovery_for_another_issuer_is_refused() {
    let idp = TestIdp::start(&[&ES]).await;
    idp.claim_discovery_issuer("https://someone-else.example");
    let v = Verifier::new(IdentityConfig::new(AUDIENCE, vec![IssuerConfig::new(&idp.issuer, ORG)])).unwrap();
    assert_rejected(&v, &ES.sign(&idp.claims("alice")), IdentityError::IssuerUnreachable).await;
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn unreachable_issuer_is_reported_and_not_hammered() {
    // Bind then drop, so the port is (very likely) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut cfg = IdentityConfig::new(AUDIENCE, vec![IssuerConfig::new(&issuer, ORG)]);
    cfg.http_timeout_ms = 500;
    let v = Verifier::new(cfg).unwrap();
    let mut claims = serde_json::json!({"iss": issuer, "sub": "a", "aud": AUDIENCE, "exp": now() + 60});
    for i in 0..5 {
        claims["jti"] = i.into();
        assert_rejected(&v, &RS.sign(&claims), IdentityError::IssuerUnreachable).await;
    }
    assert_eq!(v.stats().jwks_fetches, 1, "one attempt per interval, failed or not");
}

#[tokio::test]
async fn unusable_jwks_entries_are_skipped() {
    let idp = TestIdp::start(&[]).await;
    let mut enc_key = RS.jwk.clone();
    enc_key["use"] = "enc".into();
    let mut other_alg = ES.jwk.clone();
    other_alg["alg"] = "ES384".into();
    idp.set_raw_keys(vec![
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "rs-1"}),
        json!({"kty": "weird"}),
        json!("not an object"),
        enc_key,
        other_alg,
        PS.jwk.clone(),
    ]);
    let v = idp.verifier();
    assert_rejected(&v, &RS.sign(&idp.claims("alice")), IdentityError::UnknownKey).await;
    assert_rejected(&v, &ES.sign(&idp.claims("alice")), IdentityError::UnknownKey).await;
    assert!(v.verify(&PS.sign(&idp.claims("alice"))).await.is_ok());
    // An RSA key published for PS256 is not used for RS256 signatures.
    assert_rejected(&v, &PS.sign_as(Algorithm::RS256, &idp.claims("bob")), IdentityError::UnknownKey).await;
}
