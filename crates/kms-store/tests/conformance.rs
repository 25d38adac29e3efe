//! The conformance suite: every test runs once against a fresh SQLite file
//! (`sqlite::name`) and once against PostgreSQL in a fresh schema
//! (`postgres::name`), through the harness shared with the other store
//! (`sqlstore::testing`).
//!
//! PostgreSQL comes from `CUSTOS_TEST_POSTGRES_URL` (default
//! `postgres://127.0.0.1:5432/test`). If it is unreachable, the PostgreSQL
//! tests report `SKIPPED (no PostgreSQL at …): name` on stderr and pass,
//! unless `CI` is set, where they fail.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use sqlstore::testing::{join_all, Ctx, Harness};

use kms_store::{
    AuthorizationRecord, BindOutcome, CreateResourceOutcome, KekRecord, KeyRecord, MasterKeyState, ResourceRecord,
    Store, StoreError,
};

// ---------------------------------------------------------------- harness

const HARNESS: Harness = Harness {
    name: "kms",
    drop_schema: |url, schema| {
        Box::pin(async move { kms_store::drop_postgres_schema(&url, &schema).await.map_err(|e| format!("{e:?}")) })
    },
};

/// A new handle on the test's database (a new "node").
trait Open {
    async fn open(&self) -> Arc<dyn Store>;
}

impl Open for Ctx {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Ctx::Sqlite { .. } => kms_store::open(&self.url()).await.expect("open sqlite"),
            Ctx::Postgres { url, schema } => kms_store::open_postgres_schema(url, schema).await.expect("open postgres"),
        }
    }
}

sqlstore::conformance! {
    crate::HARNESS;
    keys_insert_get_all_or_none,
    concurrent_key_inserts_commit_together_and_fail_alone,
    bind_key_outcomes,
    bind_key_expiry_boundary,
    list_resource_keys_ranges_order_limit,
    create_resource_creates_view,
    create_resource_exists_writes_nothing,
    create_resource_unbindable_key_writes_nothing,
    authorizations_idempotent_and_anonymous,
    create_authorizations_all_or_none,
    has_authorization_respects_expiry,
    list_and_delete_authorizations,
    claim_and_complete_requests,
    revoked_sessions_sequence,
    kek_states_one_active_per_org,
    rewrap_kek_compares_cmk_id,
    meta_values,
    swap_meta_compares_value,
    documents_compare_and_swap,
    retention_rewrap_and_destroy,
    federated_cache_adds_never_changes,
    purge_expired_spares_bound_keys,
    durability_reopen,
    kill_dash_nine_keeps_acknowledged_writes,
    concurrent_binds_one_winner,
    concurrent_claims_one_winner,
    concurrent_create_resource_shared_key,
    concurrent_put_meta_one_value,
    concurrent_kek_activation_one_active,
    concurrent_rewrap_kek_one_winner,
    concurrent_authorizations_same_pair,
    concurrent_revocations_poller_misses_none,
    concurrent_open_same_database,
}

// ---------------------------------------------------------------- fixtures

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn key(id: &str, user: &str, expiration_date: i64) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        wrapped: format!("wrapped-{id}").into_bytes(),
        kek_id: "kek-1".to_owned(),
        user_id: user.to_owned(),
        client_id: "client-1".to_owned(),
        create_date: 1_000,
        expiration_date,
        resource_id: None,
        bind_date: None,
    }
}

fn resource(id: &str, creator: &str, create_date: i64) -> ResourceRecord {
    ResourceRecord { id: id.to_owned(), creator: creator.to_owned(), create_date, expiration_date: None, ttl: None }
}

fn auth(id: &str, resource_id: &str, auth_id: Option<&str>, create_date: i64) -> AuthorizationRecord {
    AuthorizationRecord {
        id: id.to_owned(),
        resource_id: resource_id.to_owned(),
        auth_id: auth_id.map(str::to_owned),
        role_uri: None,
        creator: ALICE.to_owned(),
        create_date,
        expiration_date: None,
    }
}

fn anon(id: &str, resource_id: &str, create_date: i64, expiration_date: i64) -> AuthorizationRecord {
    AuthorizationRecord { expiration_date: Some(expiration_date), ..auth(id, resource_id, None, create_date) }
}

fn kek(id: &str, org: &str, state: MasterKeyState, create_date: i64) -> KekRecord {
    KekRecord {
        id: id.to_owned(),
        org: org.to_owned(),
        wrapped: vec![0xAB; 40],
        cmk_id: "cmk-1".to_owned(),
        state,
        create_date,
        update_date: create_date,
    }
}

/// Creates an empty resource (no keys, no authorizations).
async fn make_resource(store: &dyn Store, id: &str, creator: &str) {
    let out = store.create_resource(&resource(id, creator, 1_000), &[], &[], 0).await.unwrap();
    assert!(matches!(out, CreateResourceOutcome::Created(_)), "{out:?}");
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_owned()).collect()
}

// ---------------------------------------------------------------- keys

async fn keys_insert_get_all_or_none(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.backend(), if ctx.is_postgres() { "postgres" } else { "sqlite" });

    let k1 = key("k1", ALICE, 10_000);
    let k2 = KeyRecord { wrapped: vec![0, 255, 1, 254], ..key("k2", ALICE, 20_000) };
    store.insert_keys(&[k1.clone(), k2.clone()]).await.unwrap();
    store.insert_keys(&[]).await.unwrap();
    assert_eq!(store.get_key("k1").await.unwrap(), Some(k1.clone()));
    assert_eq!(store.get_key("k2").await.unwrap(), Some(k2));
    assert_eq!(store.get_key("nope").await.unwrap(), None);

    // A batch with a duplicate id fails as a whole.
    let err = store.insert_keys(&[key("k3", ALICE, 10_000), key("k1", BOB, 1)]).await;
    assert!(matches!(err, Err(StoreError::Database(_))), "{err:?}");
    assert_eq!(store.get_key("k3").await.unwrap(), None, "partial batch written");
    assert_eq!(store.get_key("k1").await.unwrap(), Some(k1.clone()), "existing key changed");

    // Debug never shows the wrapped key.
    let shown = format!("{k1:?}");
    assert!(!shown.contains("wrapped"), "{shown}");
}

/// Concurrent insertions are committed together (group commit), yet each
/// call is still all or none on its own: one call with a taken id fails
/// alone, and nothing of it is written.
async fn concurrent_key_inserts_commit_together_and_fail_alone(ctx: Ctx) {
    let store = ctx.open().await;
    store.insert_keys(&[key("taken", ALICE, 10_000)]).await.unwrap();
    let calls: Vec<_> = (0..48)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut keys: Vec<KeyRecord> = (0..5).map(|j| key(&format!("c{i}-{j}"), ALICE, 10_000)).collect();
                if i == 17 {
                    keys.push(key("taken", BOB, 1));
                }
                store.insert_keys(&keys).await
            })
        })
        .collect();
    for (i, r) in join_all(calls).await.into_iter().enumerate() {
        if i == 17 {
            assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");
        } else {
            r.unwrap();
        }
    }
    for i in 0..48 {
        for j in 0..5 {
            let got = store.get_key(&format!("c{i}-{j}")).await.unwrap();
            assert_eq!(got.is_some(), i != 17, "key c{i}-{j}");
        }
    }
    assert_eq!(store.get_key("taken").await.unwrap().unwrap().user_id, ALICE);
}

async fn bind_key_outcomes(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    make_resource(&*store, "r2", ALICE).await;
    store.insert_keys(&[key("k1", ALICE, 10_000), key("k2", ALICE, 10_000)]).await.unwrap();

    assert_eq!(store.bind_key("missing", "r1", ALICE, 2_000, 99_000).await.unwrap(), BindOutcome::NotFound);
    assert_eq!(store.bind_key("k1", "r1", BOB, 2_000, 99_000).await.unwrap(), BindOutcome::NotCreator);

    let bound = match store.bind_key("k1", "r1", ALICE, 2_000, 99_000).await.unwrap() {
        BindOutcome::Bound(k) => k,
        other => panic!("expected Bound, got {other:?}"),
    };
    assert_eq!(bound.resource_id.as_deref(), Some("r1"));
    assert_eq!(bound.bind_date, Some(2_000));
    assert_eq!(bound.expiration_date, 99_000);
    assert_eq!(bound.wrapped, b"wrapped-k1");
    assert_eq!(store.get_key("k1").await.unwrap(), Some(bound.clone()));

    // A retry to the same resource: success, unchanged (original bind date and expiration).
    assert_eq!(
        store.bind_key("k1", "r1", ALICE, 3_000, 55_000).await.unwrap(),
        BindOutcome::AlreadyBound(bound.clone())
    );
    assert_eq!(store.bind_key("k1", "r2", ALICE, 3_000, 55_000).await.unwrap(), BindOutcome::BoundElsewhere);
    assert_eq!(store.bind_key("k1", "r1", BOB, 3_000, 55_000).await.unwrap(), BindOutcome::NotCreator);
    assert_eq!(store.get_key("k1").await.unwrap(), Some(bound), "refused binds changed the key");

    assert_eq!(store.bind_key("k2", "r2", ALICE, 10_001, 99_000).await.unwrap(), BindOutcome::Expired);
    assert_eq!(store.get_key("k2").await.unwrap().unwrap().resource_id, None);
}

async fn bind_key_expiry_boundary(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    store.insert_keys(&[key("k1", ALICE, 5_000), key("k2", ALICE, 5_000)]).await.unwrap();
    // bind_date == expiration_date is too late; one millisecond earlier is fine.
    assert_eq!(store.bind_key("k1", "r1", ALICE, 5_000, 9_000).await.unwrap(), BindOutcome::Expired);
    assert!(matches!(store.bind_key("k2", "r1", ALICE, 4_999, 9_000).await.unwrap(), BindOutcome::Bound(_)));
}

async fn list_resource_keys_ranges_order_limit(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    make_resource(&*store, "r2", ALICE).await;
    let keys: Vec<KeyRecord> = (1..=5).map(|i| key(&format!("k{i}"), ALICE, 100_000)).collect();
    store.insert_keys(&keys).await.unwrap();
    for (i, date) in [(1, 100), (2, 200), (3, 300), (4, 400)] {
        let out = store.bind_key(&format!("k{i}"), "r1", ALICE, date, 900_000).await.unwrap();
        assert!(matches!(out, BindOutcome::Bound(_)), "{out:?}");
    }
    assert!(matches!(store.bind_key("k5", "r2", ALICE, 250, 900_000).await.unwrap(), BindOutcome::Bound(_)));

    let list = |after, before, limit| {
        let store = store.clone();
        async move {
            let keys = store.list_resource_keys("r1", after, before, limit).await.unwrap();
            ids(&keys, |k| &k.id)
        }
    };
    assert_eq!(list(None, None, None).await, ["k4", "k3", "k2", "k1"]);
    assert_eq!(list(Some(200), None, None).await, ["k4", "k3", "k2"], "bound_after is inclusive");
    assert_eq!(list(None, Some(300), None).await, ["k2", "k1"], "bound_before is exclusive");
    assert_eq!(list(Some(200), Some(400), None).await, ["k3", "k2"]);
    assert_eq!(list(None, None, Some(2)).await, ["k4", "k3"]);
    assert_eq!(list(Some(100), Some(400), Some(1)).await, ["k3"]);
    assert_eq!(list(Some(500), None, None).await, Vec::<String>::new());
    assert!(store.list_resource_keys("r3", None, None, None).await.unwrap().is_empty());
    let full = store.list_resource_keys("r2", None, None, Some(10)).await.unwrap();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].bind_date, Some(250));
}

// ---------------------------------------------------------------- resources

async fn create_resource_creates_view(ctx: Ctx) {
    let store = ctx.open().await;
    store.insert_keys(&[key("kb", ALICE, 10_000), key("ka", ALICE, 10_000), key("kc", ALICE, 10_000)]).await.unwrap();
    let res = ResourceRecord { expiration_date: Some(99_999), ttl: Some(3600), ..resource("r1", ALICE, 2_000) };
    let auths =
        [auth("a2", "r1", Some(BOB), 2_000), auth("a1", "r1", Some(ALICE), 2_000), anon("a3", "r1", 2_001, 9_000)];
    let key_ids = ["kb".to_owned(), "ka".to_owned()];
    let view = match store.create_resource(&res, &auths, &key_ids, 77_000).await.unwrap() {
        CreateResourceOutcome::Created(view) => view,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!(view.resource, res);
    let mut key_ids_sorted = view.key_ids.clone();
    key_ids_sorted.sort();
    assert_eq!(key_ids_sorted, ["ka", "kb"]);
    assert_eq!(view.authorization_ids.len(), 3);
    assert_eq!(view.authorization_ids[2], "a3", "oldest first");
    assert_eq!(store.get_resource("r1").await.unwrap(), Some(view.clone()));
    assert_eq!(store.get_resource("r-missing").await.unwrap(), None);

    for id in ["ka", "kb"] {
        let k = store.get_key(id).await.unwrap().unwrap();
        assert_eq!(k.resource_id.as_deref(), Some("r1"));
        assert_eq!(k.bind_date, Some(2_000), "bind date is the resource's create date");
        assert_eq!(k.expiration_date, 77_000);
    }
    assert_eq!(store.get_key("kc").await.unwrap().unwrap().resource_id, None);
    let stored = store.get_authorization("a2").await.unwrap().unwrap();
    assert_eq!(stored, auths[0]);
    assert!(store.has_authorization("r1", &[BOB], 5_000).await.unwrap());

    // A later bind appears last in the view (oldest bind first).
    assert!(matches!(store.bind_key("kc", "r1", ALICE, 3_000, 80_000).await.unwrap(), BindOutcome::Bound(_)));
    assert_eq!(store.get_resource("r1").await.unwrap().unwrap().key_ids.last().map(String::as_str), Some("kc"));
}

async fn create_resource_exists_writes_nothing(ctx: Ctx) {
    let store = ctx.open().await;
    store.insert_keys(&[key("k1", ALICE, 10_000), key("k2", ALICE, 10_000)]).await.unwrap();
    let first = store.create_resource(&resource("r1", ALICE, 2_000), &[], &["k1".to_owned()], 50_000).await.unwrap();
    assert!(matches!(first, CreateResourceOutcome::Created(_)));
    let before = store.get_resource("r1").await.unwrap();

    let again = store
        .create_resource(&resource("r1", BOB, 3_000), &[auth("a1", "r1", Some(BOB), 3_000)], &["k2".to_owned()], 60_000)
        .await
        .unwrap();
    assert_eq!(again, CreateResourceOutcome::Exists);
    assert_eq!(store.get_resource("r1").await.unwrap(), before, "resource changed");
    assert_eq!(store.get_key("k2").await.unwrap().unwrap().resource_id, None, "key bound by a failed create");
    assert_eq!(store.get_authorization("a1").await.unwrap(), None, "authorization written by a failed create");
}

async fn create_resource_unbindable_key_writes_nothing(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "other", ALICE).await;
    store
        .insert_keys(&[
            key("good", ALICE, 10_000),
            key("bobs", BOB, 10_000),
            key("old", ALICE, 1_500),
            key("taken", ALICE, 10_000),
        ])
        .await
        .unwrap();
    assert!(matches!(store.bind_key("taken", "other", ALICE, 1_200, 20_000).await.unwrap(), BindOutcome::Bound(_)));

    for (n, bad) in ["missing", "bobs", "old", "taken"].into_iter().enumerate() {
        let rid = format!("r{n}");
        let auths = [auth(&format!("a{n}"), &rid, Some(BOB), 2_000), anon(&format!("anon{n}"), &rid, 2_000, 9_000)];
        let out = store
            .create_resource(&resource(&rid, ALICE, 2_000), &auths, &["good".to_owned(), bad.to_owned()], 50_000)
            .await
            .unwrap();
        assert_eq!(out, CreateResourceOutcome::KeyNotBindable(bad.to_owned()), "key {bad}");
        assert_eq!(store.get_resource(&rid).await.unwrap(), None, "resource written despite {bad}");
        assert!(
            store.list_authorizations(&rid, None).await.unwrap().is_empty(),
            "authorizations written despite {bad}"
        );
        assert_eq!(store.get_authorization(&format!("a{n}")).await.unwrap(), None);
        let good = store.get_key("good").await.unwrap().unwrap();
        assert_eq!(
            (good.resource_id, good.bind_date, good.expiration_date),
            (None, None, 10_000),
            "key bound despite {bad}"
        );
    }
    // The untouched keys are still usable afterwards.
    let out = store.create_resource(&resource("r9", ALICE, 2_000), &[], &["good".to_owned()], 50_000).await.unwrap();
    assert!(matches!(out, CreateResourceOutcome::Created(v) if v.key_ids == ["good"]));
}

// ---------------------------------------------------------------- authorizations

async fn authorizations_idempotent_and_anonymous(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    let batch =
        [auth("a1", "r1", Some(BOB), 2_000), auth("a2", "r1", Some("kms://kms.example.com/resources/r9"), 2_000)];
    let created = store.create_authorizations(&batch).await.unwrap();
    assert_eq!(created, batch);

    // A retry with fresh ids returns the records already there, in request order.
    let mut retry = [
        auth("a2-bis", "r1", Some("kms://kms.example.com/resources/r9"), 3_000),
        auth("a1-bis", "r1", Some(BOB), 3_000),
    ];
    retry[0].role_uri = Some("role:other".into());
    let returned = store.create_authorizations(&retry).await.unwrap();
    assert_eq!(returned, [batch[1].clone(), batch[0].clone()]);
    assert_eq!(store.get_authorization("a1-bis").await.unwrap(), None);
    assert_eq!(store.list_authorizations("r1", None).await.unwrap().len(), 2);

    // Anonymous ones are always new.
    let anons = [anon("x1", "r1", 4_000, 9_000), anon("x2", "r1", 4_000, 9_000)];
    assert_eq!(store.create_authorizations(&anons).await.unwrap(), anons);
    assert_eq!(store.create_authorizations(&[anon("x3", "r1", 4_001, 9_000)]).await.unwrap().len(), 1);
    assert_eq!(store.list_authorizations("r1", None).await.unwrap().len(), 5);

    // The same auth_id on another resource is a different authorization.
    make_resource(&*store, "r2", ALICE).await;
    let other = store.create_authorizations(&[auth("b1", "r2", Some(BOB), 5_000)]).await.unwrap();
    assert_eq!(other[0].id, "b1");
    assert!(store.create_authorizations(&[]).await.unwrap().is_empty());
}

async fn create_authorizations_all_or_none(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    store.create_authorizations(&[auth("a1", "r1", Some(BOB), 2_000)]).await.unwrap();

    // Second record names a resource that does not exist.
    let err = store
        .create_authorizations(&[
            auth("n1", "r1", Some("carol@example.com"), 3_000),
            auth("n2", "r-missing", Some(BOB), 3_000),
        ])
        .await;
    assert!(err.is_err(), "{err:?}");
    assert_eq!(store.get_authorization("n1").await.unwrap(), None, "partial batch written");

    // Second record reuses an existing authorization id.
    let err = store
        .create_authorizations(&[anon("n3", "r1", 3_000, 9_000), auth("a1", "r1", Some("dave@example.com"), 3_000)])
        .await;
    assert!(err.is_err(), "{err:?}");
    assert_eq!(store.get_authorization("n3").await.unwrap(), None, "partial batch written");
    assert_eq!(store.list_authorizations("r1", None).await.unwrap().len(), 1);
}

async fn has_authorization_respects_expiry(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    make_resource(&*store, "r2", ALICE).await;
    let mut expiring = auth("a2", "r1", Some("carol@example.com"), 2_000);
    expiring.expiration_date = Some(8_000);
    store.create_authorizations(&[auth("a1", "r1", Some(BOB), 2_000), expiring]).await.unwrap();

    assert!(store.has_authorization("r1", &[BOB], 1_000_000).await.unwrap());
    assert!(store.has_authorization("r1", &["nobody", BOB], 0).await.unwrap());
    assert!(!store.has_authorization("r1", &["nobody"], 0).await.unwrap());
    assert!(!store.has_authorization("r1", &[], 0).await.unwrap());
    assert!(!store.has_authorization("r2", &[BOB], 0).await.unwrap());
    assert!(store.has_authorization("r1", &["carol@example.com"], 7_999).await.unwrap());
    assert!(!store.has_authorization("r1", &["carol@example.com"], 8_000).await.unwrap(), "expiration_date <= now");

    // Many ids (more than one IN chunk).
    let many: Vec<String> = (0..1_200).map(|i| format!("user{i}@example.com")).collect();
    let mut refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(!store.has_authorization("r1", &refs, 0).await.unwrap());
    refs.push(BOB);
    assert!(store.has_authorization("r1", &refs, 0).await.unwrap());
}

async fn list_and_delete_authorizations(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    make_resource(&*store, "r2", ALICE).await;
    let a = [
        auth("a3", "r1", Some("carol@example.com"), 3_000),
        auth("a1", "r1", Some(BOB), 1_000),
        auth("a2", "r1", Some("dave@example.com"), 2_000),
        anon("a4", "r1", 4_000, 9_000),
        auth("b1", "r2", Some(BOB), 1_000),
    ];
    store.create_authorizations(&a[..4]).await.unwrap();
    store.create_authorizations(&a[4..]).await.unwrap();

    let all = store.list_authorizations("r1", None).await.unwrap();
    assert_eq!(ids(&all, |x| &x.id), ["a1", "a2", "a3", "a4"], "oldest first");
    assert_eq!(store.list_authorizations("r1", Some(BOB)).await.unwrap(), [a[1].clone()]);
    assert!(store.list_authorizations("r1", Some("nobody")).await.unwrap().is_empty());
    assert!(store.list_authorizations("r-missing", None).await.unwrap().is_empty());

    assert_eq!(store.delete_authorization("a2").await.unwrap(), Some(a[2].clone()));
    assert_eq!(store.delete_authorization("a2").await.unwrap(), None);
    assert_eq!(store.get_authorization("a2").await.unwrap(), None);

    let deleted = store
        .delete_authorizations("r1", &[BOB.to_owned(), "carol@example.com".to_owned(), "nobody".to_owned()])
        .await
        .unwrap();
    assert_eq!(deleted, [a[1].clone(), a[0].clone()]);
    assert_eq!(ids(&store.list_authorizations("r1", None).await.unwrap(), |x| &x.id), ["a4"]);
    assert_eq!(store.list_authorizations("r2", None).await.unwrap(), [a[4].clone()], "other resource touched");
    assert!(store.delete_authorizations("r1", &[]).await.unwrap().is_empty());
    assert_eq!(store.get_resource("r1").await.unwrap().unwrap().authorization_ids, ["a4"]);
}

// ---------------------------------------------------------------- requests and sessions

async fn claim_and_complete_requests(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.claim_request("s1", "req-1", 60_000).await.unwrap(), None, "first claim");
    assert_eq!(store.claim_request("s1", "req-1", 60_000).await.unwrap(), Some(None), "claimed, unanswered");
    assert_eq!(store.claim_request("s2", "req-1", 60_000).await.unwrap(), None, "per session");
    store.complete_request("s1", "req-1", r#"{"status":201}"#).await.unwrap();
    assert_eq!(store.claim_request("s1", "req-1", 60_000).await.unwrap(), Some(Some(r#"{"status":201}"#.to_owned())));
    assert_eq!(store.claim_request("s2", "req-1", 60_000).await.unwrap(), Some(None));
    // Completing what was never claimed is harmless and claims nothing.
    store.complete_request("s3", "req-9", "x").await.unwrap();
    assert_eq!(store.claim_request("s3", "req-9", 60_000).await.unwrap(), None);
    // A released claim (the request failed) can be claimed again; an answered one cannot be released.
    store.release_request("s3", "req-9").await.unwrap();
    assert_eq!(store.claim_request("s3", "req-9", 60_000).await.unwrap(), None, "released, claimable again");
    store.release_request("s1", "req-1").await.unwrap();
    assert_eq!(store.claim_request("s1", "req-1", 60_000).await.unwrap(), Some(Some(r#"{"status":201}"#.to_owned())));
}

async fn revoked_sessions_sequence(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.revoked_sessions_since(0).await.unwrap(), (vec![], 0));
    store.revoke_session("s1", 10_000).await.unwrap();
    store.revoke_session("s2", 20_000).await.unwrap();
    let (sessions, seq) = store.revoked_sessions_since(0).await.unwrap();
    assert_eq!(sessions, ["s1", "s2"]);
    assert!(seq >= 2);
    assert_eq!(store.revoked_sessions_since(seq).await.unwrap(), (vec![], seq), "cursor stays put");

    store.revoke_session("s1", 30_000).await.unwrap(); // twice is fine
    let (sessions, seq2) = store.revoked_sessions_since(seq).await.unwrap();
    assert_eq!(sessions, ["s1"]);
    assert!(seq2 > seq);
    let (all, _) = store.revoked_sessions_since(0).await.unwrap();
    assert_eq!(all, ["s1", "s2"], "duplicates collapsed");

    // Purging old revocations never reuses sequence numbers.
    assert_eq!(store.purge_expired(40_000).await.unwrap(), 3);
    assert_eq!(store.revoked_sessions_since(0).await.unwrap().0, Vec::<String>::new());
    store.revoke_session("s3", 90_000).await.unwrap();
    let (sessions, seq3) = store.revoked_sessions_since(seq2).await.unwrap();
    assert_eq!(sessions, ["s3"]);
    assert!(seq3 > seq2);
}

// ---------------------------------------------------------------- key hierarchy

async fn kek_states_one_active_per_org(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.active_kek("org1").await.unwrap(), None);
    let k1 = kek("kek1", "org1", MasterKeyState::Active, 1_000);
    store.insert_kek(&k1).await.unwrap();
    store.insert_kek(&kek("other", "org2", MasterKeyState::Active, 1_500)).await.unwrap();
    assert_eq!(store.active_kek("org1").await.unwrap(), Some(k1.clone()));
    assert_eq!(store.get_kek("kek1").await.unwrap(), Some(k1.clone()));
    assert_eq!(store.get_kek("nope").await.unwrap(), None);

    let k2 = kek("kek2", "org1", MasterKeyState::Active, 2_000);
    store.insert_kek(&k2).await.unwrap();
    assert_eq!(store.active_kek("org1").await.unwrap(), Some(k2.clone()));
    let old = store.get_kek("kek1").await.unwrap().unwrap();
    assert_eq!((old.state, old.update_date), (MasterKeyState::Inactive, 2_000));
    assert_eq!(store.active_kek("org2").await.unwrap().unwrap().id, "other", "other org touched");

    // An inactive insert demotes nothing.
    store.insert_kek(&kek("kek3", "org1", MasterKeyState::Inactive, 3_000)).await.unwrap();
    assert_eq!(store.active_kek("org1").await.unwrap().unwrap().id, "kek2");
    assert!(store.insert_kek(&kek("kek3", "org1", MasterKeyState::Inactive, 3_000)).await.is_err(), "duplicate id");

    let listed = store.list_keks(Some("org1")).await.unwrap();
    assert_eq!(ids(&listed, |k| &k.id), ["kek3", "kek2", "kek1"], "newest first");
    assert_eq!(store.list_keks(None).await.unwrap().len(), 4);
    assert!(store.list_keks(Some("org9")).await.unwrap().is_empty());

    // Re-activating kek1 demotes kek2.
    assert!(store.set_kek_state("kek1", MasterKeyState::Active, 4_000).await.unwrap());
    assert_eq!(store.active_kek("org1").await.unwrap().unwrap().id, "kek1");
    let demoted = store.get_kek("kek2").await.unwrap().unwrap();
    assert_eq!((demoted.state, demoted.update_date), (MasterKeyState::Inactive, 4_000));
    assert!(store.set_kek_state("kek1", MasterKeyState::Active, 4_500).await.unwrap(), "idempotent");
    assert_eq!(store.active_kek("org1").await.unwrap().unwrap().id, "kek1");

    assert!(store.set_kek_state("kek2", MasterKeyState::Revoked, 5_000).await.unwrap());
    let revoked = store.get_kek("kek2").await.unwrap().unwrap();
    assert_eq!((revoked.state, revoked.update_date), (MasterKeyState::Revoked, 5_000));
    assert!(store.set_kek_state("kek1", MasterKeyState::Inactive, 6_000).await.unwrap());
    assert_eq!(store.active_kek("org1").await.unwrap(), None);
    assert!(!store.set_kek_state("nope", MasterKeyState::Active, 7_000).await.unwrap());
    assert!(!store.set_kek_state("nope", MasterKeyState::Revoked, 7_000).await.unwrap());
    assert_eq!(store.active_kek("org2").await.unwrap().unwrap().id, "other");
}

async fn rewrap_kek_compares_cmk_id(ctx: Ctx) {
    let store = ctx.open().await;
    store.insert_kek(&kek("kek1", "org1", MasterKeyState::Inactive, 1_000)).await.unwrap();
    store.insert_kek(&kek("kek2", "org1", MasterKeyState::Active, 2_000)).await.unwrap();
    // Only from the CMK it is under; state and dates stay.
    assert!(store.rewrap_kek("kek1", "cmk-1", &[1, 2, 3], "cmk-2").await.unwrap());
    let k1 = store.get_kek("kek1").await.unwrap().unwrap();
    assert_eq!((k1.wrapped.as_slice(), k1.cmk_id.as_str()), (&[1u8, 2, 3][..], "cmk-2"));
    assert_eq!((k1.state, k1.create_date, k1.update_date), (MasterKeyState::Inactive, 1_000, 1_000));
    assert!(!store.rewrap_kek("kek1", "cmk-1", &[9], "cmk-3").await.unwrap(), "no longer under cmk-1");
    assert_eq!(store.get_kek("kek1").await.unwrap().unwrap(), k1, "a refused re-wrap writes nothing");
    assert!(!store.rewrap_kek("nope", "cmk-1", &[9], "cmk-2").await.unwrap());
    // The other KEK is untouched, and stays the org's active one.
    let k2 = store.get_kek("kek2").await.unwrap().unwrap();
    assert_eq!((k2.cmk_id.as_str(), k2.wrapped.clone()), ("cmk-1", vec![0xAB; 40]));
    assert_eq!(store.active_kek("org1").await.unwrap(), Some(k2));
    // Back again (rotation to a CMK used before).
    assert!(store.rewrap_kek("kek1", "cmk-2", &[4], "cmk-1").await.unwrap());
    assert_eq!(store.get_kek("kek1").await.unwrap().unwrap().cmk_id, "cmk-1");
}

// ---------------------------------------------------------------- meta

async fn meta_values(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.get_meta("cmk-check").await.unwrap(), None);
    assert_eq!(store.put_meta_if_absent("cmk-check", &[1, 2, 3]).await.unwrap(), [1, 2, 3]);
    assert_eq!(store.put_meta_if_absent("cmk-check", &[9, 9]).await.unwrap(), [1, 2, 3], "first value stays");
    assert_eq!(store.get_meta("cmk-check").await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(store.put_meta_if_absent("empty", &[]).await.unwrap(), Vec::<u8>::new());

    for name in ["ticket/0001", "ticket/0002", "ticket/0003", "ticket/1000", "ticket", "tickets/0001", "other/0001"] {
        store.put_meta_if_absent(name, name.as_bytes()).await.unwrap();
    }
    assert_eq!(store.delete_meta_before("ticket/", "ticket/0003").await.unwrap(), 2);
    assert_eq!(store.get_meta("ticket/0001").await.unwrap(), None);
    assert_eq!(store.get_meta("ticket/0003").await.unwrap(), Some(b"ticket/0003".to_vec()));
    // Only names with the prefix go, even when they sort before `before`.
    assert_eq!(store.delete_meta_before("ticket/", "zzz").await.unwrap(), 2);
    for kept in ["ticket", "tickets/0001", "other/0001", "cmk-check"] {
        assert!(store.get_meta(kept).await.unwrap().is_some(), "{kept} deleted");
    }
    // Bytewise comparison: 'Z' (0x5a) < 'a' (0x61) whatever the database's collation.
    store.put_meta_if_absent("p/Z", b"z").await.unwrap();
    store.put_meta_if_absent("p/a", b"a").await.unwrap();
    assert_eq!(store.delete_meta_before("p/", "p/a").await.unwrap(), 1);
    assert_eq!(store.get_meta("p/Z").await.unwrap(), None);
    assert!(store.get_meta("p/a").await.unwrap().is_some());
}

async fn swap_meta_compares_value(ctx: Ctx) {
    let store = ctx.open().await;
    assert!(!store.swap_meta("cmk/registry", b"", b"x").await.unwrap(), "absent: nothing to swap");
    assert_eq!(store.get_meta("cmk/registry").await.unwrap(), None);
    store.put_meta_if_absent("cmk/registry", b"v1").await.unwrap();
    store.put_meta_if_absent("other", b"v1").await.unwrap();
    assert!(!store.swap_meta("cmk/registry", b"v0", b"v2").await.unwrap(), "stale expectation");
    assert!(!store.swap_meta("cmk/registry", b"v", b"v2").await.unwrap(), "a prefix is not equal");
    assert_eq!(store.get_meta("cmk/registry").await.unwrap(), Some(b"v1".to_vec()));
    assert!(store.swap_meta("cmk/registry", b"v1", b"v2").await.unwrap());
    assert_eq!(store.get_meta("cmk/registry").await.unwrap(), Some(b"v2".to_vec()));
    assert!(!store.swap_meta("cmk/registry", b"v1", b"v3").await.unwrap(), "v1 is gone");
    assert_eq!(store.get_meta("other").await.unwrap(), Some(b"v1".to_vec()), "other names untouched");
    // Binary values, including an empty one, compare bytewise.
    assert!(store.swap_meta("cmk/registry", b"v2", &[0, 0xFF, 0]).await.unwrap());
    assert!(!store.swap_meta("cmk/registry", &[0, 0xFF], &[]).await.unwrap());
    assert!(store.swap_meta("cmk/registry", &[0, 0xFF, 0], &[]).await.unwrap());
    assert_eq!(store.get_meta("cmk/registry").await.unwrap(), Some(Vec::new()));
    assert!(store.swap_meta("cmk/registry", &[], b"again").await.unwrap());
}

async fn documents_compare_and_swap(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.get_document("policy", "acme").await.unwrap(), None);
    assert!(!store.put_document("policy", "acme", 1, "{}", 10).await.unwrap(), "no version 1 yet");
    assert!(store.put_document("policy", "acme", 0, r#"{"a":1}"#, 10).await.unwrap());
    assert!(!store.put_document("policy", "acme", 0, r#"{"b":2}"#, 11).await.unwrap(), "exists already");
    let d = store.get_document("policy", "acme").await.unwrap().unwrap();
    assert_eq!((d.version, d.body.as_str(), d.update_date), (1, r#"{"a":1}"#, 10));
    assert!(store.put_document("policy", "acme", 1, r#"{"c":3}"#, 12).await.unwrap());
    assert!(!store.put_document("policy", "acme", 1, r#"{"lost":1}"#, 13).await.unwrap(), "stale version");
    let d = store.get_document("policy", "acme").await.unwrap().unwrap();
    assert_eq!((d.version, d.body.as_str(), d.update_date), (2, r#"{"c":3}"#, 12));
    assert!(store.put_document("case", "c2", 0, "2", 1).await.unwrap());
    assert!(store.put_document("case", "c1", 0, "1", 1).await.unwrap());
    let ids: Vec<String> = store.list_documents("case").await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert!(store.list_documents("nothing").await.unwrap().is_empty());
    // Concurrent writers from the same version: exactly one wins.
    let wins = futures_util::future::join_all((0..8).map(|i| {
        let s = store.clone();
        async move { s.put_document("policy", "acme", 2, &i.to_string(), 20).await.unwrap() }
    }))
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
    assert_eq!(store.get_document("policy", "acme").await.unwrap().unwrap().version, 3);
}

async fn retention_rewrap_and_destroy(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    let mut keys = vec![key("k1", ALICE, 50_000), key("k2", ALICE, 50_000), key("k3", ALICE, 50_000)];
    for k in &mut keys {
        k.kek_id = "old".into();
    }
    keys[2].kek_id = "other".into();
    store.insert_keys(&keys).await.unwrap();
    let ids = |v: Vec<KeyRecord>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(store.keys_wrapped_by("old", "", 10).await.unwrap()), ["k1", "k2"]);
    assert_eq!(ids(store.keys_wrapped_by("old", "k1", 10).await.unwrap()), ["k2"]);
    assert_eq!(ids(store.keys_wrapped_by("old", "", 1).await.unwrap()), ["k1"]);
    // Rewrap only from the KEK it is under.
    assert!(store.rewrap_key("k2", "old", &[7, 7], "new").await.unwrap());
    assert!(!store.rewrap_key("k2", "old", &[8], "newer").await.unwrap(), "no longer under old");
    assert!(!store.rewrap_key("nope", "old", &[8], "new").await.unwrap());
    let k2 = store.get_key("k2").await.unwrap().unwrap();
    assert_eq!((k2.wrapped, k2.kek_id.as_str()), (vec![7, 7], "new"));
    // Destroying "old" takes k1 only, and the KEK row.
    store
        .insert_kek(&KekRecord {
            id: "old".into(),
            org: "org1".into(),
            wrapped: vec![1],
            cmk_id: "c".into(),
            state: MasterKeyState::Inactive,
            create_date: 1,
            update_date: 1,
        })
        .await
        .unwrap();
    assert_eq!(store.destroy_kek("old").await.unwrap(), 1);
    assert_eq!(store.get_key("k1").await.unwrap(), None);
    assert!(store.get_key("k2").await.unwrap().is_some());
    assert!(store.get_key("k3").await.unwrap().is_some());
    assert_eq!(store.get_kek("old").await.unwrap(), None);
    assert_eq!(store.destroy_kek("old").await.unwrap(), 0, "idempotent");
    // Who is authorized where.
    assert!(store.resources_of(ALICE).await.unwrap().is_empty());
    store.create_authorizations(&[auth("a1", "r1", Some(ALICE), 2_000)]).await.unwrap();
    assert_eq!(store.resources_of(ALICE).await.unwrap(), ["r1"]);
    assert!(store.resources_of("nobody@x").await.unwrap().is_empty());
}

async fn federated_cache_adds_never_changes(ctx: Ctx) {
    let store = ctx.open().await;
    let res = resource("fed:kms.a.test/r1", "kms://kms.a.test", 1_000);
    let bound = |id: &str, wrapped: &[u8]| KeyRecord {
        wrapped: wrapped.to_vec(),
        resource_id: Some(res.id.clone()),
        bind_date: Some(1_500),
        ..key(id, "dave@b.test", 90_000)
    };
    let k1 = bound("fed:kms.a.test/k1", b"one");
    store
        .cache_federated(&res, &[auth("fa1", &res.id, Some("dave@b.test"), 1_000)], std::slice::from_ref(&k1))
        .await
        .unwrap();
    assert_eq!(store.get_key(&k1.id).await.unwrap(), Some(k1.clone()));
    assert!(store.has_authorization(&res.id, &["dave@b.test"], 2_000).await.unwrap());
    // Again, with a changed copy of k1, a new key and another user: only what is new is added.
    let k2 = bound("fed:kms.a.test/k2", b"two");
    store
        .cache_federated(
            &ResourceRecord { creator: "someone-else".into(), ..res.clone() },
            &[auth("fa2", &res.id, Some("dave@b.test"), 3_000), auth("fa3", &res.id, Some("erin@b.test"), 3_000)],
            &[bound(&k1.id, b"changed"), k2.clone()],
        )
        .await
        .unwrap();
    assert_eq!(store.get_key(&k1.id).await.unwrap(), Some(k1.clone()), "a cached key never changes");
    assert_eq!(store.get_key(&k2.id).await.unwrap(), Some(k2.clone()));
    let auths = store.list_authorizations(&res.id, None).await.unwrap();
    assert_eq!(ids(&auths, |a| &a.id), ["fa1", "fa3"], "one row per user, the first kept");
    assert_eq!(store.get_resource(&res.id).await.unwrap().unwrap().resource.creator, "kms://kms.a.test");
    assert_eq!(store.resources_of("erin@b.test").await.unwrap(), std::slice::from_ref(&res.id));
    // A key bound elsewhere is refused and nothing of the call is written.
    let stray = KeyRecord { resource_id: Some("r-other".into()), ..bound("fed:kms.a.test/k3", b"3") };
    let k4 = bound("fed:kms.a.test/k4", b"4");
    assert!(store.cache_federated(&res, &[], &[k4.clone(), stray]).await.is_err());
    assert_eq!(store.get_key(&k4.id).await.unwrap(), None, "partial write");
}

// ---------------------------------------------------------------- housekeeping

async fn purge_expired_spares_bound_keys(ctx: Ctx) {
    let store = ctx.open().await;
    make_resource(&*store, "r1", ALICE).await;
    store
        .insert_keys(&[key("unbound-old", ALICE, 5_000), key("unbound-new", ALICE, 50_000), key("bound", ALICE, 5_000)])
        .await
        .unwrap();
    // Bound, with an expiration (last date to encrypt) long past at purge time.
    assert!(matches!(store.bind_key("bound", "r1", ALICE, 2_000, 6_000).await.unwrap(), BindOutcome::Bound(_)));
    assert_eq!(store.claim_request("s", "old", 5_000).await.unwrap(), None);
    assert_eq!(store.claim_request("s", "new", 50_000).await.unwrap(), None);
    store.revoke_session("s-old", 5_000).await.unwrap();
    store.revoke_session("s-new", 50_000).await.unwrap();
    store
        .create_authorizations(&[
            anon("x-old", "r1", 1_000, 5_000),
            anon("x-new", "r1", 1_000, 50_000),
            auth("named", "r1", Some(BOB), 1_000),
        ])
        .await
        .unwrap();

    assert_eq!(store.purge_expired(10_000).await.unwrap(), 4);
    assert_eq!(store.get_key("unbound-old").await.unwrap(), None);
    assert!(store.get_key("unbound-new").await.unwrap().is_some());
    assert!(store.get_key("bound").await.unwrap().is_some(), "a bound key was purged");
    assert_eq!(store.claim_request("s", "old", 60_000).await.unwrap(), None, "old entry not purged");
    assert_eq!(store.claim_request("s", "new", 60_000).await.unwrap(), Some(None));
    assert_eq!(store.revoked_sessions_since(0).await.unwrap().0, ["s-new"]);
    let mut left = ids(&store.list_authorizations("r1", None).await.unwrap(), |a| &a.id);
    left.sort();
    assert_eq!(left, ["named", "x-new"]);
    assert_eq!(store.purge_expired(10_000).await.unwrap(), 0, "nothing left to purge");
    // The boundary: expiring exactly now counts as expired.
    assert_eq!(store.purge_expired(50_000).await.unwrap(), 4);
    assert!(store.get_key("bound").await.unwrap().is_some());
}

async fn durability_reopen(ctx: Ctx) {
    let k = key("k1", ALICE, 10_000);
    {
        let store = ctx.open().await;
        store.insert_keys(std::slice::from_ref(&k)).await.unwrap();
        make_resource(&*store, "r1", ALICE).await;
        assert!(matches!(store.bind_key("k1", "r1", ALICE, 2_000, 9_000).await.unwrap(), BindOutcome::Bound(_)));
        store.put_meta_if_absent("m", b"v").await.unwrap();
        store.insert_kek(&kek("kek1", "org1", MasterKeyState::Active, 1_000)).await.unwrap();
        if let Ctx::Sqlite { path } = &ctx {
            assert!(path.exists(), "database file not created");
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            assert!(wal.exists(), "not in WAL mode (no {})", wal.display());
        }
    }
    // A second handle (SQLite: a new pool on the same file; migrations re-run idempotently).
    let store = ctx.open().await;
    let got = store.get_key("k1").await.unwrap().expect("key lost across reopen");
    assert_eq!((got.wrapped, got.resource_id, got.bind_date), (k.wrapped, Some("r1".into()), Some(2_000)));
    assert_eq!(store.get_meta("m").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.active_kek("org1").await.unwrap().unwrap().id, "kek1");
    assert_eq!(store.get_resource("r1").await.unwrap().unwrap().key_ids, ["k1"]);
}

/// Runs this test binary again as a writer (`kill_child_writer`), SIGKILLs it
/// after it acknowledged some writes, and checks that every acknowledged
/// write is there.
async fn kill_dash_nine_keeps_acknowledged_writes(ctx: Ctx) {
    let acked = HARNESS.kill_child_after_acks(&ctx, "kill_child_writer", 25).await;

    let store = ctx.open().await;
    for id in &acked {
        let k = store.get_key(id).await.unwrap();
        assert_eq!(k.map(|k| k.wrapped), Some(format!("wrapped-{id}").into_bytes()), "acknowledged key {id} lost");
    }
}

/// The child half of `kill_dash_nine_keeps_acknowledged_writes`: writes keys
/// one per transaction forever, printing `ACK id` after each commit.
#[tokio::test]
#[ignore = "child process of kill_dash_nine_keeps_acknowledged_writes"]
async fn kill_child_writer() {
    let store = HARNESS.child_ctx().open().await;
    for i in 0.. {
        let id = format!("kill-{i}");
        store.insert_keys(&[key(&id, ALICE, 10_000)]).await.unwrap();
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {id}").unwrap();
        out.flush().unwrap();
    }
}

// ---------------------------------------------------------------- concurrency

const N: usize = 20;

/// Two handles on one database: two KMS nodes (on SQLite, two pools on one file).
async fn two_nodes(ctx: &Ctx) -> [Arc<dyn Store>; 2] {
    [ctx.open().await, ctx.open().await]
}

async fn concurrent_binds_one_winner(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    for i in 0..N {
        make_resource(&*nodes[0], &format!("r{i}"), ALICE).await;
    }
    nodes[0].insert_keys(&[key("k", ALICE, 10_000)]).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.bind_key("k", &format!("r{i}"), ALICE, 2_000, 9_000).await.unwrap()
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    let winners: Vec<&KeyRecord> =
        outcomes.iter().filter_map(|o| if let BindOutcome::Bound(k) = o { Some(k) } else { None }).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == BindOutcome::BoundElsewhere).count(), N - 1, "{outcomes:?}");
    assert_eq!(nodes[1].get_key("k").await.unwrap().unwrap().resource_id, winners[0].resource_id);
}

async fn concurrent_claims_one_winner(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim_request("session", "req-1", 60_000).await.unwrap()
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_none()).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == Some(None)).count(), N - 1, "{outcomes:?}");
}

async fn concurrent_create_resource_shared_key(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    // Each creation binds its own key plus one shared key; the shared one sorts in the middle.
    let mut keys: Vec<KeyRecord> = (0..N).map(|i| key(&format!("k{i:02}"), ALICE, 10_000)).collect();
    keys.push(key("k10-shared", ALICE, 10_000));
    nodes[0].insert_keys(&keys).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                let rid = format!("r{i}");
                let auths = [auth(&format!("a{i}"), &rid, Some(BOB), 2_000)];
                let key_ids = [format!("k{i:02}"), "k10-shared".to_owned()];
                barrier.wait().await;
                (i, store.create_resource(&resource(&rid, ALICE, 2_000), &auths, &key_ids, 50_000).await.unwrap())
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    let created: Vec<usize> =
        outcomes.iter().filter(|(_, o)| matches!(o, CreateResourceOutcome::Created(_))).map(|(i, _)| *i).collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|(_, o)| matches!(o, CreateResourceOutcome::Created(_))
            || *o == CreateResourceOutcome::KeyNotBindable("k10-shared".into())),
        "{outcomes:?}"
    );
    for i in 0..N {
        let exists = nodes[1].get_resource(&format!("r{i}")).await.unwrap().is_some();
        assert_eq!(exists, created.contains(&i), "resource r{i}");
        let own = nodes[1].get_key(&format!("k{i:02}")).await.unwrap().unwrap();
        assert_eq!(own.resource_id.is_some(), created.contains(&i), "key k{i:02}");
        assert_eq!(nodes[1].get_authorization(&format!("a{i}")).await.unwrap().is_some(), created.contains(&i));
    }
}

async fn concurrent_put_meta_one_value(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.put_meta_if_absent("ticket-key", &[i as u8; 8]).await.unwrap()
            })
        })
        .collect();
    let values = join_all(tasks).await;
    let stored = nodes[0].get_meta("ticket-key").await.unwrap().unwrap();
    assert!(values.iter().all(|v| *v == stored), "{values:?} vs {stored:?}");
}

async fn concurrent_kek_activation_one_active(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    nodes[0].insert_kek(&kek("kek-0", "org", MasterKeyState::Active, 1)).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 {
                    store
                        .insert_kek(&kek(&format!("kek-{}", i + 1), "org", MasterKeyState::Active, 10 + i as i64))
                        .await
                } else {
                    store
                        .set_kek_state("kek-0", MasterKeyState::Active, 10 + i as i64)
                        .await
                        .map(|found| assert!(found))
                }
            })
        })
        .collect();
    for outcome in join_all(tasks).await {
        outcome.expect("activation failed");
    }
    let keks = nodes[1].list_keks(Some("org")).await.unwrap();
    assert_eq!(keks.len(), N / 2 + 1);
    let active: Vec<&KekRecord> = keks.iter().filter(|k| k.state == MasterKeyState::Active).collect();
    assert_eq!(active.len(), 1, "{keks:?}");
    assert_eq!(nodes[1].active_kek("org").await.unwrap().as_ref(), Some(active[0]));
}

async fn concurrent_rewrap_kek_one_winner(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    nodes[0].insert_kek(&kek("kek", "org", MasterKeyState::Active, 1)).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let won = store.rewrap_kek("kek", "cmk-1", &[i as u8; 4], &format!("cmk-new-{i}")).await.unwrap();
                (i, won)
            })
        })
        .collect();
    let winners: Vec<usize> = join_all(tasks).await.into_iter().filter(|(_, won)| *won).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let k = nodes[1].get_kek("kek").await.unwrap().unwrap();
    let w = winners[0];
    assert_eq!((k.wrapped, k.cmk_id), (vec![w as u8; 4], format!("cmk-new-{w}")));
}

async fn concurrent_authorizations_same_pair(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    make_resource(&*nodes[0], "r1", ALICE).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|i| {
            let (store, barrier) = (nodes[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                // Two pairs, in opposite orders on alternate tasks.
                let mut batch = vec![
                    auth(&format!("a{i}"), "r1", Some(BOB), 2_000),
                    auth(&format!("c{i}"), "r1", Some("carol@example.com"), 2_000),
                ];
                if i % 2 == 1 {
                    batch.reverse();
                }
                barrier.wait().await;
                store.create_authorizations(&batch).await.unwrap()
            })
        })
        .collect();
    let results = join_all(tasks).await;
    let listed = nodes[0].list_authorizations("r1", None).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let bob = listed.iter().find(|a| a.auth_id.as_deref() == Some(BOB)).unwrap();
    let carol = listed.iter().find(|a| a.auth_id.as_deref() == Some("carol@example.com")).unwrap();
    for (i, r) in results.iter().enumerate() {
        let (b, c) = if i % 2 == 0 { (&r[0], &r[1]) } else { (&r[1], &r[0]) };
        assert_eq!((b, c), (bob, carol), "task {i}");
    }
}

async fn concurrent_revocations_poller_misses_none(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = nodes[w % 2].clone();
            tokio::spawn(async move {
                for j in 0..15 {
                    store.revoke_session(&format!("s-{w}-{j}"), 1_000_000).await.unwrap();
                }
            })
        })
        .collect();
    // Poll with a cursor while the writers run; every session must show up.
    let poller = nodes[1].clone();
    let mut cursor = 0;
    let mut seen = std::collections::HashSet::new();
    let mut done = false;
    while !done {
        done = writers.iter().all(|w| w.is_finished());
        let (sessions, next) = poller.revoked_sessions_since(cursor).await.unwrap();
        assert!(next >= cursor, "cursor went back");
        cursor = next;
        seen.extend(sessions);
        tokio::task::yield_now().await;
    }
    join_all(writers).await;
    let (late, _) = poller.revoked_sessions_since(cursor).await.unwrap();
    assert!(late.is_empty(), "revocations appeared behind the cursor: {late:?}");
    assert_eq!(seen.len(), 60);
}

async fn concurrent_open_same_database(ctx: Ctx) {
    // Several nodes starting at once on an empty database: migrations must not race.
    let tasks = (0..4)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.open().await })
        })
        .collect();
    let stores = join_all(tasks).await;
    stores[0].put_meta_if_absent("x", b"1").await.unwrap();
    for s in &stores {
        assert_eq!(s.get_meta("x").await.unwrap(), Some(b"1".to_vec()));
    }
}

// ---------------------------------------------------------------- backend-independent

#[tokio::test]
async fn unsupported_urls_and_schema_names() {
    assert!(matches!(kms_store::open("mysql://localhost/x").await, Err(StoreError::UnsupportedUrl)));
    assert!(matches!(kms_store::open("sqlite://").await, Err(StoreError::UnsupportedUrl)));
    assert!(matches!(
        kms_store::open_postgres_schema("postgres://127.0.0.1/test", "bad\"name").await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(kms_store::open_postgres_schema("sqlite://x.db", "ok").await, Err(StoreError::UnsupportedUrl)));
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = kms_store::open("sqlite::memory:").await.unwrap();
    store.insert_keys(&[key("k1", ALICE, 10_000)]).await.unwrap();
    make_resource(&*store, "r1", ALICE).await;
    assert!(matches!(store.bind_key("k1", "r1", ALICE, 2_000, 9_000).await.unwrap(), BindOutcome::Bound(_)));
    assert_eq!(store.get_resource("r1").await.unwrap().unwrap().key_ids, ["k1"]);
}
