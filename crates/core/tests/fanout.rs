//! Real-time delivery through the node's fan-out: frames serialized once and
//! shared by the sockets, a slow socket falling behind the ring and catching
//! up from the database, read receipts for the other members, and the
//! role cache forgetting a removed member at once.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn mark(u: &User, space: &str, seq: i64) -> Value {
    let (st, b) =
        u.req(reqwest::Method::PUT, &format!("/v1/spaces/{space}/read-marker"), Some(json!({"seq": seq}))).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b
}

/// The next frame that is not an event (events are checked to be in order after `after`).
async fn next_non_event(ws: &mut Ws, after: &mut i64) -> Value {
    loop {
        let f = ws.next().await;
        if f["type"] != "event" {
            return f;
        }
        let seq = f["event"]["seq"].as_i64().unwrap();
        assert!(seq > *after, "events in order");
        *after = seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_share_frames_from_the_ring() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let (k, ku) = key();
    let space = alice.space().await;
    let mut members = Vec::new();
    for i in 0..5 {
        let u = User::new(&core, &format!("m{i}")).await;
        alice.add(&space, &u.id).await;
        members.push(u);
    }
    let mut sockets = Vec::new();
    for u in &members {
        sockets.push(Ws::connect(&core.url, &u.token, json!({})).await);
    }
    let stats = &core.core.fanout.stats;
    let reads_before = stats.db_reads.load(Ordering::Relaxed);
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(alice.say(&space, &k, &ku, &format!("hello {i}")).await["seq"].as_i64().unwrap());
    }
    for ws in &mut sockets {
        for want in &sent {
            let e = ws.event().await;
            assert_eq!(e["seq"].as_i64().unwrap(), *want);
            assert_eq!(e["kind"], "message");
        }
        ws.quiet(200).await;
    }
    // 5 sockets x 20 events, from frames serialized once: the database was
    // not asked once per socket and event.
    assert!(stats.ring_frames.load(Ordering::Relaxed) >= 100, "frames from the ring: {stats:?}");
    let reads = stats.db_reads.load(Ordering::Relaxed) - reads_before;
    assert!(reads < 20, "{reads} database reads for 100 deliveries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_behind_the_ring_catch_up_from_the_database() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let (k, ku) = key();
    let space = alice.space().await;
    alice.add(&space, &bob.id).await;
    // Alice's socket keeps the space watched (and its ring filled); Bob's
    // reads nothing while far more than the ring holds is posted.
    let _alice_ws = Ws::connect(&core.url, &alice.token, json!({})).await;
    let mut slow = Ws::connect(&core.url, &bob.token, json!({})).await;
    let n = custos_core::fanout::RING_CAPACITY as i64 + 150;
    let ciphertext = sealed(&k, &ku, "x");
    let mut last = 0;
    for _ in 0..n {
        let (st, e) =
            alice.post(&format!("/v1/spaces/{space}/events"), json!({"kind": "message", "sealed": ciphertext})).await;
        assert_eq!(st, StatusCode::CREATED);
        last = e["seq"].as_i64().unwrap();
    }
    let first = last - n + 1;
    for want in first..=last {
        assert_eq!(slow.event().await["seq"].as_i64().unwrap(), want, "in order, without a gap");
    }
    slow.quiet(200).await;
    // A resume from the start: older than anything the ring holds.
    let reads = core.core.fanout.stats.db_reads.load(Ordering::Relaxed);
    let mut resumed = Ws::connect(&core.url, &bob.token, json!({space.clone(): 0})).await;
    for want in 1..=last {
        assert_eq!(resumed.event().await["seq"].as_i64().unwrap(), want, "the whole history, in order");
    }
    resumed.quiet(200).await;
    assert!(core.core.fanout.stats.db_reads.load(Ordering::Relaxed) > reads, "read from the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_members_see_read_receipts() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let carol = User::new(&core, "carol").await;
    let dave = User::new(&core, "dave").await;
    let (k, ku) = key();
    let space = alice.space().await;
    alice.add(&space, &bob.id).await;
    alice.add(&space, &carol.id).await;
    let other = dave.space().await;
    let mut a = Ws::connect(&core.url, &alice.token, json!({})).await;
    let mut b = Ws::connect(&core.url, &bob.token, json!({})).await;
    let mut c = Ws::connect(&core.url, &carol.token, json!({})).await;
    let mut d = Ws::connect(&core.url, &dave.token, json!({})).await;
    let (mut a_at, mut b_at, mut c_at) = (0, 0, 0);

    let m1 = alice.say(&space, &k, &ku, "one").await["seq"].as_i64().unwrap();
    let m2 = alice.say(&space, &k, &ku, "two").await["seq"].as_i64().unwrap();
    assert_eq!(mark(&bob, &space, m2).await["seq"], m2);
    let receipt = json!({"type": "read_marker", "space": space, "user": bob.id, "seq": m2});
    // The other members get it as a receipt, after the event it points at.
    assert_eq!(next_non_event(&mut a, &mut a_at).await, receipt);
    assert_eq!(a_at, m2, "the receipt came after its event");
    assert_eq!(next_non_event(&mut c, &mut c_at).await, receipt);
    assert_eq!(c_at, m2);
    // Bob's own socket gets it once (as his own marker), not twice.
    assert_eq!(next_non_event(&mut b, &mut b_at).await, receipt);
    b.quiet(300).await;
    // Someone outside the space gets nothing.
    d.quiet(100).await;
    // Not moving it (an older seq) tells nobody anything.
    mark(&bob, &space, m1).await;
    a.quiet(300).await;

    // Carol reads too; Alice sees it, and so does Bob.
    mark(&carol, &space, m1).await;
    let receipt = json!({"type": "read_marker", "space": space, "user": carol.id, "seq": m1});
    assert_eq!(next_non_event(&mut a, &mut a_at).await, receipt);
    assert_eq!(next_non_event(&mut b, &mut b_at).await, receipt);
    assert_eq!(next_non_event(&mut c, &mut c_at).await, receipt, "her own other devices");

    // The markers as they stand.
    let (st, s) = alice.get(&format!("/v1/spaces/{space}")).await;
    assert_eq!(st, StatusCode::OK);
    let mut markers: Vec<(String, i64)> = s["read_markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user_id"].as_str().unwrap().to_string(), m["seq"].as_i64().unwrap()))
        .collect();
    markers.sort();
    assert_eq!(markers, [(bob.id.clone(), m2), (carol.id.clone(), m1)]);

    // Carol is removed: her socket gets the removal, and then no more receipts.
    let (st, _) = alice.req(reqwest::Method::DELETE, &format!("/v1/spaces/{space}/members/{}", carol.id), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(c.event().await["kind"], "member_removed");
    let m3 = alice.say(&space, &k, &ku, "three").await["seq"].as_i64().unwrap();
    mark(&bob, &space, m3).await;
    let receipt = json!({"type": "read_marker", "space": space, "user": bob.id, "seq": m3});
    assert_eq!(next_non_event(&mut a, &mut a_at).await, receipt);
    c.quiet(500).await;
    // Dave's own space is untouched by all this.
    let _ = other;
    d.quiet(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_at_once() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let (k, ku) = key();
    let space = alice.space().await;
    alice.add(&space, &bob.id).await;
    for round in 0..3 {
        // Bob's role is remembered (he just posted and read)...
        bob.say(&space, &k, &ku, &format!("hi {round}")).await;
        assert_eq!(bob.get(&format!("/v1/spaces/{space}/events")).await.0, StatusCode::OK);
        // ...and forgotten before his removal is acknowledged.
        let (st, _) = alice.req(reqwest::Method::DELETE, &format!("/v1/spaces/{space}/members/{}", bob.id), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(bob.get(&format!("/v1/spaces/{space}/events")).await.0, StatusCode::NOT_FOUND);
        let (st, _) = bob
            .post(
                &format!("/v1/spaces/{space}/events"),
                json!({"kind": "message", "sealed": sealed(&k, &ku, "still here?")}),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // Added back: at once too.
        alice.add(&space, &bob.id).await;
        assert_eq!(bob.get(&format!("/v1/spaces/{space}/events")).await.0, StatusCode::OK);
    }
    // Demoted: a moderator's rights go at once.
    let (st, _) =
        alice.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": bob.id, "role": "moderator"})).await;
    assert_eq!(st, StatusCode::OK);
    let carol = User::new(&core, "carol").await;
    bob.add(&space, &carol.id).await;
    let (st, _) =
        alice.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": bob.id, "role": "member"})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = bob.req(reqwest::Method::DELETE, &format!("/v1/spaces/{space}/members/{}", carol.id), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}
