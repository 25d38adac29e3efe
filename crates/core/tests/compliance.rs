//! Compliance readers: an org's `compliance_readers` read (never write)
//! every space that has or had a member of their org, through
//! `GET /v1/compliance/…`; everyone else, and every other space, gets the
//! answer a non-member gets ("no such space"), and every write stays
//! member-only. Each compliance read is logged with ids only.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{sealed, User, Ws};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::Idp;

const AUD: &str = common::AUD;
const ACME: &str = "acme.example";
const GLOBEX: &str = "globex.example";

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this process at INFO and above, from now on.
fn capture_logs() -> LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = LogBuf(Arc::default());
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        buf
    })
    .clone()
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A core serving two orgs (each with its own IdP), with compliance readers.
struct TwoOrgs {
    acme: Arc<Idp>,
    globex: Arc<Idp>,
    url: String,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TwoOrgs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config_text(dir: &std::path::Path, acme: &str, globex: &str, acme_readers: &str, globex_readers: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[identity]\naudience = \"{AUD}\"\n\
         [[identity.issuers]]\nissuer = \"{acme}\"\norg_domain = \"{ACME}\"\n\
         [[identity.issuers]]\nissuer = \"{globex}\"\norg_domain = \"{GLOBEX}\"\n\n\
         [[orgs]]\ndomain = \"{ACME}\"\nkms_uri = \"kms://kms.{ACME}\"\ncompliance_readers = {acme_readers}\n\n\
         [[orgs]]\ndomain = \"{GLOBEX}\"\nkms_uri = \"kms://kms.{GLOBEX}\"\ncompliance_readers = {globex_readers}\n",
        dir.display()
    )
}

impl TwoOrgs {
    async fn start() -> TwoOrgs {
        let (acme, globex) = (Arc::new(Idp::start()), Arc::new(Idp::start()));
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(
            dir.path(),
            &acme.issuer,
            &globex.issuer,
            "[\"carol@acme.example\"]",
            "[\"gina@GLOBEX.example\"]",
        );
        let cfg = custos_core::config::Config::parse(&text, dir.path()).unwrap();
        let r = custos_core::server::start(cfg).await.unwrap();
        TwoOrgs { acme, globex, url: format!("http://{}", r.addr), _dir: dir, task: r.task }
    }

    async fn user(&self, name: &str, org: &str) -> User {
        let idp = if org == ACME { &self.acme } else { &self.globex };
        let token = idp.token(&[("sub", name), ("aud", AUD)]).await;
        User { http: reqwest::Client::new(), url: self.url.clone(), token, id: format!("{name}@{org}") }
    }
}

fn kms_resource(org: &str) -> String {
    format!("kms://kms.{org}/resources/{}", uuid::Uuid::new_v4())
}

fn org_key(org: &str) -> (jose::OctKey, String) {
    (jose::OctKey::generate(32, None).unwrap(), format!("kms://kms.{org}/keys/{}", uuid::Uuid::new_v4()))
}

async fn create_space(u: &User, org: &str) -> String {
    let (st, s) = u.post("/v1/spaces", json!({"resource_uri": kms_resource(org)})).await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    s["id"].as_str().unwrap().to_string()
}

#[test]
fn config_accepts_only_users_of_the_org() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |acme: &str| {
        custos_core::config::Config::parse(
            &config_text(dir.path(), "https://a.example", "https://g.example", acme, "[]"),
            dir.path(),
        )
    };
    let ok = parse("[\"carol@ACME.example\", \"carol@acme.example\"]").unwrap();
    assert_eq!(ok.orgs[0].compliance_readers, ["carol@acme.example"], "canonical, once");
    assert!(ok.compliance_org_of("carol@acme.example").is_some());
    assert!(ok.compliance_org_of("bob@acme.example").is_none());
    for (bad, why) in [
        ("[\"dave@globex.example\"]", "not a user of this org"),
        ("[\"carol\"]", "not name@domain"),
        ("[\"@acme.example\"]", "not a user id"),
        ("[\"car ol@acme.example\"]", "not a user id"),
        ("[\"carol@acme.example.\"]", "not a host name"),
    ] {
        let e = parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        let msg = format!("{e:#}");
        assert!(msg.contains("compliance_readers") && msg.contains(why), "{bad}: {msg}");
        assert!(msg.contains("acme.example"), "names the org: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_read_their_orgs_spaces_and_nothing_else() {
    let logs = capture_logs();
    let w = TwoOrgs::start().await;
    let alice = w.user("alice", ACME).await;
    let bob = w.user("bob", ACME).await;
    let carol = w.user("carol", ACME).await; // acme's compliance reader
    let mallory = w.user("mallory", ACME).await; // not a reader
    let dave = w.user("dave", GLOBEX).await;
    let gina = w.user("gina", GLOBEX).await; // globex's compliance reader
    let (k, ku) = org_key(ACME);

    // An acme space with messages and a file.
    let s = create_space(&alice, ACME).await;
    alice.add(&s, &bob.id).await;
    let m1 = alice.say(&s, &k, &ku, "hello bob").await;
    bob.post(
        &format!("/v1/spaces/{s}/events"),
        json!({"kind": "message", "parent": m1["id"], "sealed": sealed(&k, &ku, "hi alice")}),
    )
    .await;
    let (st, f) = alice
        .post(&format!("/v1/spaces/{s}/files"), json!({"size": 5, "chunk_size": 5, "meta": sealed(&k, &ku, "meta")}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    assert_eq!(alice.put_chunk(&fid, 0, b"12345".to_vec()).await.0, StatusCode::NO_CONTENT);
    assert_eq!(alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await.0, StatusCode::OK);
    let members_view = alice.events(&s).await;

    // The reader sees what members see: the space, members, every event, the file.
    let (st, sp) = carol.get(&format!("/v1/compliance/spaces/{s}")).await;
    assert_eq!(st, StatusCode::OK, "{sp}");
    assert_eq!(sp["space"]["id"], s);
    assert_eq!(sp["space"]["title"], Value::Null);
    let members: Vec<&str> = sp["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect();
    assert_eq!(members, [alice.id.as_str(), bob.id.as_str()]);
    assert_eq!(sp["former_members"], json!([]));
    let (st, ev) = carol.get(&format!("/v1/compliance/spaces/{s}/events?after=0&limit=500")).await;
    assert_eq!(st, StatusCode::OK, "{ev}");
    assert_eq!(ev["events"].as_array().unwrap(), &members_view, "the same events, ciphertext and all");
    let (st, ev) = carol.get(&format!("/v1/compliance/spaces/{s}/events?before=4&limit=2")).await;
    assert_eq!(st, StatusCode::OK);
    let seqs: Vec<i64> = ev["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 2], "history pages as for members");
    assert_eq!(
        carol.get(&format!("/v1/compliance/spaces/{s}/events?after=x")).await.0,
        StatusCode::BAD_REQUEST,
        "a bad query is refused"
    );
    let (st, rec) = carol.get(&format!("/v1/compliance/files/{fid}")).await;
    assert_eq!(st, StatusCode::OK, "{rec}");
    assert_eq!(rec["space_id"], s);
    let r = carol
        .http
        .get(format!("{}/v1/compliance/files/{fid}/chunks/0", w.url))
        .bearer_auth(&carol.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], b"12345");
    assert_eq!(carol.get(&format!("/v1/compliance/files/{fid}/chunks/1")).await.0, StatusCode::NOT_FOUND);
    // Still not a member: the member routes know nothing of her.
    assert_eq!(carol.get(&format!("/v1/spaces/{s}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(carol.get(&format!("/v1/spaces/{s}/events?after=0")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(carol.get(&format!("/v1/files/{fid}")).await.0, StatusCode::NOT_FOUND);
    let (_, listed) = carol.get("/v1/spaces").await;
    assert_eq!(listed["spaces"], json!([]), "a reader's own space list is her memberships");

    // Refusals look exactly like a space (or file) that does not exist.
    let nothing = uuid::Uuid::new_v4().to_string();
    let (st, missing) = carol.get(&format!("/v1/compliance/spaces/{nothing}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, missing_file) = carol.get(&format!("/v1/compliance/files/{nothing}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Not a reader (a member of nothing, or even a member: the compliance path is for readers).
    for u in [&mallory, &alice, &dave] {
        for path in [format!("/v1/compliance/spaces/{s}"), format!("/v1/compliance/spaces/{s}/events")] {
            assert_eq!(u.get(&path).await, (StatusCode::NOT_FOUND, missing.clone()), "{} {path}", u.id);
        }
        let path = format!("/v1/compliance/files/{fid}");
        assert_eq!(u.get(&path).await, (StatusCode::NOT_FOUND, missing_file.clone()), "{}", u.id);
        let path = format!("/v1/compliance/files/{fid}/chunks/0");
        assert_eq!(u.get(&path).await.0, StatusCode::NOT_FOUND, "{}", u.id);
    }
    // A reader of another org, for a space without a member of her org.
    assert_eq!(gina.get(&format!("/v1/compliance/spaces/{s}")).await, (StatusCode::NOT_FOUND, missing.clone()));
    assert_eq!(gina.get(&format!("/v1/compliance/spaces/{s}/events")).await, (StatusCode::NOT_FOUND, missing.clone()));
    assert_eq!(gina.get(&format!("/v1/compliance/files/{fid}")).await, (StatusCode::NOT_FOUND, missing_file.clone()));
    let g = create_space(&dave, GLOBEX).await;
    assert_eq!(carol.get(&format!("/v1/compliance/spaces/{g}")).await, (StatusCode::NOT_FOUND, missing.clone()));
    assert_eq!(gina.get(&format!("/v1/compliance/spaces/{g}")).await.0, StatusCode::OK);
    // Malformed ids: the same.
    assert_eq!(carol.get("/v1/compliance/spaces/..%2Fetc").await.0, StatusCode::NOT_FOUND);

    // Once a globex user is a member, globex's reader may read the space; and
    // after that member leaves, still (the space had one), with the history.
    alice.add(&s, &dave.id).await;
    assert_eq!(gina.get(&format!("/v1/compliance/spaces/{s}")).await.0, StatusCode::OK);
    let (st, _) = alice.req(Method::DELETE, &format!("/v1/spaces/{s}/members/{}", dave.id), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, sp) = gina.get(&format!("/v1/compliance/spaces/{s}")).await;
    assert_eq!(st, StatusCode::OK, "{sp}");
    assert_eq!(sp["former_members"], json!([dave.id]));
    assert_eq!(gina.get(&format!("/v1/compliance/files/{fid}")).await.0, StatusCode::OK);

    // Never a write: every member write refuses the reader as a non-member
    // (nothing stored), and the compliance routes take no writes at all.
    let before = alice.events(&s).await.len();
    let ev_path = format!("/v1/spaces/{s}/events");
    let writes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, ev_path.clone(), Some(json!({"kind": "message", "sealed": sealed(&k, &ku, "x")}))),
        (Method::POST, ev_path.clone(), Some(json!({"kind": "delete", "target": m1["id"]}))),
        (
            Method::POST,
            ev_path.clone(),
            Some(json!({"kind": "reaction", "target": m1["id"], "sealed": sealed(&k, &ku, "+1")})),
        ),
        (Method::POST, format!("/v1/spaces/{s}/members"), Some(json!({"user_id": "carol@acme.example"}))),
        (Method::DELETE, format!("/v1/spaces/{s}/members/{}", bob.id), None),
        (Method::DELETE, format!("/v1/spaces/{s}/members/{}", carol.id), None),
        (Method::PUT, format!("/v1/spaces/{s}/read-marker"), Some(json!({"seq": 1}))),
        (
            Method::POST,
            format!("/v1/spaces/{s}/files"),
            Some(json!({"size": 1, "chunk_size": 1, "meta": sealed(&k, &ku, "m")})),
        ),
        (Method::POST, format!("/v1/files/{fid}/complete"), None),
    ];
    for (m, path, body) in writes {
        let (st, b) = carol.req(m.clone(), &path, body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {path}: {b}");
        assert_eq!(b["error"], "not_found", "{m} {path}: {b}");
    }
    assert_eq!(carol.put_chunk(&fid, 0, b"54321".to_vec()).await.0, StatusCode::NOT_FOUND);
    for (m, path) in [
        (Method::POST, format!("/v1/compliance/spaces/{s}/events")),
        (Method::PUT, format!("/v1/compliance/spaces/{s}")),
        (Method::DELETE, format!("/v1/compliance/spaces/{s}")),
        (Method::POST, format!("/v1/compliance/spaces/{s}/members")),
        (Method::PUT, format!("/v1/compliance/spaces/{s}/read-marker")),
        (Method::PUT, format!("/v1/compliance/files/{fid}/chunks/0")),
        (Method::POST, format!("/v1/compliance/files/{fid}/complete")),
    ] {
        let (st, b) = carol.req(m.clone(), &path, Some(json!({"kind": "message"}))).await;
        assert!(st == StatusCode::METHOD_NOT_ALLOWED || st == StatusCode::NOT_FOUND, "{m} {path}: {st} {b}");
    }
    assert_eq!(alice.events(&s).await.len(), before, "the refused writes stored nothing");
    let r = carol
        .http
        .get(format!("{}/v1/compliance/files/{fid}/chunks/0", w.url))
        .bearer_auth(&carol.token)
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], b"12345", "the chunk is unchanged");
    let (_, sp) = alice.get(&format!("/v1/spaces/{s}")).await;
    assert_eq!(sp["members"].as_array().unwrap().len(), 2, "membership unchanged");
    assert_eq!(sp["read_markers"], json!([]), "no read marker of hers");

    // The live socket stays member-only: nothing of the space reaches her.
    let mut ws = Ws::connect(&w.url, &carol.token, json!({ s.clone(): 0 })).await;
    alice.say(&s, &k, &ku, "not for the socket").await;
    ws.quiet(700).await;

    // Every compliance read was logged with ids, and nothing else of the space.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("compliance read") && l.contains(&s)).collect();
    assert!(lines.iter().any(|l| l.contains("reader=carol@acme.example") && l.contains("read=\"events\"")), "{text}");
    assert!(lines.iter().any(|l| l.contains("reader=gina@globex.example") && l.contains("read=\"space\"")), "{text}");
    assert!(lines.iter().any(|l| l.contains(&fid) && l.contains("read=\"chunk\"")), "{text}");
    assert!(
        text.lines().any(|l| l.contains("compliance read refused") && l.contains("reader=gina@globex.example")),
        "{text}"
    );
    let ct = members_view[2]["ciphertext"].as_str().unwrap();
    assert!(!text.contains(ct), "no ciphertext in the logs");
    assert!(!text.contains(&carol.token), "no token in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_describes_the_compliance_routes() {
    let w = TwoOrgs::start().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", w.url)).await.unwrap().json().await.unwrap();
    for p in [
        "/v1/compliance/spaces/{id}",
        "/v1/compliance/spaces/{id}/events",
        "/v1/compliance/files/{id}",
        "/v1/compliance/files/{id}/chunks/{index}",
    ] {
        let item = &doc["paths"][p];
        assert!(item["get"].is_object(), "{p}: {item}");
        for m in ["post", "put", "delete", "patch"] {
            assert!(item[m].is_null(), "{p} must be read only");
        }
    }
}
