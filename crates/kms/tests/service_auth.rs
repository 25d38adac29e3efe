//! Service credentials: x5c chains to trust roots, key match, service ids,
//! and proof of possession, with certificates made by rcgen.

use base64::Engine as _;
use jose::jws::SignKey;
use jose::{EcPrivateKey, Jwk, RsaPrivateKey, SigAlg};
use kms::service_auth::{authenticate_service, verify_service, TrustRoots, TrustRootsError, MAX_CHAIN_LEN};
use kms_protocol::message::Credential;
use kms_protocol::pop::{handshake_binding, service_credential, session_binding};
use kms_protocol::{Kind, KmsUri};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};

const ID: &str = "search-indexer@acme.example";

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// A CA: its key, params (to issue with) and DER.
struct Ca {
    key: KeyPair,
    params: CertificateParams,
    der: Vec<u8>,
    pem: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(365);
    p
}

fn root(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn);
    let cert = params.self_signed(&key).unwrap();
    Ca { der: cert.der().to_vec(), pem: cert.pem(), key, params }
}

fn intermediate(cn: &str, issuer: &Ca) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn);
    let cert = params.signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key)).unwrap();
    Ca { der: cert.der().to_vec(), pem: cert.pem(), key, params }
}

/// The service's key, in both libraries' forms.
enum ServiceKey {
    Ec(EcPrivateKey),
    Rsa(RsaPrivateKey),
}

impl ServiceKey {
    fn ec() -> Self {
        ServiceKey::Ec(EcPrivateKey::generate(None).unwrap())
    }
    fn rsa() -> Self {
        ServiceKey::Rsa(RsaPrivateKey::generate(2048, None).unwrap())
    }
    fn rcgen(&self) -> KeyPair {
        match self {
            ServiceKey::Ec(k) => KeyPair::from_pkcs8_der_and_sign_algo(
                &k.to_pkcs8_der().as_slice().into(),
                &rcgen::PKCS_ECDSA_P256_SHA256,
            )
            .unwrap(),
            ServiceKey::Rsa(k) => {
                KeyPair::from_pkcs8_der_and_sign_algo(&k.to_pkcs8_der().as_slice().into(), &rcgen::PKCS_RSA_SHA256)
                    .unwrap()
            }
        }
    }
    fn public_jwk(&self) -> Jwk {
        match self {
            ServiceKey::Ec(k) => k.public_key().to_jwk(),
            ServiceKey::Rsa(k) => k.public_key().to_jwk(),
        }
    }
    fn sign_key(&self) -> (SignKey<'_>, SigAlg) {
        match self {
            ServiceKey::Ec(k) => (SignKey::Ec(k), SigAlg::ES256),
            ServiceKey::Rsa(k) => (SignKey::Rsa(k), SigAlg::PS256),
        }
    }
}

/// A leaf for a service: rfc822Name SAN `ID`, clientAuth, valid now.
fn leaf_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "Search indexer");
    p.subject_alt_names = vec![SanType::Rfc822Name(ID.try_into().unwrap())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(30);
    p
}

fn issue(params: &CertificateParams, key: &ServiceKey, issuer: &Ca) -> Vec<u8> {
    params.signed_by(&key.rcgen(), &Issuer::from_params(&issuer.params, &issuer.key)).unwrap().der().to_vec()
}

fn jwk_with(key: &ServiceKey, chain: &[&[u8]]) -> Jwk {
    let mut jwk = key.public_jwk();
    jwk.x5c = Some(chain.iter().map(|d| b64(d)).collect());
    jwk
}

fn roots(cas: &[&Ca]) -> TrustRoots {
    TrustRoots::from_pem(&cas.iter().map(|c| c.pem.clone()).collect::<String>()).unwrap()
}

fn refused(r: Result<String, kms::auth::AuthError>) -> String {
    r.expect_err("must be refused").0
}

#[test]
fn valid_chain_gives_the_rfc822_id() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &ca);
    assert_eq!(verify_service(&roots(&[&ca]), &jwk_with(&key, &[&leaf]), now()).unwrap(), ID);
    // The root may be sent too, and other roots may be configured.
    let other = root("Other Root");
    assert_eq!(verify_service(&roots(&[&other, &ca]), &jwk_with(&key, &[&leaf, &ca.der]), now()).unwrap(), ID);
}

#[test]
fn valid_chain_through_an_intermediate_with_an_rsa_leaf() {
    let ca = root("Acme Root");
    let inter = intermediate("Acme Services CA", &ca);
    let key = ServiceKey::rsa();
    let leaf = issue(&leaf_params(), &key, &inter);
    let r = roots(&[&ca]);
    assert_eq!(verify_service(&r, &jwk_with(&key, &[&leaf, &inter.der]), now()).unwrap(), ID);
    // Without the intermediate there is no path.
    assert!(refused(verify_service(&r, &jwk_with(&key, &[&leaf]), now())).contains("trusted root"));
}

#[test]
fn unknown_root_is_refused() {
    let ca = root("Acme Root");
    let evil = root("Acme Root"); // same name, other key
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &evil);
    let msg = refused(verify_service(&roots(&[&ca]), &jwk_with(&key, &[&leaf, &evil.der]), now()));
    assert!(msg.contains("does not verify") || msg.contains("trusted root"), "{msg}");
    let other = root("Someone Else");
    let leaf = issue(&leaf_params(), &key, &other);
    assert_eq!(
        refused(verify_service(&roots(&[&ca]), &jwk_with(&key, &[&leaf]), now())),
        "the x5c chain does not lead to a trusted root"
    );
    // A self-signed leaf is no root either.
    let mut p = leaf_params();
    p.is_ca = IsCa::ExplicitNoCa;
    let self_signed = p.self_signed(&key.rcgen()).unwrap().der().to_vec();
    assert!(verify_service(&roots(&[&ca]), &jwk_with(&key, &[&self_signed]), now()).is_err());
}

#[test]
fn expired_and_not_yet_valid_leaves_are_refused() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let mut p = leaf_params();
    p.not_before = OffsetDateTime::now_utc() - Duration::days(10);
    p.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    let leaf = issue(&p, &key, &ca);
    let r = roots(&[&ca]);
    assert_eq!(
        refused(verify_service(&r, &jwk_with(&key, &[&leaf]), now())),
        "a certificate in the x5c chain has expired"
    );
    // The same leaf was fine when it was valid.
    assert_eq!(verify_service(&r, &jwk_with(&key, &[&leaf]), now() - 5 * 86_400).unwrap(), ID);
    let mut p = leaf_params();
    p.not_before = OffsetDateTime::now_utc() + Duration::days(1);
    let leaf = issue(&p, &key, &ca);
    assert_eq!(
        refused(verify_service(&r, &jwk_with(&key, &[&leaf]), now())),
        "a certificate in the x5c chain is not valid yet"
    );
}

#[test]
fn expired_intermediate_is_refused() {
    let ca = root("Acme Root");
    let key = KeyPair::generate().unwrap();
    let mut params = ca_params("Old CA");
    params.not_before = OffsetDateTime::now_utc() - Duration::days(10);
    params.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    let der = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).unwrap().der().to_vec();
    let inter = Ca { key, params, der, pem: String::new() };
    let svc = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &svc, &inter);
    assert_eq!(
        refused(verify_service(&roots(&[&ca]), &jwk_with(&svc, &[&leaf, &inter.der]), now())),
        "a certificate in the x5c chain has expired"
    );
}

#[test]
fn leaf_without_client_auth_is_refused() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let r = roots(&[&ca]);
    for ekus in [vec![], vec![ExtendedKeyUsagePurpose::ServerAuth], vec![ExtendedKeyUsagePurpose::Any]] {
        let mut p = leaf_params();
        p.extended_key_usages = ekus.clone();
        let leaf = issue(&p, &key, &ca);
        let msg = refused(verify_service(&r, &jwk_with(&key, &[&leaf]), now()));
        assert!(msg.contains("client authentication"), "{ekus:?}: {msg}");
    }
    // clientAuth among others is fine.
    let mut p = leaf_params();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    assert_eq!(verify_service(&r, &jwk_with(&key, &[&issue(&p, &key, &ca)]), now()).unwrap(), ID);
}

#[test]
fn issuers_must_be_cas_and_leaves_must_not() {
    let ca = root("Acme Root");
    // A leaf that issues another leaf.
    let mid_key = ServiceKey::ec();
    let mut mid_params = leaf_params();
    mid_params.distinguished_name = rcgen::DistinguishedName::new();
    mid_params.distinguished_name.push(DnType::CommonName, "Not a CA");
    let mid_der = issue(&mid_params, &mid_key, &ca);
    let mid = Ca { key: mid_key.rcgen(), params: mid_params, der: mid_der, pem: String::new() };
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &mid);
    assert_eq!(
        refused(verify_service(&roots(&[&ca]), &jwk_with(&key, &[&leaf, &mid.der]), now())),
        "an issuer in the x5c chain is not a CA"
    );
    // A CA certificate presented as the leaf.
    let inter = intermediate("Acme Services CA", &ca);
    // The intermediate's own key (P-256) as the JWK.
    let mut jwk = jose::EcPublicKey::from_pem(&inter.key.public_key_pem(), None).unwrap().to_jwk();
    jwk.x5c = Some(vec![b64(&inter.der)]);
    assert_eq!(refused(verify_service(&roots(&[&ca]), &jwk, now())), "the x5c leaf is a CA certificate");
}

#[test]
fn jwk_must_be_the_leaf_key() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &ca);
    let r = roots(&[&ca]);
    let msg = "the credential jwk is not the key of the x5c leaf certificate";
    // Someone else's EC key and an RSA key, each with the service's real certificate.
    for other in [ServiceKey::ec(), ServiceKey::rsa()] {
        assert_eq!(refused(verify_service(&r, &jwk_with(&other, &[&leaf]), now())), msg);
    }
    // A private JWK is refused outright, even the right one.
    let ServiceKey::Ec(k) = &key else { unreachable!() };
    let mut private = k.to_jwk();
    private.x5c = Some(vec![b64(&leaf)]);
    assert_eq!(refused(verify_service(&r, &private, now())), "the credential jwk must be a public key");
    // kid and alg members do not matter to the match.
    let mut j = jwk_with(&key, &[&leaf]);
    j.kid = Some("k1".into());
    assert_eq!(verify_service(&r, &j, now()).unwrap(), ID);
    // Not a usable key at all.
    let mut oct = jose::OctKey::generate(32, None).unwrap().to_jwk();
    oct.k = None;
    oct.x5c = Some(vec![b64(&leaf)]);
    assert!(verify_service(&r, &oct, now()).is_err());
}

#[test]
fn missing_x5c_is_refused() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let r = roots(&[&ca]);
    let msg = "the credential jwk needs an x5c certificate chain";
    assert_eq!(refused(verify_service(&r, &key.public_jwk(), now())), msg);
    assert_eq!(refused(verify_service(&r, &jwk_with(&key, &[]), now())), msg);
}

#[test]
fn garbage_x5c_is_refused() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &ca);
    let r = roots(&[&ca]);
    let good = b64(&leaf);
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&leaf);
    for bad in
        ["", "!!!!", "not base64 at all", &good[..good.len() - 1], &format!("{good}\n"), &format!(" {good}"), "AAAA"]
    {
        let mut j = key.public_jwk();
        j.x5c = Some(vec![bad.to_string()]);
        assert!(verify_service(&r, &j, now()).is_err(), "{bad:?}");
    }
    // base64url (the JWS alphabet) is not what x5c uses; the leaf has `-`/`_` only sometimes, so check when it differs.
    if url_safe.trim_end_matches('=') != good.trim_end_matches('=') {
        let mut j = key.public_jwk();
        j.x5c = Some(vec![url_safe]);
        assert_eq!(refused(verify_service(&r, &j, now())), "an x5c entry is not standard base64");
    }
    // Garbage after a good leaf.
    let mut j = jwk_with(&key, &[&leaf]);
    j.x5c.as_mut().unwrap().push("%%%".into());
    assert_eq!(refused(verify_service(&r, &j, now())), "an x5c entry is not standard base64");
    // Valid base64, not a certificate.
    let mut j = key.public_jwk();
    j.x5c = Some(vec![b64(b"hello, world")]);
    assert_eq!(refused(verify_service(&r, &j, now())), "the x5c leaf is not a valid X.509 certificate");
    // Huge entries are refused before decoding.
    let mut j = key.public_jwk();
    j.x5c = Some(vec!["A".repeat(64 * 1024)]);
    assert_eq!(refused(verify_service(&r, &j, now())), "an x5c certificate is too large");
}

#[test]
fn chain_too_long_is_refused() {
    let ca = root("Acme Root");
    let mut cas = vec![ca];
    for i in 0..MAX_CHAIN_LEN {
        let next = intermediate(&format!("Sub CA {i}"), cas.last().unwrap());
        cas.push(next);
    }
    let key = ServiceKey::ec();
    let r = roots(&[&cas[0]]);
    // Leaf + MAX_CHAIN_LEN - 1 intermediates is accepted.
    let leaf = issue(&leaf_params(), &key, &cas[MAX_CHAIN_LEN - 1]);
    let mut chain: Vec<&[u8]> = vec![&leaf];
    chain.extend(cas[1..MAX_CHAIN_LEN].iter().rev().map(|c| c.der.as_slice()));
    assert_eq!(chain.len(), MAX_CHAIN_LEN);
    assert_eq!(verify_service(&r, &jwk_with(&key, &chain), now()).unwrap(), ID);
    // One more is refused.
    let leaf = issue(&leaf_params(), &key, &cas[MAX_CHAIN_LEN]);
    let mut chain: Vec<&[u8]> = vec![&leaf];
    chain.extend(cas[1..=MAX_CHAIN_LEN].iter().rev().map(|c| c.der.as_slice()));
    assert_eq!(refused(verify_service(&r, &jwk_with(&key, &chain), now())), "the x5c certificate chain is too long");
}

#[test]
fn service_id_comes_from_rfc822_then_cn() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let r = roots(&[&ca]);
    let id_of = |p: &CertificateParams| verify_service(&r, &jwk_with(&key, &[&issue(p, &key, &ca)]), now());
    // The domain is lowercased; rfc822Name wins over CN and over other SANs.
    let mut p = leaf_params();
    p.subject_alt_names = vec![
        SanType::URI("spiffe://acme.example/indexer".try_into().unwrap()),
        SanType::DnsName("indexer.acme.example".try_into().unwrap()),
        SanType::Rfc822Name("Indexer@ACME.Example".try_into().unwrap()),
    ];
    p.distinguished_name.push(DnType::CommonName, "cn@elsewhere.example");
    assert_eq!(id_of(&p).unwrap(), "Indexer@acme.example");
    // No rfc822Name: the CN.
    let mut p = leaf_params();
    p.subject_alt_names = vec![SanType::URI("spiffe://acme.example/indexer".try_into().unwrap())];
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "bot@acme.example");
    assert_eq!(id_of(&p).unwrap(), "bot@acme.example");
    // A CN that is not name@domain, and a URI SAN that is never used.
    let mut p = leaf_params();
    p.subject_alt_names = vec![SanType::URI("mailto:bot@acme.example".try_into().unwrap())];
    assert_eq!(refused(id_of(&p)), "the x5c leaf's service name is not of the form name@domain");
    // No name at all.
    let mut p = leaf_params();
    p.subject_alt_names = vec![];
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "Acme");
    assert!(refused(id_of(&p)).contains("names no service"));
    // Two rfc822Names are ambiguous.
    let mut p = leaf_params();
    p.subject_alt_names = vec![
        SanType::Rfc822Name(ID.try_into().unwrap()),
        SanType::Rfc822Name("admin@acme.example".try_into().unwrap()),
    ];
    assert_eq!(refused(id_of(&p)), "the x5c leaf has more than one rfc822Name");
    // An rfc822Name that is not an address.
    let mut p = leaf_params();
    p.subject_alt_names = vec![SanType::Rfc822Name("acme.example".try_into().unwrap())];
    assert_eq!(refused(id_of(&p)), "the x5c leaf's service name is not of the form name@domain");
}

#[test]
fn trust_roots_from_pem() {
    let a = root("A");
    let b = root("B");
    let both = format!("# comment\n{}\n{}", a.pem, b.pem);
    assert_eq!(TrustRoots::from_pem(&both).unwrap().len(), 2);
    assert_eq!(TrustRoots::from_pem("").unwrap_err(), TrustRootsError::NoCertificates);
    let key_only = KeyPair::generate().unwrap().serialize_pem();
    assert_eq!(TrustRoots::from_pem(&key_only).unwrap_err(), TrustRootsError::NoCertificates);
    let shown = format!("{:?}", TrustRoots::from_pem(&a.pem).unwrap());
    assert_eq!(shown, "TrustRoots { count: 1 }");
}

#[test]
fn errors_quote_no_certificate_or_key_material() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let r = roots(&[&ca]);
    let mut p = leaf_params();
    p.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_before = OffsetDateTime::now_utc() - Duration::days(2);
    let leaf = issue(&p, &key, &ca);
    let jwk = jwk_with(&key, &[&leaf]);
    let other = jwk_with(&ServiceKey::ec(), &[&leaf]);
    for e in [verify_service(&r, &jwk, now()), verify_service(&r, &other, now())] {
        let msg = e.unwrap_err().0;
        for secret in [jwk.x.as_deref().unwrap(), other.x.as_deref().unwrap(), &b64(&leaf)[..40], ID, "Acme"] {
            assert!(!msg.contains(secret), "{msg}");
        }
    }
}

// ------------------------------------------------------------- with the proof

fn handshake_cred(key: &ServiceKey, chain: &[&[u8]], binding: &str, rid: &str, iat: i64) -> Credential {
    let (sk, alg) = key.sign_key();
    service_credential(sk, alg, chain.iter().map(|d| b64(d)).collect(), binding, rid, iat).unwrap()
}

#[test]
fn authenticate_service_needs_chain_and_proof() {
    let ca = root("Acme Root");
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &ca);
    let r = roots(&[&ca]);
    let eph = EcPrivateKey::generate(None).unwrap();
    let binding = handshake_binding(eph.public_key());
    let t = now();

    let cred = handshake_cred(&key, &[&leaf], &binding, "r1", t);
    assert_eq!(authenticate_service(&r, &cred, &binding, "r1", t).unwrap(), ID);
    // RSA service keys too.
    let rsa = ServiceKey::rsa();
    let rsa_leaf = issue(&leaf_params(), &rsa, &ca);
    let rsa_cred = handshake_cred(&rsa, &[&rsa_leaf], &binding, "r1", t);
    assert_eq!(authenticate_service(&r, &rsa_cred, &binding, "r1", t).unwrap(), ID);

    // Replayed on another request or channel, or too late.
    assert!(refused(authenticate_service(&r, &cred, &binding, "r2", t)).contains("another request"));
    let uri = KmsUri::object("kms.acme.example", Kind::Ecdhe, "s1").unwrap();
    assert!(refused(authenticate_service(&r, &cred, &session_binding(&uri), "r1", t)).contains("bound to another"));
    assert!(refused(authenticate_service(&r, &cred, &binding, "r1", t + 301)).contains("too old"));

    // No proof.
    let mut no_proof = cred.clone();
    no_proof.proof = None;
    assert_eq!(
        refused(authenticate_service(&r, &no_proof, &binding, "r1", t)),
        "proof of possession refused: a jwk credential needs a proof"
    );
    // Knowing the certificate is not enough: an attacker's key with the service's certificate...
    let attacker = ServiceKey::ec();
    let mut stolen = handshake_cred(&attacker, &[&leaf], &binding, "r1", t);
    assert_eq!(
        refused(authenticate_service(&r, &stolen, &binding, "r1", t)),
        "the credential jwk is not the key of the x5c leaf certificate"
    );
    // ...and the service's public JWK with the attacker's proof fails the proof.
    stolen.jwk = cred.jwk.clone();
    assert!(refused(authenticate_service(&r, &stolen, &binding, "r1", t)).contains("signature does not verify"));

    // A valid proof does not rescue a bad chain.
    let other_ca = root("Other Root");
    assert_eq!(
        refused(authenticate_service(&roots(&[&other_ca]), &cred, &binding, "r1", t)),
        "the x5c chain does not lead to a trusted root"
    );

    // Bearer and jwk together, or no jwk.
    let mut both = cred.clone();
    both.bearer = Some(jose::SecretString::new("token".into()));
    assert!(authenticate_service(&r, &both, &binding, "r1", t).is_err());
    assert!(authenticate_service(&r, &Credential::bearer("token"), &binding, "r1", t).is_err());

    // onBehalfOf: only the service itself.
    let mut obo = cred.clone();
    obo.on_behalf_of = Some(ID.into());
    assert_eq!(authenticate_service(&r, &obo, &binding, "r1", t).unwrap(), ID);
    obo.on_behalf_of = Some("alice@acme.example".into());
    assert_eq!(
        refused(authenticate_service(&r, &obo, &binding, "r1", t)),
        "onBehalfOf is not allowed for this identity"
    );
    // The userId hint changes nothing.
    let mut hint = cred.clone();
    hint.user_id = Some("admin@acme.example".into());
    assert_eq!(authenticate_service(&r, &hint, &binding, "r1", t).unwrap(), ID);
}

mod common;

/// A service (no bearer token) handshakes and works through the engine with
/// its certificate and a proof of possession on every request; replaying its
/// proof on another request, or presenting its certificate without its key, fails.
#[tokio::test]
async fn a_service_client_end_to_end() {
    use kms_protocol::pop::{attach_session_proof, begin_service_handshake};
    use kms_protocol::{Method, Status};

    let ca = root("Acme Service CA");
    let key = ServiceKey::ec();
    let leaf = issue(&leaf_params(), &key, &ca);
    let chain = vec![b64(&leaf)];
    let h = common::harness_full(|_| {}, Some(roots(&[&ca]))).await;
    let kms = h.engine.server_key().info();
    let (sk, alg) = key.sign_key();
    // Default deny: a service the org's policy does not list gets nothing, not even a session.
    let pending = begin_service_handshake(&kms, "indexer-1", sk, alg, chain.clone()).unwrap();
    let answer = h.engine.handle(&pending.wrapped, None).await.unwrap();
    let refused = pending.finish(&kms, &answer).unwrap_err().to_string();
    assert!(refused.contains("not allowed by the org's policy"), "{refused}");
    common::set_policy(
        &h.engine,
        serde_json::json!({"services": {
            format!("service:{ID}"): {"kind": "search", "state": "allowed"},
            "service:admin@acme.example": {"kind": "bot", "state": "allowed"},
        }}),
    )
    .await;
    let (sk, alg) = key.sign_key();
    let pending = begin_service_handshake(&kms, "indexer-1", sk, alg, chain.clone()).unwrap();
    let answer = h.engine.handle(&pending.wrapped, None).await.unwrap();
    let session = pending.finish(&kms, &answer).expect("service handshake");
    // Services live in their own namespace: never a user, never an admin.
    assert_eq!(session.info().user_id, format!("service:{ID}"));

    let send = |mut req: kms_protocol::Request, prove: bool| {
        let (sk, alg) = key.sign_key();
        if prove {
            attach_session_proof(&mut req, &session, sk, alg, chain.clone()).unwrap();
        }
        let wrapped = session.wrap(&req).unwrap();
        let engine = h.engine.clone();
        let kms = kms.clone();
        let rid = req.request_id.clone();
        let sess = &session;
        async move { sess.unwrap(&kms, &engine.handle(&wrapped, None).await.unwrap(), &rid).unwrap() }
    };
    let client = kms_protocol::ClientInfo { client_id: "indexer-1".into(), credential: Credential::default() };
    let ping = kms_protocol::Request::new(Method::Update, "/ping", Some(client.clone()));
    assert_eq!(send(ping, true).await.status, Status::OK);
    let mut keys = kms_protocol::Request::new(Method::Create, "/keys", Some(client.clone()));
    keys.body.count = Some(1);
    assert_eq!(send(keys, true).await.status, Status::CREATED);

    // The previous request's proof, copied onto a new request: refused.
    let mut first = kms_protocol::Request::new(Method::Update, "/ping", Some(client.clone()));
    let (sk, alg) = key.sign_key();
    attach_session_proof(&mut first, &session, sk, alg, chain.clone()).unwrap();
    let mut replay = kms_protocol::Request::new(Method::Update, "/ping", Some(client.clone()));
    replay.client.as_mut().unwrap().credential = first.client.as_ref().unwrap().credential.clone();
    assert_eq!(send(replay, false).await.status, Status::UNAUTHORIZED);

    // The certificate without a proof: refused.
    let mut bare = kms_protocol::Request::new(Method::Update, "/ping", Some(client));
    bare.client.as_mut().unwrap().credential.jwk = Some(jwk_with(&key, &[&leaf]));
    assert_eq!(send(bare, false).await.status, Status::UNAUTHORIZED);

    // A certificate that names an admin's user id is still only a service.
    let mut p = leaf_params();
    p.subject_alt_names = vec![SanType::Rfc822Name("admin@acme.example".try_into().unwrap())];
    let imp_key = ServiceKey::ec();
    let imp_chain = vec![b64(&issue(&p, &imp_key, &ca))];
    let (sk, alg) = imp_key.sign_key();
    let pending = begin_service_handshake(&kms, "imp", sk, alg, imp_chain.clone()).unwrap();
    let answer = h.engine.handle(&pending.wrapped, None).await.unwrap();
    let imp = pending.finish(&kms, &answer).unwrap();
    assert_eq!(imp.info().user_id, "service:admin@acme.example");
    let mut list = kms_protocol::Request::new(
        Method::Retrieve,
        "/kek",
        Some(kms_protocol::ClientInfo { client_id: "imp".into(), credential: Credential::default() }),
    );
    let (sk, alg) = imp_key.sign_key();
    attach_session_proof(&mut list, &imp, sk, alg, imp_chain).unwrap();
    let answer = h.engine.handle(&imp.wrap(&list).unwrap(), None).await.unwrap();
    assert_eq!(imp.unwrap(&kms, &answer, &list.request_id).unwrap().status, Status::FORBIDDEN, "not an admin");

    // A KMS with no trust roots refuses service credentials outright.
    let plain = common::harness().await;
    let kms2 = plain.engine.server_key().info();
    let (sk, alg) = key.sign_key();
    let p = begin_service_handshake(&kms2, "indexer-1", sk, alg, chain.clone()).unwrap();
    let answer = plain.engine.handle(&p.wrapped, None).await.unwrap();
    let e = p.finish(&kms2, &answer).unwrap_err();
    assert!(matches!(e, kms_protocol::ProtocolError::Status { status: Status::UNAUTHORIZED, .. }), "{e:?}");
    let _ = (
        handshake_binding,
        session_binding,
        service_credential,
        authenticate_service,
        TrustRootsError::NoCertificates,
        MAX_CHAIN_LEN,
        KmsUri::parse_absolute,
        Kind::Keys,
    );
}
