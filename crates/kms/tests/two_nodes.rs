//! Sessions any node can serve: two KMS nodes on one PostgreSQL. Handshake on
//! the first, use the session on the second, delete it on the second, and the
//! first refuses it within a second; handshakes cost the database nothing
//! (PostgreSQL's commit counter does not grow with them).
//!
//! Needs PostgreSQL (`CUSTOS_TEST_POSTGRES_URL`, default
//! `postgres://127.0.0.1:5432/test`). Without one it says SKIPPED by name,
//! except under CI (`CI` set), where it fails.

#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use serde_json::json;
use server::{config_text, Server};
use sqlx::{Connection, PgConnection};
use testkit::pg::TempDatabase;
use testkit::{Idp, Node};

async fn commits(conn: &mut PgConnection) -> i64 {
    // Stats are flushed lazily; ask for a fresh snapshot each time.
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await.unwrap();
    let row: (i64,) = sqlx::query_as("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    row.0
}

#[test]
fn two_nodes_share_sessions_without_writes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A database of its own, so that only these two nodes move its counters.
    let Some(db) = TempDatabase::create("two_nodes", "two_nodes_share_sessions_without_writes") else { return };
    let url = db.url.clone();

    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(dir.path(), &idp.issuer, &format!("database_url = \"{url}\""));
    let a = Server::start(&cfg);
    let b = Server::start(&cfg); // same data_dir: the same static key and CMK
    let mut node = Node::start();
    let tok = node.call(json!({"op": "idp_token", "tokenEndpoint": idp.token_endpoint, "sub": "alice", "aud": "kms://kms.acme.example"}))["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Handshake on A, use on B, and back.
    let s = node.call(json!({"op": "kms_http_connect", "url": a.url, "token": tok, "clientId": "dev"}));
    assert_eq!(s["body"]["status"], 201);
    let (ctx, kid) = (s["ctx"].clone(), s["kid"].as_str().unwrap().to_string());
    let req = |node: &mut Node, url: &str, r: serde_json::Value| {
        node.call(json!({"op": "kms_http_request", "url": url, "ctx": ctx, "request": r}))["body"].clone()
    };
    assert_eq!(req(&mut node, &b.url, json!({"method": "update", "uri": "/ping"}))["status"], 200);
    let keys = req(&mut node, &b.url, json!({"method": "create", "uri": "/keys", "count": 2}));
    assert_eq!(keys["status"], 201);
    let k = keys["keys"][0]["uri"].as_str().unwrap().to_string();
    assert_eq!(req(&mut node, &a.url, json!({"method": "retrieve", "uri": k}))["key"]["jwk"], keys["keys"][0]["jwk"]);

    // Handshakes write nothing: compare the commit counter over a burst of
    // handshakes with the same time spent idle (the nodes' own polling).
    let mut stats = rt.block_on(PgConnection::connect(&url)).unwrap();
    // Let the statistics of the requests above settle first (backends flush them about once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let c0 = rt.block_on(commits(&mut stats));
    let t = Instant::now();
    // Enough handshakes that one write each would stand far above the
    // polling's noise (commit counts of equal idle windows differ by up to
    // about 20 under load, as backends flush their statistics lazily).
    let n = 100;
    for i in 0..n {
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let r = node.call(json!({"op": "kms_http_connect", "url": url, "token": tok, "clientId": format!("d{i}")}));
        assert_eq!(r["body"]["status"], 201);
    }
    let spent = t.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    let c1 = rt.block_on(commits(&mut stats));
    std::thread::sleep(spent + Duration::from_millis(1500));
    let c2 = rt.block_on(commits(&mut stats));
    let (during, idle) = (c1 - c0, c2 - c1);
    eprintln!("commits: {during} during {n} handshakes ({spent:?}), {idle} idle for as long");
    assert!(during < idle + n / 2, "handshakes wrote to the database: {during} commits vs {idle} idle");

    // Delete on B; A refuses within a second.
    assert_eq!(req(&mut node, &b.url, json!({"method": "delete", "uri": kid}))["status"], 204);
    let t = Instant::now();
    loop {
        let r = req(&mut node, &a.url, json!({"method": "update", "uri": "/ping"}));
        if r["status"] == 499 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "node A still served a session deleted on node B after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("node A refused the deleted session after {:?}", t.elapsed());

    drop((a, b, stats));
    drop(db);
}
