//! The audit log against both databases: every test runs once on a fresh
//! SQLite file (`sqlite::name`) and once in a fresh PostgreSQL schema
//! (`postgres::name`), through the harness the stores share
//! (`sqlstore::testing`). Without PostgreSQL (`CUSTOS_TEST_POSTGRES_URL`,
//! default `postgres://127.0.0.1:5432/test`) the PostgreSQL runs print
//! `SKIPPED` and pass, unless `CI` is set.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use audit::{
    verify_jsonl, Action, ActorKind, AuditError, AuditLog, AuditOptions, CheckpointPolicy, Entry, NewEntry, Outcome,
    ProblemKind, Query, Report, GENESIS_HASH,
};
use sqlstore::testing::{join_all, Ctx};

use common::*;

sqlstore::conformance! {
    crate::HARNESS;
    concurrent_appends_one_chain,
    two_nodes_one_chain,
    durability_reopen,
    kill_dash_nine_keeps_acknowledged_entries,
    failing_database_refuses_appends,
    stalled_database_times_out,
    invalid_entries_never_reach_the_log,
    checkpoints_manual,
    checkpoint_policy,
    key_access_transparency,
    export_whole_and_partial,
    tampered_database_is_not_signed,
    tampered_checkpoint_row_is_not_trusted,
    inconsistent_head_refuses_to_open,
    key_rotation,
    from_pool_leaves_the_pool_open,
    append_only_triggers,
}

// ---------------------------------------------------------------- helpers

async fn export(log: &AuditLog, from_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    log.export_jsonl(&mut out, from_seq).await.expect("export");
    out
}

fn verify(bytes: &[u8]) -> Report {
    verify_jsonl(bytes, &public_key())
}

fn assert_verifies(bytes: &[u8]) -> Report {
    let report = verify(bytes);
    assert!(report.is_ok(), "{:?}\n{}", report.problem, String::from_utf8_lossy(bytes));
    report
}

/// Appends `per_task` entries from each of `tasks` concurrent callers.
async fn append_concurrently(log: &Arc<AuditLog>, tasks: usize, per_task: usize, offset: usize) -> Vec<Vec<Entry>> {
    let handles = (0..tasks)
        .map(|t| {
            let log = Arc::clone(log);
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    out.push(log.append(sample(offset + t * per_task + i)).await.expect("append"));
                }
                out
            })
        })
        .collect();
    join_all(handles).await
}

fn assert_gap_free(entries: &[Entry], n: u64) {
    let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "seqs are not exactly 1..={n}");
}

// ---------------------------------------------------------------- chain

/// 64 concurrent appenders: seqs 1..=1280 exactly once, each caller's
/// entries in its own order, every acknowledged entry stored as returned,
/// and the export verifies.
async fn concurrent_appends_one_chain(ctx: Ctx) {
    let log = Arc::new(open_log(&ctx, "node-a").await);
    let per_caller = append_concurrently(&log, 64, 20, 0).await;
    for mine in &per_caller {
        assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq), "a caller's appends were reordered");
    }
    let all: Vec<Entry> = per_caller.into_iter().flatten().collect();
    assert_gap_free(&all, 1280);
    let mut by_seq = all.clone();
    by_seq.sort_by_key(|e| e.seq);
    assert_eq!(by_seq[0].prev, GENESIS_HASH);
    for w in by_seq.windows(2) {
        assert_eq!(w[1].prev, w[0].hash, "chain broken at seq {}", w[1].seq);
        assert!(w[1].time >= w[0].time, "time went back at seq {}", w[1].seq);
    }
    let stored = log.entries(&Query { limit: 10_000, ..Query::default() }).await.unwrap();
    assert_eq!(stored, by_seq, "stored entries differ from those acknowledged");
    let head = log.head().await.unwrap();
    assert_eq!((head.seq, head.hash.as_str()), (1280, by_seq[1279].hash.as_str()));

    let report = assert_verifies(&export(&log, 1).await);
    assert_eq!((report.entries, report.first_seq, report.last_seq), (1280, Some(1), Some(1280)));
    log.close().await;
}

/// Two nodes (two pools; on PostgreSQL what two KMS processes do) append and
/// checkpoint concurrently: one chain, both nodes in it, checkpoints gap-free.
async fn two_nodes_one_chain(ctx: Ctx) {
    let a = Arc::new(open_log(&ctx, "node-a").await);
    let b = Arc::new(open_log(&ctx, "node-b").await);
    let checkpointer = |log: Arc<AuditLog>| {
        tokio::spawn(async move {
            for _ in 0..5 {
                log.checkpoint().await.expect("checkpoint");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let (ca, cb) = (checkpointer(Arc::clone(&a)), checkpointer(Arc::clone(&b)));
    let (ea, eb) = tokio::join!(append_concurrently(&a, 32, 20, 0), append_concurrently(&b, 32, 20, 10_000));
    ca.await.unwrap();
    cb.await.unwrap();
    let all: Vec<Entry> = ea.into_iter().chain(eb).flatten().collect();
    assert_gap_free(&all, 1280);
    let stored = a.entries(&Query { limit: 10_000, ..Query::default() }).await.unwrap();
    for w in stored.windows(2) {
        assert_eq!(w[1].prev, w[0].hash, "chain forked at seq {}", w[1].seq);
    }
    assert_eq!(stored.iter().filter(|e| e.node == "node-a").count(), 640);
    assert_eq!(stored.iter().filter(|e| e.node == "node-b").count(), 640);

    let head = b.head().await.unwrap();
    assert_eq!(head.checkpoints, 10);
    let cps = a.checkpoints(0, 100).await.unwrap();
    assert_eq!(cps.iter().map(|c| c.body.index.unwrap()).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert!(cps.windows(2).all(|w| w[0].body.count <= w[1].body.count && w[0].body.time < w[1].body.time));

    let report = assert_verifies(&export(&b, 1).await);
    assert_eq!((report.entries, report.checkpoints), (1280, 10));
    a.close().await;
    b.close().await;
}

// ---------------------------------------------------------------- durability

/// Acknowledged entries survive a close and reopen; appends after close are
/// refused; the chain continues where it stopped.
async fn durability_reopen(ctx: Ctx) {
    let log = Arc::new(open_log(&ctx, "node-a").await);
    let acked: Vec<Entry> = append_concurrently(&log, 10, 5, 0).await.into_iter().flatten().collect();
    log.checkpoint().await.unwrap();
    log.close().await;
    assert!(matches!(log.append(sample(0)).await, Err(AuditError::Closed)));
    drop(log);

    let log = open_log(&ctx, "node-a").await;
    let head = log.head().await.unwrap();
    assert_eq!((head.seq, head.checkpoints), (50, 1));
    for e in &acked {
        assert_eq!(log.entry(e.seq).await.unwrap().as_ref(), Some(e), "acknowledged entry {} lost", e.seq);
    }
    let next = log.append(sample(50)).await.unwrap();
    assert_eq!((next.seq, next.prev.as_str()), (51, head.hash.as_str()));
    assert_verifies(&export(&log, 1).await);
    log.close().await;
}

/// Runs this test binary again as an appender (`kill_child_appender`),
/// SIGKILLs it once it acknowledged 200 entries, and checks every
/// acknowledged entry is in the reopened log, which still verifies.
async fn kill_dash_nine_keeps_acknowledged_entries(ctx: Ctx) {
    let acked = HARNESS.kill_child_after_acks(&ctx, "kill_child_appender", 200).await;
    let log = open_log(&ctx, "node-after").await;
    for ack in &acked {
        let (seq, hash) = ack.split_once(':').expect("ACK seq:hash");
        let e = log.entry(seq.parse().unwrap()).await.unwrap();
        assert_eq!(e.map(|e| e.hash), Some(hash.to_owned()), "acknowledged entry {seq} lost");
    }
    assert_verifies(&export(&log, 1).await);
    log.close().await;
}

/// The child half of `kill_dash_nine_keeps_acknowledged_entries`: 16
/// concurrent appenders forever, printing `ACK seq:hash` after each append returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of kill_dash_nine_keeps_acknowledged_entries"]
async fn kill_child_appender() {
    let log = Arc::new(open_log(&HARNESS.child_ctx(), "node-killed").await);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for i in 0.. {
                    let e = log.append(sample(t * 1_000_000 + i)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {}:{}", e.seq, e.hash).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    join_all(tasks).await;
}

// ---------------------------------------------------------------- failure

async fn install_failing_insert(ctx: &Ctx) {
    let mut conn = raw(ctx).await;
    if ctx.is_postgres() {
        exec(
            &mut conn,
            "CREATE FUNCTION audit_test_fail() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        )
        .await;
        exec(
            &mut conn,
            "CREATE TRIGGER audit_test_fail BEFORE INSERT ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_test_fail()",
        )
        .await;
    } else {
        exec(
            &mut conn,
            "CREATE TRIGGER audit_test_fail BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .await;
    }
}

async fn remove_failing_insert(ctx: &Ctx) {
    let mut conn = raw(ctx).await;
    let sql = if ctx.is_postgres() {
        "DROP TRIGGER audit_test_fail ON audit_entries"
    } else {
        "DROP TRIGGER audit_test_fail"
    };
    exec(&mut conn, sql).await;
}

/// While the database refuses writes, every waiting append gets an error
/// (the KMS then refuses the request) and nothing reaches the log; once it
/// recovers, the chain continues without a gap.
async fn failing_database_refuses_appends(ctx: Ctx) {
    let log = Arc::new(open_log(&ctx, "node-a").await);
    for i in 0..3 {
        log.append(sample(i)).await.unwrap();
    }
    install_failing_insert(&ctx).await;
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(sample(i)).await })
        })
        .collect();
    for result in join_all(handles).await {
        match result {
            Err(AuditError::Database(e)) => assert!(e.to_string().contains("injected failure"), "{e}"),
            other => panic!("append during a database failure answered {other:?}"),
        }
    }
    assert_eq!(log.head().await.unwrap().seq, 3, "a failed batch left entries behind");

    remove_failing_insert(&ctx).await;
    let e = log.append(sample(3)).await.unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(Some(e.prev), log.entry(3).await.unwrap().map(|e| e.hash));
    assert_verifies(&export(&log, 1).await);
    log.close().await;
}

/// A database that hangs (the head row locked by someone else) makes
/// appends fail after `commit_timeout` rather than wait forever.
async fn stalled_database_times_out(ctx: Ctx) {
    let options = AuditOptions { commit_timeout: Duration::from_millis(300), ..AuditOptions::default() };
    let log = open_log_with(&ctx, "node-a", options).await;
    log.append(sample(0)).await.unwrap();

    let mut conn = raw(&ctx).await;
    let begin = if ctx.is_postgres() { "BEGIN" } else { "BEGIN IMMEDIATE" };
    exec(&mut conn, begin).await;
    exec(&mut conn, "UPDATE audit_head SET time_ms = time_ms WHERE id = 1").await;
    let started = std::time::Instant::now();
    let result = log.append(sample(1)).await;
    assert!(matches!(result, Err(AuditError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    exec(&mut conn, "ROLLBACK").await;

    let e = log.append(sample(2)).await.unwrap();
    assert_eq!(e.seq, 2);
    assert_verifies(&export(&log, 1).await);
    log.close().await;
}

/// Entries carrying secrets or free text are refused before the database.
async fn invalid_entries_never_reach_the_log(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    let token = "eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJhbGljZUBleGFtcGxlLmNvbSJ9.Zm9vYmFyMTIzNDU2Nzg5MA";
    let bad = [
        sample(0).detail("bearer", token),
        sample(0).keys(["kms://kms.example.com/keys/Xq3J9vK2mP8sL5nR7tW1yZ4bC6dF0gH2jA8eU3iO5kM"]),
        NewEntry::new("alice@example.com", ActorKind::User, Action::KeyRelease, Outcome::Denied),
    ];
    for entry in bad {
        assert!(matches!(log.append(entry).await, Err(AuditError::InvalidEntry(_))));
    }
    assert_eq!(log.head().await.unwrap().seq, 0);
    assert!(AuditLog::open(&ctx.url(), "", signer()).await.is_err(), "empty node name accepted");
    log.close().await;
}

// ---------------------------------------------------------------- checkpoints

async fn checkpoints_manual(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    assert_eq!(log.latest_checkpoint().await.unwrap(), None);
    let empty = log.checkpoint().await.unwrap();
    assert_eq!((empty.body.count, empty.body.index, empty.body.last_hash.as_str()), (0, Some(1), GENESIS_HASH));
    empty.verify(&public_key()).unwrap();

    let mut last = None;
    for i in 0..10 {
        last = Some(log.append(sample(i)).await.unwrap());
    }
    let cp = log.checkpoint().await.unwrap();
    assert_eq!((cp.body.count, cp.body.index), (10, Some(2)));
    assert_eq!(cp.body.last_hash, last.unwrap().hash);
    assert!(cp.body.time > empty.body.time);
    assert_eq!(cp.body.node, "node-a");
    cp.verify(&public_key()).unwrap();
    assert_eq!(log.latest_checkpoint().await.unwrap(), Some(cp.clone()));
    assert_eq!(log.stored_checkpoint(1).await.unwrap(), empty);

    // Another checkpoint at the same count: allowed, later time, next index.
    let again = log.checkpoint().await.unwrap();
    assert_eq!((again.body.count, again.body.index), (10, Some(3)));
    assert!(again.body.time > cp.body.time);

    assert_eq!(log.checkpoint_if_behind(5).await.unwrap(), None);
    for i in 10..14 {
        log.append(sample(i)).await.unwrap();
    }
    assert_eq!(log.checkpoint_if_behind(5).await.unwrap(), None);
    log.append(sample(14)).await.unwrap();
    let due = log.checkpoint_if_behind(5).await.unwrap().expect("5 entries uncovered");
    assert_eq!((due.body.count, due.body.index), (15, Some(4)));

    let report = assert_verifies(&export(&log, 1).await);
    assert_eq!((report.entries, report.checkpoints), (15, 4));
    log.close().await;
}

async fn checkpoint_policy(ctx: Ctx) {
    // By count.
    let log = Arc::new(open_log(&ctx, "node-a").await);
    let task = log.spawn_checkpoints(CheckpointPolicy { every_entries: 25, every: None });
    for i in 0..60 {
        log.append(sample(i)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cps = log.checkpoints(0, 100).await.unwrap();
        if cps.last().is_some_and(|c| c.body.count >= 50) {
            assert!(cps.iter().all(|c| c.body.count >= 25), "checkpoint before 25 entries: {cps:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint by count: {cps:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.close().await;
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("checkpointer outlived close").unwrap();

    // By time: a few entries, no count trigger, one checkpoint within the period.
    let log = Arc::new(open_log(&ctx, "node-a").await);
    let before = log.head().await.unwrap().checkpoints;
    let task = log.spawn_checkpoints(CheckpointPolicy { every_entries: 0, every: Some(Duration::from_millis(200)) });
    let last = log.append(sample(60)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cp = log.latest_checkpoint().await.unwrap();
        if cp.as_ref().is_some_and(|c| c.body.count == last.seq) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint by time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle: no new checkpoints when nothing is uncovered.
    let settled = log.head().await.unwrap().checkpoints;
    assert!(settled > before);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(log.head().await.unwrap().checkpoints, settled, "checkpoints taken with nothing new");
    assert_verifies(&export(&log, 1).await);
    log.close().await;
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("checkpointer outlived close").unwrap();
}

// ---------------------------------------------------------------- queries

async fn key_access_transparency(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    for i in 0..36 {
        log.append(sample(i)).await.unwrap();
    }
    // Kinds 1 (service) and 2 (compliance) retrieve keys of SPACE; kind 0 is members themselves.
    let access = log.key_access(SPACE, 0, 1000).await.unwrap();
    assert_eq!(access.len(), 12);
    assert!(access.iter().all(|e| e.resource.as_deref() == Some(SPACE) && e.action == Action::KeyRelease));
    assert!(access.iter().all(|e| matches!(e.actor_kind, ActorKind::Service | ActorKind::Compliance)));
    let cases: Vec<_> = access.iter().filter_map(|e| e.case.as_deref()).collect();
    assert_eq!(cases, vec!["CASE-2026-0042"; 6]);
    // The refusals of the DLP bot on the other space show there, not here.
    let other = log.key_access(OTHER_SPACE, 0, 1000).await.unwrap();
    assert_eq!(other.len(), 6);
    assert!(other.iter().all(|e| e.action == Action::KeyDenied && e.outcome == Outcome::Denied));

    // Paging with the seq cursor.
    let page1 = log.key_access(SPACE, 0, 5).await.unwrap();
    let page2 = log.key_access(SPACE, page1.last().unwrap().seq, 100).await.unwrap();
    assert_eq!([page1, page2].concat(), access);

    assert_eq!(log.entries_for_resource(SPACE, 0, 1000).await.unwrap().len(), 18);
    let authz = log.entries_by_actions(None, &[Action::AuthorizationCreate], 0, 1000).await.unwrap();
    assert_eq!(authz.len(), 6);
    assert!(authz.iter().all(|e| e.detail.get("count") == Some(&audit::DetailValue::Int(2))));
    let unknown = log.entries_by_actions(None, &[Action::other("key_escrow_sync").unwrap()], 0, 1000).await.unwrap();
    assert_eq!(unknown.len(), 6);
    let by_actor = log
        .entries(&Query {
            actor: Some("officer@example.com".into()),
            outcome: Some(Outcome::Allowed),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 6);
    let head = log.head().await.unwrap();
    let recent = log.entries(&Query { since_time: Some(head.time + 1), ..Query::default() }).await.unwrap();
    assert!(recent.is_empty());
    assert_eq!(log.entries(&Query { since_time: Some(0), limit: 7, ..Query::default() }).await.unwrap().len(), 7);
    log.close().await;
}

// ---------------------------------------------------------------- export

async fn export_whole_and_partial(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    for i in 0..30 {
        log.append(sample(i)).await.unwrap();
        if i == 9 || i == 19 {
            log.checkpoint().await.unwrap();
        }
    }
    let whole = export(&log, 1).await;
    let report = assert_verifies(&whole);
    assert_eq!((report.entries, report.checkpoints, report.anchored), (30, 2, true));
    // Every line is one JSON object with a type; the seal is last.
    let lines: Vec<&str> = std::str::from_utf8(&whole).unwrap().lines().collect();
    assert_eq!(lines.len(), 33);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(["entry", "checkpoint", "seal"].contains(&v["type"].as_str().unwrap()));
    }
    assert!(lines[10].contains("\"type\":\"checkpoint\"") && lines[10].contains("\"count\":10"));
    assert!(lines[32].contains("\"type\":\"seal\""));
    assert_eq!(
        report.last_checkpoint_time,
        Some(serde_json::from_str::<serde_json::Value>(lines[32]).unwrap()["time"].as_u64().unwrap())
    );

    // From seq 11: opens with the checkpoint covering 1..=10, so the chain is anchored.
    let from11 = export(&log, 11).await;
    let report = assert_verifies(&from11);
    assert_eq!((report.first_seq, report.entries, report.checkpoints, report.anchored), (Some(11), 20, 2, true));
    assert!(std::str::from_utf8(&from11).unwrap().starts_with("{\"count\":10,"));

    // From seq 15: no checkpoint covers exactly 14, so only the seal vouches for the start.
    let report = assert_verifies(&export(&log, 15).await);
    assert_eq!((report.first_seq, report.entries, report.checkpoints, report.anchored), (Some(15), 16, 1, false));

    // Nothing new: just a seal.
    let report = assert_verifies(&export(&log, 31).await);
    assert_eq!((report.entries, report.lines), (0, 1));

    let mut sink = Vec::new();
    assert!(matches!(log.export_jsonl(&mut sink, 0).await, Err(AuditError::Config(_))));
    assert!(matches!(log.export_jsonl(&mut sink, 32).await, Err(AuditError::Config(_))));

    // A seal is not stored: the next export's checkpoints are the stored ones only.
    assert_eq!(log.head().await.unwrap().checkpoints, 2);
    log.close().await;
}

// ---------------------------------------------------------------- tampering

async fn drop_append_only_triggers(ctx: &Ctx) -> sqlx::AnyConnection {
    let mut conn = raw(ctx).await;
    if ctx.is_postgres() {
        exec(&mut conn, "DROP TRIGGER audit_entries_append_only ON audit_entries").await;
    } else {
        exec(&mut conn, "DROP TRIGGER audit_entries_no_update").await;
        exec(&mut conn, "DROP TRIGGER audit_entries_no_delete").await;
    }
    conn
}

/// Someone with write access to the database changes an entry: the log
/// refuses to sign a checkpoint or seal over it, and the export shows where.
async fn tampered_database_is_not_signed(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    for i in 0..20 {
        log.append(sample(i)).await.unwrap();
    }
    log.checkpoint().await.unwrap();
    for i in 20..30 {
        log.append(sample(i)).await.unwrap();
    }
    let mut conn = drop_append_only_triggers(&ctx).await;

    // After the last checkpoint: the next checkpoint would bless it.
    let e25 = log.entry(25).await.unwrap().unwrap();
    exec(&mut conn, "UPDATE audit_entries SET actor = 'mallory@example.com' WHERE seq = 25").await;
    match log.checkpoint().await {
        Err(AuditError::Tampered { seq: 25, .. }) => {}
        other => panic!("checkpoint over a tampered entry: {other:?}"),
    }
    let mut out = Vec::new();
    assert!(matches!(log.export_jsonl(&mut out, 1).await, Err(AuditError::Tampered { seq: 25, .. })));
    let report = verify(&out);
    let problem = report.problem.expect("tampered export verified");
    assert_eq!((problem.kind, problem.seq, problem.line), (ProblemKind::ModifiedEntry, Some(25), 26));

    // Under a checkpoint, with its own hash recomputed to match: the next entry's link breaks.
    exec(&mut conn, &format!("UPDATE audit_entries SET actor = '{}' WHERE seq = 25", e25.actor)).await;
    log.export_jsonl(&mut Vec::new(), 1).await.expect("restored log exports");
    let e5 = log.entry(5).await.unwrap().unwrap();
    let forged = audit::Entry { actor: "mallory@example.com".into(), ..e5.clone() };
    let forged = audit::Entry { hash: forged.compute_hash(), ..forged };
    let sql = format!("UPDATE audit_entries SET actor = 'mallory@example.com', hash = '{}' WHERE seq = 5", forged.hash);
    exec(&mut conn, &sql).await;
    let mut out = Vec::new();
    assert!(matches!(log.export_jsonl(&mut out, 1).await, Err(AuditError::Tampered { .. })));
    let problem = verify(&out).problem.expect("tampered export verified");
    assert_eq!((problem.kind, problem.seq), (ProblemKind::BrokenChain, Some(6)));
    log.close().await;
}

/// A stored checkpoint row edited to vouch for other entries: the log
/// neither extends nor exports it as if it were signed.
async fn tampered_checkpoint_row_is_not_trusted(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    for i in 0..5 {
        log.append(sample(i)).await.unwrap();
    }
    log.checkpoint().await.unwrap();
    log.append(sample(5)).await.unwrap();
    let mut conn = raw(&ctx).await;
    if ctx.is_postgres() {
        exec(&mut conn, "DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints").await;
    } else {
        exec(&mut conn, "DROP TRIGGER audit_checkpoints_no_update").await;
    }
    exec(&mut conn, &format!("UPDATE audit_checkpoints SET last_hash = '{}' WHERE idx = 1", "ab".repeat(32))).await;
    assert!(matches!(log.checkpoint().await, Err(AuditError::Tampered { seq: 5, .. })));
    let mut out = Vec::new();
    assert!(matches!(log.export_jsonl(&mut out, 1).await, Err(AuditError::Tampered { .. })));
    assert!(!verify(&out).is_ok());
    log.close().await;
}

/// The KMS static key changes: old checkpoints keep their old signatures,
/// new ones use the new key, the log goes on, and a reader holding both
/// keys verifies the whole export (one holding only the new key does not).
async fn key_rotation(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    for i in 0..5 {
        log.append(sample(i)).await.unwrap();
    }
    log.checkpoint().await.unwrap();
    log.close().await;

    let rotated = other_key_with_kid("kms-static-2");
    let new_public = rotated.public_key().clone();
    let new_signer: Arc<dyn audit::CheckpointSigner> = Arc::new(audit::RsaCheckpointSigner::new(rotated));
    let log = match &ctx {
        Ctx::Sqlite { .. } => AuditLog::open(&ctx.url(), "node-a", new_signer).await,
        Ctx::Postgres { url, schema } => {
            AuditLog::open_postgres_schema(url, schema, "node-a", new_signer, AuditOptions::default()).await
        }
    }
    .unwrap();
    for i in 5..10 {
        log.append(sample(i)).await.unwrap();
    }
    log.checkpoint().await.expect("checkpoint after a key rotation");
    let out = export(&log, 1).await;
    let report = audit::verify_jsonl_keys(&out[..], &[public_key(), new_public.clone()]);
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.checkpoints, 2);
    let problem = verify_jsonl(&out[..], &new_public).problem.expect("old checkpoint verified with the new key");
    assert_eq!((problem.kind, problem.line), (ProblemKind::BadSignature, 6));
    log.close().await;
}

/// Entries deleted from the end behind the log's back: opening refuses
/// (appending would leave a gap); a read-only open still exports for forensics.
async fn inconsistent_head_refuses_to_open(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    for i in 0..10 {
        log.append(sample(i)).await.unwrap();
    }
    log.checkpoint().await.unwrap();
    log.close().await;
    let mut conn = drop_append_only_triggers(&ctx).await;
    exec(&mut conn, "DELETE FROM audit_entries WHERE seq > 7").await;

    match try_open(&ctx, "node-a", AuditOptions::default()).await {
        Err(AuditError::Tampered { seq: 8, .. }) => {}
        other => panic!("opened a log whose tail was deleted: {other:?}"),
    }
    let ro = try_open(&ctx, "node-a", AuditOptions { read_only: true, ..AuditOptions::default() }).await.unwrap();
    assert!(ro.append(sample(0)).await.is_err());
    let mut out = Vec::new();
    assert!(matches!(ro.export_jsonl(&mut out, 1).await, Err(AuditError::Tampered { .. })));
    let problem = verify(&out).problem.expect("truncated export verified");
    assert_eq!((problem.kind, problem.seq), (ProblemKind::MissingEntries, Some(8)));
    ro.close().await;
}

/// The tables refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).
async fn append_only_triggers(ctx: Ctx) {
    let log = open_log(&ctx, "node-a").await;
    log.append(sample(0)).await.unwrap();
    log.checkpoint().await.unwrap();
    log.close().await;
    // Reopening does not duplicate or fail on the existing triggers.
    let log = open_log(&ctx, "node-a").await;
    let mut conn = raw(&ctx).await;
    let mut refused = vec![
        "UPDATE audit_entries SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_entries",
        "UPDATE audit_checkpoints SET node = 'x'",
        "DELETE FROM audit_checkpoints",
    ];
    if ctx.is_postgres() {
        refused.extend(["TRUNCATE audit_entries", "TRUNCATE audit_checkpoints"]);
    }
    for sql in refused {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_verifies(&export(&log, 1).await);
    log.close().await;
}

// ---------------------------------------------------------------- shared pool

/// What another store's schema looks like to `sqlstore` (the KMS's pool is kms-store's).
const OTHER_STORE: sqlstore::Schema = sqlstore::Schema {
    version_table: "other_store_version",
    version: 1,
    pg_lock: 0x006f_7468_6572,
    sqlite: &["CREATE TABLE IF NOT EXISTS other_store_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"],
    postgres: &["CREATE TABLE IF NOT EXISTS other_store_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)"],
};

/// The log in a pool another store opened: it works, and closing the log
/// leaves the pool to its owner.
async fn from_pool_leaves_the_pool_open(ctx: Ctx) {
    let (pool, backend) = match &ctx {
        Ctx::Sqlite { .. } => sqlstore::connect(&ctx.url(), &OTHER_STORE).await.unwrap(),
        Ctx::Postgres { url, schema } => sqlstore::connect_postgres_schema(url, schema, &OTHER_STORE).await.unwrap(),
    };
    let log = AuditLog::from_pool(pool.clone(), backend, "node-a", signer(), AuditOptions::default()).await.unwrap();
    assert_eq!(log.backend(), backend.name());
    for i in 0..10 {
        log.append(sample(i)).await.unwrap();
    }
    assert_verifies(&export(&log, 1).await);
    log.close().await;
    assert!(matches!(log.append(sample(10)).await, Err(AuditError::Closed)));
    assert!(!pool.is_closed());
    let n: i64 =
        sqlx::Row::get(&sqlx::query("SELECT COUNT(*) AS n FROM audit_entries").fetch_one(&pool).await.unwrap(), "n");
    assert_eq!(n, 10);
    // The same database through a URL sees the same log.
    let again = open_log(&ctx, "node-b").await;
    assert_eq!(again.head().await.unwrap().seq, 10);
    again.close().await;
    pool.close().await;
}
