//! Group commit: one writer task per store handle turns concurrent
//! [`Store::append`](crate::Store::append) calls into one transaction.
//!
//! A commit costs a disk flush (SQLite `synchronous = FULL`, PostgreSQL
//! `fsync` of its WAL): a few milliseconds here, whatever the transaction
//! holds. One flush per append caps a node at a few hundred appends per
//! second; one flush for every append that arrived while the previous flush
//! ran does not. The writer does not wait to fill a batch: it takes what is
//! queued (up to [`MAX_BATCH`]), so a lone append is not delayed, and batches
//! grow by themselves as load grows.
//!
//! A batch, in one transaction, in as few statements as the database
//! allows (each is a round trip; on SQLite a hop to sqlx's worker thread):
//!
//! 1. claims each space's next numbers, one `UPDATE … SET last_seq =
//!    last_seq + k … RETURNING last_seq` per chunk of spaces. That takes the
//!    space rows' locks (PostgreSQL, in id order, so that batches of several
//!    nodes cannot deadlock on each other, nor with single-space writes,
//!    which lock just one space row first; SQLite's `BEGIN IMMEDIATE`
//!    already holds the database);
//! 2. numbers the appends per space in arrival order;
//! 3. inserts them with multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`;
//! 4. sets titles, commits. Only then does any caller get its answer: an
//!    acknowledged event is durable, exactly as without batching.
//!
//! If a row did not go in (a retried `client_event_id`, a taken event id),
//! the numbers claimed would leave gaps: the transaction rolls back and the
//! batch runs again carefully, one row at a time after locking its spaces,
//! so that a retry consumes no number and reads back the first event, and
//! a taken id is refused alone. Retries are rare; the common case pays
//! nothing for them.
//!
//! On SQLite, the writer keeps its connection while appends keep coming,
//! with automatic WAL checkpoints off: a checkpoint copies the WAL into the
//! database file and flushes it, and run inside a commit it stalls every
//! append queued behind that commit. A task of its own checkpoints shortly
//! after writes instead, in two passes: a `PASSIVE` one alongside the
//! writer, which copies nearly everything, then, once the WAL is long enough
//! to be worth it, holding the writers' turn,
//! a `RESTART` one for what was committed meanwhile (little), which also
//! waits for the readers still on the old WAL, so that the next commit
//! starts the WAL over. (Passive passes alone never get there under a
//! writer that never pauses: the WAL grew by a gigabyte in twenty seconds
//! of the benchmark.) Idle, the writer gives the connection back, with the
//! default restored.
//!
//! If the batch fails before its commit, nothing of it was written and each
//! append runs again alone, so a failure (a lost connection, a deadlock the
//! database broke) lands on the appends it concerns with their own error. If
//! the commit itself fails, the outcome is unknown to the store: every
//! append of the batch gets [`StoreError::CommitFailed`] (a retry with the
//! same `client_event_id` is safe).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::sql::{col, event_from_row, Backend, Shared, SELECT_EVENT, SELECT_EVENT_BY_CLIENT_ID};
use crate::{Appended, Event, EventKind, Millis, NewEvent, Result, StoreError};

/// Most appends in one transaction.
pub(crate) const MAX_BATCH: usize = 256;
/// Appends waiting for the writer before `append` callers wait to enqueue.
const QUEUE: usize = 4 * MAX_BATCH;
/// SQLite: how long after a write the checkpoint task runs (writes in the
/// meantime share it).
const CHECKPOINT_DELAY: Duration = Duration::from_millis(100);
/// SQLite's own default for `wal_autocheckpoint`, restored on connections
/// the writer gives back.
const SQLITE_AUTOCHECKPOINT: i64 = 1000;
/// SQLite: WAL frames (pages) past which the checkpoint task makes the WAL
/// start over (16 MiB of 4 KiB pages), pausing commits for a moment.
const WAL_RESTART_FRAMES: i64 = 4096;

/// Rows per multi-row `INSERT`: a batch is cut greedily into these sizes
/// (at most a few statements per batch), so that only a handful of distinct
/// statements exist, and stay prepared.
const INSERT_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];
/// Spaces per locking `SELECT` and per `UPDATE` of `last_seq`.
const SPACE_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// One append waiting for its batch.
pub(crate) struct Job {
    pub(crate) space_id: String,
    pub(crate) event: NewEvent,
    pub(crate) now: Millis,
    pub(crate) reply: oneshot::Sender<Result<Appended>>,
}

/// The handle's way to its writer task, started on first use (it needs a
/// Tokio runtime, which opening a store does not require to outlive).
#[derive(Default)]
pub(crate) struct Writer {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Queues `job` for a writer task over `pool`, starting one if there is
    /// none (or the last one stopped, e.g. with the runtime it ran on).
    pub(crate) async fn submit(&self, pool: &AnyPool, backend: Backend, shared: &Arc<Shared>, mut job: Job) {
        for _ in 0..3 {
            let tx = {
                let mut slot = self.tx.lock().unwrap_or_else(|p| p.into_inner());
                match slot.as_ref().filter(|tx| !tx.is_closed()) {
                    Some(tx) => tx.clone(),
                    None => {
                        let (tx, rx) = mpsc::channel(QUEUE);
                        tokio::spawn(run(pool.clone(), backend, shared.clone(), rx));
                        *slot = Some(tx.clone());
                        tx
                    }
                }
            };
            match tx.send(job).await {
                Ok(()) => return,
                // The task is gone without having taken the job: start another.
                Err(mpsc::error::SendError(j)) => job = j,
            }
        }
        let _ = job.reply.send(Err(StoreError::CommitFailed("the store's writer task could not be started".into())));
    }
}

/// The writer task: batches until every handle is gone.
async fn run(pool: AnyPool, backend: Backend, shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let checkpoints = (backend == Backend::Sqlite).then(|| Checkpoints::start(pool.clone(), shared.clone()));
    let mut conn: Option<PoolConnection<Any>> = None;
    // A pool of one (an in-memory database) must not be held while the
    // writer waits for its turn: the turn's holder may be waiting for it.
    let keep = pool.options().get_max_connections() > 1;
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
        process(&pool, backend, &shared, &mut conn, batch).await;
        if let Some(c) = &checkpoints {
            c.nudge.notify_one();
        }
        if !keep || rx.is_empty() {
            release(backend, conn.take()).await;
        }
    }
    release(backend, conn.take()).await;
}

/// The writer's connection, acquired if it has none.
async fn connection<'c>(
    pool: &AnyPool,
    backend: Backend,
    conn: &'c mut Option<PoolConnection<Any>>,
) -> Result<&'c mut PoolConnection<Any>> {
    if conn.is_none() {
        let mut c = pool.acquire().await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *c).await?;
        }
        *conn = Some(c);
    }
    conn.as_mut().ok_or(StoreError::Corrupt("core_events"))
}

/// Gives the writer's connection back to the pool, as the pool set it up.
async fn release(backend: Backend, conn: Option<PoolConnection<Any>>) {
    let Some(mut c) = conn else { return };
    if backend == Backend::Sqlite {
        let restore = format!("PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT}");
        if sqlx::query(AssertSqlSafe(restore)).execute(&mut *c).await.is_err() {
            // Not fit for the pool any more.
            let _ = c.close().await;
        }
    }
}

/// SQLite's WAL checkpoints, off the writer's path.
struct Checkpoints {
    nudge: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpoints {
    fn start(pool: AnyPool, shared: Arc<Shared>) -> Checkpoints {
        let nudge = Arc::new(Notify::new());
        let n = nudge.clone();
        let task = tokio::spawn(async move {
            loop {
                n.notified().await;
                tokio::time::sleep(CHECKPOINT_DELAY).await;
                // Alongside the writer: copies nearly everything.
                let frames = checkpoint(&pool, "PASSIVE").await.unwrap_or(0);
                if frames >= WAL_RESTART_FRAMES {
                    // The rest, while no one commits, then waits for readers of
                    // the old WAL to finish (moments: single statements): the
                    // next commit starts the WAL over.
                    let _turn = shared.write_lock.lock().await;
                    checkpoint(&pool, "RESTART").await;
                }
                // A failure leaves the WAL longer, until the next pass.
            }
        });
        Checkpoints { nudge, task }
    }
}

/// A checkpoint in `mode` (`PASSIVE` or `RESTART`; a trusted literal): the
/// frames in the WAL (`None`: it failed).
async fn checkpoint(pool: &AnyPool, mode: &'static str) -> Option<i64> {
    use sqlx::Row;
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    // Columns: busy, frames in the WAL, frames copied into the database.
    let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(pool).await.ok()?;
    row.try_get(1).ok()
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a failed batch leaves behind.
enum Failed {
    /// Nothing was written.
    Before(StoreError),
    /// The commit failed: written or not, nobody knows.
    Commit(sqlx::Error),
}

async fn process(
    pool: &AnyPool,
    backend: Backend,
    shared: &Shared,
    conn: &mut Option<PoolConnection<Any>>,
    jobs: Vec<Job>,
) {
    // This process's writes take turns (see `Shared::write_lock`).
    let _turn = shared.write_lock.lock().await;
    let inputs: Vec<(&str, &NewEvent, Millis)> = jobs.iter().map(|j| (j.space_id.as_str(), &j.event, j.now)).collect();
    let outcomes: Vec<Result<Appended>> = match run_batch(pool, backend, conn, &inputs).await {
        Ok(outcomes) => {
            shared.committed(&new_events(&outcomes));
            outcomes
        }
        Err(Failed::Before(e)) if inputs.len() == 1 => vec![Err(e)],
        Err(Failed::Before(_)) => {
            // Nothing was written. Each on its own: the failure (if it comes
            // again) lands on the appends it concerns, with their own error.
            let mut outcomes = Vec::with_capacity(inputs.len());
            for input in &inputs {
                let outcome = match run_batch(pool, backend, conn, std::slice::from_ref(input)).await {
                    Ok(mut o) => o.pop().unwrap_or(Err(StoreError::Corrupt("core_events"))),
                    Err(Failed::Before(e)) => Err(e),
                    Err(Failed::Commit(e)) => Err(StoreError::CommitFailed(e.to_string())),
                };
                shared.committed(&new_events(std::slice::from_ref(&outcome)));
                outcomes.push(outcome);
            }
            outcomes
        }
        Err(Failed::Commit(e)) => {
            let why = e.to_string();
            inputs.iter().map(|_| Err(StoreError::CommitFailed(why.clone()))).collect()
        }
    };
    drop(inputs);
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        // Err: the caller stopped waiting; its event is stored all the same.
        let _ = job.reply.send(outcome);
    }
}

fn new_events(outcomes: &[Result<Appended>]) -> Vec<Event> {
    let mut events: Vec<Event> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(Appended::New(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    events.sort_by(|a, b| (a.space_id.as_str(), a.seq).cmp(&(b.space_id.as_str(), b.seq)));
    events
}

/// One transaction for `inputs`: their outcomes.
async fn run_batch(
    pool: &AnyPool,
    backend: Backend,
    conn: &mut Option<PoolConnection<Any>>,
    inputs: &[(&str, &NewEvent, Millis)],
) -> std::result::Result<Vec<Result<Appended>>, Failed> {
    let outcome = async {
        let before = |e: sqlx::Error| Failed::Before(StoreError::Database(e));
        let c = connection(pool, backend, conn).await.map_err(Failed::Before)?;
        let mut tx = c.begin_with(backend.write_begin()).await.map_err(before)?;
        let outcomes = match fast(&mut tx, backend, inputs).await.map_err(Failed::Before)? {
            Some(outcomes) => outcomes,
            None => {
                tx.rollback().await.map_err(before)?;
                tx = c.begin_with(backend.write_begin()).await.map_err(before)?;
                careful(&mut tx, backend, inputs).await.map_err(Failed::Before)?
            }
        };
        tx.commit().await.map_err(Failed::Commit)?;
        Ok(outcomes)
    }
    .await;
    if outcome.is_err() {
        // The connection may be what failed: the next batch takes another.
        if let Some(c) = conn.take() {
            let _ = c.close().await;
        }
    }
    outcome
}

/// Greedy cut of `n` into `sizes` (largest first; the last size is 1).
fn cut(mut n: usize, sizes: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &s in sizes {
        while n >= s {
            out.push(s);
            n -= s;
        }
    }
    out
}

/// `$first, $first+1, …` as a comma-separated list of `n` placeholders.
fn params(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A statement per chunk size, built once.
fn cached(
    cell: &'static OnceLock<Vec<(usize, String)>>,
    sizes: &[usize],
    build: fn(usize) -> String,
    n: usize,
) -> &'static str {
    let all = cell.get_or_init(|| sizes.iter().map(|&s| (s, build(s))).collect());
    all.iter().find(|(s, _)| *s == n).map(|(_, sql)| sql.as_str()).expect("a chunk size")
}

fn lock_sql(backend: Backend, n: usize) -> &'static str {
    static SQLITE: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    static POSTGRES: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    match backend {
        // BEGIN IMMEDIATE holds the whole database already.
        Backend::Sqlite => cached(
            &SQLITE,
            &SPACE_CHUNKS,
            |n| format!("SELECT id, last_seq FROM core_spaces WHERE id IN ({})", params(1, n)),
            n,
        ),
        Backend::Postgres => cached(
            &POSTGRES,
            &SPACE_CHUNKS,
            |n| format!("SELECT id, last_seq FROM core_spaces WHERE id IN ({}) ORDER BY id FOR UPDATE", params(1, n)),
            n,
        ),
    }
}

fn insert_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    cached(
        &SQL,
        &INSERT_CHUNKS,
        |n| {
            let rows: Vec<String> = (0..n).map(|r| format!("({})", params(1 + r * 13, 13))).collect();
            format!(
                "INSERT INTO core_events ({cols}) VALUES {} ON CONFLICT DO NOTHING RETURNING {cols}",
                rows.join(", "),
                cols = crate::sql::EVENT_COLS
            )
        },
        n,
    )
}

/// `last_seq` and the activity time of `n` spaces: binds (id, last_seq, now) per space.
fn advance_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    cached(
        &SQL,
        &SPACE_CHUNKS,
        |n| {
            let ids: Vec<String> = (0..n).map(|i| format!("${}", 3 * i + 1)).collect();
            format!("UPDATE core_spaces SET {} WHERE id IN ({})", space_cases(n, "", false), ids.join(", "))
        },
        n,
    )
}

/// `last_seq = …, updated = …` for `n` spaces bound as (id, seq or count,
/// now) triples; `add` adds the count to `last_seq` instead of setting it;
/// `t` prefixes the columns (a table alias).
fn space_cases(n: usize, t: &str, add: bool) -> String {
    let seq: String = (0..n).map(|i| format!(" WHEN ${} THEN ${}", 3 * i + 1, 3 * i + 2)).collect();
    let upd: String = (0..n)
        .map(|i| {
            format!(
                " WHEN ${a} THEN CASE WHEN {t}updated < ${c} THEN ${c} ELSE {t}updated END",
                a = 3 * i + 1,
                c = 3 * i + 3
            )
        })
        .collect();
    let base = if add { format!("{t}last_seq + ") } else { String::new() };
    format!("last_seq = {base}CASE {t}id{seq} END, updated = CASE {t}id{upd} END")
}

/// Claims the next numbers of `n` spaces: binds (id, count, now) per space;
/// returns each space's new `last_seq`. On PostgreSQL the rows are locked
/// in id order first (batches of several nodes never deadlock).
fn claim_sql(backend: Backend, n: usize) -> &'static str {
    fn set(n: usize, t: &str) -> String {
        space_cases(n, t, true)
    }
    fn ids(n: usize) -> String {
        (0..n).map(|i| format!("${}", 3 * i + 1)).collect::<Vec<_>>().join(", ")
    }
    static SQLITE: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    static POSTGRES: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    match backend {
        Backend::Sqlite => cached(
            &SQLITE,
            &SPACE_CHUNKS,
            |n| format!("UPDATE core_spaces SET {} WHERE id IN ({}) RETURNING id, last_seq", set(n, ""), ids(n)),
            n,
        ),
        Backend::Postgres => cached(
            &POSTGRES,
            &SPACE_CHUNKS,
            |n| {
                format!(
                    "UPDATE core_spaces AS s SET {} FROM (SELECT id FROM core_spaces WHERE id IN ({}) ORDER BY id FOR UPDATE) AS l \
                     WHERE s.id = l.id RETURNING s.id, s.last_seq",
                    set(n, "s."),
                    ids(n)
                )
            },
            n,
        ),
    }
}

/// One planned row: the input's index and its sequence number.
struct Planned {
    input: usize,
    seq: i64,
}

/// The spaces of `inputs` in id order, each with its number of appends and
/// the latest `now` among them.
fn spaces<'a>(inputs: &[(&'a str, &NewEvent, Millis)]) -> Vec<(&'a str, i64, Millis)> {
    let mut by_id: HashMap<&str, (i64, Millis)> = HashMap::new();
    for (space, _, now) in inputs {
        let e = by_id.entry(space).or_insert((0, *now));
        *e = (e.0 + 1, e.1.max(*now));
    }
    let mut out: Vec<(&str, i64, Millis)> = by_id.into_iter().map(|(id, (n, now))| (id, n, now)).collect();
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out
}

/// The common case, in as few statements as possible: claim each space's
/// next numbers (one `UPDATE … RETURNING` per chunk of spaces), insert
/// every row. `None` if a row did not go in (a retry, a taken id): the
/// caller rolls back and takes the batch [`careful`]ly.
async fn fast(
    tx: &mut AnyConnection,
    backend: Backend,
    inputs: &[(&str, &NewEvent, Millis)],
) -> Result<Option<Vec<Result<Appended>>>> {
    let spaces = spaces(inputs);
    let mut next: HashMap<&str, i64> = HashMap::with_capacity(spaces.len());
    let mut at = 0;
    for n in cut(spaces.len(), &SPACE_CHUNKS) {
        let chunk = &spaces[at..at + n];
        let mut q = sqlx::query(AssertSqlSafe(claim_sql(backend, n)));
        for (id, count, now) in chunk {
            q = q.bind(*id).bind(*count).bind(*now);
        }
        for row in q.fetch_all(&mut *tx).await? {
            let id: String = col(&row, "id", "core_spaces")?;
            let last: i64 = col(&row, "last_seq", "core_spaces")?;
            if let Some((k, count, _)) = chunk.iter().find(|(k, _, _)| *k == id) {
                next.insert(k, last - count);
            }
        }
        at += n;
    }
    let mut outcomes: Vec<Option<Result<Appended>>> = (0..inputs.len()).map(|_| None).collect();
    let mut planned = Vec::with_capacity(inputs.len());
    for (i, (space, _, _)) in inputs.iter().enumerate() {
        match next.get_mut(space) {
            Some(seq) => {
                *seq += 1;
                planned.push(Planned { input: i, seq: *seq });
            }
            None => outcomes[i] = Some(Err(StoreError::NotFound("space"))),
        }
    }
    let rows = insert_rows(tx, inputs, &planned).await?;
    if rows.len() != planned.len() {
        return Ok(None);
    }
    let mut by_key: HashMap<(String, i64), Event> =
        rows.into_iter().map(|e| ((e.space_id.clone(), e.seq), e)).collect();
    for p in &planned {
        let e = by_key.remove(&(inputs[p.input].0.to_owned(), p.seq)).ok_or(StoreError::Corrupt("core_events"))?;
        outcomes[p.input] = Some(Ok(Appended::New(e)));
    }
    set_titles(tx, &outcomes).await?;
    Ok(Some(outcomes.into_iter().map(|o| o.unwrap_or(Err(StoreError::Corrupt("core_events")))).collect()))
}

/// A batch with a conflict: lock the spaces (in id order), then one row at
/// a time, each retry answered with its first event and consuming no
/// number, each taken id refused; then move the spaces on.
async fn careful(
    tx: &mut AnyConnection,
    backend: Backend,
    inputs: &[(&str, &NewEvent, Millis)],
) -> Result<Vec<Result<Appended>>> {
    let spaces = spaces(inputs);
    let mut last: HashMap<&str, i64> = HashMap::with_capacity(spaces.len());
    let mut at = 0;
    for n in cut(spaces.len(), &SPACE_CHUNKS) {
        let chunk = &spaces[at..at + n];
        let mut q = sqlx::query(AssertSqlSafe(lock_sql(backend, n)));
        for (id, _, _) in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *tx).await? {
            let id: String = col(&row, "id", "core_spaces")?;
            if let Some((k, _, _)) = chunk.iter().find(|(k, _, _)| *k == id) {
                last.insert(k, col(&row, "last_seq", "core_spaces")?);
            }
        }
        at += n;
    }
    let mut next = last.clone();
    let mut outcomes = Vec::with_capacity(inputs.len());
    for &(space, e, now) in inputs {
        let Some(seq) = next.get(space).map(|s| s + 1) else {
            outcomes.push(Err(StoreError::NotFound("space")));
            continue;
        };
        let row =
            bind_row(sqlx::query(AssertSqlSafe(insert_sql(1))), space, seq, e, now).fetch_optional(&mut *tx).await?;
        outcomes.push(match row {
            Some(row) => {
                next.insert(space, seq);
                Ok(Appended::New(event_from_row(&row)?))
            }
            None => conflict(tx, space, e).await?,
        });
    }
    // Move the spaces on, to their last new number and latest time.
    let mut moved: HashMap<&str, (i64, Millis)> = HashMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        if let Ok(Appended::New(e)) = o {
            let m = moved.entry(inputs[i].0).or_insert((e.seq, e.create_date));
            *m = (m.0.max(e.seq), m.1.max(e.create_date));
        }
    }
    let moved: Vec<(&str, i64, Millis)> = moved.into_iter().map(|(id, (seq, now))| (id, seq, now)).collect();
    let mut at = 0;
    for n in cut(moved.len(), &SPACE_CHUNKS) {
        let mut q = sqlx::query(AssertSqlSafe(advance_sql(n)));
        for (id, seq, now) in &moved[at..at + n] {
            q = q.bind(*id).bind(*seq).bind(*now);
        }
        q.execute(&mut *tx).await?;
        at += n;
    }
    let outcomes: Vec<Option<Result<Appended>>> = outcomes.into_iter().map(Some).collect();
    set_titles(tx, &outcomes).await?;
    Ok(outcomes.into_iter().flatten().collect())
}

/// A new `Title` event sets its space's title (in sequence order: the last wins).
async fn set_titles(tx: &mut AnyConnection, outcomes: &[Option<Result<Appended>>]) -> Result<()> {
    let mut titles: Vec<&Event> = outcomes
        .iter()
        .filter_map(|o| match o {
            Some(Ok(Appended::New(e))) if e.kind == EventKind::Title => Some(e),
            _ => None,
        })
        .collect();
    titles.sort_by_key(|e| e.seq);
    for e in titles {
        sqlx::query("UPDATE core_spaces SET title = $2 WHERE id = $1")
            .bind(&e.space_id)
            .bind(e.ciphertext.as_deref())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub(crate) fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    space: &'q str,
    seq: i64,
    e: &'q NewEvent,
    now: Millis,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(space)
        .bind(seq)
        .bind(&e.id)
        .bind(e.client_event_id.as_deref())
        .bind(e.kind.as_str())
        .bind(&e.sender)
        .bind(e.parent.as_deref())
        .bind(e.target.as_deref())
        .bind(e.subject.as_deref())
        .bind(e.ciphertext.as_deref())
        .bind(e.key_uri.as_deref())
        .bind(e.meta.as_deref())
        .bind(now)
}

/// Inserts the planned rows in a few multi-row statements; the rows stored.
async fn insert_rows(
    tx: &mut AnyConnection,
    inputs: &[(&str, &NewEvent, Millis)],
    planned: &[Planned],
) -> Result<Vec<Event>> {
    let mut stored = Vec::with_capacity(planned.len());
    let mut at = 0;
    for n in cut(planned.len(), &INSERT_CHUNKS) {
        let mut q = sqlx::query(AssertSqlSafe(insert_sql(n)));
        for p in &planned[at..at + n] {
            let (space, e, now) = inputs[p.input];
            q = bind_row(q, space, p.seq, e, now);
        }
        let rows: Vec<AnyRow> = q.fetch_all(&mut *tx).await?;
        for row in &rows {
            stored.push(event_from_row(row)?);
        }
        at += n;
    }
    Ok(stored)
}

/// A row that did not go in: a retry (the first event), or a taken event id.
async fn conflict(tx: &mut AnyConnection, space: &str, e: &NewEvent) -> Result<Result<Appended>> {
    if let Some(cid) = e.client_event_id.as_deref() {
        let first = sqlx::query(SELECT_EVENT_BY_CLIENT_ID)
            .bind(space)
            .bind(&e.sender)
            .bind(cid)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(first) = first {
            return Ok(Ok(Appended::Duplicate(event_from_row(&first)?)));
        }
    }
    let taken = sqlx::query(SELECT_EVENT).bind(space).bind(&e.id).fetch_optional(&mut *tx).await?;
    Ok(Err(if taken.is_some() { StoreError::Exists("event") } else { StoreError::Corrupt("core_events") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_use_few_sizes() {
        assert_eq!(cut(0, &INSERT_CHUNKS), Vec::<usize>::new());
        assert_eq!(cut(75, &INSERT_CHUNKS), [64, 8, 2, 1]);
        assert_eq!(cut(256, &INSERT_CHUNKS), [64, 64, 64, 64]);
        assert_eq!(cut(41, &SPACE_CHUNKS), [32, 8, 1]);
        for n in 0..300 {
            assert_eq!(cut(n, &INSERT_CHUNKS).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn statements_number_their_parameters() {
        assert_eq!(params(4, 3), "$4, $5, $6");
        let two = insert_sql(4);
        assert!(two.contains("($40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52)"), "{two}");
        assert!(advance_sql(1).contains("WHEN $1 THEN $2") && advance_sql(1).contains("updated < $3"));
        assert!(lock_sql(Backend::Postgres, 8).ends_with("ORDER BY id FOR UPDATE"));
    }
}
