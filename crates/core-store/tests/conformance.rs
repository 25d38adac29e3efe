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

use core_store::{
    Appended, Event, EventKind, FileRecord, Membership, NewEvent, PostingSet, Preview, Role, Space, Store, StoreError,
    Webhook,
};

// ---------------------------------------------------------------- harness

const HARNESS: Harness = Harness {
    name: "core",
    drop_schema: |url, schema| {
        Box::pin(async move { core_store::drop_postgres_schema(&url, &schema).await.map_err(|e| format!("{e:?}")) })
    },
};

/// A new handle on the test's database (a new "node").
trait Open {
    async fn open(&self) -> Arc<dyn Store>;
    async fn raw_i64s(&self, sql: &'static str, bind: &str) -> Vec<i64>;
}

impl Open for Ctx {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Ctx::Sqlite { .. } => core_store::open(&self.url()).await.expect("open sqlite"),
            Ctx::Postgres { url, schema } => {
                core_store::open_postgres_schema(url, schema).await.expect("open postgres")
            }
        }
    }

    /// Runs `sql` (a trusted test literal) on a raw connection, behind the
    /// store's back, and returns the first column of every row.
    async fn raw_i64s(&self, sql: &'static str, bind: &str) -> Vec<i64> {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let url = match self {
            Ctx::Sqlite { path } => format!("sqlite:{}", path.display()),
            Ctx::Postgres { url, .. } => url.clone(),
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("raw connect");
        if let Ctx::Postgres { schema, .. } = self {
            sqlx::query("SELECT set_config('search_path', $1, false)")
                .bind(format!("\"{schema}\""))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let rows = sqlx::query(sql).bind(bind).fetch_all(&mut conn).await.expect("raw query");
        let _ = conn.close().await;
        rows.iter().map(|r| r.try_get::<i64, _>(0).unwrap()).collect()
    }
}

sqlstore::conformance! {
    crate::HARNESS;
    webhooks_and_their_cursors,
    postings_intersect_per_key_and_replace,
    postings_batch_replaces_each_event,
    previews_replace,
    create_space_writes_space_membership_and_first_event,
    create_space_exists_writes_nothing,
    unknown_space_reads,
    append_assigns_next_seq_and_keeps_fields,
    append_is_idempotent_on_client_event_id,
    append_to_unknown_space_is_not_found,
    append_with_taken_event_id_writes_nothing,
    title_event_sets_space_title,
    events_after_and_before_paginate,
    add_member_outcomes,
    add_member_all_or_nothing,
    remove_member_outcomes,
    member_history_keeps_former_members,
    spaces_of_newest_activity_first,
    read_markers_only_move_forward,
    touch_user_keeps_first_and_last_seen,
    file_upload_and_completion,
    file_validation,
    empty_file_completes_at_once,
    complete_file_all_or_nothing,
    durability_reopen,
    kill_dash_nine_keeps_acknowledged_appends,
    concurrent_appends_no_gaps_no_duplicates,
    concurrent_appends_become_visible_in_order,
    concurrent_retries_one_event,
    concurrent_membership_changes,
    concurrent_create_space_one_winner,
    concurrent_complete_file_one_event,
    concurrent_read_markers_keep_max,
    concurrent_open_same_database,
    batched_appends_keep_every_outcome,
    commit_listener_hears_each_commit_in_order,
    commit_listener_order_under_load,
    read_markers_list_a_space,
}

// ---------------------------------------------------------------- fixtures

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const KEY_URI: &str = "kms://kms.example.com/keys/k1";
/// Looks like a compact JWE, with characters a careless store might mangle.
const JWE: &str = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aGVsbG8_-w.Zm9v-_YmFy.dGFn";

fn space(id: &str, creator: &str, create_date: i64) -> Space {
    Space {
        id: id.to_owned(),
        resource_uri: format!("kms://kms.example.com/resources/{id}"),
        org: "example.com".to_owned(),
        title: Some(format!("{JWE}.{id}")),
        creator: creator.to_owned(),
        create_date,
        last_seq: 0,
    }
}

/// Creates `id` by `ALICE` at `create_date` (event id `{id}-e1`).
async fn make_space(store: &dyn Store, id: &str, create_date: i64) -> Event {
    store.create_space(&space(id, ALICE, create_date), &format!("{id}-e1")).await.unwrap()
}

fn message(id: &str, sender: &str, client_event_id: Option<&str>) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        client_event_id: client_event_id.map(str::to_owned),
        kind: EventKind::Message,
        sender: sender.to_owned(),
        parent: None,
        target: None,
        subject: None,
        ciphertext: Some(format!("{JWE}.{id}")),
        key_uri: Some(KEY_URI.to_owned()),
        meta: None,
    }
}

async fn post(store: &dyn Store, space_id: &str, id: &str, now: i64) -> Event {
    match store.append(space_id, &message(id, ALICE, None), now).await.unwrap() {
        Appended::New(e) => e,
        other => panic!("expected a new event, got {other:?}"),
    }
}

fn membership(space_id: &str, user_id: &str, role: Role, at: i64) -> Membership {
    Membership {
        space_id: space_id.to_owned(),
        user_id: user_id.to_owned(),
        role,
        added_by: ALICE.to_owned(),
        added_at: at,
    }
}

fn file(id: &str, space_id: &str, size: i64, chunk_size: i64) -> FileRecord {
    FileRecord {
        id: id.to_owned(),
        space_id: space_id.to_owned(),
        uploader: BOB.to_owned(),
        size,
        chunk_size,
        meta_ciphertext: format!("{JWE}.meta-{id}"),
        key_uri: KEY_URI.to_owned(),
        ready: false,
        create_date: 5_000,
    }
}

async fn last_seq(store: &dyn Store, space_id: &str) -> i64 {
    store.get_space(space_id).await.unwrap().expect("space").last_seq
}

async fn all_events(store: &dyn Store, space_id: &str) -> Vec<Event> {
    store.events_after(space_id, 0, u32::MAX).await.unwrap()
}

fn seqs(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

fn summary_ids(store_list: &[core_store::SpaceSummary]) -> Vec<&str> {
    store_list.iter().map(|s| s.space.id.as_str()).collect()
}

// ---------------------------------------------------------------- spaces

async fn create_space_writes_space_membership_and_first_event(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.backend(), if ctx.is_postgres() { "postgres" } else { "sqlite" });
    let s = Space { last_seq: 99, ..space("s1", ALICE, 1_000) };
    let e = store.create_space(&s, "s1-e1").await.unwrap();
    assert_eq!(
        e,
        Event {
            space_id: "s1".into(),
            seq: 1,
            id: "s1-e1".into(),
            client_event_id: None,
            kind: EventKind::MemberAdded,
            sender: ALICE.into(),
            parent: None,
            target: None,
            subject: Some(ALICE.into()),
            ciphertext: None,
            key_uri: None,
            meta: Some(r#"{"role":"moderator"}"#.into()),
            create_date: 1_000,
        }
    );
    let got = store.get_space("s1").await.unwrap().expect("space not stored");
    assert_eq!(got, Space { last_seq: 1, ..s.clone() }, "title ciphertext must come back verbatim");
    assert_eq!(store.role("s1", ALICE).await.unwrap(), Some(Role::Moderator));
    assert_eq!(store.role("s1", BOB).await.unwrap(), None);
    assert_eq!(
        store.members("s1").await.unwrap(),
        [Membership {
            space_id: "s1".into(),
            user_id: ALICE.into(),
            role: Role::Moderator,
            added_by: ALICE.into(),
            added_at: 1_000
        }]
    );
    assert_eq!(all_events(&*store, "s1").await, std::slice::from_ref(&e));
    assert_eq!(store.event("s1", "s1-e1").await.unwrap(), Some(e));
    let listed = store.spaces_of(ALICE).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0].space, listed[0].role, listed[0].read_seq), (&got, Role::Moderator, 0));
    assert!(store.spaces_of(BOB).await.unwrap().is_empty());

    // A space without a title.
    let untitled = Space { title: None, ..space("s2", BOB, 2_000) };
    store.create_space(&untitled, "s2-e1").await.unwrap();
    assert_eq!(store.get_space("s2").await.unwrap().unwrap().title, None);
}

async fn create_space_exists_writes_nothing(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    // Same id (another resource), same resource (another id).
    let same_id = Space { resource_uri: "kms://kms.example.com/resources/other".into(), ..space("s1", BOB, 2_000) };
    assert!(matches!(store.create_space(&same_id, "x1").await, Err(StoreError::Exists("space"))));
    let same_uri = Space { resource_uri: space("s1", ALICE, 0).resource_uri, ..space("s2", BOB, 2_000) };
    assert!(matches!(store.create_space(&same_uri, "x2").await, Err(StoreError::Exists("space"))));

    assert_eq!(store.get_space("s1").await.unwrap().unwrap(), Space { last_seq: 1, ..space("s1", ALICE, 1_000) });
    assert_eq!(store.get_space("s2").await.unwrap(), None);
    assert_eq!(store.role("s1", BOB).await.unwrap(), None);
    assert!(store.members("s2").await.unwrap().is_empty());
    assert!(store.spaces_of(BOB).await.unwrap().is_empty());
    assert_eq!(seqs(&all_events(&*store, "s1").await), [1]);
    assert!(all_events(&*store, "s2").await.is_empty());
    // The other resource URI is still free.
    store.create_space(&Space { id: "s3".into(), ..same_id }, "s3-e1").await.unwrap();
}

async fn unknown_space_reads(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.get_space("nope").await.unwrap(), None);
    assert_eq!(store.role("nope", ALICE).await.unwrap(), None);
    assert!(store.members("nope").await.unwrap().is_empty());
    assert!(store.spaces_of(ALICE).await.unwrap().is_empty());
    assert!(store.events_after("nope", 0, 10).await.unwrap().is_empty());
    assert!(store.events_before("nope", i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(store.event("nope", "e").await.unwrap(), None);
    assert_eq!(store.read_marker("nope", ALICE).await.unwrap(), 0);
    assert_eq!(store.file("nope").await.unwrap(), None);
    assert!(store.chunks("nope").await.unwrap().is_empty());
}

// ---------------------------------------------------------------- events

async fn append_assigns_next_seq_and_keeps_fields(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    make_space(&*store, "s2", 1_000).await;
    let m = post(&*store, "s1", "m1", 2_000).await;
    assert_eq!((m.seq, m.create_date, m.space_id.as_str()), (2, 2_000, "s1"));

    // Every field round-trips, verbatim.
    let reply = NewEvent {
        id: "r1".into(),
        client_event_id: Some("client-1".into()),
        kind: EventKind::Message,
        sender: BOB.into(),
        parent: Some("m1".into()),
        target: None,
        subject: None,
        ciphertext: Some(format!("{JWE}.ünïcødé+/=")),
        key_uri: Some(KEY_URI.into()),
        meta: Some(r#"{"x":[1,2]}"#.into()),
    };
    let Appended::New(r) = store.append("s1", &reply, 3_000).await.unwrap() else { panic!("not new") };
    assert_eq!(
        r,
        Event {
            space_id: "s1".into(),
            seq: 3,
            id: reply.id.clone(),
            client_event_id: reply.client_event_id.clone(),
            kind: reply.kind,
            sender: reply.sender.clone(),
            parent: reply.parent.clone(),
            target: None,
            subject: None,
            ciphertext: reply.ciphertext.clone(),
            key_uri: reply.key_uri.clone(),
            meta: reply.meta.clone(),
            create_date: 3_000,
        }
    );
    // The other kinds.
    let mut seq = 3;
    for kind in [EventKind::Edit, EventKind::Delete, EventKind::Reaction, EventKind::FileReady] {
        let e = NewEvent {
            id: format!("k-{}", kind.as_str()),
            kind,
            target: Some("m1".into()),
            ciphertext: (kind != EventKind::Delete).then(|| JWE.to_owned()),
            ..message("", CAROL, None)
        };
        let Appended::New(got) = store.append("s1", &e, 4_000).await.unwrap() else { panic!("not new") };
        seq += 1;
        assert_eq!((got.seq, got.kind, got.target.as_deref(), got.ciphertext), (seq, kind, Some("m1"), e.ciphertext));
    }
    assert_eq!(last_seq(&*store, "s1").await, seq);
    assert_eq!(store.event("s1", "r1").await.unwrap(), Some(r));
    assert_eq!(store.event("s2", "r1").await.unwrap(), None, "event visible in another space");
    // Spaces count independently.
    assert_eq!(post(&*store, "s2", "m1", 5_000).await.seq, 2, "the same event id in another space is fine");
    assert_eq!(seqs(&all_events(&*store, "s1").await), (1..=seq).collect::<Vec<_>>());
}

async fn append_is_idempotent_on_client_event_id(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    make_space(&*store, "s2", 1_000).await;
    let Appended::New(first) = store.append("s1", &message("m1", BOB, Some("c1")), 2_000).await.unwrap() else {
        panic!("not new")
    };
    // A retry (even with another server id, content and time) returns the first event.
    let retry = NewEvent { ciphertext: Some("other".into()), ..message("m1-retry", BOB, Some("c1")) };
    assert_eq!(store.append("s1", &retry, 9_000).await.unwrap(), Appended::Duplicate(first.clone()));
    assert_eq!(store.append("s1", &retry, 9_000).await.unwrap(), Appended::Duplicate(first.clone()));
    assert_eq!(last_seq(&*store, "s1").await, 2, "a retry consumed a seq");
    assert_eq!(store.event("s1", "m1-retry").await.unwrap(), None);
    // Same client id from another sender, or in another space: new events.
    let Appended::New(other_sender) = store.append("s1", &message("m2", CAROL, Some("c1")), 3_000).await.unwrap()
    else {
        panic!("other sender's c1 deduplicated")
    };
    assert_eq!(other_sender.seq, 3);
    let Appended::New(other_space) = store.append("s2", &message("m1", BOB, Some("c1")), 3_000).await.unwrap() else {
        panic!("other space's c1 deduplicated")
    };
    assert_eq!(other_space.seq, 2);
    // Without a client id, nothing is deduplicated.
    assert_eq!(post(&*store, "s1", "m3", 4_000).await.seq, 4);
    assert_eq!(post(&*store, "s1", "m4", 4_000).await.seq, 5);
    assert_eq!(seqs(&all_events(&*store, "s1").await), [1, 2, 3, 4, 5]);
}

async fn append_to_unknown_space_is_not_found(ctx: Ctx) {
    let store = ctx.open().await;
    let got = store.append("nope", &message("m1", ALICE, None), 1_000).await;
    assert!(matches!(got, Err(StoreError::NotFound("space"))), "{got:?}");
    let got = store.append("nope", &message("m1", ALICE, Some("c1")), 1_000).await;
    assert!(matches!(got, Err(StoreError::NotFound("space"))), "{got:?}");
    assert!(store.events_after("nope", 0, 10).await.unwrap().is_empty());
    assert_eq!(store.get_space("nope").await.unwrap(), None);
}

async fn append_with_taken_event_id_writes_nothing(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    let m1 = post(&*store, "s1", "m1", 2_000).await;
    let got = store.append("s1", &message("m1", BOB, Some("c9")), 3_000).await;
    assert!(matches!(got, Err(StoreError::Exists("event"))), "{got:?}");
    // A failed title change leaves the title alone.
    let title = NewEvent { kind: EventKind::Title, ciphertext: Some("new-title".into()), ..message("m1", ALICE, None) };
    assert!(matches!(store.append("s1", &title, 3_000).await, Err(StoreError::Exists("event"))));
    let s = store.get_space("s1").await.unwrap().unwrap();
    assert_eq!((s.last_seq, s.title), (2, space("s1", ALICE, 0).title), "a failed append left traces");
    assert_eq!(all_events(&*store, "s1").await, [store.event("s1", "s1-e1").await.unwrap().unwrap(), m1]);
    // The client id of the failed attempt was not recorded.
    let Appended::New(e) = store.append("s1", &message("m2", BOB, Some("c9")), 3_000).await.unwrap() else {
        panic!("c9 recorded by a failed append")
    };
    assert_eq!(e.seq, 3);
}

async fn title_event_sets_space_title(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    let title =
        NewEvent { kind: EventKind::Title, ciphertext: Some(format!("{JWE}.new-title")), ..message("t1", ALICE, None) };
    let Appended::New(e) = store.append("s1", &title, 2_000).await.unwrap() else { panic!("not new") };
    assert_eq!((e.seq, e.kind), (2, EventKind::Title));
    let s = store.get_space("s1").await.unwrap().unwrap();
    assert_eq!((s.title.as_deref(), s.last_seq), (title.ciphertext.as_deref(), 2));
    assert_eq!(store.spaces_of(ALICE).await.unwrap()[0].space.title, title.ciphertext);
    // A message does not touch the title.
    post(&*store, "s1", "m1", 3_000).await;
    assert_eq!(store.get_space("s1").await.unwrap().unwrap().title, title.ciphertext);
}

async fn events_after_and_before_paginate(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    make_space(&*store, "s2", 1_000).await;
    for i in 2..=25 {
        post(&*store, "s1", &format!("m{i}"), 1_000 + i).await;
        if i % 5 == 0 {
            post(&*store, "s2", &format!("m{i}"), 1_000 + i).await;
        }
    }
    let range = |a: i64, b: i64| (a..=b).collect::<Vec<i64>>();
    let rev = |a: i64, b: i64| (a..=b).rev().collect::<Vec<i64>>();

    // Forward: sync by cursor.
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.events_after("s1", cursor, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|e| e.space_id == "s1"));
        cursor = page.last().unwrap().seq;
        pages.push(seqs(&page));
    }
    assert_eq!(pages, [range(1, 10), range(11, 20), range(21, 25)]);
    assert_eq!(seqs(&store.events_after("s1", 7, 3).await.unwrap()), [8, 9, 10]);
    assert_eq!(seqs(&store.events_after("s1", -5, 2).await.unwrap()), [1, 2]);
    assert!(store.events_after("s1", 25, 10).await.unwrap().is_empty());
    assert!(store.events_after("s1", 0, 0).await.unwrap().is_empty());
    assert_eq!(seqs(&store.events_after("s2", 0, 100).await.unwrap()), range(1, 6));

    // Backward: history pages.
    let mut before = i64::MAX;
    let mut pages = Vec::new();
    loop {
        let page = store.events_before("s1", before, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().unwrap().seq;
        pages.push(seqs(&page));
    }
    assert_eq!(pages, [rev(16, 25), rev(6, 15), rev(1, 5)]);
    assert_eq!(seqs(&store.events_before("s1", 10, 3).await.unwrap()), [9, 8, 7]);
    assert!(store.events_before("s1", 1, 10).await.unwrap().is_empty());
    assert!(store.events_before("s1", 10, 0).await.unwrap().is_empty());
    assert_eq!(seqs(&store.events_before("s2", 100, 100).await.unwrap()), rev(1, 6));
    // Contents, not just numbers.
    let e = &store.events_after("s1", 11, 1).await.unwrap()[0];
    assert_eq!((e.id.as_str(), e.create_date), ("m12", 1_012));
    assert_eq!(&store.events_before("s1", 13, 1).await.unwrap()[0], e);
}

// ---------------------------------------------------------------- memberships

async fn add_member_outcomes(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    let e = store.add_member(&membership("s1", BOB, Role::Member, 2_000), "e2").await.unwrap().expect("added");
    assert_eq!(
        e,
        Event {
            space_id: "s1".into(),
            seq: 2,
            id: "e2".into(),
            client_event_id: None,
            kind: EventKind::MemberAdded,
            sender: ALICE.into(),
            parent: None,
            target: None,
            subject: Some(BOB.into()),
            ciphertext: None,
            key_uri: None,
            meta: Some(r#"{"role":"member"}"#.into()),
            create_date: 2_000,
        }
    );
    assert_eq!(store.role("s1", BOB).await.unwrap(), Some(Role::Member));
    assert_eq!(store.event("s1", "e2").await.unwrap(), Some(e));

    // The same again: nothing, and no seq consumed.
    let again = Membership { added_by: CAROL.into(), ..membership("s1", BOB, Role::Member, 3_000) };
    assert_eq!(store.add_member(&again, "e3").await.unwrap(), None);
    assert_eq!(last_seq(&*store, "s1").await, 2);
    assert_eq!(store.event("s1", "e3").await.unwrap(), None);

    // A role change: an event, the role updated, the original adder kept.
    let promote = Membership { added_by: CAROL.into(), ..membership("s1", BOB, Role::Moderator, 4_000) };
    let e = store.add_member(&promote, "e3").await.unwrap().expect("role change");
    assert_eq!((e.seq, e.kind, e.sender.as_str()), (3, EventKind::MemberAdded, CAROL));
    assert_eq!((e.subject.as_deref(), e.meta.as_deref()), (Some(BOB), Some(r#"{"role":"moderator"}"#)));
    assert_eq!(store.role("s1", BOB).await.unwrap(), Some(Role::Moderator));

    store.add_member(&membership("s1", CAROL, Role::Member, 1_500), "e4").await.unwrap().expect("added");
    let members = store.members("s1").await.unwrap();
    let expected = [
        (ALICE, Role::Moderator, ALICE, 1_000),
        (CAROL, Role::Member, ALICE, 1_500),
        (BOB, Role::Moderator, ALICE, 2_000),
    ];
    let got: Vec<(&str, Role, &str, i64)> =
        members.iter().map(|m| (m.user_id.as_str(), m.role, m.added_by.as_str(), m.added_at)).collect();
    assert_eq!(got, expected);
    assert!(members.iter().all(|m| m.space_id == "s1"));
    assert_eq!(seqs(&all_events(&*store, "s1").await), [1, 2, 3, 4]);
    assert_eq!(store.spaces_of(BOB).await.unwrap()[0].role, Role::Moderator);

    let got = store.add_member(&membership("nope", BOB, Role::Member, 5_000), "e9").await;
    assert!(matches!(got, Err(StoreError::NotFound("space"))), "{got:?}");
    assert!(store.spaces_of(BOB).await.unwrap().iter().all(|s| s.space.id == "s1"));
}

async fn add_member_all_or_nothing(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    post(&*store, "s1", "m1", 2_000).await;
    // The event id is taken: neither the membership nor the event.
    let got = store.add_member(&membership("s1", BOB, Role::Member, 3_000), "m1").await;
    assert!(matches!(got, Err(StoreError::Exists("event"))), "{got:?}");
    assert_eq!(store.role("s1", BOB).await.unwrap(), None);
    assert!(store.spaces_of(BOB).await.unwrap().is_empty());
    // Nor a role change.
    let got = store.add_member(&membership("s1", ALICE, Role::Member, 3_000), "m1").await;
    assert!(matches!(got, Err(StoreError::Exists("event"))), "{got:?}");
    assert_eq!(store.role("s1", ALICE).await.unwrap(), Some(Role::Moderator));
    // Nor a removal.
    let got = store.remove_member("s1", ALICE, ALICE, "m1", 3_000).await;
    assert!(matches!(got, Err(StoreError::Exists("event"))), "{got:?}");
    assert_eq!(store.role("s1", ALICE).await.unwrap(), Some(Role::Moderator));
    assert_eq!(last_seq(&*store, "s1").await, 2);
    assert_eq!(seqs(&all_events(&*store, "s1").await), [1, 2]);
    // And the next change takes the next number.
    let e = store.add_member(&membership("s1", BOB, Role::Member, 3_000), "e3").await.unwrap().unwrap();
    assert_eq!(e.seq, 3);
}

async fn remove_member_outcomes(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    store.add_member(&membership("s1", BOB, Role::Member, 2_000), "e2").await.unwrap().unwrap();
    let e = store.remove_member("s1", BOB, ALICE, "e3", 3_000).await.unwrap().expect("removed");
    assert_eq!(
        e,
        Event {
            space_id: "s1".into(),
            seq: 3,
            id: "e3".into(),
            client_event_id: None,
            kind: EventKind::MemberRemoved,
            sender: ALICE.into(),
            parent: None,
            target: None,
            subject: Some(BOB.into()),
            ciphertext: None,
            key_uri: None,
            meta: None,
            create_date: 3_000,
        }
    );
    assert_eq!(store.role("s1", BOB).await.unwrap(), None);
    assert!(store.spaces_of(BOB).await.unwrap().is_empty());
    assert_eq!(store.members("s1").await.unwrap().len(), 1);
    // Not a member (any more, or ever): nothing, no seq consumed.
    assert_eq!(store.remove_member("s1", BOB, ALICE, "e4", 4_000).await.unwrap(), None);
    assert_eq!(store.remove_member("s1", CAROL, ALICE, "e4", 4_000).await.unwrap(), None);
    assert_eq!(last_seq(&*store, "s1").await, 3);
    let got = store.remove_member("nope", BOB, ALICE, "e4", 4_000).await;
    assert!(matches!(got, Err(StoreError::NotFound("space"))), "{got:?}");
    // Back again.
    let e = store.add_member(&membership("s1", BOB, Role::Member, 5_000), "e4").await.unwrap().unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(store.members("s1").await.unwrap()[1].added_at, 5_000);
}

async fn member_history_keeps_former_members(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    make_space(&*store, "s2", 1_000).await;
    store.add_member(&membership("s1", CAROL, Role::Member, 2_000), "e2").await.unwrap().unwrap();
    store.add_member(&membership("s1", BOB, Role::Member, 3_000), "e3").await.unwrap().unwrap();
    // A role change is another MemberAdded event: still one entry.
    store.add_member(&membership("s1", BOB, Role::Moderator, 3_500), "e4").await.unwrap().unwrap();
    store.remove_member("s1", CAROL, ALICE, "e5", 4_000).await.unwrap().expect("removed");
    assert_eq!(store.member_history("s1").await.unwrap(), [ALICE, BOB, CAROL]);
    assert_eq!(store.members("s1").await.unwrap().len(), 2);
    assert_eq!(store.member_history("s2").await.unwrap(), [ALICE]);
    assert!(store.member_history("nope").await.unwrap().is_empty());
}

async fn spaces_of_newest_activity_first(ctx: Ctx) {
    let store = ctx.open().await;
    for (i, id) in ["s1", "s2", "s3"].into_iter().enumerate() {
        make_space(&*store, id, 1_000 + i as i64).await;
    }
    store.add_member(&membership("s2", BOB, Role::Member, 1_500), "b2").await.unwrap().unwrap();
    let ids = |l: &[core_store::SpaceSummary]| summary_ids(l).into_iter().map(str::to_owned).collect::<Vec<_>>();
    // s2 got a member at 1500: the latest activity.
    assert_eq!(ids(&store.spaces_of(ALICE).await.unwrap()), ["s2", "s3", "s1"]);
    post(&*store, "s1", "m1", 2_000).await;
    assert_eq!(ids(&store.spaces_of(ALICE).await.unwrap()), ["s1", "s2", "s3"]);
    post(&*store, "s3", "m1", 3_000).await;
    let listed = store.spaces_of(ALICE).await.unwrap();
    assert_eq!(ids(&listed), ["s3", "s1", "s2"]);
    assert_eq!(listed[0].space.last_seq, 2);
    assert!(listed.iter().all(|s| s.role == Role::Moderator && s.read_seq == 0));
    // A clock that went back does not move a space back.
    post(&*store, "s3", "m2", 500).await;
    assert_eq!(ids(&store.spaces_of(ALICE).await.unwrap()), ["s3", "s1", "s2"]);
    // Read markers and roles are per user.
    store.set_read_marker("s2", BOB, 2, 4_000).await.unwrap();
    let bob = store.spaces_of(BOB).await.unwrap();
    assert_eq!(ids(&bob), ["s2"]);
    assert_eq!((bob[0].role, bob[0].read_seq, bob[0].space.last_seq), (Role::Member, 2, 2));
    // Same activity time: by id.
    make_space(&*store, "s5", 9_000).await;
    make_space(&*store, "s4", 9_000).await;
    assert_eq!(ids(&store.spaces_of(ALICE).await.unwrap()), ["s4", "s5", "s3", "s1", "s2"]);
}

// ---------------------------------------------------------------- read markers

async fn read_markers_only_move_forward(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    for i in 0..9 {
        post(&*store, "s1", &format!("m{i}"), 2_000).await;
    }
    assert_eq!(last_seq(&*store, "s1").await, 10);
    assert_eq!(store.read_marker("s1", ALICE).await.unwrap(), 0);
    assert_eq!(store.set_read_marker("s1", ALICE, 3, 3_000).await.unwrap(), 3);
    assert_eq!(store.set_read_marker("s1", ALICE, 2, 3_000).await.unwrap(), 3, "moved back");
    assert_eq!(store.set_read_marker("s1", ALICE, 3, 3_000).await.unwrap(), 3);
    assert_eq!(store.read_marker("s1", ALICE).await.unwrap(), 3);
    assert_eq!(store.set_read_marker("s1", ALICE, 7, 3_000).await.unwrap(), 7);
    assert_eq!(store.set_read_marker("s1", ALICE, -1, 3_000).await.unwrap(), 7);
    // Beyond the last event: the last.
    assert_eq!(store.set_read_marker("s1", ALICE, 1_000, 3_000).await.unwrap(), 10);
    assert_eq!(store.read_marker("s1", ALICE).await.unwrap(), 10);
    assert_eq!(store.spaces_of(ALICE).await.unwrap()[0].read_seq, 10);
    // Per user.
    assert_eq!(store.read_marker("s1", BOB).await.unwrap(), 0);
    assert_eq!(store.set_read_marker("s1", BOB, 0, 3_000).await.unwrap(), 0);
    assert_eq!(store.set_read_marker("s1", BOB, 4, 3_000).await.unwrap(), 4);
    assert_eq!(store.read_marker("s1", ALICE).await.unwrap(), 10);
    let got = store.set_read_marker("nope", ALICE, 1, 3_000).await;
    assert!(matches!(got, Err(StoreError::NotFound("space"))), "{got:?}");
    // Markers are not events.
    assert_eq!(last_seq(&*store, "s1").await, 10);
}

// ---------------------------------------------------------------- users

async fn touch_user_keeps_first_and_last_seen(ctx: Ctx) {
    let store = ctx.open().await;
    store.touch_user(ALICE, 5_000).await.unwrap();
    store.touch_user(ALICE, 7_000).await.unwrap();
    store.touch_user(ALICE, 6_000).await.unwrap(); // late, out of order
    store.touch_user(ALICE, 4_000).await.unwrap(); // earlier still
    store.touch_user(BOB, 1_000).await.unwrap();
    let seen = |user: &'static str| {
        let ctx = ctx.clone();
        async move {
            ctx.raw_i64s("SELECT first_seen FROM core_users WHERE id = $1 UNION ALL SELECT last_seen FROM core_users WHERE id = $1", user).await
        }
    };
    assert_eq!(seen(ALICE).await, [4_000, 7_000]);
    assert_eq!(seen(BOB).await, [1_000, 1_000]);
    assert!(seen(CAROL).await.is_empty());
}

// ---------------------------------------------------------------- files

async fn file_upload_and_completion(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    // 10 bytes in chunks of 4: 4 + 4 + 2.
    let f = file("f1", "s1", 10, 4);
    assert_eq!(f.chunk_count(), 3);
    store.create_file(&FileRecord { ready: true, ..f.clone() }).await.unwrap();
    assert_eq!(store.file("f1").await.unwrap(), Some(f.clone()), "a new file must not be ready");
    assert!(store.chunks("f1").await.unwrap().is_empty());
    assert_eq!(store.complete_file("f1", "fe1", 6_000).await.unwrap(), None);

    store.put_chunk("f1", 2, 2).await.unwrap();
    store.put_chunk("f1", 0, 4).await.unwrap();
    store.put_chunk("f1", 0, 4).await.unwrap(); // idempotent
    assert_eq!(store.chunks("f1").await.unwrap(), [0, 2]);
    assert_eq!(store.complete_file("f1", "fe1", 6_000).await.unwrap(), None, "completed with a chunk missing");
    assert!(!store.file("f1").await.unwrap().unwrap().ready);
    assert_eq!(last_seq(&*store, "s1").await, 1, "an incomplete completion consumed a seq");

    store.put_chunk("f1", 1, 4).await.unwrap();
    assert_eq!(store.chunks("f1").await.unwrap(), [0, 1, 2]);
    let e = store.complete_file("f1", "fe1", 7_000).await.unwrap().expect("complete");
    assert_eq!(
        e,
        Event {
            space_id: "s1".into(),
            seq: 2,
            id: "fe1".into(),
            client_event_id: None,
            kind: EventKind::FileReady,
            sender: BOB.into(),
            parent: None,
            target: Some("f1".into()),
            subject: None,
            ciphertext: None,
            key_uri: None,
            meta: Some(r#"{"size":10}"#.into()),
            create_date: 7_000,
        }
    );
    assert_eq!(store.file("f1").await.unwrap(), Some(FileRecord { ready: true, ..f.clone() }));
    // Twice: the first event, nothing new.
    assert_eq!(store.complete_file("f1", "fe2", 8_000).await.unwrap(), Some(e.clone()));
    assert_eq!(all_events(&*store, "s1").await.last(), Some(&e));
    assert_eq!(last_seq(&*store, "s1").await, 2);
    // Chunks of a ready file: still idempotent.
    store.put_chunk("f1", 1, 4).await.unwrap();
    assert_eq!(store.chunks("f1").await.unwrap(), [0, 1, 2]);

    // An exact multiple of the chunk size.
    store.create_file(&file("f2", "s1", 8, 4)).await.unwrap();
    store.put_chunk("f2", 1, 4).await.unwrap();
    store.put_chunk("f2", 0, 4).await.unwrap();
    assert_eq!(store.complete_file("f2", "fe2", 9_000).await.unwrap().unwrap().seq, 3);
    assert!(store.chunks("f1").await.unwrap().len() == 3, "files share chunks");
}

async fn file_validation(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    let got = store.create_file(&file("f0", "nope", 10, 4)).await;
    assert!(matches!(got, Err(StoreError::NotFound("space"))), "{got:?}");
    for (size, chunk_size) in [(10, 0), (10, -4), (-1, 4)] {
        let got = store.create_file(&file("f0", "s1", size, chunk_size)).await;
        assert!(matches!(got, Err(StoreError::Invalid(_))), "size {size} chunk {chunk_size}: {got:?}");
    }
    assert_eq!(store.file("f0").await.unwrap(), None);

    store.create_file(&file("f1", "s1", 10, 4)).await.unwrap();
    let got = store.create_file(&file("f1", "s1", 99, 9)).await;
    assert!(matches!(got, Err(StoreError::Exists("file"))), "{got:?}");
    assert_eq!(store.file("f1").await.unwrap().unwrap().size, 10, "the first file was overwritten");

    let got = store.put_chunk("nope", 0, 4).await;
    assert!(matches!(got, Err(StoreError::NotFound("file"))), "{got:?}");
    for (index, size) in [(-1, 4), (3, 4), (3, 2), (0, 3), (0, 5), (1, 2), (2, 4), (2, 1)] {
        let got = store.put_chunk("f1", index, size).await;
        assert!(matches!(got, Err(StoreError::Invalid(_))), "chunk {index} of {size} bytes: {got:?}");
    }
    assert!(store.chunks("f1").await.unwrap().is_empty());
    let got = store.complete_file("nope", "e", 1).await;
    assert!(matches!(got, Err(StoreError::NotFound("file"))), "{got:?}");
}

async fn empty_file_completes_at_once(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    store.create_file(&file("f0", "s1", 0, 4)).await.unwrap();
    let got = store.put_chunk("f0", 0, 0).await;
    assert!(matches!(got, Err(StoreError::Invalid(_))), "an empty file has no chunks: {got:?}");
    let e = store.complete_file("f0", "fe0", 2_000).await.unwrap().expect("empty file completes");
    assert_eq!((e.seq, e.meta.as_deref(), e.target.as_deref()), (2, Some(r#"{"size":0}"#), Some("f0")));
    assert!(store.file("f0").await.unwrap().unwrap().ready);
}

async fn complete_file_all_or_nothing(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    post(&*store, "s1", "m1", 2_000).await;
    store.create_file(&file("f1", "s1", 3, 4)).await.unwrap();
    store.put_chunk("f1", 0, 3).await.unwrap();
    let got = store.complete_file("f1", "m1", 3_000).await;
    assert!(matches!(got, Err(StoreError::Exists("event"))), "{got:?}");
    assert!(!store.file("f1").await.unwrap().unwrap().ready, "ready without its event");
    assert_eq!(last_seq(&*store, "s1").await, 2);
    let e = store.complete_file("f1", "fe1", 3_000).await.unwrap().unwrap();
    assert_eq!((e.id.as_str(), e.seq), ("fe1", 3));
    assert_eq!(store.complete_file("f1", "fe2", 4_000).await.unwrap(), Some(e));
}

// ---------------------------------------------------------------- durability

async fn durability_reopen(ctx: Ctx) {
    let (m, f) = {
        let store = ctx.open().await;
        make_space(&*store, "s1", 1_000).await;
        store.add_member(&membership("s1", BOB, Role::Member, 1_500), "e2").await.unwrap().unwrap();
        let Appended::New(m) = store.append("s1", &message("m1", BOB, Some("c1")), 2_000).await.unwrap() else {
            panic!("not new")
        };
        store.set_read_marker("s1", BOB, 3, 2_500).await.unwrap();
        store.create_file(&file("f1", "s1", 4, 4)).await.unwrap();
        store.put_chunk("f1", 0, 4).await.unwrap();
        let f = store.complete_file("f1", "fe1", 3_000).await.unwrap().unwrap();
        if let Ctx::Sqlite { path } = &ctx {
            assert!(path.exists(), "database file not created");
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            assert!(wal.exists(), "not in WAL mode (no {})", wal.display());
        }
        (m, f)
    };
    // A second handle (SQLite: a new pool on the same file; migrations re-run idempotently).
    let store = ctx.open().await;
    assert_eq!(store.get_space("s1").await.unwrap().unwrap(), Space { last_seq: 4, ..space("s1", ALICE, 1_000) });
    assert_eq!(store.role("s1", BOB).await.unwrap(), Some(Role::Member));
    assert_eq!(store.event("s1", "m1").await.unwrap(), Some(m.clone()));
    assert_eq!(store.read_marker("s1", BOB).await.unwrap(), 3);
    assert_eq!(store.chunks("f1").await.unwrap(), [0]);
    assert!(store.file("f1").await.unwrap().unwrap().ready);
    assert_eq!(store.complete_file("f1", "fe2", 4_000).await.unwrap(), Some(f));
    // Idempotency survives the reopen; numbering continues.
    assert_eq!(store.append("s1", &message("m1-again", BOB, Some("c1")), 5_000).await.unwrap(), Appended::Duplicate(m));
    assert_eq!(post(&*store, "s1", "m2", 5_000).await.seq, 5);
}

/// Runs this test binary again as a writer (`kill_child_writer`), SIGKILLs it
/// after it acknowledged some appends, and checks that every acknowledged
/// event is there, numbered without gaps.
async fn kill_dash_nine_keeps_acknowledged_appends(ctx: Ctx) {
    make_space(&*ctx.open().await, "s1", 1_000).await;
    let acked = HARNESS.kill_child_after_acks(&ctx, "kill_child_writer", 25).await;

    let store = ctx.open().await;
    for ack in &acked {
        let (id, seq) = ack.split_once(' ').unwrap();
        let seq = seq.parse::<i64>().unwrap();
        let e = store.event("s1", id).await.unwrap();
        assert_eq!(e.map(|e| e.seq), Some(seq), "acknowledged event {id} lost");
    }
    let events = all_events(&*store, "s1").await;
    assert_eq!(seqs(&events), (1..=events.len() as i64).collect::<Vec<_>>(), "gap after a crash");
    assert_eq!(last_seq(&*store, "s1").await, events.len() as i64);
}

/// The child half of `kill_dash_nine_keeps_acknowledged_appends`: appends
/// messages one by one forever, printing `ACK id seq` after each.
#[tokio::test]
#[ignore = "child process of kill_dash_nine_keeps_acknowledged_appends"]
async fn kill_child_writer() {
    let store = HARNESS.child_ctx().open().await;
    for i in 0.. {
        let id = format!("kill-{i}");
        let e = post(&*store, "s1", &id, 2_000).await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {id} {}", e.seq).unwrap();
        out.flush().unwrap();
    }
}

// ---------------------------------------------------------------- concurrency

const N: usize = 20;

/// Two handles on one database: two core nodes (on SQLite, two pools on one file).
async fn two_nodes(ctx: &Ctx) -> [Arc<dyn Store>; 2] {
    [ctx.open().await, ctx.open().await]
}

async fn concurrent_appends_no_gaps_no_duplicates(ctx: Ctx) {
    const PER_TASK: usize = 20;
    let nodes = two_nodes(&ctx).await;
    make_space(&*nodes[0], "s1", 1_000).await;
    make_space(&*nodes[0], "s2", 1_000).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|t| {
            let (store, barrier) = (nodes[t % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                for j in 0..PER_TASK {
                    // Mostly s1; every fourth post to s2, interleaved.
                    let space_id = if j % 4 == 3 { "s2" } else { "s1" };
                    let e = message(&format!("m-{t}-{j}"), ALICE, Some(&format!("c-{t}-{j}")));
                    match store.append(space_id, &e, 2_000 + j as i64).await.unwrap() {
                        Appended::New(e) => got.push((e.space_id, e.seq, e.id)),
                        d => panic!("a first post was taken for a retry: {d:?}"),
                    }
                }
                got
            })
        })
        .collect();
    let mut assigned: Vec<(String, i64, String)> = join_all(tasks).await.into_iter().flatten().collect();
    assigned.sort();
    for (space_id, posts) in [("s1", N * PER_TASK * 3 / 4), ("s2", N * PER_TASK / 4)] {
        let mine: Vec<i64> = assigned.iter().filter(|a| a.0 == space_id).map(|a| a.1).collect();
        assert_eq!(mine, (2..=posts as i64 + 1).collect::<Vec<_>>(), "{space_id}: seqs handed out");
        let events = nodes[1].events_after(space_id, 0, u32::MAX).await.unwrap();
        assert_eq!(seqs(&events), (1..=posts as i64 + 1).collect::<Vec<_>>(), "{space_id}: stored seqs");
        for (s, seq, id) in assigned.iter().filter(|a| a.0 == space_id) {
            assert_eq!(&events[*seq as usize - 1].id, id, "{s} seq {seq}");
        }
        assert_eq!(last_seq(&*nodes[1], space_id).await, posts as i64 + 1);
    }
}

/// A poller following `events_after` with a cursor while many writers append
/// must see every event: seq n+1 never becomes visible before n.
async fn concurrent_appends_become_visible_in_order(ctx: Ctx) {
    const PER_TASK: usize = 15;
    let nodes = two_nodes(&ctx).await;
    make_space(&*nodes[0], "s1", 1_000).await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = nodes[w % 2].clone();
            tokio::spawn(async move {
                for j in 0..PER_TASK {
                    post(&*store, "s1", &format!("m-{w}-{j}"), 2_000).await;
                }
            })
        })
        .collect();
    let poller = nodes[1].clone();
    let mut cursor = 0;
    let mut done = false;
    while !done {
        done = writers.iter().all(|w| w.is_finished());
        let page = poller.events_after("s1", cursor, 7).await.unwrap();
        for e in &page {
            assert_eq!(e.seq, cursor + 1, "the poller skipped an event (or saw one twice)");
            cursor = e.seq;
        }
        tokio::task::yield_now().await;
    }
    join_all(writers).await;
    loop {
        let page = poller.events_after("s1", cursor, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            assert_eq!(e.seq, cursor + 1);
            cursor = e.seq;
        }
    }
    assert_eq!(cursor, 1 + 8 * PER_TASK as i64);
}

async fn concurrent_retries_one_event(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    make_space(&*nodes[0], "s1", 1_000).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|t| {
            let (store, barrier) = (nodes[t % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // Every task is a retry of the same post (each with its own server id).
                store.append("s1", &message(&format!("m-{t}"), BOB, Some("same")), 2_000).await.unwrap()
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    let new: Vec<&Event> =
        outcomes.iter().filter_map(|o| if let Appended::New(e) = o { Some(e) } else { None }).collect();
    assert_eq!(new.len(), 1, "{outcomes:?}");
    let first = new[0].clone();
    assert_eq!(first.seq, 2);
    assert!(outcomes.iter().all(|o| *o == Appended::New(first.clone()) || *o == Appended::Duplicate(first.clone())));
    assert_eq!(last_seq(&*nodes[1], "s1").await, 2, "a deduplicated retry consumed a seq");
    assert_eq!(seqs(&all_events(&*nodes[1], "s1").await), [1, 2]);
    assert_eq!(post(&*nodes[1], "s1", "after", 3_000).await.seq, 3);
}

async fn concurrent_membership_changes(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    make_space(&*nodes[0], "s1", 1_000).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(3 * N));
    let tasks = (0..3 * N)
        .map(|t| {
            let (store, barrier) = (nodes[t % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                match t % 3 {
                    // A distinct new member each.
                    0 => store
                        .add_member(
                            &membership("s1", &format!("u{t}@example.com"), Role::Member, 2_000),
                            &format!("a{t}"),
                        )
                        .await
                        .unwrap()
                        .map(|e| e.subject.unwrap()),
                    // Everyone adds Bob, as a member: one of them does.
                    1 => store
                        .add_member(&membership("s1", BOB, Role::Member, 2_000), &format!("b{t}"))
                        .await
                        .unwrap()
                        .map(|e| e.subject.unwrap()),
                    // And messages in between.
                    _ => {
                        post(&*store, "s1", &format!("m{t}"), 2_000).await;
                        None
                    }
                }
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    assert_eq!(outcomes.iter().filter(|o| o.as_deref() == Some(BOB)).count(), 1, "Bob added more than once");
    assert_eq!(outcomes.iter().flatten().count(), N + 1);
    let members = nodes[1].members("s1").await.unwrap();
    assert_eq!(members.len(), N + 2, "alice, bob and {N} others");
    let events = all_events(&*nodes[1], "s1").await;
    assert_eq!(seqs(&events), (1..=(2 * N + 2) as i64).collect::<Vec<_>>());
    assert_eq!(events.iter().filter(|e| e.kind == EventKind::MemberAdded).count(), N + 2);

    // Concurrent removals of the same member: one event.
    let tasks = (0..N)
        .map(|t| {
            let store = nodes[t % 2].clone();
            tokio::spawn(async move { store.remove_member("s1", BOB, ALICE, &format!("r{t}"), 3_000).await.unwrap() })
        })
        .collect();
    assert_eq!(join_all(tasks).await.iter().flatten().count(), 1);
    assert_eq!(nodes[0].role("s1", BOB).await.unwrap(), None);
    assert_eq!(last_seq(&*nodes[0], "s1").await, (2 * N + 3) as i64);
}

async fn concurrent_create_space_one_winner(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * N));
    let tasks = (0..2 * N)
        .map(|t| {
            let (store, barrier) = (nodes[t % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                let s = if t < N {
                    // Group A: one resource URI; half of them also race for the id "a".
                    let id = if t % 4 < 2 { "a".to_owned() } else { format!("a-{t}") };
                    Space { resource_uri: "kms://k/resources/shared".into(), ..space(&id, ALICE, 1_000) }
                } else {
                    // Group B: the id "b", each with its own resource URI.
                    Space { resource_uri: format!("kms://k/resources/{t}"), ..space("b", ALICE, 1_000) }
                };
                barrier.wait().await;
                (t, s.id.clone(), store.create_space(&s, &format!("e{t}")).await)
            })
        })
        .collect();
    let outcomes = join_all(tasks).await;
    assert!(outcomes.iter().all(|(_, _, o)| matches!(o, Ok(_) | Err(StoreError::Exists("space")))), "{outcomes:?}");
    let winners: Vec<(usize, String)> =
        outcomes.iter().filter(|(_, _, o)| o.is_ok()).map(|(t, id, _)| (*t, id.clone())).collect();
    assert_eq!(winners.iter().filter(|(t, _)| *t < N).count(), 1, "group A: {outcomes:?}");
    assert_eq!(winners.iter().filter(|(t, _)| *t >= N).count(), 1, "group B: {outcomes:?}");
    let mut listed: Vec<String> = nodes[1].spaces_of(ALICE).await.unwrap().into_iter().map(|s| s.space.id).collect();
    listed.sort();
    let mut expected: Vec<String> = winners.iter().map(|(_, id)| id.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for (t, id) in &winners {
        let events = all_events(&*nodes[1], id).await;
        assert_eq!((seqs(&events), events[0].id.clone()), (vec![1], format!("e{t}")));
        assert_eq!(nodes[1].members(id).await.unwrap().len(), 1);
    }
}

async fn concurrent_complete_file_one_event(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    make_space(&*nodes[0], "s1", 1_000).await;
    nodes[0].create_file(&file("f1", "s1", 40, 4)).await.unwrap();
    // Chunks arrive concurrently (some twice), then everyone completes at once.
    let tasks = (0..N)
        .map(|t| {
            let store = nodes[t % 2].clone();
            tokio::spawn(async move { store.put_chunk("f1", (t % 10) as i64, 4).await.unwrap() })
        })
        .collect();
    join_all(tasks).await;
    assert_eq!(nodes[1].chunks("f1").await.unwrap(), (0..10).collect::<Vec<_>>());
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|t| {
            let (store, barrier) = (nodes[t % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.complete_file("f1", &format!("fe{t}"), 2_000).await.unwrap().expect("complete")
            })
        })
        .collect();
    let events = join_all(tasks).await;
    assert!(events.iter().all(|e| *e == events[0]), "{events:?}");
    assert_eq!(events[0].seq, 2);
    let all = all_events(&*nodes[1], "s1").await;
    assert_eq!(all.iter().filter(|e| e.kind == EventKind::FileReady).count(), 1);
    assert_eq!(last_seq(&*nodes[1], "s1").await, 2);
}

async fn concurrent_read_markers_keep_max(ctx: Ctx) {
    let nodes = two_nodes(&ctx).await;
    make_space(&*nodes[0], "s1", 1_000).await;
    for i in 0..N {
        post(&*nodes[0], "s1", &format!("m{i}"), 2_000).await;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks = (0..N)
        .map(|t| {
            let (store, barrier) = (nodes[t % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // 1..=N in a scrambled order.
                let seq = ((t * 7) % N + 1) as i64;
                let now = store.set_read_marker("s1", BOB, seq, 3_000).await.unwrap();
                assert!(now >= seq, "marker in force {now} below {seq}");
            })
        })
        .collect();
    join_all(tasks).await;
    assert_eq!(nodes[1].read_marker("s1", BOB).await.unwrap(), N as i64);
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
    make_space(&*stores[0], "s1", 1_000).await;
    for s in &stores {
        assert_eq!(last_seq(&**s, "s1").await, 1);
    }
}

// ---------------------------------------------------------------- group commit

/// Many appends at once on one handle land in shared transactions (group
/// commit): each still gets its own outcome (new, the first of a retry, no
/// such space, a taken id), numbering stays gap-free per space, a retry
/// consumes no number, and titles end as the last title event says.
async fn batched_appends_keep_every_outcome(ctx: Ctx) {
    const TASKS: usize = 120;
    let store = ctx.open().await;
    for s in ["s1", "s2", "s3"] {
        make_space(&*store, s, 1_000).await;
    }
    let Appended::New(old) = store.append("s2", &message("taken", BOB, Some("c-old")), 1_500).await.unwrap() else {
        panic!("not new")
    };
    for round in 0..3 {
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks = (0..TASKS)
            .map(|t| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let id = format!("r{round}-t{t}");
                    let (space, e) = match t % 10 {
                        0 => ("nope", message(&id, ALICE, Some(&id))),
                        1 => ("s2", message(&id, BOB, Some("c-old"))),
                        2 => ("s3", message(&id, CAROL, Some(&format!("dup-{round}")))),
                        3 => ("s2", message("taken", ALICE, None)),
                        4 => ("s1", NewEvent { kind: EventKind::Title, ..message(&id, ALICE, None) }),
                        k => (["s1", "s2", "s3"][k % 3], message(&id, ALICE, Some(&id))),
                    };
                    barrier.wait().await;
                    (t, space.to_owned(), store.append(space, &e, 2_000 + t as i64).await)
                })
            })
            .collect();
        let outcomes = join_all(tasks).await;
        let mut dup_first: Option<Event> = None;
        for (t, space, outcome) in &outcomes {
            match (t % 10, outcome) {
                (0, Err(StoreError::NotFound("space"))) => {}
                (1, Ok(Appended::Duplicate(e))) => assert_eq!(e, &old, "a retry answers with the first event"),
                (2, Ok(Appended::New(e) | Appended::Duplicate(e))) => {
                    let first = dup_first.get_or_insert_with(|| e.clone());
                    assert_eq!(e, first, "one event for one client id");
                }
                (3, Err(StoreError::Exists("event"))) => {}
                (4..=9, Ok(Appended::New(e))) => assert_eq!(&e.space_id, space),
                (_, other) => panic!("task {t} ({space}): unexpected {other:?}"),
            }
        }
        let dup_new = outcomes.iter().filter(|(t, _, o)| t % 10 == 2 && matches!(o, Ok(Appended::New(_)))).count();
        assert_eq!(dup_new, 1, "round {round}: exactly one of the concurrent retries is new");
        for s in ["s1", "s2", "s3"] {
            let events = all_events(&*store, s).await;
            assert_eq!(seqs(&events), (1..=events.len() as i64).collect::<Vec<_>>(), "round {round}, {s}: gap-free");
            assert_eq!(last_seq(&*store, s).await, events.len() as i64, "round {round}, {s}: last_seq");
            for (_, _, o) in outcomes.iter().filter(|(_, sp, _)| sp == s) {
                if let Ok(Appended::New(e)) = o {
                    assert_eq!(&events[e.seq as usize - 1], e, "round {round}, {s}: stored as answered");
                }
            }
        }
        let last_title = all_events(&*store, "s1").await.into_iter().rfind(|e| e.kind == EventKind::Title);
        assert_eq!(store.get_space("s1").await.unwrap().unwrap().title, last_title.and_then(|e| e.ciphertext));
    }
    let (ids, n): (Vec<String>, usize) = {
        let e = all_events(&*store, "s2").await;
        (e.iter().map(|e| e.id.clone()).collect(), e.len())
    };
    assert_eq!(ids.iter().filter(|i| *i == "taken").count(), 1);
    assert_eq!(n as i64, last_seq(&*store, "s2").await);
}

/// The commit listener hears every event this handle commits (and no
/// retry), before the write returns, in sequence order per space; not what
/// another handle commits.
async fn commit_listener_hears_each_commit_in_order(ctx: Ctx) {
    let store = ctx.open().await;
    let other = ctx.open().await;
    let heard: Arc<std::sync::Mutex<Vec<Event>>> = Arc::default();
    let h = heard.clone();
    store.set_commit_listener(Arc::new(move |events: &[Event]| h.lock().unwrap().extend_from_slice(events)));
    let has = |e: &Event| heard.lock().unwrap().contains(e);

    let first = make_space(&*store, "s1", 1_000).await;
    assert!(has(&first));
    let added = store.add_member(&membership("s1", BOB, Role::Member, 1_500), "add-bob").await.unwrap().unwrap();
    assert!(has(&added));
    let tasks = (0..60)
        .map(|t| {
            let (store, other, heard) = (store.clone(), other.clone(), heard.clone());
            tokio::spawn(async move {
                if t % 20 == 0 {
                    // Another node: not heard here.
                    post(&*other, "s1", &format!("other-{t}"), 2_000).await;
                    return;
                }
                let cid = if t % 6 == 0 { "retry".to_owned() } else { format!("c{t}") };
                match store.append("s1", &message(&format!("m{t}"), BOB, Some(&cid)), 2_000).await.unwrap() {
                    Appended::New(e) => assert!(heard.lock().unwrap().contains(&e), "heard before the append returned"),
                    Appended::Duplicate(_) => {}
                }
            })
        })
        .collect();
    join_all(tasks).await;
    let removed = store.remove_member("s1", BOB, ALICE, "rm-bob", 3_000).await.unwrap().unwrap();
    assert!(has(&removed));
    store.create_file(&file("f1", "s1", 0, 4)).await.unwrap();
    let ready = store.complete_file("f1", "ready", 4_000).await.unwrap().unwrap();
    assert!(has(&ready));

    let heard = heard.lock().unwrap().clone();
    assert!(heard.windows(2).all(|w| w[0].seq < w[1].seq), "in order: {:?}", seqs(&heard));
    let mine: Vec<Event> =
        all_events(&*store, "s1").await.into_iter().filter(|e| !e.id.starts_with("other-")).collect();
    assert_eq!(heard, mine, "every event of this handle, once");
}

/// Under load (on PostgreSQL several writers commit at once), each space's
/// events still reach the listener in sequence order, each once.
async fn commit_listener_order_under_load(ctx: Ctx) {
    const TASKS: usize = 64;
    const EACH: usize = 25;
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    make_space(&*store, "s2", 1_000).await;
    let heard: Arc<std::sync::Mutex<Vec<(String, i64)>>> = Arc::default();
    let h = heard.clone();
    store.set_commit_listener(Arc::new(move |events: &[Event]| {
        h.lock().unwrap().extend(events.iter().map(|e| (e.space_id.clone(), e.seq)));
    }));
    let tasks = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for j in 0..EACH {
                    let space = if (t + j) % 3 == 0 { "s2" } else { "s1" };
                    post(&*store, space, &format!("m-{t}-{j}"), 2_000).await;
                }
            })
        })
        .collect();
    join_all(tasks).await;
    let heard = heard.lock().unwrap().clone();
    for s in ["s1", "s2"] {
        let seqs: Vec<i64> = heard.iter().filter(|(sp, _)| sp == s).map(|(_, q)| *q).collect();
        let last = last_seq(&*store, s).await;
        assert_eq!(seqs, (2..=last).collect::<Vec<_>>(), "{s}: heard in order, each once");
    }
}

async fn read_markers_list_a_space(ctx: Ctx) {
    let store = ctx.open().await;
    make_space(&*store, "s1", 1_000).await;
    make_space(&*store, "s2", 1_000).await;
    for i in 0..3 {
        post(&*store, "s1", &format!("m{i}"), 2_000).await;
    }
    assert_eq!(store.read_markers("s1").await.unwrap(), []);
    store.set_read_marker("s1", CAROL, 2, 3_000).await.unwrap();
    store.set_read_marker("s1", BOB, 4, 3_000).await.unwrap();
    store.set_read_marker("s2", BOB, 1, 3_000).await.unwrap();
    let list = store.read_markers("s1").await.unwrap();
    let got: Vec<(&str, i64)> = list.iter().map(|m| (m.user_id.as_str(), m.seq)).collect();
    assert_eq!(got, [(BOB, 4), (CAROL, 2)]);
    assert!(store.read_markers("nope").await.unwrap().is_empty());
}

// ---------------------------------------------------------------- backend-independent

#[tokio::test]
async fn unsupported_urls_and_schema_names() {
    assert!(matches!(core_store::open("mysql://localhost/x").await, Err(StoreError::Config(_))));
    assert!(matches!(core_store::open("sqlite://").await, Err(StoreError::Config(_))));
    assert!(matches!(
        core_store::open_postgres_schema("postgres://127.0.0.1/test", "bad\"name").await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(core_store::open_postgres_schema("sqlite://x.db", "ok").await, Err(StoreError::Config(_))));
    assert!(matches!(core_store::drop_postgres_schema("sqlite://x.db", "ok").await, Err(StoreError::Config(_))));
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = core_store::open("sqlite::memory:").await.unwrap();
    make_space(&*store, "s1", 1_000).await;
    assert_eq!(post(&*store, "s1", "m1", 2_000).await.seq, 2);
    assert_eq!(seqs(&all_events(&*store, "s1").await), [1, 2]);
}

/// A pool of one connection (in memory): appends (through the writer) and
/// other writes at once must not wait for each other forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_takes_concurrent_writes() {
    let store = core_store::open("sqlite::memory:").await.unwrap();
    make_space(&*store, "s1", 1_000).await;
    let tasks: Vec<_> = (0..60)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                match t % 3 {
                    0 => {
                        store
                            .add_member(
                                &membership("s1", &format!("u{t}@example.com"), Role::Member, 2_000),
                                &format!("a{t}"),
                            )
                            .await
                            .unwrap();
                    }
                    1 => {
                        store.set_read_marker("s1", BOB, 1, 2_000).await.unwrap();
                    }
                    _ => {
                        post(&*store, "s1", &format!("m{t}"), 2_000).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::timeout(std::time::Duration::from_secs(20), join_all(tasks)).await.expect("no deadlock");
    assert_eq!(last_seq(&*store, "s1").await, 41);
}

/// Under appends that never pause, the WAL is still checkpointed to the end
/// and starts over: it stays a small fraction of what went through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_wal_starts_over_under_sustained_writes() {
    let dir = std::env::temp_dir().join(sqlstore::testing::unique("core_wal_test"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("core.db");
    let store = core_store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    for s in 0..20 {
        make_space(&*store, &format!("s{s}"), 1_000).await;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while std::time::Instant::now() < until {
                    post(&*store, &format!("s{}", (t + n as usize) % 20), &format!("m-{t}-{n}"), 2_000).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let appends: u64 = join_all(tasks).await.into_iter().sum();
    let wal = std::fs::metadata(dir.join("core.db-wal")).map(|m| m.len()).unwrap_or(0);
    // Each append dirties a few pages of 4 KiB; the WAL holds what came since the last restart.
    let written = appends * 4096;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(appends > 200, "only {appends} appends");
    assert!(wal < written / 2, "the WAL grew to {wal} bytes for {appends} appends: it never starts over");
}

async fn webhooks_and_their_cursors(ctx: Ctx) {
    let store = ctx.open().await;
    assert!(store.webhooks().await.unwrap().is_empty());
    let w = Webhook { user_id: "bot@a.test".into(), url: "https://bot.a.test/hook".into(), create_date: 5 };
    store.set_webhook(&w).await.unwrap();
    assert_eq!(store.webhooks().await.unwrap(), vec![w.clone()]);
    assert_eq!(store.webhook_cursor("bot@a.test", "s1").await.unwrap(), None);
    store.set_webhook_cursor("bot@a.test", "s1", 7).await.unwrap();
    store.set_webhook_cursor("bot@a.test", "s1", 3).await.unwrap();
    assert_eq!(store.webhook_cursor("bot@a.test", "s1").await.unwrap(), Some(7), "never moves back");
    store.set_webhook_cursor("bot@a.test", "s1", 9).await.unwrap();
    assert_eq!(store.webhook_cursor("bot@a.test", "s1").await.unwrap(), Some(9));
    assert_eq!(store.webhook_cursor("bot@a.test", "s2").await.unwrap(), None);
    // Replacing the webhook forgets where the old one was.
    let w2 = Webhook { url: "https://bot.a.test/v2".into(), create_date: 6, ..w.clone() };
    store.set_webhook(&w2).await.unwrap();
    assert_eq!(store.webhooks().await.unwrap(), vec![w2]);
    assert_eq!(store.webhook_cursor("bot@a.test", "s1").await.unwrap(), None);
    store.set_webhook_cursor("bot@a.test", "s1", 2).await.unwrap();
    assert!(store.delete_webhook("bot@a.test").await.unwrap());
    assert!(!store.delete_webhook("bot@a.test").await.unwrap());
    assert!(store.webhooks().await.unwrap().is_empty());
    assert_eq!(store.webhook_cursor("bot@a.test", "s1").await.unwrap(), None);
}

async fn postings_intersect_per_key_and_replace(ctx: Ctx) {
    let store = ctx.open().await;
    let t = |b: u8| [b; 16];
    store.set_postings("s1", 1, "k1", &[t(1), t(2), t(3)]).await.unwrap();
    store.set_postings("s1", 2, "k1", &[t(2), t(3), t(3)]).await.unwrap();
    store.set_postings("s1", 3, "k1", &[t(2)]).await.unwrap();
    store.set_postings("s1", 4, "k2", &[t(2), t(3)]).await.unwrap();
    store.set_postings("s2", 5, "k1", &[t(2), t(3)]).await.unwrap();
    // Every token, under that key, in that space; newest first; below `before`; at most `limit`.
    assert_eq!(store.search_postings("s1", "k1", &[t(2), t(3)], i64::MAX, 10).await.unwrap(), [2, 1]);
    assert_eq!(store.search_postings("s1", "k1", &[t(3), t(2), t(2)], i64::MAX, 10).await.unwrap(), [2, 1]);
    assert_eq!(store.search_postings("s1", "k1", &[t(2)], i64::MAX, 2).await.unwrap(), [3, 2]);
    assert_eq!(store.search_postings("s1", "k1", &[t(2)], 3, 10).await.unwrap(), [2, 1]);
    assert_eq!(store.search_postings("s1", "k2", &[t(2), t(3)], i64::MAX, 10).await.unwrap(), [4]);
    assert!(store.search_postings("s1", "k1", &[t(1), t(9)], i64::MAX, 10).await.unwrap().is_empty());
    assert!(store.search_postings("s1", "k1", &[], i64::MAX, 10).await.unwrap().is_empty());
    // Re-indexing an event replaces its postings (a new key, new tokens).
    store.set_postings("s1", 1, "k2", &[t(7)]).await.unwrap();
    assert_eq!(store.search_postings("s1", "k1", &[t(2), t(3)], i64::MAX, 10).await.unwrap(), [2]);
    assert_eq!(store.search_postings("s1", "k2", &[t(7)], i64::MAX, 10).await.unwrap(), [1]);
    assert_eq!(store.posting_keys("s1").await.unwrap(), [("k1".to_string(), 2), ("k2".to_string(), 2)]);
    assert!(store.posting_keys("nope").await.unwrap().is_empty());
    // A large posting list goes in several statements.
    let many: Vec<[u8; 16]> = (0..1000u32)
        .map(|i| {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&i.to_be_bytes());
            a
        })
        .collect();
    store.set_postings("s3", 1, "k", &many).await.unwrap();
    assert_eq!(store.search_postings("s3", "k", &many[990..], i64::MAX, 10).await.unwrap(), [1]);
}

async fn postings_batch_replaces_each_event(ctx: Ctx) {
    let store = ctx.open().await;
    let t = |b: u8| [b; 16];
    store.set_postings("s1", 1, "k1", &[t(1), t(9)]).await.unwrap();
    store.set_postings_batch(&[]).await.unwrap();
    let (a, b, c) = ([t(1), t(2)], [t(2), t(3), t(2)], [t(4)]);
    store
        .set_postings_batch(&[
            PostingSet { space_id: "s1", seq: 1, key_uri: "k2", tokens: &a },
            PostingSet { space_id: "s1", seq: 2, key_uri: "k2", tokens: &b },
            PostingSet { space_id: "s2", seq: 1, key_uri: "k2", tokens: &a },
            // Named twice: the later set wins.
            PostingSet { space_id: "s1", seq: 3, key_uri: "k2", tokens: &a },
            PostingSet { space_id: "s1", seq: 3, key_uri: "k2", tokens: &c },
        ])
        .await
        .unwrap();
    // Event 1's old postings (under k1, with t(9)) are gone.
    assert!(store.search_postings("s1", "k1", &[t(1)], i64::MAX, 10).await.unwrap().is_empty());
    assert!(store.search_postings("s1", "k2", &[t(9)], i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(store.search_postings("s1", "k2", &[t(2)], i64::MAX, 10).await.unwrap(), [2, 1]);
    assert_eq!(store.search_postings("s1", "k2", &[t(2), t(3)], i64::MAX, 10).await.unwrap(), [2]);
    assert_eq!(store.search_postings("s1", "k2", &[t(4)], i64::MAX, 10).await.unwrap(), [3]);
    assert!(store.search_postings("s1", "k2", &[t(1), t(2), t(4)], i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(store.search_postings("s2", "k2", &[t(1), t(2)], i64::MAX, 10).await.unwrap(), [1]);
    assert_eq!(store.posting_keys("s1").await.unwrap(), [("k2".to_string(), 3)]);
}

async fn previews_replace(ctx: Ctx) {
    let store = ctx.open().await;
    assert_eq!(store.preview("f1").await.unwrap(), None);
    let p = Preview {
        file_id: "f1".into(),
        ciphertext: "c1".into(),
        key_uri: "k1".into(),
        creator: "p@a".into(),
        create_date: 1,
    };
    store.put_preview(&p).await.unwrap();
    assert_eq!(store.preview("f1").await.unwrap(), Some(p.clone()));
    let p2 = Preview { ciphertext: "c2".into(), key_uri: "k2".into(), create_date: 2, ..p };
    store.put_preview(&p2).await.unwrap();
    assert_eq!(store.preview("f1").await.unwrap(), Some(p2));
    assert_eq!(store.preview("f2").await.unwrap(), None);
}
