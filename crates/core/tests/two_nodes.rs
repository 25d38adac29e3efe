//! Two core nodes over one PostgreSQL database and one NATS server: a
//! socket on either node gets, in order, what was posted through the other,
//! for its spaces only, and joining through one node starts delivery on a
//! socket at the other.
//!
//! Needs PostgreSQL (`CUSTOS_TEST_POSTGRES_URL`, default
//! `postgres://127.0.0.1:5432/test`) and NATS (`CUSTOS_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`); without them these tests print SKIPPED, except
//! under CI (`CI` set), where they fail.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use testkit::pg::TempDatabase;
use testkit::Idp;

fn nats_url() -> String {
    std::env::var("CUSTOS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The database, or `None` (SKIPPED) when PostgreSQL or NATS is missing outside CI.
fn services(tag: &str, test: &str) -> Option<TempDatabase> {
    let url = nats_url();
    let addr = url.trim_start_matches("nats://").to_string();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        if std::env::var_os("CI").is_some() {
            panic!("NATS is required under CI at {url}");
        }
        eprintln!("SKIPPED (no NATS at {url}): {test}");
        return None;
    }
    TempDatabase::create(tag, test)
}

struct Cluster {
    a: Core,
    b: Core,
}

async fn cluster(db: &TempDatabase) -> Cluster {
    let idp = Arc::new(Idp::start());
    // A subject prefix of its own, so that parallel tests and runs sharing the NATS server don't cross-talk.
    let prefix = format!("custos-test-{}", uuid::Uuid::new_v4().simple());
    let top = format!("database_url = \"{}\"\nnats_url = \"{}\"\nnats_prefix = \"{prefix}\"", db.url, nats_url());
    let a = start_with(idp.clone(), Opts { top: &top, ..Opts::default() }).await;
    let b = start_with(idp, Opts { top: &top, ..Opts::default() }).await;
    Cluster { a, b }
}

fn run(f: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(f);
}

/// The plaintexts of `n` message events from `ws`, checking they come from
/// `space` with increasing sequence numbers after `after`.
async fn messages(ws: &mut Ws, space: &str, key: &jose::OctKey, mut after: i64, n: usize) -> (Vec<String>, i64) {
    let mut got = Vec::new();
    while got.len() < n {
        let e = ws.event().await;
        assert_eq!(e["space_id"], space, "only events of this space: {e}");
        let seq = e["seq"].as_i64().unwrap();
        assert!(seq > after, "in order: {seq} after {after}");
        after = seq;
        if e["kind"] == "message" {
            got.push(String::from_utf8(open(key, e["ciphertext"].as_str().unwrap())).unwrap());
        }
    }
    (got, after)
}

#[test]
fn sockets_get_what_the_other_node_stored_in_order_and_only_their_spaces() {
    let Some(db) =
        services("core2n_order", "two_nodes::sockets_get_what_the_other_node_stored_in_order_and_only_their_spaces")
    else {
        return;
    };
    run(async {
        let c = cluster(&db).await;
        let alice_a = User::new(&c.a, "alice").await;
        let bob_a = User::new(&c.a, "bob").await;
        let bob_b = bob_a.on(&c.b);
        let alice_b = alice_a.on(&c.b);
        let (k, ku) = key();

        // Through A: a space Bob is in, and one he is not in.
        let shared = alice_a.space().await;
        let private = alice_a.space().await;
        alice_a.add(&shared, &bob_a.id).await;
        // Node B sees what node A stored (one database).
        assert_eq!(bob_b.get(&format!("/v1/spaces/{shared}")).await.0, 200);
        assert_eq!(bob_b.get(&format!("/v1/spaces/{private}")).await.0, 404);

        let mut bob_ws = Ws::connect(&c.b.url, &bob_b.token, json!({})).await;
        let mut alice_ws = Ws::connect(&c.a.url, &alice_a.token, json!({})).await;

        // Posted through A, interleaved with posts to the other space: Bob (on B) gets his, in order.
        let mut sent = Vec::new();
        for i in 0..25 {
            let text = format!("a-to-b {i}");
            alice_a.say(&shared, &k, &ku, &text).await;
            sent.push(text);
            if i % 3 == 0 {
                alice_a.say(&private, &k, &ku, &format!("private {i}")).await;
            }
        }
        let (got, _) = messages(&mut bob_ws, &shared, &k, 2, sent.len()).await;
        assert_eq!(got, sent);
        bob_ws.quiet(700).await;

        // Alice's socket on A gets both her spaces, each in order (her own posts included).
        let mut per_space: std::collections::HashMap<String, i64> = Default::default();
        for _ in 0..(25 + 9) {
            let e = alice_ws.event().await;
            let s = e["space_id"].as_str().unwrap().to_string();
            let seq = e["seq"].as_i64().unwrap();
            let last = per_space.entry(s).or_insert(0);
            assert!(seq > *last, "in order per space");
            *last = seq;
        }

        // Posted through B (by Bob, and concurrently by Alice through B): Alice's socket on A gets them, in order.
        let mut bob_texts = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (u, k2, ku2, s) = (alice_b.on(&c.b), k.clone(), ku.clone(), shared.clone());
            tasks.push(tokio::spawn(async move { u.say(&s, &k2, &ku2, &format!("alice via b {i}")).await }));
            let text = format!("b-to-a {i}");
            bob_b.say(&shared, &k, &ku, &text).await;
            bob_texts.push(text);
        }
        for t in tasks {
            t.await.unwrap();
        }
        let after = per_space[&shared];
        let (got, last) = messages(&mut alice_ws, &shared, &k, after, 20).await;
        let from_bob: Vec<String> = got.iter().filter(|t| t.starts_with("b-to-a")).cloned().collect();
        assert_eq!(from_bob, bob_texts, "Bob's posts in the order he made them");
        assert_eq!(got.iter().filter(|t| t.starts_with("alice via b")).count(), 10);
        // What the sockets got is exactly the stored history.
        let stored: Vec<i64> = alice_a.events(&shared).await.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(*stored.last().unwrap(), last, "no gap, no extra");
        assert_eq!(stored, (1..=last).collect::<Vec<_>>(), "sequence numbers without gaps across nodes");
        alice_ws.quiet(500).await;
        // Bob got them on B too (his own posts included), and nothing of the private space.
        let (got, _) = messages(&mut bob_ws, &shared, &k, after, 20).await;
        assert_eq!(got.len(), 20);
        bob_ws.quiet(500).await;
    });
    drop(db);
}

#[test]
fn joining_through_one_node_starts_delivery_at_the_other() {
    let Some(db) = services("core2n_join", "two_nodes::joining_through_one_node_starts_delivery_at_the_other") else {
        return;
    };
    run(async {
        let c = cluster(&db).await;
        let alice_a = User::new(&c.a, "alice").await;
        let carol_b = User::new(&c.b, "carol").await;
        let (k, ku) = key();
        let space = alice_a.space().await;
        for i in 0..3 {
            alice_a.say(&space, &k, &ku, &format!("before {i}")).await;
        }

        // Carol is on B before she is a member: nothing.
        let mut ws = Ws::connect(&c.b.url, &carol_b.token, json!({})).await;
        ws.quiet(300).await;

        // Alice adds her through A and keeps talking at once: Carol's socket on B
        // gets the join and everything after it, in order, and nothing before it.
        let (st, added) = alice_a.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": carol_b.id})).await;
        assert_eq!(st, 200, "{added}");
        let join_seq = added["event"]["seq"].as_i64().unwrap();
        let mut sent = Vec::new();
        for i in 0..8 {
            let t = format!("after {i}");
            alice_a.say(&space, &k, &ku, &t).await;
            sent.push(t);
        }
        let first = ws.event().await;
        assert_eq!(first["kind"], "member_added", "the join comes first: {first}");
        assert_eq!(first["subject"], carol_b.id);
        assert_eq!(first["seq"].as_i64().unwrap(), join_seq);
        let (got, _) = messages(&mut ws, &space, &k, join_seq, sent.len()).await;
        assert_eq!(got, sent);
        ws.quiet(500).await;

        // Removed through A: the removal is the last thing her socket on B gets.
        let (st, _) =
            alice_a.req(reqwest::Method::DELETE, &format!("/v1/spaces/{space}/members/{}", carol_b.id), None).await;
        assert_eq!(st, 200);
        let e = ws.event().await;
        assert_eq!(e["kind"], "member_removed");
        alice_a.say(&space, &k, &ku, "after removal").await;
        ws.quiet(700).await;

        // Re-added through B while her socket is still open: delivery restarts at the new join.
        let alice_b = alice_a.on(&c.b);
        let (st, added) = alice_b.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": carol_b.id})).await;
        assert_eq!(st, 200, "{added}");
        alice_a.say(&space, &k, &ku, "welcome back").await;
        let e = ws.event().await;
        assert_eq!(e["kind"], "member_added", "{e}");
        assert_eq!(e["seq"], added["event"]["seq"]);
        let (got, _) = messages(&mut ws, &space, &k, e["seq"].as_i64().unwrap(), 1).await;
        assert_eq!(got, ["welcome back"]);
    });
    drop(db);
}

#[test]
fn joining_while_the_space_is_busy_loses_nothing() {
    let Some(db) = services("core2n_busy", "two_nodes::joining_while_the_space_is_busy_loses_nothing") else { return };
    run(async {
        let c = cluster(&db).await;
        let alice_a = User::new(&c.a, "alice").await;
        let (k, ku) = key();
        let space = alice_a.space().await;
        // Others keep talking, through both nodes, the whole time.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut talkers = Vec::new();
        for t in 0..4 {
            let poster = if t % 2 == 0 { alice_a.on(&c.a) } else { alice_a.on(&c.b) };
            let (k, ku, s, stop) = (k.clone(), ku.clone(), space.clone(), stop.clone());
            talkers.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    poster.say(&s, &k, &ku, &format!("talker {t} {i}")).await;
                    i += 1;
                }
            }));
        }
        for round in 0..6 {
            let u = User::new(&c.b, &format!("joiner{round}")).await;
            let mut ws = Ws::connect(&c.b.url, &u.token, json!({})).await;
            let (st, added) = alice_a.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": u.id})).await;
            assert_eq!(st, 200);
            let join_seq = added["event"]["seq"].as_i64().unwrap();
            // Whatever arrives first must be the join, and nothing after it may be missing.
            for expect in join_seq..join_seq + 20 {
                let e = ws.event().await;
                assert_eq!(
                    e["seq"].as_i64().unwrap(),
                    expect,
                    "round {round}: from the join on, without gaps (got {})",
                    e["kind"]
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in talkers {
            t.await.unwrap();
        }
    });
    drop(db);
}

#[test]
fn read_receipts_and_removals_cross_nodes() {
    let Some(db) = services("core2n_receipts", "two_nodes::read_receipts_and_removals_cross_nodes") else { return };
    run(async {
        let c = cluster(&db).await;
        let alice_a = User::new(&c.a, "alice").await;
        let bob_a = User::new(&c.a, "bob").await;
        let bob_b = bob_a.on(&c.b);
        let (k, ku) = key();
        let space = alice_a.space().await;
        alice_a.add(&space, &bob_a.id).await;
        let mut alice_ws = Ws::connect(&c.a.url, &alice_a.token, json!({})).await;

        // Bob reads through B: Alice's socket on A gets the receipt, after the event.
        let m = alice_a.say(&space, &k, &ku, "hello").await["seq"].as_i64().unwrap();
        assert_eq!(alice_ws.event().await["seq"].as_i64().unwrap(), m);
        let (st, _) =
            bob_b.req(reqwest::Method::PUT, &format!("/v1/spaces/{space}/read-marker"), Some(json!({"seq": m}))).await;
        assert_eq!(st, 200);
        assert_eq!(alice_ws.next().await, json!({"type": "read_marker", "space": space, "user": bob_a.id, "seq": m}));
        alice_ws.quiet(300).await;

        // B remembers Bob's role (he just used it there); he is removed through A:
        // B refuses him long before the role cache's TTL, through the bus.
        assert_eq!(bob_b.get(&format!("/v1/spaces/{space}/events")).await.0, 200);
        let (st, _) =
            alice_a.req(reqwest::Method::DELETE, &format!("/v1/spaces/{space}/members/{}", bob_a.id), None).await;
        assert_eq!(st, 200);
        let removed_at = std::time::Instant::now();
        loop {
            let st = bob_b.get(&format!("/v1/spaces/{space}/events")).await.0;
            if st == 404 {
                break;
            }
            assert_eq!(st, 200);
            assert!(removed_at.elapsed() < Duration::from_millis(1000), "node B still lets a removed member read");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (st, _) = bob_b
            .post(&format!("/v1/spaces/{space}/events"), json!({"kind": "message", "sealed": sealed(&k, &ku, "x")}))
            .await;
        assert_eq!(st, 404);
    });
    drop(db);
}
