//! The conformance suite of recorded scenarios, natively: every scenario of
//! `tests/scenarios.json` (events the core altered, replayed or moved, keys
//! bound elsewhere, KMS refusals, tampered files, search tokens) through the
//! same API the browser's wasm build exports. `tests/conformance.mjs` runs
//! the same file against the wasm build under Node (`scripts/wasm test`).
//!
//! The file is recorded, not generated on each run: sealing is randomized,
//! and both builds must answer the same bytes. To record it again (after a
//! deliberate format change): `CUSTOS_WRITE_SCENARIOS=1 cargo test -p web --test conformance`.

use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jose::OctKey;
use kms_protocol::message::KeyObject;
use serde_json::{json, Value};
use web::api::{self, FileDecryptor, FileEncryptor, Key, Timeline};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios.json")
}

const ORG: &str = "kms.acme.example";
const SPACE: &str = "3f6f0c1e-7a51-4c1b-9d3a-0c2b1e4d5f60";
const T0: i64 = 1_780_000_000_000;

fn key_object(id: &str, resource: &str) -> Value {
    let k = OctKey::generate(32, None).unwrap();
    let date = time::OffsetDateTime::from_unix_timestamp(T0 / 1000).unwrap();
    let obj = KeyObject {
        uri: format!("kms://{ORG}/keys/{id}").parse().unwrap(),
        jwk: k.to_jwk(),
        user_id: "alice@acme.example".into(),
        client_id: "laptop".into(),
        create_date: date,
        expiration_date: date + time::Duration::days(365),
        resource_uri: Some(format!("kms://{ORG}/resources/{resource}").parse().unwrap()),
        bind_date: Some(date),
    };
    serde_json::to_value(&obj).unwrap()
}

fn event(seq: i64, kind: &str, sender: &str, cid: &str, sealed: &str, key_uri: &str) -> Value {
    json!({
        "space_id": SPACE, "seq": seq, "id": format!("ev-{seq}"), "client_event_id": cid, "kind": kind,
        "sender": sender, "ciphertext": sealed, "key_uri": key_uri, "create_date": T0 + seq * 1000,
    })
}

fn record() -> Value {
    let resource = "9a1d2c3b-0000-4000-8000-00000000a11c";
    let k1 = key_object("0b5e1a2c-0000-4000-8000-0000000000c1", resource);
    let k2 = key_object("0b5e1a2c-0000-4000-8000-0000000000c2", "9a1d2c3b-0000-4000-8000-0000000e15e0");
    let key1 = Key::from_kms_json(&k1.to_string()).unwrap();
    let key2 = Key::from_kms_json(&k2.to_string()).unwrap();
    let space_resource = format!("kms://{ORG}/resources/{resource}");
    let (u1, u2) = (key1.uri(), key2.uri());
    let seal = |key: &Key, sender: &str, ts: i64, kind: &str, id: &str, parent: Option<&str>, text: &str| {
        api::seal_event(key, sender, ts, kind, id, parent, None, text).unwrap()
    };
    let hello = seal(&key1, "alice@acme.example", T0 + 1000, "message", "c-1", None, "Hello, Bob");
    let reply = seal(&key1, "bob@acme.example", T0 + 2000, "message", "c-2", Some("ev-1"), "Hi! See you at 10");
    let thumbs = seal(&key1, "bob@acme.example", T0 + 3000, "reaction", "c-3", None, "👍");
    let elsewhere = seal(&key2, "alice@acme.example", T0 + 4000, "message", "c-4", None, "Other space");
    let old = seal(&key1, "alice@acme.example", T0 - 3 * 86_400_000, "message", "c-5", None, "Late");
    let mut tampered = hello.clone();
    let at = tampered.rfind('.').unwrap() - 3; // inside the ciphertext segment
    let flipped = if &tampered[at..at + 1] == "A" { "B" } else { "A" };
    tampered.replace_range(at..at + 1, flipped);

    let mut reply_ev = event(2, "message", "bob@acme.example", "c-2", &reply, &u1);
    reply_ev["parent"] = json!("ev-1");
    let mut reparented = event(9, "message", "bob@acme.example", "c-2b", &reply, &u1);
    reparented["parent"] = json!("ev-7");
    let mut thumbs_ev = event(3, "reaction", "bob@acme.example", "c-3", &thumbs, &u1);
    thumbs_ev["target"] = Value::Null;
    let removed = json!({"space_id": SPACE, "seq": 12, "id": "ev-12", "kind": "member_removed",
        "sender": "alice@acme.example", "subject": "bob@acme.example", "create_date": T0 + 12_000});

    let unreadable = |contains: &str| json!({"type": "unreadable", "reasonContains": contains});
    let events = vec![
        json!({"name": "a message", "key": "k1", "event": event(1, "message", "alice@acme.example", "c-1", &hello, &u1),
               "expect": {"type": "text", "text": "Hello, Bob"}}),
        json!({"name": "a reply in a thread", "key": "k1", "event": reply_ev, "expect": {"type": "text", "text": "Hi! See you at 10"}}),
        json!({"name": "a reaction", "key": "k1", "event": thumbs_ev, "expect": {"type": "reaction", "emoji": "👍"}}),
        json!({"name": "the same event read again (a page reloaded)", "key": "k1",
               "event": event(1, "message", "alice@acme.example", "c-1", &hello, &u1), "expect": {"type": "text", "text": "Hello, Bob"}}),
        json!({"name": "a replay: the core posts alice's message again", "key": "k1",
               "event": event(4, "message", "alice@acme.example", "c-1", &hello, &u1), "expect": unreadable("a replay of event #1")}),
        json!({"name": "the core re-attributes a message", "key": "k1",
               "event": event(5, "message", "mallory@acme.example", "c-1", &hello, &u1), "expect": unreadable("the core says mallory@acme.example sent this")}),
        json!({"name": "the core presents a message as an edit", "key": "k1",
               "event": event(6, "edit", "alice@acme.example", "c-1", &hello, &u1), "expect": unreadable("another event than the sender sent")}),
        json!({"name": "the core moves a reply to another thread", "key": "k1", "event": reparented,
               "expect": unreadable("another event than the sender sent")}),
        json!({"name": "a ciphertext the core altered", "key": "k1",
               "event": event(7, "message", "alice@acme.example", "c-7", &tampered, &u1), "expect": unreadable("decryption failed")}),
        json!({"name": "a message of another space, under its key", "key": "k2",
               "event": event(8, "message", "alice@acme.example", "c-4", &elsewhere, &u2), "expect": unreadable("bound to another resource")}),
        json!({"name": "the event names another key than its ciphertext", "key": "k2",
               "event": event(10, "message", "alice@acme.example", "c-10", &hello, &u2), "expect": unreadable("bound to another resource")}),
        json!({"name": "a send time far from when the core stored it", "key": "k1",
               "event": event(11, "message", "alice@acme.example", "c-5", &old, &u1), "expect": unreadable("send time")}),
        json!({"name": "the KMS refuses the key (a removed member)", "key": null, "refusal": "not authorized for this resource",
               "event": event(13, "message", "alice@acme.example", "c-13", &hello, &u1), "expect": unreadable("not authorized for this resource")}),
        json!({"name": "an event without ciphertext", "key": null, "event": removed,
               "expect": {"type": "member_removed", "user": "bob@acme.example"}}),
    ];

    let text = "The quarterly launch plan is ready";
    let search = vec![
        json!({"key": "k1", "text": text, "tokens": api::text_tokens(&key1, text).unwrap()}),
        json!({"key": "k1", "query": "launch pl", "tokens": api::query_tokens(&key1, "launch pl").unwrap()}),
    ];

    // A file of three segments (4 KiB each, the smallest size; the last one
    // short), and the same cut at a segment boundary and with a bit flipped.
    let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut enc = FileEncryptor::new(4096).unwrap();
    let mut ct = enc.header();
    ct.extend(enc.seal(&plain[..4096], false).unwrap());
    ct.extend(enc.seal(&plain[4096..8192], false).unwrap());
    ct.extend(enc.seal(&plain[8192..], true).unwrap());
    let cut = ct[..ct.len() - (10_000 - 8192 + 16)].to_vec();
    let mut flipped = ct.clone();
    flipped[filecrypt::HEADER_LEN + 4096 + 16 + 100] ^= 1;
    let file = |name: &str, c: &[u8], expect: Value| {
        json!({"name": name, "keyB64": enc.key_b64(), "plaintext": STANDARD.encode(&plain), "ciphertext": STANDARD.encode(c), "expect": expect})
    };
    let files = vec![
        file("a whole file", &ct, json!("ok")),
        file("a file cut at a segment boundary (its new last segment was not sealed as last)", &cut, json!({"errorContains": "segment 1 failed authentication"})),
        file("a file with one bit flipped", &flipped, json!({"errorContains": "segment 1 failed authentication"})),
    ];
    assert!(URL_SAFE_NO_PAD.decode(enc.key_b64()).is_ok());

    // The KMS's side, recorded: a reset it pushed for a session (fresh for
    // five minutes after `signedAtMs`), the same from another key under the
    // same kid, and a handshake answer signed by that other key.
    let kms = kms_protocol::ServerKey::new(jose::RsaPrivateKey::generate(2048, Some("static-1".into())).unwrap(), ORG).unwrap();
    let other = kms_protocol::ServerKey::new(jose::RsaPrivateKey::generate(2048, Some("static-1".into())).unwrap(), ORG).unwrap();
    let session = kms_protocol::KmsUri::parse("/ecdhe/5b1f0c2a-0000-4000-8000-00000000000a", ORG).unwrap();
    let signed_at = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let forged_answer = {
        let mut ch = api::KmsChannel::new(ORG, &serde_json::to_string(&other.public_key().to_jwk()).unwrap()).unwrap();
        let wrapped = ch.begin_handshake("token", "browser-1").unwrap();
        let kms_protocol::Incoming::Handshake(jwe) = kms_protocol::classify(&wrapped).unwrap() else { unreachable!() };
        let opened = other.open_handshake(&jwe).unwrap();
        let grant = kms_protocol::channel::HandshakeGrant {
            user_id: "alice@acme.example".into(),
            client_id: "browser-1".into(),
            expires: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        other.accept_handshake(&opened, &grant, |_| Ok(session.clone())).unwrap().response
    };
    let kms_part = json!({
        "domain": ORG,
        "pinnedKey": kms.public_key().to_jwk(),
        "session": session.to_string(),
        "signedAtMs": signed_at,
        "pushedReset": kms.push_reset(&session, "device disabled").unwrap(),
        "forgedReset": other.push_reset(&session, "forged").unwrap(),
        "forgedHandshakeAnswer": forged_answer,
    });

    json!({
        "about": "Recorded scenarios for the SDK engine, native and wasm (crates/web/tests/conformance.rs records them).",
        "kms": kms_part,
        "spaceResource": space_resource,
        "keys": {"k1": k1, "k2": k2},
        "events": events,
        "search": search,
        "files": files,
    })
}

/// Decrypts a recorded file as the browser streams it: header, then one
/// sealed segment at a time, the last one marked.
fn decrypt_file(key_b64: &str, ct: &[u8]) -> Result<Vec<u8>, String> {
    let header_len = filecrypt::HEADER_LEN;
    if ct.len() < header_len {
        return Err("truncated header".into());
    }
    let mut dec = FileDecryptor::new(key_b64, &ct[..header_len])?;
    let seg = dec.sealed_segment_len();
    let body = &ct[header_len..];
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let end = (at + seg).min(body.len());
        let last = end == body.len();
        out.extend(dec.open(&body[at..end], last)?);
        at = end;
        if last {
            break;
        }
    }
    dec.finish()?;
    Ok(out)
}

fn check(s: &Value) {
    let k = &s["kms"];
    let at = k["signedAtMs"].as_i64().unwrap();
    let session = k["session"].as_str().unwrap();
    let mut ch = api::KmsChannel::new(k["domain"].as_str().unwrap(), &k["pinnedKey"].to_string()).unwrap();
    assert_eq!(ch.pushed_reset(k["pushedReset"].as_str().unwrap(), session, at + 1000).unwrap(), "device disabled");
    assert!(ch.pushed_reset(k["pushedReset"].as_str().unwrap(), session, at + 10 * 60 * 1000).is_err(), "stale");
    assert!(ch.pushed_reset(k["forgedReset"].as_str().unwrap(), session, at + 1000).is_err(), "forged");
    ch.begin_handshake("token", "browser-1").unwrap();
    let e = ch.finish_handshake(k["forgedHandshakeAnswer"].as_str().unwrap(), at + 1000).unwrap_err();
    assert!(e.contains("signature"), "{e}");

    let space_resource = s["spaceResource"].as_str().unwrap();
    let key = |name: &Value| name.as_str().map(|n| Key::from_kms_json(&s["keys"][n].to_string()).unwrap());
    let mut timeline = Timeline::new();
    for case in s["events"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let k = key(&case["key"]);
        let got: Value = serde_json::from_str(
            &timeline.open(k.as_ref(), case["refusal"].as_str(), space_resource, &case["event"].to_string()).unwrap(),
        )
        .unwrap();
        let want = &case["expect"];
        let content = &got["content"];
        if let Some(part) = want["reasonContains"].as_str() {
            assert_eq!(content["type"], "unreadable", "{name}: {got}");
            assert!(content["reason"].as_str().unwrap().contains(part), "{name}: {got}");
        } else {
            assert_eq!(content, want, "{name}");
        }
        assert_eq!(got["seq"], case["event"]["seq"], "{name}");
    }
    for case in s["search"].as_array().unwrap() {
        let k = key(&case["key"]).unwrap();
        let got = match (case["text"].as_str(), case["query"].as_str()) {
            (Some(t), _) => api::text_tokens(&k, t).unwrap(),
            (_, Some(q)) => api::query_tokens(&k, q).unwrap(),
            _ => panic!("a search case needs text or query"),
        };
        let want: Vec<String> = serde_json::from_value(case["tokens"].clone()).unwrap();
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }
    for case in s["files"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ct = STANDARD.decode(case["ciphertext"].as_str().unwrap()).unwrap();
        let got = decrypt_file(case["keyB64"].as_str().unwrap(), &ct);
        match case["expect"]["errorContains"].as_str() {
            None => assert_eq!(got.unwrap(), STANDARD.decode(case["plaintext"].as_str().unwrap()).unwrap(), "{name}"),
            Some(part) => {
                let e = got.expect_err(name);
                assert!(e.to_lowercase().contains(part), "{name}: {e}");
            }
        }
    }
}

#[test]
fn recorded_scenarios_hold_natively() {
    if std::env::var_os("CUSTOS_WRITE_SCENARIOS").is_some() {
        let s = record();
        check(&s);
        std::fs::write(path(), serde_json::to_string_pretty(&s).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(path()).expect("tests/scenarios.json is recorded (see this file's doc comment)");
    check(&serde_json::from_str(&text).unwrap());
}

#[test]
fn a_fresh_seal_opens_and_bad_input_is_refused() {
    let resource = "9a1d2c3b-0000-4000-8000-00000000a11c";
    let k1 = Key::from_kms_json(&key_object("0b5e1a2c-0000-4000-8000-0000000000c1", resource).to_string()).unwrap();
    let s = json!({"spaceResource": format!("kms://{ORG}/resources/{resource}")});
    let sealed = api::seal_event(&k1, "alice@acme.example", T0, "message", "fresh", None, None, "new").unwrap();
    let ev = event(1, "message", "alice@acme.example", "fresh", &sealed, &k1.uri());
    let got = Timeline::new().open(Some(&k1), None, s["spaceResource"].as_str().unwrap(), &ev.to_string()).unwrap();
    assert!(got.contains(r#""text":"new""#), "{got}");

    // A space's title: sealed in the browser, opened against its resource only.
    let res = s["spaceResource"].as_str().unwrap();
    let title = api::seal_space_title(&k1, res, "alice@acme.example", T0, "Launch").unwrap();
    assert_eq!(api::open_space_title(&k1, &title, res).unwrap(), "Launch");
    assert!(api::open_space_title(&k1, &title, "kms://kms.acme.example/resources/other").is_err());
    assert!(api::seal_space_title(&k1, "kms://kms.acme.example/resources/other", "a", T0, "x").is_err());
    assert!(api::seal_space_title(&k1, res, "a", T0, "").is_err());

    // Refusals, each a clear error that quotes nothing it was given.
    let e = Key::from_kms_json(r#"{"uri": "kms://x/keys/1", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}"#).unwrap_err();
    assert!(e.contains("key object is not valid") && !e.contains("c2VjcmV0"), "{e}");
    let e = Timeline::new().open(None, None, "not a uri", &ev.to_string()).unwrap_err();
    assert!(e.contains("kms:// URI"), "{e}");
    let e = Timeline::new().open(None, None, "kms://a/resources/b", "{").unwrap_err();
    assert!(e.contains("event is not valid"), "{e}");
    let e = Timeline::new().open(None, None, "kms://a/resources/b", &" ".repeat(api::MAX_JSON + 1)).unwrap_err();
    assert!(e.contains("at most"), "{e}");
    let e = api::seal_event(&k1, "a", T0, "member_added", "x", None, None, "t").unwrap_err();
    assert!(e.contains("cannot seal a member_added"), "{e}");
    let e = api::seal_event(&k1, "a", T0, "message", "x", None, None, &"x".repeat(client::MAX_TEXT + 1)).unwrap_err();
    assert!(e.contains("at most"), "{e}");
    assert!(FileDecryptor::new("!!", &[0u8; 32]).is_err());
    assert!(FileEncryptor::new(3).is_err(), "a segment size under the minimum");
}
