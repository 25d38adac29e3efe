//! Configuration: TOML embedding, defaults, and what `Verifier::new` refuses.

use kms_identity::{ConfigError, IdentityConfig, IssuerConfig, Verifier};

#[test]
fn toml_with_defaults() {
    let cfg: IdentityConfig = toml::from_str(
        r#"
        audience = "kms://kms.example.com"

        [[issuers]]
        issuer = "https://login.example.com"
        org_domain = "example.com"

        [[issuers]]
        issuer = "https://idp.partner.example"
        jwks_url = "https://idp.partner.example/keys"
        org_domain = "partner.example"
        user_claim = "email"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.leeway_secs, 30);
    assert_eq!(cfg.jwks_min_refetch_secs, 30);
    assert_eq!(cfg.http_timeout_ms, 3000);
    assert_eq!(cfg.cache_capacity, 100_000);
    assert_eq!(cfg.issuers[0], IssuerConfig::new("https://login.example.com", "example.com"));
    assert_eq!(cfg.issuers[1].jwks_url.as_deref(), Some("https://idp.partner.example/keys"));
    assert_eq!(cfg.issuers[1].user_claim, "email");
    assert_eq!(
        cfg,
        IdentityConfig::new(
            "kms://kms.example.com",
            vec![
                IssuerConfig::new("https://login.example.com", "example.com"),
                IssuerConfig::new("https://idp.partner.example", "partner.example")
                    .with_jwks_url("https://idp.partner.example/keys")
                    .with_user_claim("email"),
            ]
        )
    );
    Verifier::new(cfg).unwrap();
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml::from_str::<IdentityConfig>(
        "audience = \"a\"\nleway_secs = 5\n[[issuers]]\nissuer = \"https://x\"\norg_domain = \"x\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("leway_secs"), "{err}");
}

fn new(audience: &str, issuers: Vec<IssuerConfig>) -> Result<Verifier, ConfigError> {
    Verifier::new(IdentityConfig::new(audience, issuers))
}

#[test]
fn bad_configurations_are_refused() {
    let ok = || IssuerConfig::new("https://login.example.com", "example.com");
    assert_eq!(new(" ", vec![ok()]).unwrap_err(), ConfigError::EmptyAudience);
    assert_eq!(new("kms://a", vec![]).unwrap_err(), ConfigError::NoIssuers);
    assert!(matches!(
        new("kms://a", vec![IssuerConfig::new("not a url", "example.com")]).unwrap_err(),
        ConfigError::BadUrl { .. }
    ));
    for insecure in ["http://login.example.com", "http://10.0.0.1", "ftp://login.example.com"] {
        assert!(
            matches!(
                new("kms://a", vec![IssuerConfig::new(insecure, "example.com")]).unwrap_err(),
                ConfigError::InsecureUrl { .. }
            ),
            "{insecure}"
        );
    }
    assert!(matches!(
        new("kms://a", vec![ok().with_jwks_url("http://login.example.com/jwks")]).unwrap_err(),
        ConfigError::InsecureUrl { .. }
    ));
    for loopback in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"] {
        assert!(new("kms://a", vec![IssuerConfig::new(loopback, "example.com")]).is_ok(), "{loopback}");
    }
    assert!(matches!(
        new("kms://a", vec![ok(), IssuerConfig::new("https://login.example.com", "other.example")]).unwrap_err(),
        ConfigError::DuplicateIssuer { .. }
    ));
    // Two issuers for one org would let each mint the other's user ids.
    assert!(matches!(
        new("kms://a", vec![ok(), IssuerConfig::new("https://other-idp.example", "EXAMPLE.com")]).unwrap_err(),
        ConfigError::SharedOrgDomain { .. }
    ));
    for bad in ["", "a@b.com", "exa mple.com", "example..com", "-x.com", "example.com."] {
        assert!(
            matches!(
                new("kms://a", vec![IssuerConfig::new("https://login.example.com", bad)]).unwrap_err(),
                ConfigError::BadOrgDomain { .. }
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(new("kms://a", vec![ok().with_user_claim("")]).unwrap_err(), ConfigError::EmptyUserClaim { .. }));
}
