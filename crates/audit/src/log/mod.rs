//! The audit log over SQLite or PostgreSQL: group-committed appends,
//! checkpoints, queries and export.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

pub use sqlstore::Backend;

use crate::checkpoint::{
    unverified_body, verify_checkpoint, Checkpoint, CheckpointBody, CheckpointSigner, ExportRange,
};
use crate::entry::{check_text, Action, ActorKind, Entry, NewEntry, Outcome, GENESIS_HASH};
use crate::error::AuditError;
use crate::schema::SCHEMA;

// The column lists, in one place for the SELECTs here and in `sql`.
macro_rules! entry_cols {
    () => {
        "seq, time_ms, node, actor, actor_kind, on_behalf_of, case_id, action, resource, key_uris, outcome, detail, prev, hash"
    };
}
macro_rules! checkpoint_cols {
    () => {
        "idx, entry_count, last_hash, time_ms, node, jws"
    };
}

mod sql;
mod writer;

use sql::{checkpoint_from_row, entry_from_row, read_head, Db};
use writer::{writer, Job, Msg};

type Result<T, E = AuditError> = std::result::Result<T, E>;

/// How the log behaves. The defaults suit a KMS node.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Most entries committed in one transaction (default 1024).
    pub max_batch: usize,
    /// Appends waiting for the writer before `append` itself waits (default 16384).
    pub queue: usize,
    /// How long one batch may take to commit before its appends fail (default 10 s).
    pub commit_timeout: Duration,
    /// Open without checking that the head row matches the entries, and
    /// refuse appends and checkpoints: for forensic queries and export of a
    /// damaged log. Default `false`.
    pub read_only: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self { max_batch: 1024, queue: 16 * 1024, commit_timeout: Duration::from_secs(10), read_only: false }
    }
}

/// When to take checkpoints automatically (see [`AuditLog::run_checkpoints`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Take one as soon as this many entries are not yet covered (0: never by count).
    pub every_entries: u64,
    /// Take one this often if any entry is not yet covered (`None`: never by time).
    pub every: Option<Duration>,
}

impl Default for CheckpointPolicy {
    /// Every 10 000 entries or every minute.
    fn default() -> Self {
        Self { every_entries: 10_000, every: Some(Duration::from_secs(60)) }
    }
}

/// The log's current end, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHead {
    /// Entries in the log (the last seq).
    pub seq: u64,
    /// Hash of the last entry ([`GENESIS_HASH`] when empty).
    pub hash: String,
    /// Time of the last entry (ms).
    pub time: u64,
    /// Stored checkpoints (the last index).
    pub checkpoints: u64,
    /// Entries the last stored checkpoint covers.
    pub checkpoint_count: u64,
    /// Time of the last stored checkpoint (ms).
    pub checkpoint_time: u64,
}

/// A selection of entries, oldest first. Empty lists and `None` select everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only entries about this resource URI.
    pub resource: Option<String>,
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only these actions.
    pub actions: Vec<Action>,
    /// Only actors acting in these capacities.
    pub actor_kinds: Vec<ActorKind>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only entries after this seq (a cursor: pass the last seq seen).
    pub after_seq: u64,
    /// Only entries logged at or after this time (ms).
    pub since_time: Option<u64>,
    /// At most this many (capped at [`MAX_QUERY_LIMIT`]).
    pub limit: u32,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            resource: None,
            actor: None,
            actions: Vec::new(),
            actor_kinds: Vec::new(),
            outcome: None,
            after_seq: 0,
            since_time: None,
            limit: 1000,
        }
    }
}

/// Most entries one query returns.
pub const MAX_QUERY_LIMIT: u32 = 10_000;

/// The capacities whose key retrievals key-access transparency shows a
/// space's members: everyone but ordinary users acting for themselves.
pub const KEY_ACCESS_KINDS: &[ActorKind] = &[
    ActorKind::Service,
    ActorKind::Compliance,
    ActorKind::Admin,
    ActorKind::Anonymous,
    ActorKind::PeerKms,
    ActorKind::Kms,
];

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entry lines.
    pub entries: u64,
    /// Stored checkpoint lines.
    pub checkpoints: u64,
    /// The seal, the last line.
    pub seal: Checkpoint,
}

/// The audit log of one KMS node. Cheap to share behind an `Arc`; several
/// nodes (processes) may append to one PostgreSQL database at once.
///
/// Appends go to a writer task that commits whatever has queued up in one
/// transaction (group commit), so throughput does not depend on one fsync
/// per request. Must be created inside a Tokio runtime.
pub struct AuditLog {
    db: Db,
    signer: Arc<dyn CheckpointSigner>,
    options: AuditOptions,
    tx: Option<mpsc::Sender<Msg>>,
    behind: watch::Receiver<u64>,
    owns_pool: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("backend", &self.db.backend)
            .field("node", &self.db.node)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn col<'r, T>(row: &'r AnyRow, name: &str, table: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlstore::col(row, name, table).map_err(AuditError::from)
}

fn col_u64(row: &AnyRow, name: &str, table: &'static str) -> Result<u64> {
    let v: i64 = col(row, name, table)?;
    u64::try_from(v).map_err(|_| AuditError::Corrupt(format!("{table}.{name} is negative")))
}

impl AuditLog {
    /// Opens (creating if needed) the log at `url` for node `node`:
    /// `sqlite://PATH` or `postgres://…` (see `sqlstore::connect`).
    pub async fn open(url: &str, node: &str, signer: Arc<dyn CheckpointSigner>) -> Result<Self> {
        Self::open_with(url, node, signer, AuditOptions::default()).await
    }

    /// [`AuditLog::open`] with options.
    pub async fn open_with(
        url: &str,
        node: &str,
        signer: Arc<dyn CheckpointSigner>,
        options: AuditOptions,
    ) -> Result<Self> {
        check_node(node)?;
        let (pool, backend) = sqlstore::connect(url, &SCHEMA).await?;
        Self::start(pool, backend, node, signer, options, true).await
    }

    /// Opens the log in PostgreSQL schema `schema` (created if missing; see
    /// `sqlstore::connect_postgres_schema`).
    pub async fn open_postgres_schema(
        url: &str,
        schema: &str,
        node: &str,
        signer: Arc<dyn CheckpointSigner>,
        options: AuditOptions,
    ) -> Result<Self> {
        check_node(node)?;
        let (pool, backend) = sqlstore::connect_postgres_schema(url, schema, &SCHEMA).await?;
        Self::start(pool, backend, node, signer, options, true).await
    }

    /// Uses an existing pool (made by `sqlstore::connect`, so that SQLite
    /// connections have `synchronous = FULL`), creating the audit tables in
    /// it. [`AuditLog::close`] then leaves the pool open.
    pub async fn from_pool(
        pool: AnyPool,
        backend: Backend,
        node: &str,
        signer: Arc<dyn CheckpointSigner>,
        options: AuditOptions,
    ) -> Result<Self> {
        check_node(node)?;
        let mut conn = pool.acquire().await?;
        sqlstore::migrate(&mut conn, backend, None, &SCHEMA).await?;
        drop(conn);
        Self::start(pool, backend, node, signer, options, false).await
    }

    async fn start(
        pool: AnyPool,
        backend: Backend,
        node: &str,
        signer: Arc<dyn CheckpointSigner>,
        options: AuditOptions,
        owns_pool: bool,
    ) -> Result<Self> {
        if options.max_batch == 0 || options.queue == 0 {
            return Err(AuditError::Config("max_batch and queue must be at least 1".into()));
        }
        let db = Db { pool, backend, node: Arc::from(node), cached_head: Arc::default() };
        if options.read_only {
            let (_, behind) = watch::channel(0);
            return Ok(Self { db, signer, options, tx: None, behind, owns_pool });
        }
        let head = db.check_head().await?;
        let (tx, rx) = mpsc::channel(options.queue);
        let (behind_tx, behind) = watch::channel(head.seq.saturating_sub(head.checkpoint_count));
        tokio::spawn(writer(db.clone(), rx, behind_tx, options.max_batch, options.commit_timeout));
        Ok(Self { db, signer, options, tx: Some(tx), behind, owns_pool })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.db.backend.name()
    }

    /// This node's name, written in its entries and checkpoints.
    pub fn node(&self) -> &str {
        &self.db.node
    }

    /// Appends an entry and returns it once it is durably committed (SQLite
    /// WAL with `synchronous = FULL`, or a PostgreSQL commit), with its seq,
    /// time and hash. Any error means the entry is not (known to be) in the
    /// log: the KMS must refuse the request it describes.
    ///
    /// Cancel-safe in the sense that dropping the future never corrupts the
    /// log; the entry may still be committed.
    pub async fn append(&self, entry: NewEntry) -> Result<Entry> {
        entry.validate()?;
        let tx = self.tx.as_ref().ok_or(AuditError::Config("the log was opened read-only".into()))?;
        let (reply, answer) = oneshot::channel();
        tx.send(Msg::Append(Job { entry, reply })).await.map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// Stops the writer after the appends already queued, and closes the
    /// pool if the log opened it. Later appends fail with [`AuditError::Closed`]; a running
    /// [`AuditLog::run_checkpoints`] returns.
    pub async fn close(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = oneshot::channel();
            if tx.send(Msg::Close(ack)).await.is_ok() {
                let _ = done.await;
            }
        }
        if self.owns_pool {
            self.db.pool.close().await;
        }
    }

    /// The stored head.
    pub async fn head(&self) -> Result<LogHead> {
        let mut conn = self.db.pool.acquire().await?;
        read_head(&mut conn, self.db.backend, false).await
    }

    // ------------------------------------------------------------ checkpoints

    /// Signs and stores a checkpoint covering every entry committed so far
    /// (after checking the entries since the previous checkpoint still hash
    /// and link correctly: the KMS never signs a chain it has not checked).
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        match self.make_checkpoint(0).await? {
            Some(cp) => Ok(cp),
            None => Err(AuditError::Contended),
        }
    }

    /// Takes a checkpoint if at least `min_new` (≥ 1) entries are not yet
    /// covered by one (from any node); `None` if not needed.
    pub async fn checkpoint_if_behind(&self, min_new: u64) -> Result<Option<Checkpoint>> {
        self.make_checkpoint(min_new.max(1)).await
    }

    async fn make_checkpoint(&self, min_new: u64) -> Result<Option<Checkpoint>> {
        if self.options.read_only {
            return Err(AuditError::Config("the log was opened read-only".into()));
        }
        for _ in 0..8 {
            let head = self.head().await?;
            if min_new > 0 && head.seq.saturating_sub(head.checkpoint_count) < min_new {
                return Ok(None);
            }
            // Check what the new checkpoint adds, outside the lock.
            let prev = match head.checkpoint_count {
                0 => GENESIS_HASH.to_owned(),
                _ => {
                    let cp = self.stored_checkpoint(head.checkpoints).await?;
                    if !cp.row_matches_jws() || cp.body.count != head.checkpoint_count {
                        return Err(AuditError::Tampered {
                            seq: head.checkpoint_count,
                            what: format!("stored checkpoint {} differs from its JWS or the head", head.checkpoints),
                        });
                    }
                    cp.body.last_hash
                }
            };
            self.db.check_chain(head.checkpoint_count, &prev, head.seq, &head.hash).await?;

            let mut tx = self.db.pool.begin_with(self.db.backend.write_begin()).await?;
            let now = read_head(&mut tx, self.db.backend, true).await?;
            if now.checkpoint_count > head.seq {
                continue; // another node signed further meanwhile: start again
            }
            if min_new > 0 && head.seq - now.checkpoint_count < min_new {
                return Ok(None);
            }
            let body = CheckpointBody {
                count: head.seq,
                last_hash: head.hash.clone(),
                time: now_ms().max(now.checkpoint_time + 1),
                node: self.db.node.to_string(),
                index: Some(now.checkpoints + 1),
                export: None,
            };
            let jws = self.sign(&body)?;
            sqlx::query(
                "INSERT INTO audit_checkpoints (idx, entry_count, last_hash, time_ms, node, jws)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(to_i64(now.checkpoints + 1))
            .bind(to_i64(body.count))
            .bind(&body.last_hash)
            .bind(to_i64(body.time))
            .bind(&body.node)
            .bind(&jws)
            .execute(&mut *tx)
            .await?;
            let updated = sqlx::query(
                "UPDATE audit_head SET checkpoint_index = $1, checkpoint_count = $2, checkpoint_time = $3
                 WHERE id = 1 AND checkpoint_index = $4",
            )
            .bind(to_i64(now.checkpoints + 1))
            .bind(to_i64(body.count))
            .bind(to_i64(body.time))
            .bind(to_i64(now.checkpoints))
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(AuditError::Tampered { seq: body.count, what: "audit_head changed under its lock".into() });
            }
            tx.commit().await?;
            tracing::debug!(count = body.count, index = now.checkpoints + 1, "audit checkpoint");
            return Ok(Some(Checkpoint { body, jws }));
        }
        Ok(None)
    }

    /// Signs `body`, then checks the signer's output is a checkpoint JWS of exactly `body`.
    fn sign(&self, body: &CheckpointBody) -> Result<String> {
        let jws = self.signer.sign(body).map_err(|e| AuditError::Sign(e.to_string()))?;
        let signed = unverified_body(&jws).map_err(AuditError::Sign)?;
        if &signed != body {
            return Err(AuditError::Sign("the signer signed another body".into()));
        }
        if let Some(key) = self.signer.public_key() {
            verify_checkpoint(&jws, std::slice::from_ref(key)).map_err(|e| AuditError::Sign(e.to_string()))?;
        }
        Ok(jws)
    }

    /// Runs the automatic checkpoint policy until the log is closed: a
    /// checkpoint as soon as `every_entries` entries are uncovered, and every
    /// `every` if any are. Failures are logged and retried at the next
    /// occasion. Spawn it once per node (nodes' checkpointers coordinate
    /// through the database):
    /// `tokio::spawn({ let log = log.clone(); async move { log.run_checkpoints(policy).await } })`.
    pub async fn run_checkpoints(&self, policy: CheckpointPolicy) {
        let mut behind = self.behind.clone();
        behind.mark_changed(); // entries left uncovered before a restart count at once
        let mut timer = policy.every.map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
        if self.tx.is_none() {
            return;
        }
        loop {
            let by_count = tokio::select! {
                changed = behind.changed() => {
                    if changed.is_err() {
                        return; // the writer stopped: the log is closed
                    }
                    true
                }
                _ = async { timer.as_mut().expect("guarded").tick().await }, if timer.is_some() => false,
            };
            let min_new = if by_count {
                if policy.every_entries == 0 || *behind.borrow_and_update() < policy.every_entries {
                    continue;
                }
                policy.every_entries
            } else {
                1
            };
            match self.checkpoint_if_behind(min_new).await {
                Ok(_) => {}
                Err(AuditError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "audit checkpoint failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if self.db.pool.is_closed() || self.tx.as_ref().is_some_and(|tx| tx.is_closed()) {
                return;
            }
        }
    }

    /// Spawns [`AuditLog::run_checkpoints`] on the current runtime.
    pub fn spawn_checkpoints(self: &Arc<Self>, policy: CheckpointPolicy) -> tokio::task::JoinHandle<()> {
        let log = Arc::clone(self);
        tokio::spawn(async move { log.run_checkpoints(policy).await })
    }

    /// The stored checkpoint with this index.
    pub async fn stored_checkpoint(&self, index: u64) -> Result<Checkpoint> {
        let row = sqlx::query(concat!("SELECT ", checkpoint_cols!(), " FROM audit_checkpoints WHERE idx = $1"))
            .bind(to_i64(index))
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| AuditError::Tampered { seq: 0, what: format!("stored checkpoint {index} is missing") })?;
        checkpoint_from_row(&row)
    }

    /// The latest stored checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let head = self.head().await?;
        if head.checkpoints == 0 {
            return Ok(None);
        }
        self.stored_checkpoint(head.checkpoints).await.map(Some)
    }

    /// Stored checkpoints with index above `after_index`, oldest first.
    pub async fn checkpoints(&self, after_index: u64, limit: u32) -> Result<Vec<Checkpoint>> {
        self.db.checkpoints_between(after_index + 1, u64::MAX, limit.min(MAX_QUERY_LIMIT)).await
    }

    // ------------------------------------------------------------ queries

    /// The entry at `seq`.
    pub async fn entry(&self, seq: u64) -> Result<Option<Entry>> {
        let row = sqlx::query(concat!("SELECT ", entry_cols!(), " FROM audit_entries WHERE seq = $1"))
            .bind(to_i64(seq))
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    /// Entries matching `q`, oldest first.
    pub async fn entries(&self, q: &Query) -> Result<Vec<Entry>> {
        enum Bind<'a> {
            I(i64),
            S(&'a str),
        }
        let mut sql = String::from(concat!("SELECT ", entry_cols!(), " FROM audit_entries WHERE seq > $1"));
        let mut binds = vec![Bind::I(to_i64(q.after_seq))];
        let placeholder = |binds: &mut Vec<Bind<'_>>| format!("${}", binds.len());
        if let Some(r) = &q.resource {
            binds.push(Bind::S(r));
            sql.push_str(&format!(" AND resource = {}", placeholder(&mut binds)));
        }
        if let Some(a) = &q.actor {
            binds.push(Bind::S(a));
            sql.push_str(&format!(" AND actor = {}", placeholder(&mut binds)));
        }
        if let Some(o) = q.outcome {
            binds.push(Bind::S(o.as_str()));
            sql.push_str(&format!(" AND outcome = {}", placeholder(&mut binds)));
        }
        if let Some(t) = q.since_time {
            binds.push(Bind::I(to_i64(t)));
            sql.push_str(&format!(" AND time_ms >= {}", placeholder(&mut binds)));
        }
        for (column, names) in [
            ("action", q.actions.iter().map(Action::as_str).collect::<Vec<_>>()),
            ("actor_kind", q.actor_kinds.iter().map(ActorKind::as_str).collect()),
        ] {
            if names.is_empty() {
                continue;
            }
            let mut list = Vec::new();
            for n in names {
                binds.push(Bind::S(n));
                list.push(placeholder(&mut binds));
            }
            sql.push_str(&format!(" AND {column} IN ({})", list.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", q.limit.min(MAX_QUERY_LIMIT)));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::I(n) => query.bind(n),
                Bind::S(s) => query.bind(s.to_owned()),
            };
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Entries about `resource` after seq `after_seq`, oldest first.
    pub async fn entries_for_resource(&self, resource: &str, after_seq: u64, limit: u32) -> Result<Vec<Entry>> {
        self.entries(&Query { resource: Some(resource.to_owned()), after_seq, limit, ..Query::default() }).await
    }

    /// Entries with one of `actions` (about `resource` if given) after seq `after_seq`, oldest first.
    pub async fn entries_by_actions(
        &self,
        resource: Option<&str>,
        actions: &[Action],
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Entry>> {
        self.entries(&Query {
            resource: resource.map(str::to_owned),
            actions: actions.to_vec(),
            after_seq,
            limit,
            ..Query::default()
        })
        .await
    }

    /// Key-access transparency: key releases and refusals on `resource` by
    /// services, compliance officers (with their cases), admins, anonymous
    /// bearers and peer KMSs ([`KEY_ACCESS_KINDS`]), not by members for
    /// themselves. The KMS answers a member of the resource with these.
    pub async fn key_access(&self, resource: &str, after_seq: u64, limit: u32) -> Result<Vec<Entry>> {
        self.entries(&Query {
            resource: Some(resource.to_owned()),
            actions: vec![Action::KeyRelease, Action::KeyDenied],
            actor_kinds: KEY_ACCESS_KINDS.to_vec(),
            after_seq,
            limit,
            ..Query::default()
        })
        .await
    }

    // ------------------------------------------------------------ export

    /// Writes entries from seq `from_seq` (1 for the whole log) as JSON
    /// lines: each stored checkpoint right after the entry it covers
    /// (including one covering exactly `from_seq - 1` entries, first), then a
    /// freshly signed seal naming what the export holds. See
    /// [`crate::verify_jsonl`] for what a reader checks.
    ///
    /// The entries are checked while written (hashes, links, stored
    /// checkpoints); if they do not hold, every line is still written but no
    /// seal, and the result is [`AuditError::Tampered`] naming the first problem.
    pub async fn export_jsonl<W: AsyncWrite + Unpin>(&self, writer: W, from_seq: u64) -> Result<ExportSummary> {
        let head = self.head().await?;
        if from_seq == 0 || from_seq > head.seq + 1 {
            return Err(AuditError::Config(format!("from_seq must lie in 1..={}", head.seq + 1)));
        }
        let first_checkpoint: Option<i64> =
            sqlx::query("SELECT MIN(idx) AS first_idx FROM audit_checkpoints WHERE entry_count >= $1 AND idx <= $2")
                .bind(to_i64(from_seq - 1))
                .bind(to_i64(head.checkpoints))
                .fetch_one(&self.db.pool)
                .await?
                .try_get("first_idx")?;
        let range = ExportRange {
            from_seq,
            first_checkpoint: first_checkpoint.map(|i| i as u64).unwrap_or(head.checkpoints + 1),
            last_checkpoint: head.checkpoints,
        };
        let mut prev = match from_seq {
            1 => GENESIS_HASH.to_owned(),
            _ => {
                let e = self
                    .entry(from_seq - 1)
                    .await?
                    .ok_or_else(|| AuditError::Tampered { seq: from_seq - 1, what: "entry missing".into() })?;
                e.hash
            }
        };
        let mut out = tokio::io::BufWriter::new(writer);
        let mut problem: Option<(u64, String)> = None;
        let note = |seq: u64, what: String, problem: &mut Option<(u64, String)>| {
            problem.get_or_insert((seq, what));
        };
        let (mut entries, mut checkpoints) = (0u64, 0u64);
        let mut cps = Pager::new(range.first_checkpoint, range.last_checkpoint);
        let mut next_cp = cps.next(&self.db).await?;
        let mut last_seq = from_seq - 1;
        let mut seq = from_seq;
        loop {
            let page = if seq <= head.seq { self.db.entries_between(seq, head.seq, 1000).await? } else { Vec::new() };
            let done = page.is_empty();
            for e in page.iter().map(Some).chain(done.then_some(None)) {
                // Checkpoints standing before this entry (or, at the end, all that are left).
                while let Some(cp) = next_cp.take() {
                    if e.is_some_and(|e| cp.body.count >= e.seq) {
                        next_cp = Some(cp);
                        break;
                    }
                    if cp.body.count != last_seq || cp.body.last_hash != prev {
                        note(
                            cp.body.count,
                            format!("stored checkpoint {:?} disagrees with the entries", cp.body.index),
                            &mut problem,
                        );
                    }
                    // Signatures are for the reader to check (with every key the KMS
                    // has had); here only that the row says what its JWS says.
                    if !cp.row_matches_jws() {
                        note(
                            cp.body.count,
                            format!("stored checkpoint {:?} differs from its JWS", cp.body.index),
                            &mut problem,
                        );
                    }
                    out.write_all(cp.to_jsonl().as_bytes()).await?;
                    out.write_all(b"\n").await?;
                    checkpoints += 1;
                    next_cp = cps.next(&self.db).await?;
                }
                let Some(e) = e else { break };
                if e.seq != last_seq + 1 {
                    note(last_seq + 1, "entry missing".into(), &mut problem);
                } else if !e.hash_is_valid() {
                    note(e.seq, "entry does not match its hash".into(), &mut problem);
                } else if e.prev != prev {
                    note(e.seq, "prev does not match the previous entry".into(), &mut problem);
                }
                out.write_all(e.to_jsonl().as_bytes()).await?;
                out.write_all(b"\n").await?;
                entries += 1;
                prev = e.hash.clone();
                last_seq = e.seq;
            }
            if done {
                break;
            }
            seq = last_seq + 1;
        }
        if last_seq != head.seq || prev != head.hash {
            note(last_seq + 1, "the entries do not end at the stored head".into(), &mut problem);
        }
        if let Some((seq, what)) = problem {
            out.flush().await?;
            return Err(AuditError::Tampered { seq, what });
        }
        let body = CheckpointBody {
            count: head.seq,
            last_hash: head.hash.clone(),
            time: now_ms().max(head.checkpoint_time + 1),
            node: self.db.node.to_string(),
            index: None,
            export: Some(range),
        };
        let seal = Checkpoint { jws: self.sign(&body)?, body };
        out.write_all(seal.to_jsonl().as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
        Ok(ExportSummary { entries, checkpoints, seal })
    }
}

fn check_node(node: &str) -> Result<()> {
    if node.is_empty() {
        return Err(AuditError::Config("node name must not be empty".into()));
    }
    check_text(node, "node", 64, true).map_err(|e| AuditError::Config(e.to_string()))
}

/// Pages through stored checkpoints `from..=to`.
struct Pager {
    next: u64,
    to: u64,
    buf: std::collections::VecDeque<Checkpoint>,
}

impl Pager {
    fn new(from: u64, to: u64) -> Self {
        Self { next: from, to, buf: Default::default() }
    }

    async fn next(&mut self, db: &Db) -> Result<Option<Checkpoint>> {
        if self.buf.is_empty() && self.next <= self.to {
            let page = db.checkpoints_between(self.next, self.to, 500).await?;
            if page.is_empty() {
                return Err(AuditError::Tampered {
                    seq: 0,
                    what: format!("stored checkpoint {} is missing", self.next),
                });
            }
            self.next = page.last().and_then(|c| c.body.index).unwrap_or(self.to) + 1;
            self.buf.extend(page);
        }
        Ok(self.buf.pop_front())
    }
}
