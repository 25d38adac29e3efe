//! Refusals beyond `api.rs`: oversize and misdirected chunks, other people's
//! uploads, early downloads, malformed and over-specified JSON, bad query
//! strings, and ids that try to climb out of the blob store. Every refusal is
//! a JSON error that stores nothing and echoes nothing.

mod common;

use common::*;
use futures_util::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const LIMITS: &str = "[limits]\nmax_chunk_bytes = 4096\nmax_file_bytes = 100000\nmax_page = 50\n";

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("a JSON error body, got {body}"))
}

fn blob_files(core: &Core) -> Vec<std::path::PathBuf> {
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut out = Vec::new();
    walk(&core.dir.path().join("blobs"), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_and_files() {
    let core = start_core(LIMITS).await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let mallory = User::new(&core, "mallory").await;
    let (k, ku) = key();
    let space = alice.space().await;
    alice.add(&space, &bob.id).await;
    let (st, f) = alice
        .post(
            &format!("/v1/spaces/{space}/files"),
            json!({"size": 10_000, "chunk_size": 4096, "meta": sealed(&k, &ku, "n")}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    let stored = |u: &User| {
        let (u, fid) = (u.on(&core), fid.clone());
        async move {
            let (st, c) = u.get(&format!("/v1/files/{fid}/chunks")).await;
            assert_eq!(st, StatusCode::OK, "{c}");
            c["stored"].clone()
        }
    };

    // Oversize chunk bodies: one byte over the chunk size, over max_chunk_bytes, and far over the body limit.
    let (st, b) = alice.put_chunk(&fid, 0, vec![7; 4097]).await;
    assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_chunk_size"));
    let (st, _) = alice.put_chunk(&fid, 0, vec![7; 4096 * 3]).await;
    assert!(st == StatusCode::BAD_REQUEST || st == StatusCode::PAYLOAD_TOO_LARGE, "{st}");
    let (st, _) = alice.put_chunk(&fid, 0, vec![7; 4096 + 70 * 1024]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // The last chunk must be exactly the remainder.
    let (st, b) = alice.put_chunk(&fid, 2, vec![7; 4096]).await;
    assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_chunk_size"));
    // Indexes out of range, negative, absurd, or not numbers at all.
    for idx in ["3", "-1", "9223372036854775807", "-9223372036854775808"] {
        let (st, b) = alice.raw(Method::PUT, &format!("/v1/files/{fid}/chunks/{idx}"), vec![7; 4096]).await;
        assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_chunk_index"), "{idx}");
    }
    for idx in ["abc", "1e3", "0x1", "99999999999999999999", "1%2F2"] {
        let (st, b) = alice.raw(Method::PUT, &format!("/v1/files/{fid}/chunks/{idx}"), vec![7; 4096]).await;
        assert!(st.is_client_error(), "{idx}: {st}");
        assert!(b["error"].is_string(), "{idx}: a JSON error, got {b}");
        assert!(!b.to_string().contains(idx), "{idx}: the error does not echo the input: {b}");
    }
    assert_eq!(stored(&alice).await, json!([]), "nothing stored");
    assert!(blob_files(&core).is_empty(), "no blob written: {:?}", blob_files(&core));

    // Someone else's file: a member may not add chunks or complete it; a non-member does not see it.
    let (st, b) = bob.put_chunk(&fid, 0, vec![7; 4096]).await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "not_uploader"));
    let (st, b) = mallory.put_chunk(&fid, 0, vec![7; 4096]).await;
    assert_eq!((st, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(stored(&alice).await, json!([]));
    assert!(blob_files(&core).is_empty());

    assert_eq!(alice.put_chunk(&fid, 0, vec![1; 4096]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(alice.put_chunk(&fid, 1, vec![2; 4096]).await.0, StatusCode::NO_CONTENT);
    // Downloads before completion: 409 for members, 404 for others.
    for (u, want) in [(&alice, StatusCode::CONFLICT), (&bob, StatusCode::CONFLICT), (&mallory, StatusCode::NOT_FOUND)] {
        let (st, b) = u.get(&format!("/v1/files/{fid}/chunks/0")).await;
        assert_eq!(st, want, "{}: {b}", u.id);
        assert!(b["error"].is_string());
    }
    assert_eq!(alice.put_chunk(&fid, 2, vec![3; 10_000 - 8192]).await.0, StatusCode::NO_CONTENT);
    // Completing someone else's upload.
    let (st, b) = bob.post(&format!("/v1/files/{fid}/complete"), json!({})).await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "not_uploader"));
    let (st, b) = mallory.post(&format!("/v1/files/{fid}/complete"), json!({})).await;
    assert_eq!((st, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, f) = alice.get(&format!("/v1/files/{fid}")).await;
    assert_eq!(f["ready"], false, "still not complete");
    let (st, ready) = alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    // Completing twice gives the same event; no chunk can be replaced afterwards.
    assert_eq!(alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await.1["seq"], ready["seq"]);
    let (st, b) = alice.put_chunk(&fid, 0, vec![9; 4096]).await;
    assert_eq!((st, code(&b)), (StatusCode::CONFLICT, "file_complete"));
    let r = bob.http.get(format!("{}/v1/files/{fid}/chunks/0", core.url)).bearer_auth(&bob.token).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), vec![1; 4096], "the chunk as first stored");
    let (st, b) = bob.get(&format!("/v1/files/{fid}/chunks/3")).await;
    assert_eq!((st, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, b) = bob.get(&format!("/v1/files/{fid}/chunks/-1")).await;
    assert_eq!((st, code(&b)), (StatusCode::NOT_FOUND, "not_found"));

    // File records that make no sense.
    let files = format!("/v1/spaces/{space}/files");
    for (body, want) in [
        (json!({"size": -1, "chunk_size": 4096, "meta": sealed(&k, &ku, "n")}), StatusCode::BAD_REQUEST),
        (json!({"size": 100_001, "chunk_size": 4096, "meta": sealed(&k, &ku, "n")}), StatusCode::PAYLOAD_TOO_LARGE),
        (json!({"size": 10, "chunk_size": 0, "meta": sealed(&k, &ku, "n")}), StatusCode::BAD_REQUEST),
        (json!({"size": 10, "chunk_size": -5, "meta": sealed(&k, &ku, "n")}), StatusCode::BAD_REQUEST),
        (json!({"size": 10, "chunk_size": 4097, "meta": sealed(&k, &ku, "n")}), StatusCode::BAD_REQUEST),
        (json!({"size": "10", "chunk_size": 4096, "meta": sealed(&k, &ku, "n")}), StatusCode::BAD_REQUEST),
        (
            json!({"size": 10, "chunk_size": 4096, "meta": {"ciphertext": "plain file name.txt", "key_uri": ku}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"size": 10, "chunk_size": 4096, "meta": sealed(&k, &ku, "n"), "uploader": "bob@acme.example"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"size": 10, "chunk_size": 4096, "meta": sealed(&k, &ku, "n"), "ready": true}), StatusCode::BAD_REQUEST),
    ] {
        let (st, b) = alice.post(&files, body.clone()).await;
        assert_eq!(st, want, "{body}: {b}");
        assert!(b["error"].is_string(), "{b}");
    }
    // An empty file has no chunks and completes at once.
    let (st, f0) = alice.post(&files, json!({"size": 0, "chunk_size": 4096, "meta": sealed(&k, &ku, "empty")})).await;
    assert_eq!(st, StatusCode::CREATED, "{f0}");
    let f0 = f0["id"].as_str().unwrap();
    assert_eq!(alice.put_chunk(f0, 0, vec![]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(alice.post(&format!("/v1/files/{f0}/complete"), json!({})).await.0, StatusCode::OK);
    assert_eq!(alice.get(&format!("/v1/files/{f0}/chunks/0")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_and_queries() {
    let core = start_core(LIMITS).await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let (k, ku) = key();
    let space = alice.space().await;
    alice.add(&space, &bob.id).await;
    let ev = format!("/v1/spaces/{space}/events");
    let m = alice.say(&space, &k, &ku, "hello").await;
    let before = alice.events(&space).await.len();

    // Malformed JSON everywhere a body is read: 400 bad_json, echoing nothing.
    let leak = "SECRET-TEXT-42";
    for (method, path) in [
        (Method::POST, "/v1/spaces".to_string()),
        (Method::POST, ev.clone()),
        (Method::POST, format!("/v1/spaces/{space}/members")),
        (Method::PUT, format!("/v1/spaces/{space}/read-marker")),
        (Method::POST, format!("/v1/spaces/{space}/files")),
    ] {
        for body in [
            format!("{{\"kind\": \"message\", \"{leak}"),
            String::new(),
            "null".into(),
            "[]".into(),
            format!("\"{leak}\""),
            format!("{{\"seq\": 1}} {leak}"),
            format!("{{\"kind\":\"message\",\"kind\":\"edit\",\"x\":\"{leak}\"}}"),
            "\u{feff}{}".into(),
        ] {
            let (st, b) = alice.raw(method.clone(), &path, body.clone()).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{method} {path} {body:?}: {b}");
            assert_eq!(code(&b), "bad_json", "{method} {path} {body:?}");
            assert!(!b.to_string().contains(leak), "never echoed: {b}");
        }
    }

    // Unknown fields: the server decides who sent what and where it goes.
    let spoofs = [
        json!({"kind": "message", "sender": "bob@acme.example", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "seq": 1, "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "id": "00000000-0000-0000-0000-000000000000", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "space_id": space, "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "create_date": 0, "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "subject": "bob@acme.example", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "meta": "{}", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "sealed": {"ciphertext": sealed(&k, &ku, "x")["ciphertext"], "key_uri": ku, "alg": "none"}}),
        json!({"kind": "MESSAGE", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "sealed": sealed(&k, &ku, "x"), "client_event_id": 5}),
    ];
    for body in spoofs {
        let (st, b) = bob.post(&ev, body.clone()).await;
        assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_json"), "{body}");
    }
    for (path, body) in [
        ("/v1/spaces".to_string(), json!({"resource_uri": resource(), "creator": "bob@acme.example"})),
        ("/v1/spaces".to_string(), json!({"resource_uri": resource(), "id": "my-own-id"})),
        (
            format!("/v1/spaces/{space}/members"),
            json!({"user_id": "carol@acme.example", "added_by": "bob@acme.example"}),
        ),
        (format!("/v1/spaces/{space}/members"), json!({"user_id": "carol@acme.example", "role": "owner"})),
    ] {
        let (st, b) = alice.post(&path, body.clone()).await;
        assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_json"), "{body}");
    }
    let (st, b) = bob
        .req(
            Method::PUT,
            &format!("/v1/spaces/{space}/read-marker"),
            Some(json!({"seq": 1, "user_id": "alice@acme.example"})),
        )
        .await;
    assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_json"), "read markers take no other fields");
    for seq in [json!(-1), json!(1.5), json!("2"), json!(null)] {
        let (st, b) = bob.req(Method::PUT, &format!("/v1/spaces/{space}/read-marker"), Some(json!({"seq": seq}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{seq}: {b}");
    }
    // client_event_id shapes.
    for cid in ["".to_string(), "x".repeat(129), "a\nb".into(), "\u{0}".into()] {
        let (st, b) =
            bob.post(&ev, json!({"kind": "message", "client_event_id": cid, "sealed": sealed(&k, &ku, "x")})).await;
        assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_client_event_id"), "{cid:?}");
    }
    // Bodies over the event limit are refused before parsing.
    let (st, b) =
        bob.raw(Method::POST, &ev, format!("{{\"kind\":\"message\",\"pad\":\"{}\"}}", "x".repeat(70_000))).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let after = alice.events(&space).await;
    assert_eq!(after.len(), before, "nothing stored");
    assert_eq!(after.last().unwrap()["id"], m["id"]);

    // Queries.
    for _ in 0..60 {
        alice.say(&space, &k, &ku, "filler").await;
    }
    let q = |s: &str| format!("/v1/spaces/{space}/events?{s}");
    let (st, b) = alice.get(&q("after=1&before=5")).await;
    assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_range"));
    let n = |b: &Value| b["events"].as_array().unwrap().len();
    // Limits are clamped into 1..=max_page.
    for (lim, want) in [
        ("0", 1),
        ("-1", 1),
        ("-9223372036854775808", 1),
        ("1", 1),
        ("7", 7),
        ("50", 50),
        ("51", 50),
        ("4294967295", 50),
        ("4294967296", 50),
        ("9223372036854775807", 50),
    ] {
        let (st, b) = alice.get(&q(&format!("after=0&limit={lim}"))).await;
        assert_eq!(st, StatusCode::OK, "limit={lim}: {b}");
        assert_eq!(n(&b), want, "limit={lim}");
        let (st, b) = alice.get(&q(&format!("before=1000&limit={lim}"))).await;
        assert_eq!((st, n(&b)), (StatusCode::OK, want), "history limit={lim}");
    }
    let (_, b) = alice.get(&q("")).await;
    assert_eq!(n(&b), 50, "the default page is clamped too");
    // Negative or past-the-end cursors are fine: empty or everything.
    assert_eq!(n(&alice.get(&q("after=-5&limit=3")).await.1), 3);
    assert_eq!(n(&alice.get(&q("after=100000")).await.1), 0);
    assert_eq!(n(&alice.get(&q("before=-5")).await.1), 0);
    // Garbage in the query: a JSON 400 that does not echo it.
    for bad in ["limit=abc", "after=1.5", "before=x", "after=99999999999999999999", "limit=1e3", "after=%FF"] {
        let (st, b) = alice.get(&q(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b["error"].is_string(), "{bad}: a JSON error, got {b}");
        let v = bad.split('=').nth(1).unwrap();
        assert!(!b["message"].as_str().unwrap().contains(v), "{bad}: not echoed: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_climb_out() {
    let core = start_core(LIMITS).await;
    let alice = User::new(&core, "alice").await;
    let (k, ku) = key();
    let space = alice.space().await;
    let (_, f) = alice
        .post(&format!("/v1/spaces/{space}/files"), json!({"size": 10, "chunk_size": 10, "meta": sealed(&k, &ku, "n")}))
        .await;
    let fid = f["id"].as_str().unwrap().to_string();
    // A file outside the blob store that a traversal would reach.
    let outside = core.dir.path().join("target-file");
    std::fs::write(&outside, b"outside").unwrap();

    let evil = [
        "..",
        "%2E%2E",
        "..%2F..%2Ftarget-file",
        "..%2Ftarget-file",
        "%2E%2E%2F%2E%2E%2Ftarget-file",
        "..%5C..%5Ctarget-file",
        "%2Fetc%2Fpasswd",
        "files%2F..%2F..%2Ftarget-file",
        "a%00b",
        "%C3%A9t%C3%A9",
        &"a".repeat(65),
        &format!("{fid}%2F..%2F..%2F..%2Ftarget-file"),
        &format!("{space}%2F..%2F{space}"),
    ];
    for id in evil {
        for (method, path, body) in [
            (Method::GET, format!("/v1/spaces/{id}"), None),
            (Method::GET, format!("/v1/spaces/{id}/events"), None),
            (
                Method::POST,
                format!("/v1/spaces/{id}/events"),
                Some(json!({"kind": "message", "sealed": sealed(&k, &ku, "x")})),
            ),
            (Method::POST, format!("/v1/spaces/{id}/members"), Some(json!({"user_id": "bob@acme.example"}))),
            (
                Method::POST,
                format!("/v1/spaces/{id}/files"),
                Some(json!({"size": 10, "chunk_size": 10, "meta": sealed(&k, &ku, "n")})),
            ),
            (Method::GET, format!("/v1/files/{id}"), None),
            (Method::GET, format!("/v1/files/{id}/chunks"), None),
            (Method::GET, format!("/v1/files/{id}/chunks/0"), None),
            (Method::POST, format!("/v1/files/{id}/complete"), Some(json!({}))),
            (Method::DELETE, format!("/v1/spaces/{space}/members/{id}"), None),
        ] {
            let (st, b) = alice.req(method.clone(), &path, body).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {b}");
        }
        let (st, b) = alice.raw(Method::PUT, &format!("/v1/files/{id}/chunks/0"), vec![b'X'; 10]).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "PUT chunk {id}: {b}");
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside", "nothing outside the blob store was touched");
    assert!(blob_files(&core).is_empty());
    // The real file still works.
    assert_eq!(alice.put_chunk(&fid, 0, vec![b'X'; 10]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(blob_files(&core).len(), 1);
    assert!(blob_files(&core)[0].starts_with(core.dir.path().join("blobs")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames() {
    let core = start_core(LIMITS).await;
    let alice = User::new(&core, "alice").await;
    let (k, ku) = key();
    let space = alice.space().await;

    // No hello, a hello without a token, a first frame that is not a hello.
    for first in [
        json!({"type": "ping"}),
        json!({"type": "hello"}),
        json!({"type": "hello", "token": ""}),
        json!({"type": "kms", "id": "1", "domain": KMS, "message": "x"}),
        json!("hello"),
    ] {
        let mut ws = Ws::open(&core.url).await;
        ws.send(first.clone()).await;
        let f = ws.next().await;
        assert_eq!(f["type"], "error", "{first}: {f}");
    }
    // A hello whose `since` names spaces the user is not in, or bad sequence numbers: ignored, not leaked.
    let other = User::new(&core, "other").await;
    let hidden = other.space().await;
    other.say(&hidden, &k, &ku, "not for alice").await;
    let mut ws = Ws::connect(&core.url, &alice.token, json!({hidden.clone(): 0, space.clone(): -100, "../x": 5})).await;
    let e = ws.event().await;
    assert_eq!(e["space_id"], space, "her own space from the start: {e}");
    ws.quiet(300).await;
    // Garbage after the hello gets an error frame; the socket goes on.
    for junk in
        [json!({"type": "hello", "token": alice.token}), json!({"type": "nope"}), json!({"type": "kms"}), json!([1, 2])]
    {
        ws.send(junk.clone()).await;
        assert_eq!(ws.next().await["type"], "error", "{junk}");
    }
    ws.tx.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");
    alice.say(&space, &k, &ku, "still here").await;
    assert_eq!(ws.event().await["kind"], "message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_page_limit_is_refused_or_harmless() {
    let idp = std::sync::Arc::new(testkit::Idp::start());
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[identity]\naudience = \"{AUD}\"\n[[identity.issuers]]\nissuer = \"{}\"\norg_domain = \"{ORG}\"\n[[orgs]]\ndomain = \"{ORG}\"\nkms_uri = \"kms://{KMS}\"\n[limits]\nmax_page = 0\n",
        dir.path().display(),
        idp.issuer
    );
    let Ok(cfg) = custos_core::config::Config::parse(&text, dir.path()) else { return }; // refused: fine
    let running = custos_core::server::start(cfg).await.unwrap();
    let url = format!("http://{}", running.addr);
    let token = idp.token(&[("sub", "alice"), ("aud", AUD)]).await;
    let alice = User { http: reqwest::Client::new(), url, token, id: format!("alice@{ORG}") };
    let space = alice.space().await;
    // Not a panic in the handler (a dropped connection): a page.
    let (st, b) = alice.get(&format!("/v1/spaces/{space}/events?after=0")).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["events"].as_array().unwrap().len(), 1);
    running.task.abort();
}
