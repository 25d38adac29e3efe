//! The configuration: the shipped example, defaults, and clear refusals.

use std::path::PathBuf;

use idp::{Config, ConfigError};

const EXAMPLE: &str = include_str!("../idp.example.toml");

fn err(text: &str) -> ConfigError {
    Config::from_toml(text).unwrap_err()
}

const MIN: &str = "audiences = [\"kms://acme.test\"]\n";

#[test]
fn the_example_parses_and_documents_every_setting() {
    let cfg = Config::from_toml(EXAMPLE).unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8400");
    assert_eq!(cfg.issuer, None);
    assert_eq!(cfg.issuer_for(cfg.listen), "http://127.0.0.1:8400");
    assert_eq!(cfg.audiences, ["https://core.acme.test", "kms://acme.test"]);
    assert_eq!(cfg.default_audience.as_deref(), Some("https://core.acme.test"));
    assert_eq!(cfg.public_clients, ["custos-cli"]);
    assert_eq!(cfg.users.len(), 2);
    assert_eq!(cfg.users[0].id, "alice@acme.test");
    assert_eq!(cfg.users[0].name.as_deref(), Some("Alice Example"));
    assert_eq!(cfg.clients[0].subject, "pollbot@acme.test");
    assert_eq!(cfg.refresh_token_ttl_secs, 30 * 24 * 3600);
    // Every setting appears in the example (set or commented out).
    for key in [
        "listen",
        "issuer",
        "data_dir",
        "access_token_ttl_secs",
        "refresh_token_ttl_secs",
        "device_code_ttl_secs",
        "device_poll_interval_secs",
        "audiences",
        "default_audience",
        "public_clients",
        "[[users]]",
        "id",
        "password",
        "password_env",
        "name",
        "[[clients]]",
        "client_id",
        "client_secret",
        "client_secret_env",
        "subject",
    ] {
        assert!(EXAMPLE.contains(key), "{key} is not documented");
    }
    // Passwords in the example must not leak through Debug.
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("alice-dev-password") && !shown.contains("pollbot-dev-secret"), "{shown}");
}

#[test]
fn defaults() {
    let cfg = Config::from_toml(MIN).unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:8400");
    assert_eq!(cfg.data_dir, PathBuf::from("data"));
    assert_eq!(cfg.access_token_ttl_secs, 3600);
    assert_eq!(cfg.refresh_token_ttl_secs, 2_592_000);
    assert_eq!(cfg.device_code_ttl_secs, 600);
    assert_eq!(cfg.device_poll_interval_secs, 5);
    assert_eq!(cfg.public_clients, ["custos-cli"]);
    assert!(cfg.default_audience.is_none() && cfg.users.is_empty() && cfg.clients.is_empty());
}

#[test]
fn load_anchors_data_dir_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.data_dir, dir.path().join("data"));

    let missing = Config::load(dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    std::fs::write(&path, "listen = \"127.0.0.1:8400\"\nlisten_typo = 1\n").unwrap();
    let shown = Config::load(&path).unwrap_err().to_string();
    assert!(shown.contains("idp.toml") && shown.contains("line 2") && shown.contains("listen_typo"), "{shown}");
}

#[test]
fn unknown_fields_are_named() {
    for (text, field) in [
        (format!("{MIN}audience = \"x\""), "audience"),
        (format!("{MIN}[[users]]\nid = \"a\"\npasword = \"x\""), "pasword"),
        (format!("{MIN}[[clients]]\nclient_id = \"a\"\nsecret = \"x\"\nsubject = \"s\""), "secret"),
    ] {
        let e = err(&text);
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let shown = e.to_string();
        assert!(shown.contains(&format!("unknown field `{field}`")), "{shown}");
    }
    let shown = err(&format!("{MIN}listen = \"a\"\nlisten = \"b\"")).to_string();
    assert!(shown.contains("duplicate key `listen`") && shown.contains("line 3"), "{shown}");
}

#[test]
fn parse_errors_do_not_quote_passwords() {
    let shown = err(&format!("{MIN}[[users]]\nid = \"a\"\npassword = \"Sup3r-secret\" oops\n")).to_string();
    assert!(!shown.contains("Sup3r-secret"), "{shown}");
    let shown =
        err(&format!("{MIN}[[users]]\nid = \"a\"\npassword = \"Sup3r-secret\"\npassword = \"Sup3r-secret2\"\n"))
            .to_string();
    assert!(!shown.contains("Sup3r-secret"), "{shown}");
}

#[test]
fn bad_urls_and_audiences() {
    for issuer in
        ["not a url", "127.0.0.1:8400", "ftp://idp.acme.test", "https://idp.acme.test/", "https://idp.acme.test?x=1"]
    {
        let e = err(&format!("issuer = {issuer:?}\n{MIN}"));
        assert!(matches!(e, ConfigError::BadIssuer { .. }), "{issuer}: {e}");
        assert!(e.to_string().contains(issuer), "{e}");
    }
    assert!(matches!(err("audiences = []"), ConfigError::NoAudiences));
    assert!(matches!(err(""), ConfigError::NoAudiences));
    for aud in ["", "core", "has space:x", "https://a b"] {
        assert!(matches!(err(&format!("audiences = [{aud:?}]")), ConfigError::BadAudience { .. }), "{aud:?}");
    }
    assert!(matches!(err("audiences = [\"kms://a\", \"kms://a\"]"), ConfigError::BadAudience { .. }));
    assert!(matches!(
        err("issuer = \"https://idp.acme.test\"\naudiences = [\"https://idp.acme.test\"]"),
        ConfigError::BadAudience { .. }
    ));
    assert!(matches!(
        err(&format!("default_audience = \"kms://other\"\n{MIN}")),
        ConfigError::DefaultAudienceNotListed { .. }
    ));
    let e = err(&format!("listen = \"localhost\"\n{MIN}"));
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
}

#[test]
fn duplicate_and_bad_ids() {
    let user = |id: &str| format!("[[users]]\nid = {id:?}\npassword = \"p\"\n");
    let client =
        |id: &str, sub: &str| format!("[[clients]]\nclient_id = {id:?}\nclient_secret = \"s\"\nsubject = {sub:?}\n");

    let e = err(&format!("{MIN}{}{}", user("alice@acme.test"), user("Alice@acme.test")));
    assert!(matches!(&e, ConfigError::Duplicate { kind: "user", .. }), "{e}");
    assert!(e.to_string().contains("Alice@acme.test"));
    let e = err(&format!("{MIN}{}{}", client("bot", "bot@a"), client("bot", "bot2@a")));
    assert!(matches!(e, ConfigError::Duplicate { kind: "client", .. }), "{e}");
    let e = err(&format!("{MIN}{}", client("custos-cli", "cli@a")));
    assert!(
        matches!(e, ConfigError::Duplicate { kind: "client", .. }),
        "a service client cannot reuse a public id: {e}"
    );
    let e = err(&format!("{MIN}{}{}", client("a", "svc@a"), client("b", "svc@a")));
    assert!(matches!(e, ConfigError::Duplicate { kind: "subject", .. }), "{e}");
    let e = err(&format!("{MIN}{}{}", user("alice@acme.test"), client("bot", "ALICE@acme.test")));
    assert!(matches!(e, ConfigError::SubjectIsUser { .. }), "a service cannot act as a user: {e}");
    let e = err(&format!("{MIN}public_clients = [\"cli\", \"cli\"]"));
    assert!(matches!(e, ConfigError::Duplicate { .. }), "{e}");
    for bad in ["", "a b", "a\tb", &"x".repeat(257)] {
        assert!(matches!(err(&format!("{MIN}{}", user(bad))), ConfigError::BadId { kind: "user", .. }), "{bad:?}");
    }
}

#[test]
fn secrets_from_the_file_or_the_environment() {
    let e = err(&format!("{MIN}[[users]]\nid = \"a\"\n"));
    assert!(matches!(e, ConfigError::SecretSource { field: "password", .. }), "{e}");
    let e = err(&format!("{MIN}[[users]]\nid = \"a\"\npassword = \"p\"\npassword_env = \"X\"\n"));
    assert!(matches!(e, ConfigError::SecretSource { .. }), "{e}");
    let e = err(&format!("{MIN}[[users]]\nid = \"a\"\npassword = \"\"\n"));
    assert!(matches!(e, ConfigError::EmptySecret { .. }), "{e}");
    let e = err(&format!("{MIN}[[clients]]\nclient_id = \"c\"\nsubject = \"s\"\n"));
    assert!(matches!(e, ConfigError::SecretSource { field: "client_secret", .. }), "{e}");

    // Variable names unique to this test: the environment is process-wide.
    let var = "IDP_CONFIG_TEST_PASSWORD_7f3a";
    let e = err(&format!("{MIN}[[users]]\nid = \"a\"\npassword_env = \"{var}\"\n"));
    assert!(matches!(&e, ConfigError::MissingEnv { var: v, .. } if v == var), "{e}");
    assert!(e.to_string().contains(var));
    // No other test reads these variables.
    std::env::set_var(var, "from-the-env-pw");
    let cfg = Config::from_toml(&format!("{MIN}[[users]]\nid = \"a\"\npassword_env = \"{var}\"\n")).unwrap();
    assert!(!format!("{cfg:?}").contains("from-the-env-pw"));
    let svar = "IDP_CONFIG_TEST_SECRET_7f3a";
    std::env::set_var(svar, "");
    let e = err(&format!("{MIN}[[clients]]\nclient_id = \"c\"\nsubject = \"s\"\nclient_secret_env = \"{svar}\"\n"));
    assert!(matches!(e, ConfigError::MissingEnv { .. }), "empty counts as unset: {e}");
}

#[test]
fn ranges() {
    for (setting, value) in [
        ("access_token_ttl_secs", 0),
        ("refresh_token_ttl_secs", 0),
        ("device_code_ttl_secs", 0),
        ("device_code_ttl_secs", 3601),
        ("device_poll_interval_secs", 0),
        ("device_poll_interval_secs", 61),
    ] {
        let e = err(&format!("{setting} = {value}\n{MIN}"));
        assert!(matches!(&e, ConfigError::OutOfRange { setting: s, .. } if *s == setting), "{e}");
    }
    let e = err(&format!("access_token_ttl_secs = -1\n{MIN}"));
    assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
}

#[test]
fn built_in_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    assert!(matches!(cfg.validate(), Err(ConfigError::NoAudiences)));
    cfg.audiences = vec!["kms://acme.test".into()];
    cfg.data_dir = dir.path().into();
    cfg.users.push(idp::User::new("alice@acme.test", "pw").with_name("Alice"));
    cfg.clients.push(idp::ServiceClient::new("bot", "secret", "bot@acme.test"));
    cfg.validate().unwrap();
    // Port 0 needs a configured issuer for Idp::new (idp::start derives it after binding).
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    assert!(matches!(idp::Idp::new(cfg.clone()), Err(idp::Error::Config(ConfigError::IssuerUnknown))));
    cfg.issuer = Some("http://127.0.0.1:9".into());
    let provider = idp::Idp::new(cfg).unwrap();
    assert_eq!(provider.issuer(), "http://127.0.0.1:9");
    assert_eq!(provider.discovery()["token_endpoint"], "http://127.0.0.1:9/token");
    assert_eq!(provider.jwks()["keys"][0]["kid"], provider.kid());
}
