//! The provider learns nothing: after a realistic workload through the HTTP
//! and WebSocket API, no plaintext and no content key appears anywhere the
//! core put anything: any row of any table, the raw SQLite files (main, WAL,
//! shared memory), the file blobs, or the core's own logs at TRACE level.
//!
//! Each secret is searched as raw bytes, base64url and standard base64 (at
//! the three byte alignments a substring can have inside a larger encoded
//! value) and hex (lower and upper case). The same scan is then shown to find
//! deliberately planted leaks of each kind, so that a clean result means
//! something.
//!
//! This file holds ONE test: it installs a global tracing subscriber.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

// ------------------------------------------------------------------ logs

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

/// Everything logged in this process, at every level, from now on.
fn capture_logs() -> LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = LogBuf(Arc::default());
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init(); // also bridges the `log` crate
        buf
    })
    .clone()
}

// ------------------------------------------------------------------ secrets

fn random_text(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut r).unwrap();
    r.iter().map(|b| A[*b as usize % A.len()] as char).collect()
}

/// A plaintext nobody could produce by accident.
fn secret(tag: &str) -> String {
    format!("{tag}-{}", random_text(28))
}

/// A new secret, recorded under `name`.
fn named(plain: &mut Vec<(String, String)>, name: &str) -> String {
    let s = secret(name);
    plain.push((name.to_string(), s.clone()));
    s
}

/// A thing that must not leak, with every encoding to look for.
struct Needle {
    name: String,
    forms: Vec<(String, Vec<u8>)>,
}

impl Needle {
    fn new(name: impl Into<String>, bytes: &[u8]) -> Needle {
        let mut forms: Vec<(String, Vec<u8>)> = vec![("raw".into(), bytes.to_vec())];
        // base64 of a substring depends on where it starts modulo 3: one of
        // these three is a whole-group run inside any longer encoding.
        for off in 0..3 {
            let rest = &bytes[off.min(bytes.len())..];
            let whole = &rest[..rest.len() / 3 * 3];
            if whole.len() >= 6 {
                forms.push((format!("base64url@{off}"), URL_SAFE_NO_PAD.encode(whole).into_bytes()));
                forms.push((format!("base64@{off}"), STANDARD_NO_PAD.encode(whole).into_bytes()));
            }
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(("hex".into(), hex.clone().into_bytes()));
        forms.push(("HEX".into(), hex.to_uppercase().into_bytes()));
        forms.retain(|(_, f)| f.len() >= 8);
        let mut seen = std::collections::HashSet::new();
        forms.retain(|(_, f)| seen.insert(f.clone()));
        Needle { name: name.into(), forms }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    needle: String,
    form: String,
    place: String,
}

/// Every occurrence of every needle form in every haystack (one hit per needle, form and place).
fn scan(haystacks: &[(String, Vec<u8>)], needles: &[Needle]) -> Vec<Hit> {
    // Index the forms by their first 8 bytes: one pass over each haystack.
    let mut index: HashMap<[u8; 8], Vec<(usize, usize)>> = HashMap::new();
    for (n, needle) in needles.iter().enumerate() {
        for (f, (_, form)) in needle.forms.iter().enumerate() {
            index.entry(form[..8].try_into().unwrap()).or_default().push((n, f));
        }
    }
    let mut hits = Vec::new();
    for (place, hay) in haystacks {
        let mut found = std::collections::HashSet::new();
        for i in 0..hay.len().saturating_sub(7) {
            let Some(cands) = index.get(<&[u8; 8]>::try_from(&hay[i..i + 8]).unwrap()) else { continue };
            for &(n, f) in cands {
                let form = &needles[n].forms[f].1;
                if hay[i..].starts_with(form) && found.insert((n, f)) {
                    hits.push(Hit {
                        needle: needles[n].name.clone(),
                        form: needles[n].forms[f].0.clone(),
                        place: place.clone(),
                    });
                }
            }
        }
    }
    hits
}

// ------------------------------------------------------------------ what the provider holds

/// Every value of every column of every row of every table, as bytes.
async fn table_contents(db: &Path) -> Vec<(String, Vec<u8>)> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let mut out = Vec::new();
    for t in &tables {
        let cols: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT name FROM pragma_table_info('{t}')")))
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        for c in &cols {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT CAST(\"{c}\" AS BLOB) FROM \"{t}\"")))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            for (i, r) in rows.iter().enumerate() {
                if let Some(v) = r.get::<Option<Vec<u8>>, _>(0) {
                    out.push((format!("table {t}.{c} row {i}"), v));
                }
            }
        }
    }
    out
}

fn files_under(dir: &Path, label: &str, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, label, out);
        } else {
            out.push((format!("{label} {}", p.display()), std::fs::read(&p).unwrap()));
        }
    }
}

struct Holdings {
    rows: Vec<(String, Vec<u8>)>,
    raw_db: Vec<(String, Vec<u8>)>,
    blobs: Vec<(String, Vec<u8>)>,
    logs: Vec<(String, Vec<u8>)>,
}

impl Holdings {
    async fn take(data_dir: &Path, logs: &LogBuf) -> Holdings {
        let rows = table_contents(&data_dir.join("core.db")).await;
        let mut raw_db = Vec::new();
        for e in std::fs::read_dir(data_dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                raw_db.push((format!("file {}", p.display()), std::fs::read(&p).unwrap()));
            }
        }
        let mut blobs = Vec::new();
        files_under(&data_dir.join("blobs"), "blob", &mut blobs);
        let logs = vec![("logs".to_string(), logs.0.lock().unwrap().clone())];
        Holdings { rows, raw_db, blobs, logs }
    }

    fn all(&self) -> Vec<(String, Vec<u8>)> {
        [&self.rows, &self.raw_db, &self.blobs, &self.logs].into_iter().flatten().cloned().collect()
    }
}

// ------------------------------------------------------------------ client-side file encryption

fn encrypt_chunk(file_key: &[u8; 32], index: u32, plain: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, file_key).unwrap());
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&index.to_be_bytes());
    let mut buf = plain.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf).unwrap();
    buf
}

fn decrypt_chunk(file_key: &[u8; 32], index: u32, cipher: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, file_key).unwrap());
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&index.to_be_bytes());
    let mut buf = cipher.to_vec();
    k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf).unwrap().to_vec()
}

// ------------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_holds_no_plaintext_and_no_key() {
    let logs = capture_logs();
    // Alice doubles as the org's preview service, to store a preview.
    let core = start_with(
        Arc::new(testkit::Idp::start()),
        Opts {
            org: "preview_services = [\"alice@acme.example\"]",
            tail: "[limits]\nmax_chunk_bytes = 2048\n",
            ..Opts::default()
        },
    )
    .await;
    tracing::info!("provider blindness workload starts");
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;

    let mut plain: Vec<(String, String)> = Vec::new(); // (name, plaintext)
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new(); // (name, raw key)
    let (k1, ku1) = key();
    let (k2, ku2) = key();
    keys.push(("space key 1".into(), k1.expose().to_vec()));
    keys.push(("space key 2".into(), k2.expose().to_vec()));

    // Two spaces with encrypted titles.
    let title1 = named(&mut plain, "title1");
    let title2 = named(&mut plain, "title2");
    let (st, s1) =
        alice.post("/v1/spaces", json!({"resource_uri": resource(), "title": sealed(&k1, &ku1, &title1)})).await;
    assert_eq!(st, StatusCode::CREATED, "{s1}");
    let s1 = s1["id"].as_str().unwrap().to_string();
    let (st, s2) =
        alice.post("/v1/spaces", json!({"resource_uri": resource(), "title": sealed(&k2, &ku2, &title2)})).await;
    assert_eq!(st, StatusCode::CREATED, "{s2}");
    let s2 = s2["id"].as_str().unwrap().to_string();
    alice.add(&s1, &bob.id).await;

    // Bob listens live for the whole workload.
    let mut ws = Ws::connect(&core.url, &bob.token, json!({})).await;

    // Messages (one with non-ASCII text), a thread reply, an edit, a reaction, a deletion, a title change.
    let ev = |s: &str| format!("/v1/spaces/{s}/events");
    let m1 = named(&mut plain, "msg1");
    let m2 = format!("Grüße, Zoë — «{}» ✓", random_text(28));
    plain.push(("msg2 (non-ASCII)".into(), m2.clone()));
    let reply = named(&mut plain, "reply");
    let edit = named(&mut plain, "edit");
    let reaction = named(&mut plain, "reaction");
    let doomed = named(&mut plain, "deleted-msg");
    let title1b = named(&mut plain, "title1b");
    let other = named(&mut plain, "msg-space2");
    let (st, e1) = bob.post(&ev(&s1), json!({"kind": "message", "client_event_id": uuid::Uuid::new_v4().to_string(), "sealed": sealed(&k1, &ku1, &m1)})).await;
    assert_eq!(st, StatusCode::CREATED, "{e1}");
    let e1 = e1["id"].as_str().unwrap().to_string();
    assert_eq!(
        alice.post(&ev(&s1), json!({"kind": "message", "sealed": sealed(&k1, &ku1, &m2)})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        alice.post(&ev(&s1), json!({"kind": "message", "parent": e1, "sealed": sealed(&k1, &ku1, &reply)})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        bob.post(&ev(&s1), json!({"kind": "edit", "target": e1, "sealed": sealed(&k1, &ku1, &edit)})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        alice.post(&ev(&s1), json!({"kind": "reaction", "target": e1, "sealed": sealed(&k1, &ku1, &reaction)})).await.0,
        StatusCode::CREATED
    );
    let (_, d) = bob.post(&ev(&s1), json!({"kind": "message", "sealed": sealed(&k1, &ku1, &doomed)})).await;
    assert_eq!(bob.post(&ev(&s1), json!({"kind": "delete", "target": d["id"]})).await.0, StatusCode::CREATED);
    assert_eq!(
        alice.post(&ev(&s1), json!({"kind": "title", "sealed": sealed(&k1, &ku1, &title1b)})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        alice.post(&ev(&s2), json!({"kind": "message", "sealed": sealed(&k2, &ku2, &other)})).await.0,
        StatusCode::CREATED
    );

    // A file: encrypted name (and file key) as a JWE under the space key, content in AES-GCM chunks.
    let file_name = format!("{}.pdf", named(&mut plain, "file-name"));
    let mut file_key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut file_key).unwrap();
    keys.push(("file key".into(), file_key.to_vec()));
    let mut content = Vec::new();
    for i in 0..6 {
        let line = named(&mut plain, &format!("file-line{i}"));
        content.extend_from_slice(format!("{line}\n").as_bytes());
        content.extend(std::iter::repeat_n(b' ', 1000));
    }
    let plain_chunk = 2048 - 16;
    let chunks: Vec<Vec<u8>> =
        content.chunks(plain_chunk).enumerate().map(|(i, c)| encrypt_chunk(&file_key, i as u32, c)).collect();
    assert!(chunks.len() >= 3, "several chunks");
    let size: usize = chunks.iter().map(Vec::len).sum();
    let meta = json!({"name": file_name, "type": "application/pdf", "key": URL_SAFE_NO_PAD.encode(file_key), "chunk_plain": plain_chunk}).to_string();
    let (st, f) = alice.post(&format!("/v1/spaces/{s1}/files"), json!({"size": size, "chunk_size": 2048, "meta": {"ciphertext": seal(&k1, &ku1, meta.as_bytes()), "key_uri": ku1}})).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(alice.put_chunk(&fid, i as i64, c.clone()).await.0, StatusCode::NO_CONTENT);
    }
    assert_eq!(alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await.0, StatusCode::OK);
    // Its preview (an excerpt), sealed under the space key like everything else.
    let excerpt = named(&mut plain, "preview-excerpt");
    let (st, b) =
        alice.req(reqwest::Method::PUT, &format!("/v1/files/{fid}/preview"), Some(sealed(&k1, &ku1, &excerpt))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    let (st, pv) = bob.get(&format!("/v1/files/{fid}/preview")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(String::from_utf8(open(&k1, pv["ciphertext"].as_str().unwrap())).unwrap(), excerpt);
    assert_eq!(
        bob.req(reqwest::Method::PUT, &format!("/v1/spaces/{s1}/read-marker"), Some(json!({"seq": 3}))).await.0,
        StatusCode::OK
    );

    // The workload really carried the plaintexts: Bob reads them back (client side).
    let events = bob.events(&s1).await;
    let opened: Vec<String> = events
        .iter()
        .filter_map(|e| e["ciphertext"].as_str())
        .map(|c| String::from_utf8(open(&k1, c)).unwrap())
        .collect();
    for p in [&m1, &m2, &reply, &edit, &reaction, &title1b] {
        assert!(opened.contains(p), "the events carry {p}");
    }
    let (_, fr) = bob.get(&format!("/v1/files/{fid}")).await;
    let meta_back: Value = serde_json::from_slice(&open(&k1, fr["meta_ciphertext"].as_str().unwrap())).unwrap();
    assert_eq!(meta_back["name"], file_name);
    let mut downloaded = Vec::new();
    for i in 0..chunks.len() {
        let r = bob
            .http
            .get(format!("{}/v1/files/{fid}/chunks/{i}", core.url))
            .bearer_auth(&bob.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        downloaded.extend(decrypt_chunk(&file_key, i as u32, &r.bytes().await.unwrap()));
    }
    assert_eq!(downloaded, content);
    // And Bob's socket saw it all live (the WebSocket path logs too).
    let mut live = 0;
    while let Some(f) = ws.next_within(std::time::Duration::from_millis(500)).await {
        if f["type"] == "event" {
            live += 1;
        }
    }
    assert!(live >= 8, "bob's socket delivered the workload ({live} events)");
    drop(ws);

    // Search: a message indexed as the SDK does it (blinded tokens under a key derived from the space key).
    let words: Vec<String> = (0..4).map(|i| format!("searchword{i}x{}", random_text(10).to_lowercase())).collect();
    let searchable = words.join(" ");
    plain.push(("searchable msg".into(), searchable.clone()));
    let (st, se) = alice.post(&ev(&s1), json!({"kind": "message", "sealed": sealed(&k1, &ku1, &searchable)})).await;
    assert_eq!(st, StatusCode::CREATED, "{se}");
    let k1_bytes: [u8; 32] = k1.expose().try_into().unwrap();
    let search_key = search::SearchKey::derive(&k1_bytes, &ku1);
    let tokens: Vec<String> = search::index_tokens(&search_key, &searchable).iter().map(|t| t.to_base64url()).collect();
    assert!(tokens.len() > 20, "words and their prefixes");
    let (st, b) = alice
        .req(
            reqwest::Method::PUT,
            &format!("/v1/spaces/{s1}/events/{}/index", se["id"].as_str().unwrap()),
            Some(json!({"key_uri": ku1, "tokens": tokens})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    let query = search::Query::parse(&words[2]).tokens(&search_key);
    let (st, found) =
        bob.post(&format!("/v1/spaces/{s1}/search"), json!({"queries": [{"key_uri": ku1, "tokens": query.iter().map(|t| t.to_base64url()).collect::<Vec<_>>()}]})).await;
    assert_eq!((st, found["events"][0]["id"].clone()), (StatusCode::OK, se["id"].clone()), "the message is found");
    // Each word, and an unkeyed hash of it (what a naive index would store), must be absent.
    let mut word_needles = Vec::new();
    for w in &words {
        word_needles.push(Needle::new(format!("search word {w}"), w.as_bytes()));
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, w.as_bytes());
        word_needles.push(Needle::new(format!("unkeyed hash of {w}"), &d.as_ref()[..16]));
    }

    // Secrets planted below, registered now: before planting they must not be found either.
    let planted_cid = secret("planted-client-event-id");
    let planted_blob = secret("planted-blob");
    let planted_hex = secret("planted-hex");
    let planted_log = secret("planted-log");

    let mut needles: Vec<Needle> =
        plain.iter().map(|(n, p)| Needle::new(format!("plaintext {n}"), p.as_bytes())).collect();
    // The ASCII core of the non-ASCII message, in case something escaped the rest.
    needles.push(Needle::new(
        "plaintext msg2 (ASCII part)",
        m2.split('«').nth(1).unwrap().split('»').next().unwrap().as_bytes(),
    ));
    needles.push(Needle::new("file content", &content[..200]));
    needles.extend(keys.iter().map(|(n, k)| Needle::new(format!("key {n}"), k)));
    needles.extend(word_needles);
    for (n, p) in [
        ("planted cid", &planted_cid),
        ("planted blob", &planted_blob),
        ("planted hex", &planted_hex),
        ("planted log", &planted_log),
    ] {
        needles.push(Needle::new(n, p.as_bytes()));
    }
    let n_forms: usize = needles.iter().map(|n| n.forms.len()).sum();
    assert!(n_forms > needles.len() * 6, "every needle has several encodings");

    // ---- the scan: nothing.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let held = Holdings::take(core.dir.path(), &logs).await;
    let tables: std::collections::HashSet<&str> =
        held.rows.iter().filter_map(|(p, _)| p.strip_prefix("table ")?.split('.').next()).collect();
    for t in ["core_spaces", "core_events", "core_members", "core_files", "core_postings", "core_previews"] {
        assert!(tables.contains(t), "the scan read table {t} (read {tables:?})");
    }
    assert!(held.rows.len() > 50, "the scan read the rows ({})", held.rows.len());
    assert!(
        held.raw_db.iter().any(|(p, _)| p.ends_with("core.db")),
        "the scan read the database file: {:?}",
        held.raw_db.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    assert_eq!(held.blobs.len(), chunks.len(), "the scan read every chunk blob");
    let log_text = String::from_utf8_lossy(&held.logs[0].1).to_string();
    if let Ok(p) = std::env::var("CUSTOS_BLINDNESS_LOG") {
        std::fs::write(p, &log_text).unwrap();
    }
    assert!(log_text.contains("provider blindness workload starts"), "the log capture works");
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "the log capture is verbose ({} bytes)",
        log_text.len()
    );
    let hits = scan(&held.all(), &needles);
    assert!(hits.is_empty(), "the provider holds plaintext or keys:\n{hits:#?}");
    eprintln!(
        "scanned {} table values, {} raw database files ({} bytes), {} blobs, {} bytes of logs for {} needles in {n_forms} encodings: no hits",
        held.rows.len(),
        held.raw_db.len(),
        held.raw_db.iter().map(|h| h.1.len()).sum::<usize>(),
        held.blobs.len(),
        held.logs[0].1.len(),
        needles.len()
    );

    // ---- the scan can fail: plant one leak of each kind and find each.
    // 1. A careless client puts a plaintext where the core keeps it verbatim.
    assert_eq!(
        bob.post(
            &ev(&s1),
            json!({"kind": "message", "client_event_id": planted_cid, "sealed": sealed(&k1, &ku1, "x")})
        )
        .await
        .0,
        StatusCode::CREATED
    );
    // 2. A content key, base64url (as in a JWK), in the same place.
    assert_eq!(bob.post(&ev(&s1), json!({"kind": "message", "client_event_id": URL_SAFE_NO_PAD.encode(k2.expose()), "sealed": sealed(&k1, &ku1, "y")})).await.0, StatusCode::CREATED);
    // 3. A blob holding a plaintext inside a larger base64 text (8 bytes in: not on a
    //    3-byte boundary), and another as upper-case hex.
    let blob = core.dir.path().join("blobs").join("files").join(&fid).join("00000000");
    let mut b = std::fs::read(&blob).unwrap();
    b.extend_from_slice(STANDARD_NO_PAD.encode(format!("{{\"nam\":\"{planted_blob}\"}}")).as_bytes());
    b.extend_from_slice(planted_hex.bytes().map(|x| format!("{x:02X}")).collect::<String>().as_bytes());
    std::fs::write(&blob, b).unwrap();
    // 4. A log line with a plaintext.
    tracing::trace!(target: "custos_core::service", "oops: {planted_log}");
    let held = Holdings::take(core.dir.path(), &logs).await;
    let hits = scan(&held.all(), &needles);
    let found = |needle: &str, place: &str, form: &str| {
        hits.iter().any(|h| h.needle == needle && h.place.starts_with(place) && h.form.contains(form))
    };
    assert!(found("planted cid", "table core_events.client_event_id", "raw"), "{hits:#?}");
    assert!(found("planted cid", "file ", "raw"), "the raw database files give it away too: {hits:#?}");
    assert!(found("key space key 2", "table core_events.client_event_id", "base64url@0"), "{hits:#?}");
    assert!(found("planted blob", "blob", "@1"), "found at its alignment: {hits:#?}");
    assert!(found("planted hex", "blob", "HEX"), "{hits:#?}");
    assert!(found("planted log", "logs", "raw"), "{hits:#?}");
    let leaked: std::collections::HashSet<&str> = hits.iter().map(|h| h.needle.as_str()).collect();
    assert_eq!(
        leaked,
        ["planted cid", "key space key 2", "planted blob", "planted hex", "planted log"].into_iter().collect(),
        "only the planted leaks: {hits:#?}"
    );
}
