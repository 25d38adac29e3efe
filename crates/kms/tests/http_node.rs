//! The whole API driven by Cisco's unmodified node-kms over HTTP, with tokens
//! from a real OpenID provider (oauth2-mock-server) on loopback; and the
//! authorization matrix: creator, authorized, de-authorized, stranger,
//! anonymous bearer, expired token, wrong audience, untrusted issuer.

#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};
use server::{config_text, Server};
use testkit::{Idp, Node};

const AUD: &str = "kms://kms.acme.example";

struct World {
    node: Node,
    idp: Idp,
    kms: Server,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(extra: &str) -> World {
        let idp = Idp::start();
        let dir = tempfile::tempdir().unwrap();
        let kms = Server::start(&config_text(dir.path(), &idp.issuer, extra));
        World { node: Node::start(), idp, kms, _dir: dir }
    }

    fn token(&mut self, sub: &str) -> String {
        self.token_with(json!({"sub": sub, "aud": AUD}))
    }

    fn token_with(&mut self, mut args: Value) -> String {
        args["op"] = json!("idp_token");
        args["tokenEndpoint"] = json!(self.idp.token_endpoint);
        self.node.call(args)["token"].as_str().unwrap().to_string()
    }

    /// Handshakes; returns (ctx, status).
    fn connect_token(&mut self, token: &str, client: &str) -> (u64, i64) {
        let r =
            self.node.call(json!({"op": "kms_http_connect", "url": self.kms.url, "token": token, "clientId": client}));
        (r["ctx"].as_u64().unwrap(), r["body"]["status"].as_i64().unwrap())
    }

    fn connect(&mut self, user: &str) -> u64 {
        let t = self.token(user);
        let (ctx, status) = self.connect_token(&t, &format!("device-{user}"));
        assert_eq!(status, 201, "{user} handshakes");
        ctx
    }

    fn req(&mut self, ctx: u64, request: Value) -> Value {
        self.node.call(json!({"op": "kms_http_request", "url": self.kms.url, "ctx": ctx, "request": request}))["body"]
            .clone()
    }

    fn status(&mut self, ctx: u64, request: Value) -> i64 {
        self.req(ctx, request)["status"].as_i64().unwrap()
    }
}

#[test]
fn whole_api_through_node_kms() {
    let mut w = World::new("");
    let alice = w.connect("alice");
    let bob = w.connect("bob");
    let carol = w.connect("carol");

    // Keys.
    let keys = w.req(alice, json!({"method": "create", "uri": "/keys", "count": 3}));
    assert_eq!(keys["status"], 201);
    let k0 = keys["keys"][0]["uri"].as_str().unwrap().to_string();
    let k1 = keys["keys"][1]["uri"].as_str().unwrap().to_string();
    let k2 = keys["keys"][2]["uri"].as_str().unwrap().to_string();
    let k0_secret = keys["keys"][0]["jwk"]["k"].clone();
    assert_eq!(keys["keys"][0]["userId"], "alice@acme.example");
    assert_eq!(w.req(alice, json!({"method": "retrieve", "uri": k0}))["key"]["jwk"]["k"], k0_secret);
    assert_eq!(w.status(bob, json!({"method": "retrieve", "uri": k0})), 403, "unbound: creator only");

    // A resource, the production client's way (userIds, absolute key URIs).
    let res = w.req(alice, json!({"method": "create", "uri": "/resources", "userIds": ["bob"], "keyUris": [k0]}));
    assert_eq!(res["status"], 201);
    let r = res["resource"]["uri"].as_str().unwrap().to_string();
    assert!(r.starts_with("kms://kms.acme.example/resources/"));
    assert_eq!(res["resource"]["keyUris"], json!([k0]));

    // The matrix on a bound key.
    assert_eq!(w.req(bob, json!({"method": "retrieve", "uri": k0}))["key"]["jwk"]["k"], k0_secret, "authorized");
    assert_eq!(w.status(carol, json!({"method": "retrieve", "uri": k0})), 403, "stranger");
    assert_eq!(w.status(carol, json!({"method": "retrieve", "uri": r})), 403, "stranger, resource");
    let added =
        w.req(bob, json!({"method": "create", "uri": "/authorizations", "resourceUri": r, "userIds": ["carol"]}));
    assert_eq!(added["status"], 201);
    assert_eq!(w.status(carol, json!({"method": "retrieve", "uri": k0})), 200, "authorized by bob");
    let removed =
        w.req(bob, json!({"method": "delete", "uri": format!("{r}/authorizations?authId=carol%40acme.example")}));
    assert_eq!(removed["status"], 200);
    assert_eq!(removed["authorizations"][0]["authId"], "carol@acme.example");
    assert_eq!(w.status(carol, json!({"method": "retrieve", "uri": k0})), 403, "de-authorized");

    // Bind (over the batch transport), retried bind, resource keys with count.
    let bind = json!({"method": "update", "uri": k1, "resourceUri": r});
    let b =
        w.node.call(json!({"op": "kms_http_request", "url": w.kms.url, "ctx": alice, "request": bind, "batch": true}))
            ["body"]
            .clone();
    assert_eq!(b["status"], 200);
    assert_eq!(b["key"]["resourceUri"], r);
    assert_eq!(w.status(alice, bind.clone()), 200, "a retried bind succeeds");
    let other =
        w.req(alice, json!({"method": "create", "uri": "/resources"}))["resource"]["uri"].as_str().unwrap().to_string();
    assert_eq!(w.status(alice, json!({"method": "update", "uri": k2, "resourceUri": r})), 200);
    assert_eq!(w.status(alice, json!({"method": "update", "uri": k1, "resourceUri": other})), 409, "never rebound");
    let listed = w.req(bob, json!({"method": "retrieve", "uri": format!("{r}/keys"), "count": 2}));
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    let all = w.req(bob, json!({"method": "retrieve", "uri": format!("{r}/keys")}));
    assert_eq!(all["keys"].as_array().unwrap().len(), 3);
    assert_eq!(w.req(bob, json!({"method": "retrieve", "uri": r}))["resource"]["keyUris"].as_array().unwrap().len(), 3);
    let auths = w.req(alice, json!({"method": "retrieve", "uri": format!("{r}/authorizations")}));
    assert_eq!(auths["authorizations"].as_array().unwrap().len(), 2);
    let one =
        w.req(alice, json!({"method": "retrieve", "uri": format!("{r}/authorizations?authId=bob%40acme.example")}));
    assert_eq!(one["authorizations"].as_array().unwrap().len(), 1);

    // Bulk delete and delete by URI.
    let a = w.req(
        alice,
        json!({"method": "create", "uri": "/authorizations", "resourceUri": r, "authIds": ["dave", "erin"]}),
    );
    let dave_auth = a["authorizations"][0]["uri"].as_str().unwrap().to_string();
    assert_eq!(w.status(alice, json!({"method": "delete", "uri": dave_auth})), 200);
    assert_eq!(
        w.status(alice, json!({"method": "delete", "uri": "/authorizations", "resourceUri": r, "authIds": ["erin"]})),
        200
    );

    // A replayed message (same requestId, same bytes) is answered, not executed again.
    let created = w.node.call(json!({"op": "kms_http_request", "url": w.kms.url, "ctx": alice, "request": {"method": "create", "uri": "/keys", "count": 1}}));
    let replay =
        w.node.call(json!({"op": "kms_http_replay", "url": w.kms.url, "ctx": alice, "wrapped": created["wrapped"]}));
    assert_eq!(replay["body"]["keys"][0]["uri"], created["body"]["keys"][0]["uri"]);

    // Anonymous bearer: reads keys, authorizes nobody.
    let anon = w.req(alice, json!({"method": "create", "uri": "/authorizations", "resourceUri": r, "anonymous": 1}));
    assert_eq!(anon["status"], 201);
    let bearer = anon["authorizations"][0]["bearer"].as_str().unwrap().to_string();
    let (guest, st) = w.connect_token(&bearer, "guest");
    assert_eq!(st, 201);
    assert_eq!(w.req(guest, json!({"method": "retrieve", "uri": k0}))["key"]["jwk"]["k"], k0_secret);
    assert_eq!(
        w.status(
            guest,
            json!({"method": "create", "uri": "/authorizations", "resourceUri": r, "userIds": ["mallory"]})
        ),
        403
    );

    // Ping, delete the ephemeral key, then a signed reset that node-kms verifies.
    assert_eq!(w.status(alice, json!({"method": "update", "uri": "/ping"})), 200);
    let t = w.token("alice");
    let s = w.node.call(json!({"op": "kms_http_connect", "url": w.kms.url, "token": t, "clientId": "device-alice"}));
    let (ctx, kid) = (s["ctx"].as_u64().unwrap(), s["kid"].as_str().unwrap().to_string());
    assert!(kid.starts_with("kms://kms.acme.example/ecdhe/"));
    assert_eq!(w.status(ctx, json!({"method": "delete", "uri": kid})), 204);
    let after = w.req(ctx, json!({"method": "update", "uri": "/ping"}));
    assert_eq!(after["status"], 499);
    assert_eq!(after["reason"], "ephemeral key deleted");
    // Other sessions are untouched.
    assert_eq!(w.status(alice, json!({"method": "update", "uri": "/ping"})), 200);
}

#[test]
fn credentials_refused() {
    let mut w = World::new("");
    let expired = w.token_with(json!({"sub": "alice", "aud": AUD, "expiresIn": -120}));
    assert_eq!(w.connect_token(&expired, "d").1, 401, "expired token");
    let wrong_aud = w.token_with(json!({"sub": "alice", "aud": "https://core.acme.example"}));
    assert_eq!(w.connect_token(&wrong_aud, "d").1, 401, "wrong audience");
    let not_at = w.token_with(json!({"sub": "alice", "aud": AUD, "typ": "JWT"}));
    assert_eq!(w.connect_token(&not_at, "d").1, 401, "not an RFC 9068 access token");
    // A token from an issuer this KMS does not trust.
    let other = Idp::start();
    let mut args = json!({"op": "idp_token", "tokenEndpoint": other.token_endpoint, "sub": "alice", "aud": AUD});
    let foreign = w.node.call(args.take())["token"].as_str().unwrap().to_string();
    assert_eq!(w.connect_token(&foreign, "d").1, 401, "untrusted issuer");
    assert_eq!(w.connect_token("not-a-token", "d").1, 401, "garbage bearer");

    // Mid-session: an expired token on a live session is refused.
    let alice = w.connect("alice");
    let r = w.node.call(json!({"op": "kms_http_request", "url": w.kms.url, "ctx": alice, "token": expired, "request": {"method": "update", "uri": "/ping"}}));
    assert_eq!(r["body"]["status"], 401);
    // Another user's valid token on Alice's session is refused too.
    let bob_token = w.token("bob");
    let r = w.node.call(json!({"op": "kms_http_request", "url": w.kms.url, "ctx": alice, "token": bob_token, "request": {"method": "update", "uri": "/ping"}}));
    assert_eq!(r["body"]["status"], 401);
}

#[test]
fn transport_edges() {
    let w = World::new("");
    let http = reqwest::blocking::Client::new();
    let info: Value =
        serde_json::from_str(&http.get(format!("{}/kms/info", w.kms.url)).send().unwrap().text().unwrap()).unwrap();
    assert_eq!(info["uri"], "kms://kms.acme.example");
    assert_eq!(info["key"]["kty"], "RSA");
    assert!(info["key"]["kid"].is_string());
    assert!(info["key"]["x5c"][0].is_string());
    assert!(info["key"].get("d").is_none(), "never the private key");
    assert_eq!(http.get(format!("{}/healthz", w.kms.url)).send().unwrap().status(), 200);
    // Nothing in the KMS's data directory (and the CMK directory in it) holds a private key in clear.
    let mut dirs = vec![w._dir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
                "{} holds a clear private key",
                p.display()
            );
        }
    }

    let post = |ctype: &str, body: Vec<u8>| {
        http.post(format!("{}/kms/messages", w.kms.url)).header("content-type", ctype).body(body).send().unwrap()
    };
    assert_eq!(post("application/jose", vec![b'a'; 300_000]).status(), 413);
    // A declared oversize body is refused before any of it is read (so no race
    // with a client still sending): headers only, then read the answer.
    {
        use std::io::{Read, Write};
        let addr = w.kms.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "POST /kms/messages HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    assert_eq!(post("application/xml", b"<x/>".to_vec()).status(), 415);
    assert_eq!(post("application/json", b"{\"nope\":1}".to_vec()).status(), 400);
    assert_eq!(post("application/jose", vec![0xff, 0xfe]).status(), 400);
    // Unreadable protocol input is answered inside the protocol: a signed reset.
    let r = post("application/jose", b"garbage".to_vec());
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert_eq!(text.matches('.').count(), 2, "a JWS");
    let batch: Value =
        serde_json::from_str(&post("application/json", br#"{"kmsMessages":["x","y"]}"#.to_vec()).text().unwrap())
            .unwrap();
    assert_eq!(batch["kmsMessages"].as_array().unwrap().len(), 2);
}

/// The way back in a hostile review found with node-kms: carol, a member of
/// V, authorizes a resource of her own (and an anonymous link) on V; alice
/// removes carol and binds a fresh key. Removal takes what carol set up; the
/// colleague she added stays.
#[test]
fn removal_through_node_kms_leaves_no_way_back_in() {
    let mut w = World::new("");
    let alice = w.connect("alice");
    let carol = w.connect("carol");
    let bob = w.connect("bob");
    let keys = w.req(alice, json!({"method": "create", "uri": "/keys", "count": 2}));
    let k0 = keys["keys"][0]["uri"].as_str().unwrap().to_string();
    let k1 = keys["keys"][1]["uri"].as_str().unwrap().to_string();
    let v = w.req(alice, json!({"method": "create", "uri": "/resources", "userIds": ["carol"], "keyUris": [k0]}))
        ["resource"]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let m =
        w.req(carol, json!({"method": "create", "uri": "/resources"}))["resource"]["uri"].as_str().unwrap().to_string();
    let add = |w: &mut World, body: Value| w.req(carol, body)["status"].as_i64().unwrap();
    assert_eq!(
        add(&mut w, json!({"method": "create", "uri": "/authorizations", "resourceUri": v, "authIds": [m]})),
        201
    );
    let link = w.req(carol, json!({"method": "create", "uri": "/authorizations", "resourceUri": v, "anonymous": 1}));
    let bearer = link["authorizations"][0]["bearer"].as_str().unwrap().to_string();
    assert_eq!(
        add(&mut w, json!({"method": "create", "uri": "/authorizations", "resourceUri": v, "userIds": ["bob"]})),
        201
    );

    let removed =
        w.req(alice, json!({"method": "delete", "uri": format!("{v}/authorizations?authId=carol%40acme.example")}));
    assert_eq!(removed["status"], 200);
    assert_eq!(removed["authorizations"].as_array().unwrap().len(), 3, "carol, M and the link: {removed}");
    assert_eq!(w.status(alice, json!({"method": "update", "uri": k1, "resourceUri": v})), 200);

    assert_eq!(w.status(carol, json!({"method": "retrieve", "uri": k1})), 403, "not through M");
    let (_, status) = w.connect_token(&bearer, "link");
    assert_eq!(status, 401, "the link died with its authorization");
    assert_eq!(w.status(bob, json!({"method": "retrieve", "uri": k1})), 200, "the colleague stays");
    let why = w.req(alice, json!({"method": "retrieve", "uri": format!("{v}/explain?authId=carol%40acme.example")}));
    assert_eq!((why["status"].as_i64(), why["access"]["authorized"].as_bool()), (Some(200), Some(false)));
}

/// node-kms matches answers by requestId: a request the KMS can decrypt but
/// not read is answered with it.
#[test]
fn unreadable_requests_are_answered_with_their_request_id() {
    let mut w = World::new("");
    let alice = w.connect("alice");
    for request in [
        json!({"method": "frobnicate", "uri": "/keys"}),
        json!({"method": "create", "uri": "/keys", "count": "three"}),
        json!({"method": "retrieve", "uri": {"not": "a string"}}),
    ] {
        let r = w.node.call(json!({"op": "kms_http_request", "url": w.kms.url, "ctx": alice, "request": request}));
        assert_eq!(r["body"]["status"], 400, "{request}: {r}");
        assert_eq!(r["body"]["requestId"], r["requestId"], "{request}");
    }
    assert_eq!(w.status(alice, json!({"method": "update", "uri": "/ping"})), 200, "the session survives");
}
