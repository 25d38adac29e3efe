//! Retention by crypto-shredding: each KEK wraps one period's keys; a sweep
//! destroys the KEKs of periods past the org's retention with every key under
//! them (audited first), after moving what a legal hold covers under a
//! current KEK. Time is moved by passing the sweep a later "now".

mod common;

use audit::{Action, ActorKind, Query};
use common::{harness, harness_audited, set_policy, Client};
use kms_protocol::{Method, Status};
use serde_json::json;

const DAY: i64 = 86_400_000;

async fn space(owner: &Client, members: &[&str]) -> (String, String, jose::Jwk) {
    let keys = owner.create_keys(1).await;
    let r = owner.create_resource(members, &[keys[0].uri.to_string()]).await;
    (r.uri.to_string(), keys[0].uri.to_string(), keys[0].jwk.clone())
}

#[tokio::test]
async fn retention_shreds_old_periods_and_holds_preserve_what_they_cover() {
    let (h, log) = harness_audited().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let bob = Client::connect(&h.engine, "bob").await;
    let (a, ka, _) = space(&alice, &["bob"]).await;
    let (b, kb, jb) = space(&alice, &[]).await;
    let (_c, kc, jc) = space(&alice, &["carol"]).await;
    let carol_key = Client::connect(&h.engine, "carol").await.create_keys(1).await.remove(0);
    let now = kms::now_ms();

    // No retention policy: nothing is ever shredded.
    let r = h.engine.retention_sweep(now + 4000 * DAY).await.unwrap();
    assert_eq!(r, kms::engine::SweepReport::default());

    set_policy(
        &h.engine,
        json!({"retention": {"days": 365},
               "legalHolds": {"matter-17": {"spaces": [b], "reason": "matter 17"}, "matter-18": {"users": ["carol"]}}}),
    )
    .await;
    // Within retention: nothing happens.
    assert_eq!(h.engine.retention_sweep(now + 300 * DAY).await.unwrap(), kms::engine::SweepReport::default());
    assert_eq!(bob.call(Method::Retrieve, &ka, json!({})).await.status, Status::OK);

    // 400 days on: this period's KEK and the keys under it go, except what the holds cover.
    let r = h.engine.retention_sweep(now + 400 * DAY).await.unwrap();
    assert_eq!(r.keks_destroyed, 1, "{r:?}");
    assert_eq!(r.keys_held, 3, "space b's key, space c's key (carol is held) and carol's own unbound key: {r:?}");
    assert_eq!(r.keys_shredded, 1, "{r:?}");
    let gone = bob.call(Method::Retrieve, &ka, json!({})).await;
    assert_eq!(
        (gone.status, gone.reason.as_deref()),
        (Status::NOT_FOUND, Some("no such object")),
        "the key row went with its KEK"
    );
    let _ = a;
    // Held keys are intact, same bytes.
    let got = alice.ok(Method::Retrieve, &kb, json!({})).await.key.unwrap();
    assert_eq!(got.jwk, jb);
    assert_eq!(alice.ok(Method::Retrieve, &kc, json!({})).await.key.unwrap().jwk, jc);
    let carol = Client::connect(&h.engine, "carol").await;
    let c2 = carol.ok(Method::Retrieve, &carol_key.uri.to_string(), json!({})).await.key.unwrap();
    assert_eq!(c2.jwk, carol_key.jwk);

    // The destruction was audited, by the KMS itself, with what it destroyed.
    let shreds = log.entries(&Query { actions: vec![Action::RetentionShred], ..Query::default() }).await.unwrap();
    assert_eq!(shreds.len(), 1);
    assert_eq!(shreds[0].actor_kind, ActorKind::Kms);
    let d = serde_json::to_value(&shreds[0].detail).unwrap();
    assert_eq!((d["keys"].as_i64(), d["held"].as_i64(), d["retention_days"].as_i64()), (Some(1), Some(3), Some(365)));

    // New keys work after a period is destroyed (a new KEK for the current period).
    let (_, kn, jn) = space(&alice, &["bob"]).await;
    assert_eq!(bob.ok(Method::Retrieve, &kn, json!({})).await.key.unwrap().jwk, jn);

    // Lifting the holds lets the next sweep take what they kept, once its own period is past.
    set_policy(&h.engine, json!({"retention": {"days": 365}})).await;
    let r = h.engine.retention_sweep(now + 2000 * DAY).await.unwrap();
    assert!(r.keys_shredded >= 3, "{r:?}");
    assert_eq!(alice.call(Method::Retrieve, &kb, json!({})).await.status, Status::NOT_FOUND);
    assert_eq!(alice.call(Method::Retrieve, &kn, json!({})).await.status, Status::NOT_FOUND);
}

#[tokio::test]
async fn a_sweep_that_cannot_audit_destroys_nothing() {
    let (h, log) = harness_audited().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let (_, k, j) = space(&alice, &[]).await;
    set_policy(&h.engine, json!({"retention": {"days": 1}})).await;
    // Break the audit log: the sweep must refuse.
    let url = format!("sqlite://{}", h.dir.path().join("audit.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TABLE audit_entries").execute(&pool).await.unwrap();
    assert!(h.engine.retention_sweep(kms::now_ms() + 10 * DAY).await.is_err());
    drop(log);
    // The key and its KEK are still there (releases are refused too while the log is down: 503).
    let id = k.rsplit('/').next().unwrap();
    let rec = h.store.get_key(id).await.unwrap().expect("the key survived");
    assert!(h.store.get_kek(&rec.kek_id).await.unwrap().is_some(), "the KEK survived");
    assert_eq!(alice.call(Method::Retrieve, &k, json!({})).await.status, Status::UNAVAILABLE);
    let _ = j;
}

#[tokio::test]
async fn each_period_has_its_own_kek() {
    let h = harness().await;
    let admin = Client::connect(&h.engine, "admin").await;
    let alice = Client::connect(&h.engine, "alice").await;
    alice.create_keys(1).await;
    let keks = admin.ok(Method::Retrieve, "/kek", json!({})).await.master_keys.unwrap();
    assert_eq!(keks.len(), 1, "one period so far");
    // A sweep 10 days on with 1-day retention destroys today's period only after it ended.
    set_policy(&h.engine, json!({"retention": {"days": 1}})).await;
    let r = h.engine.retention_sweep(kms::now_ms() + 10 * DAY).await.unwrap();
    assert_eq!(r.keks_destroyed, 1);
    assert!(admin.ok(Method::Retrieve, "/kek", json!({})).await.master_keys.unwrap().is_empty());
    // The next key creation starts a new period with a new KEK.
    alice.create_keys(1).await;
    assert_eq!(admin.ok(Method::Retrieve, "/kek", json!({})).await.master_keys.unwrap().len(), 1);
}
