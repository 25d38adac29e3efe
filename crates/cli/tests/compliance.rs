//! The compliance export end to end: `custos up` as a spawned process, the
//! `custos` CLI for every person, the org policy set by an admin through the
//! SDK's KMS client. A compliance officer (carol: a compliance reader at the
//! core by `up`'s config, an officer at the KMS once alice's policy says so)
//! exports a space she is not a member of, in every format, under an
//! approved case when the org requires one; every refusal on the way is
//! checked as carefully as the successes.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use base64::Engine as _;
use client::tokens::{OidcTokens, TokenSource};
use client::{KmsPin, Route, Session};
use kms_protocol::message::{Method, RequestBody};
use serde_json::{json, Value};

mod common;

use common::{free_base, Person, Up};

/// A user's tokens straight from the org's IdP (password login), for the SDK.
async fn tokens(up: &Up, org: &str, user: &str) -> Arc<dyn TokenSource> {
    let issuer = up.org(org)["issuer"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let d: Value =
        http.get(format!("{issuer}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let endpoint = d["token_endpoint"].as_str().unwrap().to_string();
    let password = up.password(user);
    let v: Value = http
        .post(&endpoint)
        .form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password.as_str()),
            ("client_id", "custos-cli"),
            ("audience", "https://core.custos.test"),
            ("scope", "openid offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = v["refresh_token"].as_str().unwrap_or_else(|| panic!("login {user}: {v}"));
    Arc::new(OidcTokens::from_refresh_token(&endpoint, "custos-cli", refresh, None))
}

/// The org profile as TOML.
fn profile(up: &Up, org: &str) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(up.profile(org)).unwrap()).unwrap()
}

/// An SDK session of `user` (for what the CLI has no command for: edits, deletions, reactions).
async fn session(up: &Up, user: &str) -> Session {
    let p = profile(up, "acme.test");
    let s = |k: &str| p[k].as_str().unwrap().to_string();
    let pin = KmsPin::from_jwk_json(&s("kms_domain"), &s("kms_key")).unwrap();
    let cfg = client::SessionConfig::new(&s("core_url"), &s("core_audience"), pin, &s("kms_audience"));
    Session::open(cfg, tokens(up, "acme.test", user).await).await.unwrap()
}

/// An admin's KMS client, straight to the KMS.
async fn admin_kms(up: &Up, user: &str) -> client::kms::KmsClient {
    let p = profile(up, "acme.test");
    let s = |k: &str| p[k].as_str().unwrap().to_string();
    client::kms::KmsClient::new(
        client::kms::KmsOptions {
            pin: KmsPin::from_jwk_json(&s("kms_domain"), &s("kms_key")).unwrap(),
            route: Route::Direct { url: up.org("acme.test")["kms_url"].as_str().unwrap().to_string() },
            kms_audience: s("kms_audience"),
            core_audience: s("core_audience"),
            client_id: format!("compliance-test-{user}"),
            key_cache: 16,
        },
        tokens(up, "acme.test", user).await,
    )
}

/// Replaces the org policy (compare-and-swap on the version just read).
async fn set_policy(kms: &client::kms::KmsClient, policy: Value) {
    let current = kms.call(Method::Retrieve, "/policy", RequestBody::default()).await.unwrap();
    let version = current.policy.map(|p| p.version).unwrap_or(0);
    let body = RequestBody { policy: Some(policy), policy_version: Some(version), ..RequestBody::default() };
    kms.call(Method::Update, "/policy", body).await.unwrap();
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Checks an export with `custos compliance verify`: (success, its JSON).
fn verify(p: &Person, dir: &Path) -> (bool, Value) {
    let out = p.run(&["compliance", "verify", dir.to_str().unwrap()]);
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

#[test]
fn a_compliance_officer_exports_a_space_and_every_refusal_on_the_way() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test"); // a bootstrap KMS admin in `up`
    let bob = Person::login(&up, &people, "bob@acme.test");
    let carol = Person::login(&up, &people, "carol@acme.test"); // a compliance reader at the core (`up`)
    let dave = Person::login(&up, &people, "dave@globex.test");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // A conversation carol is not part of: messages, a reply, an edit, a
    // deletion, a reaction, hostile-looking text and a file.
    let space =
        alice.ok(&["space", "create", "Matter 42", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    let m1 = alice.ok(&["send", &space, "hello bob"])["id"].as_str().unwrap().to_string();
    let hostile = "<script>alert('x')</script> & \"quotes\"\r\nBcc: victim@example.com \u{202E}txt.exe";
    bob.ok(&["send", &space, hostile, "--reply-to", &m1]);
    let secret = "the budget is 2.4M";
    let m3 = alice.ok(&["send", &space, secret])["id"].as_str().unwrap().to_string();
    let m4 = alice.ok(&["send", &space, "a typo I regret"])["id"].as_str().unwrap().to_string();
    let (key_b64, key_uri) = rt.block_on(async {
        let s = session(&up, "alice@acme.test").await;
        let (space, m1, m3, m4) = (client::SpaceId::from(&space), client::EventId::from(&m1), client::EventId::from(&m3), client::EventId::from(&m4));
        s.edit(&space, &m3, "the budget is 2.5M").await.unwrap();
        s.delete(&space, &m4).await.unwrap();
        s.react(&space, &m1, "👍").await.unwrap();
        let h = s.history(&space, None, 50).await.unwrap();
        let uri = h.iter().find_map(|m| m.key_uri.clone()).unwrap();
        let k = s.kms().key(&uri).await.unwrap();
        (base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.key.expose()), uri)
    });
    let doc = tmp.path().join("evidence.txt");
    std::fs::write(&doc, b"the signed contract, page 1").unwrap();
    let file = alice.ok(&["upload", &space, doc.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let bobs = bob.ok(&["read", &space, "--limit", "200"])["events"].clone();
    let kinds: Vec<&str> = bobs.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["message", "edit", "delete", "reaction", "file_ready", "member_added"] {
        assert!(kinds.contains(&k), "bob's view has a {k}: {kinds:?}");
    }
    let export = |p: &Person, name: &str, extra: &[&str]| -> (Output, PathBuf) {
        let dir = tmp.path().join(name);
        let mut args = vec!["compliance", "export", "--space", &space, "--out", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        (p.run(&args), dir)
    };

    // ---- Refusals before carol is an officer at the KMS.
    let (out, dir) = export(&carol, "refused-1", &["--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("onBehalfOf") && err.contains("compliance officers"), "a clear refusal: {err}");
    assert!(err.contains("on behalf of bob@acme.test") || err.contains("on behalf of alice@acme.test"), "{err}");
    assert!(!dir.join("manifest.json").exists() && !dir.exists(), "a refused export leaves nothing behind");
    assert!(!err.contains(secret));
    // Not a compliance reader at the core (a member, or another org's user).
    let (out, _) = export(&bob, "refused-2", &["--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("compliance reader"), "{err}");
    let (out, _) = export(&dave, "refused-3", &["--format", "json"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("compliance reader"));
    // Bad arguments fail before anything is read.
    let (out, _) = export(&carol, "refused-4", &["--format", "json", "--from", "yesterday"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let (out, _) = export(&carol, "refused-5", &["--format", "pdf"]);
    assert!(!out.status.success());
    let (out, _) = export(&carol, "refused-6", &["--format", "json", "--on-behalf-of", "dave@globex.test"]);
    assert!(!out.status.success());

    // ---- alice (org admin) makes carol a compliance officer.
    let kms = rt.block_on(admin_kms(&up, "alice@acme.test"));
    rt.block_on(set_policy(&kms, json!({"complianceOfficers": ["carol@acme.test"]})));
    // Even now, another org's user is never a subject.
    let (out, _) = export(&carol, "refused-7", &["--format", "json", "--on-behalf-of", "dave@globex.test"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("onBehalfOf"), "{err}");

    // JSON: the same events bob reads.
    let (out, json_dir) = export(&carol, "export-json", &["--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["unreadable"], 0, "{summary}");
    let ex = read_json(&json_dir.join("messages.json"));
    assert_eq!(ex["events"], bobs, "the export's events are what bob reads");
    assert_eq!(ex["space"]["id"], space);
    assert_eq!(ex["space"]["title"], "Matter 42");
    assert_eq!(ex["officer"], "carol@acme.test");
    assert_eq!(ex["subject"], "alice@acme.test", "default: the first member of carol's org");
    assert_eq!(ex["files"][0]["id"], file);
    assert_eq!(ex["files"][0]["name"], "evidence.txt");
    let manifest = read_json(&json_dir.join("manifest.json"));
    assert_eq!(manifest["space"]["id"], space);
    assert_eq!(manifest["officer"], "carol@acme.test");
    assert_eq!(manifest["case"], Value::Null);
    assert!(manifest["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["files"][0]["name"], "messages.json");
    assert_eq!(manifest["digest"], summary["digest"]);
    for p in files_under(&json_dir) {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&json_dir), 0o700);
    assert_eq!(std::fs::read_dir(&json_dir).unwrap().count(), 2, "messages.json and manifest.json, nothing else");
    assert!(verify(&carol, &json_dir).0);
    // No silent overwrite: the directory already holds an export.
    let (out, _) = export(&carol, "export-json", &["--format", "json"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already holds an export"));
    assert!(verify(&carol, &json_dir).0, "untouched");

    // On behalf of bob, a time range that excludes everything, and the files.
    let (out, d) = export(&carol, "export-bob", &["--format", "json", "--on-behalf-of", "bob@acme.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_json(&d.join("messages.json"))["subject"], "bob@acme.test");
    assert_eq!(read_json(&d.join("messages.json"))["events"], bobs);
    let (out, d) = export(&carol, "export-past", &["--format", "json", "--to", "2001-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_json(&d.join("messages.json"))["events"], json!([]));
    assert_eq!(read_json(&d.join("manifest.json"))["range"]["to"], "2001-01-01T00:00:00.000Z");

    // HTML: one page, everything from others escaped, nothing loaded from elsewhere.
    let (out, html_dir) = export(&carol, "export-html", &["--format", "html", "--files"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(html_dir.join("messages.html")).unwrap();
    assert!(page.contains("Content-Security-Policy") && page.contains("default-src 'none'"));
    assert!(!page.contains("<script"), "no markup from message text");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;"));
    assert!(page.contains("\\u{202e}") && !page.contains('\u{202E}'), "bidi overrides made visible");
    assert!(page.contains("the budget is 2.5M") && page.contains("edit of"), "edits shown");
    assert!(page.contains("deleted") && page.contains("reaction to") && page.contains("👍"));
    assert!(page.contains("reply in the thread of"));
    assert!(page.contains("evidence.txt"));
    assert!(!page.contains("http://") && !page.contains("https://"), "self-contained");
    let saved: Vec<PathBuf> = files_under(&html_dir.join("files"));
    assert_eq!(saved.len(), 1);
    assert_eq!(std::fs::read(&saved[0]).unwrap(), b"the signed contract, page 1");
    assert_eq!(mode(&saved[0]), 0o600);
    let names: Vec<String> = read_json(&html_dir.join("manifest.json"))["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with(&format!("files/{file}-")) && names[1] == "messages.html", "{names:?}");
    assert!(verify(&carol, &html_dir).0);

    // EML: one RFC 5322 message per chat event, headers encoded, bodies base64.
    let (out, eml_dir) = export(&carol, "export-eml", &["--format", "eml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let emls = files_under(&eml_dir.join("eml"));
    let chat = bobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["message", "edit", "delete", "reaction"].contains(&e["kind"].as_str().unwrap()))
        .count();
    assert_eq!(emls.len(), chat);
    let (mut found, mut reaction) = (false, false);
    for p in &emls {
        let text = std::fs::read_to_string(p).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("headers, a blank line, the body");
        assert!(!head.split("\r\n").any(|l| l.is_empty()));
        assert!(!text.replace("\r\n", "").contains('\n') && !text.replace("\r\n", "").contains('\r'), "CRLF only");
        assert!(head.contains("\r\nDate: ") && head.contains("MIME-Version: 1.0"));
        assert!(!head.to_ascii_lowercase().contains("\r\nbcc:"), "no header injection: {head}");
        let body = base64::engine::general_purpose::STANDARD.decode(body.replace("\r\n", "")).unwrap();
        if body == hostile.as_bytes() {
            found = true;
            assert!(head.starts_with("From: <bob@acme.test>\r\n"), "{head}");
            // The subject is the first line: the rest of the text never reaches the headers.
            assert!(head.contains("\r\nSubject: <script>alert('x')</script> & \"quotes\"\r\n"), "{head}");
            assert!(!head.contains("Bcc") && !head.contains("victim"), "{head}");
            assert!(head.contains(&format!("In-Reply-To: <{m1}@")), "{head}");
            assert!(head.contains("X-Custos-Kind: reply"));
        }
        if body == "👍".as_bytes() {
            reaction = true;
            // Non-ASCII header text is RFC 2047 encoded.
            assert!(head.contains("Subject: =?UTF-8?B?") && head.contains("X-Custos-Kind: reaction"), "{head}");
        }
    }
    assert!(found && reaction, "the reply and the reaction are among the messages");
    assert!(verify(&carol, &eml_dir).0);

    // ---- verify catches any change.
    let (ok, v) = verify(&carol, &json_dir);
    assert!(ok && v["ok"] == true, "{v}");
    let target = json_dir.join("messages.json");
    let original = std::fs::read(&target).unwrap();
    let mut changed = original.clone();
    let i = changed.len() / 2;
    changed[i] ^= 0x01;
    std::fs::write(&target, &changed).unwrap();
    let (ok, v) = verify(&carol, &json_dir);
    assert!(!ok, "one byte changed must fail");
    assert_eq!(v["problem"]["kind"], "modified", "{v}");
    assert_eq!(v["problem"]["file"], "messages.json", "{v}");
    let human = carol.run_with(false, &["compliance", "verify", json_dir.to_str().unwrap()]);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("MISMATCH (modified) messages.json"));
    std::fs::write(&target, &original).unwrap();
    assert!(verify(&carol, &json_dir).0, "restored");
    // An unlisted file, a missing file, a manifest whose list was edited.
    std::fs::write(json_dir.join("extra.txt"), b"planted").unwrap();
    assert_eq!(verify(&carol, &json_dir).1["problem"]["kind"], "unlisted");
    std::fs::remove_file(json_dir.join("extra.txt")).unwrap();
    let eml0 = emls[0].clone();
    let saved_eml = std::fs::read(&eml0).unwrap();
    std::fs::remove_file(&eml0).unwrap();
    assert_eq!(verify(&carol, &eml_dir).1["problem"]["kind"], "missing");
    std::fs::write(&eml0, &saved_eml).unwrap();
    let mpath = json_dir.join("manifest.json");
    let mut m = read_json(&mpath);
    m["files"][0]["sha256"] = json!("00".repeat(32));
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(verify(&carol, &json_dir).1["problem"]["kind"], "digest");
    assert!(!verify(&carol, &tmp.path().join("refused-1")).0, "no manifest, no verification");

    // ---- The org requires an approved case (one approver: bob).
    rt.block_on(set_policy(
        &kms,
        json!({"complianceOfficers": ["carol@acme.test"], "approval": {"required": 1, "approvers": ["bob@acme.test"]}}),
    ));
    let (out, dir) = export(&carol, "refused-8", &["--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no case, no export");
    assert!(err.contains("approved compliance case") && err.contains("--case"), "{err}");
    assert!(!dir.exists());
    // Only officers open cases; bob (an approver) may not.
    assert!(bob.fails(&["compliance", "case", "open", "--space", &space]).contains("compliance officers"));
    let opened = carol.ok(&["compliance", "case", "open", "--space", &space, "--reason", "matter 42"]);
    let case = opened["case"]["uri"].as_str().unwrap().to_string();
    assert_eq!(opened["case"]["state"], "pending");
    let resource = ex["space"]["resource"].as_str().unwrap();
    assert_eq!(opened["case"]["spaces"], json!([resource]), "the space id resolved to its resource");
    // Pending: refused, with the KMS's reason.
    let (out, _) = export(&carol, "refused-9", &["--format", "json", "--case", &case]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not approved"), "{err}");
    // The officer cannot approve her own case; a case of another KMS is refused.
    assert!(carol.fails(&["compliance", "case", "approve", &case]).contains("refused"));
    assert!(carol
        .fails(&["compliance", "case", "approve", "kms://kms.globex.test/cases/x"])
        .contains("not a compliance case"));
    let approved = bob.ok(&["compliance", "case", "approve", &case]);
    assert_eq!(approved["case"]["state"], "approved");
    assert_eq!(approved["case"]["approvals"], json!(["bob@acme.test"]));
    let listed = carol.ok(&["compliance", "case", "list"]);
    assert_eq!(listed["cases"][0]["uri"], case);
    // Bare case ids work too.
    let bare = case.rsplit('/').next().unwrap();
    let (out, case_dir) = export(&carol, "export-case", &["--format", "json,html,eml", "--case", bare]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_json(&case_dir.join("messages.json"))["events"], bobs);
    let m = read_json(&case_dir.join("manifest.json"));
    assert_eq!(m["case"], case);
    assert!(verify(&carol, &case_dir).0);
    let human = carol.run_with(false, &["compliance", "verify", case_dir.to_str().unwrap()]);
    assert!(human.status.success() && String::from_utf8_lossy(&human.stdout).contains("not signed"));
    // Closed: nothing more.
    carol.ok(&["compliance", "case", "close", &case]);
    let (out, _) = export(&carol, "refused-10", &["--format", "json", "--case", &case]);
    assert!(!out.status.success());

    // ---- The provider saw ciphertext only, and that compliance reads happened.
    let core_dir = up.data.join("core");
    let mut db = Vec::new();
    for f in ["core.db", "core.db-wal"] {
        if let Ok(b) = std::fs::read(core_dir.join(f)) {
            db.extend(b);
        }
    }
    assert!(!db.is_empty());
    let has = |needle: &[u8]| db.windows(needle.len()).any(|w| w == needle);
    for text in [secret, "the budget is 2.5M", "hello bob", "Matter 42", "evidence.txt"] {
        assert!(!has(text.as_bytes()), "plaintext {text:?} in the core's database");
    }
    assert!(!has(key_b64.as_bytes()), "a content key in the core's database");
    assert!(has(key_uri.as_bytes()), "(the scan does see the database: key URIs are there)");
    let log = std::fs::read_to_string(&up.log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("compliance read") && l.contains("carol@acme.test") && l.contains(&space)),
        "the core logs compliance reads"
    );
    for text in [secret, "hello bob", "Matter 42"] {
        assert!(!log.contains(text), "plaintext {text:?} in the servers' log");
    }
}
