//! Interop: tokens from a real OpenID provider nobody here wrote (npm
//! `oauth2-mock-server`, launched by `interop/idp.js`), verified through
//! discovery. Fails, never skips, when Node or the npm package is missing.

use base64::Engine as _;
use kms_identity::{IdentityConfig, IdentityError, IssuerConfig, Verifier};
use serde_json::Value;
use testkit::Idp;

const AUDIENCE: &str = "kms://kms.example.com";
fn header_alg(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["alg"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_real_openid_provider() {
    let idp = Idp::start();
    assert!(idp.issuer.starts_with("http://127.0.0.1:"), "the IdP announces the address it bound");
    // No jwks_url: found through the provider's discovery document.
    let v = Verifier::new(IdentityConfig::new(AUDIENCE, vec![IssuerConfig::new(&idp.issuer, "example.com")])).unwrap();

    // The provider rotates RS256, PS256 and ES256 keys token by token.
    let mut algs = Vec::new();
    for _ in 0..3 {
        let t = idp.token(&[("sub", "alice"), ("aud", AUDIENCE), ("scope", "kms.read kms.write")]).await;
        let id = v.verify(&t).await.unwrap_or_else(|e| panic!("{} token refused: {e}", header_alg(&t)));
        assert_eq!(id.user_id, "alice@example.com");
        assert_eq!(id.subject, "alice");
        assert_eq!(id.issuer, idp.issuer);
        assert_eq!(id.client_id.as_deref(), Some("custos-web"));
        assert_eq!(id.scope, ["kms.read", "kms.write"]);
        algs.push(header_alg(&t));
    }
    algs.sort();
    assert_eq!(algs, ["ES256", "PS256", "RS256"]);
    assert_eq!(v.stats().jwks_fetches, 1);

    let own_domain = idp.token(&[("sub", "Bob@Example.com"), ("aud", AUDIENCE)]).await;
    assert_eq!(v.verify(&own_domain).await.unwrap().user_id, "Bob@example.com");

    let cases: [(&[(&str, &str)], IdentityError); 6] = [
        (&[("sub", "eve@other.org"), ("aud", AUDIENCE)], IdentityError::ForeignUserDomain),
        (&[("sub", "alice"), ("aud", "kms://other.example.com")], IdentityError::WrongAudience),
        (&[("sub", "alice"), ("aud", AUDIENCE), ("aud", "https://api.example.com")], IdentityError::MultipleAudiences),
        (&[("sub", "alice")], IdentityError::MissingClaim("aud")),
        (&[("sub", "alice"), ("aud", AUDIENCE), ("typ", "JWT")], IdentityError::WrongType),
        (&[("sub", "alice"), ("aud", AUDIENCE), ("expires_in", "-120")], IdentityError::Expired),
    ];
    for (form, expected) in cases {
        let t = idp.token(form).await;
        assert_eq!(v.verify(&t).await.unwrap_err(), expected, "{form:?}");
    }
}
