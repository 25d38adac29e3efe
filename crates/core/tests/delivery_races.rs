//! Live delivery around membership changes, while the space is busy: a socket
//! open before a join gets the join and everything after it, with no gap,
//! however much is posted between the join and the moment the socket handles
//! it; a member removed and re-added at once keeps getting the space.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::json;

/// Posts into `space` from `n` tasks until `stop` is set.
fn talkers(u: &User, space: &str, n: usize, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let (k, ku) = key();
    (0..n)
        .map(|t| {
            let (poster, k, ku, s, stop) = (
                User { http: reqwest::Client::new(), url: u.url.clone(), token: u.token.clone(), id: u.id.clone() },
                k.clone(),
                ku.clone(),
                space.to_string(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    poster.say(&s, &k, &ku, &format!("talker {t} {i}")).await;
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_busy_space_loses_nothing() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let space = alice.space().await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = talkers(&alice, &space, 3, &stop);
    for round in 0..8 {
        let u = User::new(&core, &format!("joiner{round}")).await;
        let mut ws = Ws::connect(&core.url, &u.token, json!({})).await;
        let (st, added) = alice.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": u.id})).await;
        assert_eq!(st, 200);
        let join_seq = added["event"]["seq"].as_i64().unwrap();
        for i in 0..15 {
            let e = ws.event().await;
            assert_eq!(
                e["seq"].as_i64().unwrap(),
                join_seq + i,
                "round {round}: the join first, then everything after it (got a {})",
                e["kind"]
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_re_added_at_once_keeps_delivering() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let (k, ku) = key();
    let space = alice.space().await;
    alice.add(&space, &bob.id).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = talkers(&alice, &space, 2, &stop);
    let mut ws = Ws::connect(&core.url, &bob.token, json!({})).await;
    for round in 0..40 {
        // Removed and re-added back to back, while others talk: the socket may
        // handle the re-join before or after it reaches the removal.
        let (st, removed) =
            alice.req(reqwest::Method::DELETE, &format!("/v1/spaces/{space}/members/{}", bob.id), None).await;
        assert_eq!(st, 200);
        let (st, added) = alice.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": bob.id})).await;
        assert_eq!(st, 200);
        let m = alice.say(&space, &k, &ku, &format!("welcome back {round}")).await;
        // Up to the removal, then from the re-join on without a gap, up to the message.
        let (removed, readded, last) = (
            removed["event"]["seq"].as_i64().unwrap(),
            added["event"]["seq"].as_i64().unwrap(),
            m["seq"].as_i64().unwrap(),
        );
        let mut seqs = Vec::new();
        loop {
            let e = ws.event().await;
            let seq = e["seq"].as_i64().unwrap();
            seqs.push(seq);
            if seq == last {
                break;
            }
        }
        let at = seqs
            .iter()
            .position(|s| *s == removed)
            .unwrap_or_else(|| panic!("round {round}: the removal is delivered: {seqs:?}"));
        assert_eq!(
            seqs[at + 1..],
            (readded..=last).collect::<Vec<_>>(),
            "round {round}: after the removal, the re-join and everything after it"
        );
        assert!(seqs[..at].windows(2).all(|w| w[1] == w[0] + 1), "round {round}: no gap before the removal: {seqs:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}
