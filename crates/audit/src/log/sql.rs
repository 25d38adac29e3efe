//! The log's SQL: row mapping, the head, batched inserts and checkpoints.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Row};

use super::{col, col_u64, now_ms, to_i64, Backend, LogHead, Result};
use crate::canon;
use crate::checkpoint::{Checkpoint, CheckpointBody};
use crate::entry::{Action, ActorKind, Detail, Entry, NewEntry, Outcome};
use crate::error::AuditError;

/// The database side, shared by the handle and its writer task.
#[derive(Clone)]
pub(super) struct Db {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    pub(super) node: Arc<str>,
    /// SQLite only: the head as the writer last committed it (seq, hash,
    /// time), so that a batch is one round trip to the database thread.
    /// Emptied on any failure; only the writer task uses it.
    pub(super) cached_head: Arc<std::sync::Mutex<Option<(u64, String, u64)>>>,
}

pub(super) const ENTRY_COLUMNS: usize = 14;

pub(super) fn entry_from_row(row: &AnyRow) -> Result<Entry> {
    const T: &str = "audit_entries";
    let corrupt = |what: &str| AuditError::Corrupt(format!("{T}: {what}"));
    let action: String = col(row, "action", T)?;
    let actor_kind: String = col(row, "actor_kind", T)?;
    let outcome: String = col(row, "outcome", T)?;
    let keys: String = col(row, "key_uris", T)?;
    let detail: String = col(row, "detail", T)?;
    Ok(Entry {
        seq: col_u64(row, "seq", T)?,
        time: col_u64(row, "time_ms", T)?,
        node: col(row, "node", T)?,
        actor: col(row, "actor", T)?,
        actor_kind: ActorKind::from_name(&actor_kind).map_err(|_| corrupt("actor_kind"))?,
        on_behalf_of: col(row, "on_behalf_of", T)?,
        case: col(row, "case_id", T)?,
        action: Action::from_name(&action).map_err(|_| corrupt("action"))?,
        resource: col(row, "resource", T)?,
        keys: serde_json::from_str(&keys).map_err(|_| corrupt("key_uris"))?,
        outcome: Outcome::from_name(&outcome).map_err(|_| corrupt("outcome"))?,
        detail: serde_json::from_str::<Detail>(&detail).map_err(|_| corrupt("detail"))?,
        prev: col(row, "prev", T)?,
        hash: col(row, "hash", T)?,
    })
}

pub(super) fn checkpoint_from_row(row: &AnyRow) -> Result<Checkpoint> {
    const T: &str = "audit_checkpoints";
    Ok(Checkpoint {
        body: CheckpointBody {
            count: col_u64(row, "entry_count", T)?,
            last_hash: col(row, "last_hash", T)?,
            time: col_u64(row, "time_ms", T)?,
            node: col(row, "node", T)?,
            index: Some(col_u64(row, "idx", T)?),
            export: None,
        },
        jws: col(row, "jws", T)?,
    })
}

pub(super) async fn read_head(conn: &mut AnyConnection, backend: Backend, lock: bool) -> Result<LogHead> {
    const T: &str = "audit_head";
    let sql = if lock && backend == Backend::Postgres {
        "SELECT seq, hash, time_ms, checkpoint_index, checkpoint_count, checkpoint_time FROM audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT seq, hash, time_ms, checkpoint_index, checkpoint_count, checkpoint_time FROM audit_head WHERE id = 1"
    };
    let row = sqlx::query(sql)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| AuditError::Corrupt("audit_head row is missing".into()))?;
    Ok(LogHead {
        seq: col_u64(&row, "seq", T)?,
        hash: col(&row, "hash", T)?,
        time: col_u64(&row, "time_ms", T)?,
        checkpoints: col_u64(&row, "checkpoint_index", T)?,
        checkpoint_count: col_u64(&row, "checkpoint_count", T)?,
        checkpoint_time: col_u64(&row, "checkpoint_time", T)?,
    })
}

impl Db {
    /// Checks the head row against the tables; returns the head.
    pub(super) async fn check_head(&self) -> Result<LogHead> {
        let mut conn = self.pool.acquire().await?;
        let head = read_head(&mut conn, self.backend, false).await?;
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM audit_entries").fetch_one(&mut *conn).await?;
        let max: Option<i64> = row.try_get("seq")?;
        let max = max.unwrap_or(0) as u64;
        if max != head.seq {
            return Err(AuditError::Tampered {
                seq: max.min(head.seq) + 1,
                what: format!("the head says {} entries, the table ends at seq {max}", head.seq),
            });
        }
        if head.seq > 0 {
            let row = sqlx::query(concat!("SELECT ", entry_cols!(), " FROM audit_entries WHERE seq = $1"))
                .bind(to_i64(head.seq))
                .fetch_one(&mut *conn)
                .await?;
            let last = entry_from_row(&row)?;
            if last.hash != head.hash || !last.hash_is_valid() {
                return Err(AuditError::Tampered {
                    seq: head.seq,
                    what: "the last entry does not match the head".into(),
                });
            }
        }
        let row = sqlx::query("SELECT MAX(idx) AS idx FROM audit_checkpoints").fetch_one(&mut *conn).await?;
        let max_cp: Option<i64> = row.try_get("idx")?;
        if max_cp.unwrap_or(0) as u64 != head.checkpoints {
            return Err(AuditError::Tampered { seq: 0, what: "the head does not match the stored checkpoints".into() });
        }
        Ok(head)
    }

    /// Commits `entries` in one transaction, after the current head. Returns
    /// them sealed, and how many entries no stored checkpoint covers.
    pub(super) async fn commit_batch(&self, entries: Vec<NewEntry>) -> Result<(Vec<Entry>, u64)> {
        if self.backend == Backend::Sqlite {
            let cached = self.cached_head.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(head) = cached {
                match self.commit_batch_sqlite(entries.clone(), head).await {
                    Ok(done) => return Ok(done),
                    // Another process appended, or the database failed: the
                    // general path below reads the head under the lock and
                    // reports a lasting failure.
                    Err(e) => tracing::debug!(error = %e, "audit batch on the cached head failed; retrying"),
                }
            }
        }
        let done = self.commit_batch_locked(entries).await?;
        if self.backend == Backend::Sqlite {
            if let Some(last) = done.0.last() {
                *self.cached_head.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((last.seq, last.hash.clone(), last.time));
            }
        }
        Ok(done)
    }

    /// SQLite: the whole batch as one multi-statement query (one hand-off to
    /// sqlx's connection thread instead of one per statement), after the
    /// cached head. The head update comes first and sets `seq` to -1 (which
    /// its CHECK refuses, aborting the batch) unless the stored head is still
    /// the cached one; an entry another process appended in between also
    /// collides on `seq`. On error the transaction is rolled back.
    pub(super) async fn commit_batch_sqlite(
        &self,
        entries: Vec<NewEntry>,
        head: (u64, String, u64),
    ) -> Result<(Vec<Entry>, u64)> {
        let (head_seq, mut prev, head_time) = head;
        let time = now_ms().max(head_time);
        let mut seq = head_seq;
        let sealed: Vec<Entry> = entries
            .into_iter()
            .map(|new| {
                seq += 1;
                let e = Entry::seal(new, seq, time, &self.node, std::mem::take(&mut prev));
                prev.clone_from(&e.hash);
                e
            })
            .collect();
        let mut sql = String::from(
            "BEGIN IMMEDIATE; UPDATE audit_head SET seq = CASE WHEN seq = $1 THEN $2 ELSE -1 END, hash = $3, \
             time_ms = $4 WHERE id = 1 RETURNING checkpoint_count; ",
        );
        for chunk in sealed.chunks(128) {
            let first = (chunk[0].seq - head_seq - 1) as usize;
            push_insert(&mut sql, chunk.len(), 5 + first * ENTRY_COLUMNS);
            sql.push_str("; ");
        }
        sql.push_str("COMMIT");
        // Only placeholders are interpolated: safe. Prepared once per batch size
        // and cached (re-parsing a large batch each time halved throughput).
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(to_i64(head_seq))
            .bind(to_i64(seq))
            .bind(prev.clone())
            .bind(to_i64(time));
        for e in &sealed {
            q = bind_entry(q, e);
        }
        let mut conn = self.pool.acquire().await?;
        // If this future is dropped mid-batch (a timed-out commit), the
        // connection may still be inside the transaction: close it rather
        // than pool it.
        let mut guard = AbandonGuard(&mut conn, false);
        let outcome = q.fetch_all(&mut **guard.0).await;
        if outcome.is_err() {
            // The batch stopped at a failed statement inside its transaction.
            let _ = sqlx::query("ROLLBACK").execute(&mut **guard.0).await;
        }
        guard.1 = true;
        drop(guard);
        match outcome {
            Ok(rows) => {
                let row = rows.first().ok_or_else(|| AuditError::Corrupt("audit_head row is missing".into()))?;
                let checkpoint_count = col_u64(row, "checkpoint_count", "audit_head")?;
                *self.cached_head.lock().unwrap_or_else(|p| p.into_inner()) = Some((seq, prev, time));
                Ok((sealed, seq - checkpoint_count))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Commits `entries` in one transaction that first reads and locks the head.
    pub(super) async fn commit_batch_locked(&self, entries: Vec<NewEntry>) -> Result<(Vec<Entry>, u64)> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let head = read_head(&mut tx, self.backend, true).await?;
        let time = now_ms().max(head.time);
        let mut prev = head.hash;
        let mut seq = head.seq;
        let sealed: Vec<Entry> = entries
            .into_iter()
            .map(|new| {
                seq += 1;
                let e = Entry::seal(new, seq, time, &self.node, std::mem::take(&mut prev));
                prev.clone_from(&e.hash);
                e
            })
            .collect();
        // Chunks of 128, 64, …, 1 rows: few distinct statements to prepare.
        let mut rest = &sealed[..];
        while !rest.is_empty() {
            let n = if rest.len() >= 128 { 128 } else { 1 << (usize::BITS - 1 - rest.len().leading_zeros()) };
            let (chunk, tail) = rest.split_at(n);
            insert_entries(&mut tx, chunk).await?;
            rest = tail;
        }
        let updated = sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, time_ms = $3 WHERE id = 1 AND seq = $4")
            .bind(to_i64(seq))
            .bind(&prev)
            .bind(to_i64(time))
            .bind(to_i64(head.seq))
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(AuditError::Tampered { seq: head.seq + 1, what: "audit_head changed under its lock".into() });
        }
        tx.commit().await?;
        Ok((sealed, seq - head.checkpoint_count))
    }

    /// Entries `from..=to`, at most `limit`, by seq.
    pub(super) async fn entries_between(&self, from: u64, to: u64, limit: u32) -> Result<Vec<Entry>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_cols!(),
            " FROM audit_entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        ))
        .bind(to_i64(from))
        .bind(to_i64(to))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Stored checkpoints `from..=to`, at most `limit`, by index.
    pub(super) async fn checkpoints_between(&self, from: u64, to: u64, limit: u32) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            checkpoint_cols!(),
            " FROM audit_checkpoints WHERE idx >= $1 AND idx <= $2 ORDER BY idx LIMIT $3"
        ))
        .bind(to_i64(from))
        .bind(to_i64(to))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// Checks entries `after+1..=to` hash and link from `prev` and end at `last`.
    pub(super) async fn check_chain(&self, after: u64, prev: &str, to: u64, last: &str) -> Result<()> {
        let mut prev = prev.to_owned();
        let mut seq = after;
        while seq < to {
            let page = self.entries_between(seq + 1, to, 1000).await?;
            if page.is_empty() {
                return Err(AuditError::Tampered { seq: seq + 1, what: "entry missing".into() });
            }
            for e in page {
                let what = if e.seq != seq + 1 {
                    "entry missing"
                } else if !e.hash_is_valid() {
                    "entry does not match its hash"
                } else if e.prev != prev {
                    "prev does not match the previous entry (or checkpoint)"
                } else {
                    prev = e.hash;
                    seq = e.seq;
                    continue;
                };
                return Err(AuditError::Tampered { seq: seq + 1, what: what.into() });
            }
        }
        if prev != last {
            return Err(AuditError::Tampered { seq: to, what: "the last entry does not match the head".into() });
        }
        Ok(())
    }
}

/// Closes a pooled connection on drop unless marked done (`.1`).
pub(super) struct AbandonGuard<'a>(&'a mut sqlx::pool::PoolConnection<sqlx::Any>, bool);

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.close_on_drop();
        }
    }
}

/// Appends to `sql` an INSERT of `rows` entries whose placeholders start at `$first`.
pub(super) fn push_insert(sql: &mut String, rows: usize, first: usize) {
    use std::fmt::Write as _;
    sql.push_str(concat!("INSERT INTO audit_entries (", entry_cols!(), ") VALUES "));
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..ENTRY_COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", first + i * ENTRY_COLUMNS + c);
        }
        sql.push(')');
    }
}

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds an entry's columns, in `entry_cols!` order.
pub(super) fn bind_entry<'q>(q: AnyQuery<'q>, e: &Entry) -> AnyQuery<'q> {
    let keys = canon::Value::Arr(e.keys.iter().map(|k| canon::Value::Str(k)).collect()).render();
    q.bind(to_i64(e.seq))
        .bind(to_i64(e.time))
        .bind(e.node.clone())
        .bind(e.actor.clone())
        .bind(e.actor_kind.as_str().to_owned())
        .bind(e.on_behalf_of.clone())
        .bind(e.case.clone())
        .bind(e.action.as_str().to_owned())
        .bind(e.resource.clone())
        .bind(keys)
        .bind(e.outcome.as_str())
        .bind(e.detail.to_canonical_json())
        .bind(e.prev.clone())
        .bind(e.hash.clone())
}

pub(super) async fn insert_entries(conn: &mut AnyConnection, rows: &[Entry]) -> Result<()> {
    let mut sql = String::new();
    push_insert(&mut sql, rows.len(), 1);
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for e in rows {
        q = bind_entry(q, e);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}
