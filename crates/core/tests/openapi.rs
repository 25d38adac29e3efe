//! The OpenAPI document at `/openapi.json` describes what the core really
//! answers: every route the router serves is in it, every operation in it is
//! served, and the answers of a running core to a session that touches every
//! route (successes and errors) validate against the document's schemas
//! (JSON Schema 2020-12, `$ref`s resolved in the document's components).

mod common;

use std::collections::BTreeSet;

use base64::Engine as _;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Calls a running core and checks each answer against the document.
struct Checked {
    url: String,
    doc: Value,
    /// `(method, path template)` of the operations answered so far.
    seen: BTreeSet<(String, String)>,
}

enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

impl Checked {
    async fn new(core: &Core) -> Checked {
        let r = reqwest::get(format!("{}/openapi.json", core.url)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let doc: Value = r.json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "JSON Schema 2020-12 dialect");
        let mut seen = BTreeSet::new();
        seen.insert(("get".to_string(), "/openapi.json".to_string()));
        Checked { url: core.url.clone(), doc, seen }
    }

    /// `method template` with its `{param}`s filled from `args` in order (a
    /// `?query` may follow the template), as `user` or without a token.
    /// Returns the status and the body: JSON, or for other content its
    /// length as a JSON number.
    async fn call(
        &mut self,
        user: Option<&User>,
        method: Method,
        template: &str,
        args: &[&str],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send(user, method, template, args, body.map_or(Body::None, Body::Json)).await
    }

    async fn send(
        &mut self,
        user: Option<&User>,
        method: Method,
        template: &str,
        args: &[&str],
        body: Body,
    ) -> (StatusCode, Value) {
        let (template, query) = template.split_once('?').map_or((template, ""), |(t, q)| (t, q));
        let mut path = template.to_string();
        for a in args {
            let (start, end) = (path.find('{').unwrap(), path.find('}').unwrap());
            path.replace_range(start..=end, a);
        }
        assert!(!path.contains('{'), "{template}: too few args");
        let sep = if query.is_empty() { "" } else { "?" };
        let mut r = reqwest::Client::new().request(method.clone(), format!("{}{path}{sep}{query}", self.url));
        if let Some(u) = user {
            r = r.bearer_auth(&u.token);
        }
        r = match body {
            Body::None => r,
            Body::Json(v) => r.json(&v),
            Body::Bytes(b) => r.body(b),
        };
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let bytes = resp.bytes().await.unwrap();
        let value = self.check(&method, template, status, &ctype, &bytes);
        self.seen.insert((method.as_str().to_lowercase(), template.to_string()));
        (status, value)
    }

    /// Checks one answer: its status is documented (or the operation has a
    /// `default`), its content type is the documented one, and a JSON body
    /// validates against the documented schema.
    fn check(&self, method: &Method, template: &str, status: StatusCode, ctype: &str, body: &[u8]) -> Value {
        let what = format!("{method} {template} -> {status}");
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{what}: not in the document");
        let responses = &op["responses"];
        let response = [status.as_str(), "default"]
            .iter()
            .map(|s| &responses[*s])
            .find(|r| r.is_object())
            .unwrap_or_else(|| panic!("{what}: status not documented"));
        let content = &response["content"];
        if body.is_empty() {
            assert!(content.is_null(), "{what}: empty, but the document gives it content {content}");
            return Value::Null;
        }
        let mime = ctype.split(';').next().unwrap().trim();
        let media = &content[mime];
        assert!(media.is_object(), "{what}: {mime} answered, the document says {content}");
        if mime != "application/json" {
            return json!(body.len());
        }
        let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        let schema = &media["schema"];
        assert!(schema.is_object(), "{what}: JSON answered, but the document gives it no schema");
        // `#/components/...` resolves against the root: put the components beside the schema.
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator =
            jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{what}: the answer does not match the document:\n{}\nanswer: {value:#}", errors.join("\n"));
        value
    }
}

fn token(n: u8) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([n; 16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_and_every_answer() {
    let core = start_with(
        std::sync::Arc::new(testkit::Idp::start()),
        Opts {
            org: "compliance_readers = [\"carl@acme.example\"]\npreview_services = [\"pv@acme.example\"]",
            tail: "[webhooks]\ndeliver = false",
            ..Opts::default()
        },
    )
    .await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let carl = User::new(&core, "carl").await;
    let pv = User::new(&core, "pv").await;
    let (a, b, cr, p) = (Some(&alice), Some(&bob), Some(&carl), Some(&pv));
    let (k, ku) = key();
    let mut c = Checked::new(&core).await;

    use Method as M;
    c.call(None, M::GET, "/healthz", &[], None).await;
    assert_eq!(c.call(None, M::GET, "/v1/me", &[], None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(c.call(a, M::GET, "/v1/me", &[], None).await.1["org"]["domain"], ORG);

    // Spaces and members.
    let (st, space) = c.call(a, M::POST, "/v1/spaces", &[], Some(json!({"resource_uri": resource()}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let sid = space["id"].as_str().unwrap().to_string();
    let s = sid.as_str();
    assert_eq!(c.call(a, M::POST, "/v1/spaces", &[], Some(json!({"resource": 1}))).await.0, StatusCode::BAD_REQUEST);
    for who in [&bob, &pv] {
        let (st, e) = c.call(a, M::POST, "/v1/spaces/{id}/members", &[s], Some(json!({"user_id": who.id}))).await;
        assert_eq!((st, e["event"]["kind"].as_str()), (StatusCode::OK, Some("member_added")));
    }
    let (_, again) = c.call(a, M::POST, "/v1/spaces/{id}/members", &[s], Some(json!({"user_id": bob.id}))).await;
    assert!(again["event"].is_null(), "{again}");
    c.call(a, M::GET, "/v1/spaces", &[], None).await;
    c.call(b, M::GET, "/v1/spaces/{id}", &[s], None).await;
    assert_eq!(c.call(cr, M::GET, "/v1/spaces/{id}", &[s], None).await.0, StatusCode::NOT_FOUND);

    // Events, markers.
    let post = json!({"kind": "message", "client_event_id": "c1", "sealed": sealed(&k, &ku, "hello")});
    let (st, m) = c.call(b, M::POST, "/v1/spaces/{id}/events", &[s], Some(post.clone())).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(c.call(b, M::POST, "/v1/spaces/{id}/events", &[s], Some(post)).await.0, StatusCode::OK);
    let mid = m["id"].as_str().unwrap().to_string();
    let reply = json!({"kind": "message", "parent": mid, "sealed": sealed(&k, &ku, "hi")});
    c.call(a, M::POST, "/v1/spaces/{id}/events", &[s], Some(reply)).await;
    c.call(a, M::POST, "/v1/spaces/{id}/events", &[s], Some(json!({"kind": "delete", "target": mid}))).await;
    let (_, page) = c.call(a, M::GET, "/v1/spaces/{id}/events?after=0", &[s], None).await;
    assert!(page["events"].as_array().unwrap().len() >= 5, "{page}");
    assert_eq!(c.call(a, M::GET, "/v1/spaces/{id}/events?limit=x", &[s], None).await.0, StatusCode::BAD_REQUEST);
    c.call(b, M::PUT, "/v1/spaces/{id}/read-marker", &[s], Some(json!({"seq": 3}))).await;
    let (_, detail) = c.call(a, M::GET, "/v1/spaces/{id}", &[s], None).await;
    assert_eq!(detail["read_markers"][0]["seq"], 3, "{detail}");

    // Search.
    let idx = json!({"key_uri": ku, "tokens": [token(1), token(2)]});
    assert_eq!(
        c.call(b, M::PUT, "/v1/spaces/{id}/events/{event}/index", &[s, &mid], Some(idx)).await.0,
        StatusCode::NO_CONTENT
    );
    let batch = json!({"items": [{"event": mid, "key_uri": ku, "tokens": [token(3)]}]});
    assert_eq!(c.call(b, M::POST, "/v1/spaces/{id}/index", &[s], Some(batch)).await.1["indexed"], 1);
    let q = json!({"queries": [{"key_uri": ku, "tokens": [token(3)]}]});
    assert_eq!(c.call(a, M::POST, "/v1/spaces/{id}/search", &[s], Some(q)).await.1["events"][0]["id"], mid);
    c.call(a, M::GET, "/v1/spaces/{id}/search/keys", &[s], None).await;

    // Files and previews.
    let f = json!({"size": 6, "chunk_size": 4, "meta": sealed(&k, &ku, "name")});
    let (_, file) = c.call(a, M::POST, "/v1/spaces/{id}/files", &[s], Some(f)).await;
    let fid = file["id"].as_str().unwrap().to_string();
    let fi = fid.as_str();
    let chunk = "/v1/files/{id}/chunks/{index}";
    assert_eq!(c.send(a, M::PUT, chunk, &[fi, "0"], Body::Bytes(b"abcd".to_vec())).await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.send(a, M::PUT, chunk, &[fi, "1"], Body::Bytes(b"abcdef".to_vec())).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(c.call(a, M::GET, "/v1/files/{id}/chunks", &[fi], None).await.1["stored"], json!([0]));
    assert_eq!(c.call(a, M::POST, "/v1/files/{id}/complete", &[fi], None).await.0, StatusCode::CONFLICT);
    assert_eq!(c.send(a, M::PUT, chunk, &[fi, "1"], Body::Bytes(b"ef".to_vec())).await.0, StatusCode::NO_CONTENT);
    let (st, ready) = c.call(a, M::POST, "/v1/files/{id}/complete", &[fi], None).await;
    assert_eq!((st, ready["kind"].as_str()), (StatusCode::OK, Some("file_ready")));
    c.call(b, M::GET, "/v1/files/{id}", &[fi], None).await;
    assert_eq!(c.call(b, M::GET, chunk, &[fi, "1"], None).await.1, 2);
    let preview = sealed(&k, &ku, "thumbnail");
    assert_eq!(c.call(p, M::PUT, "/v1/files/{id}/preview", &[fi], Some(preview)).await.0, StatusCode::NO_CONTENT);
    c.call(b, M::GET, "/v1/files/{id}/preview", &[fi], None).await;

    // Compliance reads.
    c.call(cr, M::GET, "/v1/compliance/spaces/{id}", &[s], None).await;
    c.call(cr, M::GET, "/v1/compliance/spaces/{id}/events?before=100&limit=2", &[s], None).await;
    c.call(cr, M::GET, "/v1/compliance/files/{id}", &[fi], None).await;
    assert_eq!(c.call(cr, M::GET, "/v1/compliance/files/{id}/chunks/{index}", &[fi, "0"], None).await.1, 4);

    // Webhooks.
    let hook = json!({"url": "https://bot.acme.example/hook"});
    assert!(c.call(b, M::PUT, "/v1/webhook", &[], Some(hook)).await.1["secret"].is_string());
    c.call(b, M::GET, "/v1/webhook", &[], None).await;
    assert_eq!(c.call(b, M::DELETE, "/v1/webhook", &[], None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.call(b, M::GET, "/v1/webhook", &[], None).await.0, StatusCode::NOT_FOUND);

    // The relay: this org's KMS has no address and no link.
    let (st, e) = c.call(a, M::POST, "/kms/{domain}/messages", &[KMS], Some(json!({"kmsMessages": ["x"]}))).await;
    assert_eq!((st, e["error"].as_str()), (StatusCode::BAD_GATEWAY, Some("kms_unreachable")));

    // Leaving.
    let me = bob.id.clone();
    c.call(b, M::DELETE, "/v1/spaces/{id}/members/{user}", &[s, &me], None).await;

    // Every route is described, and every described operation is served.
    let served: BTreeSet<(String, String)> =
        custos_core::api::served().iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let mut documented = BTreeSet::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served, not in the document"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "in the document, not served"
    );
    // And this test answered every one of them but the WebSocket upgrades.
    let sockets: BTreeSet<(String, String)> =
        [("get", "/v1/ws"), ("get", "/kms/connect")].iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let untested: Vec<_> = served.difference(&c.seen).filter(|r| !sockets.contains(*r)).collect();
    assert!(untested.is_empty(), "routes this test never called: {untested:?}");
}
