//! Interop: tokens from a real OpenID provider nobody here wrote (npm
//! `oauth2-mock-server`, launched by `interop/idp.js`), verified through
//! discovery. Fails, never skips, when Node or the npm package is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use kms_identity::{IdentityConfig, IdentityError, IssuerConfig, Verifier};
use serde_json::Value;

const AUDIENCE: &str = "kms://kms.example.com";
const SETUP: &str = "run `npm ci --prefix interop` in the workspace root (needs Node 20.19+)";

/// The IdP process; killed when dropped, even if the test panics.
struct Idp {
    child: Child,
    issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_idp() -> Idp {
    let interop = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop");
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!("`node` is not runnable: install Node.js, then {SETUP}"),
    }
    assert!(
        interop.join("node_modules/oauth2-mock-server/package.json").is_file(),
        "npm package oauth2-mock-server is missing: {SETUP}"
    );
    let mut child = Command::new("node")
        .arg(interop.join("idp.js"))
        .arg("0")
        // idp.js exits when this pipe closes, so it cannot outlive us.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node interop/idp.js ({e}): {SETUP}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut idp = Idp { child, issuer: String::new() };
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("idp.js did not report its address within 30 s");
    let info: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("idp.js printed {line:?} instead of its address; {SETUP}"));
    idp.issuer = info["issuer"].as_str().expect("issuer").to_owned();
    assert_eq!(idp.issuer, format!("http://127.0.0.1:{}", info["port"]));
    idp
}

/// Asks the IdP's token endpoint for an access token.
async fn token(idp: &Idp, form: &[(&str, &str)]) -> String {
    let mut fields = vec![("grant_type", "client_credentials"), ("client_id", "custos-web")];
    fields.extend_from_slice(form);
    let response: Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .form(&fields)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"].as_str().expect("access_token").to_owned()
}

fn header_alg(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["alg"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_real_openid_provider() {
    let idp = start_idp();
    // No jwks_url: found through the provider's discovery document.
    let v = Verifier::new(IdentityConfig::new(AUDIENCE, vec![IssuerConfig::new(&idp.issuer, "example.com")])).unwrap();

    // The provider rotates RS256, PS256 and ES256 keys token by token.
    let mut algs = Vec::new();
    for _ in 0..3 {
        let t = token(&idp, &[("sub", "alice"), ("aud", AUDIENCE), ("scope", "kms.read kms.write")]).await;
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

    let own_domain = token(&idp, &[("sub", "Bob@Example.com"), ("aud", AUDIENCE)]).await;
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
        let t = token(&idp, form).await;
        assert_eq!(v.verify(&t).await.unwrap_err(), expected, "{form:?}");
    }
}
