//! The one implementation of [`Store`], over `sqlx::Any`, for SQLite and PostgreSQL.
//!
//! Both backends run the same SQL text: SQLite accepts PostgreSQL's `$N`
//! placeholders, and both speak `ON CONFLICT …`, `RETURNING` and
//! `CASE`. What differs is chosen by [`Backend`]: how a transaction begins.
//!
//! Concurrency model:
//! - Every change to a space (an event, a membership change, a title, a file
//!   becoming ready) first runs `UPDATE core_spaces SET last_seq = last_seq + 1
//!   … RETURNING last_seq` in its transaction. That takes the space row's
//!   write lock (PostgreSQL) or the database write lock (SQLite, where every
//!   write transaction is `BEGIN IMMEDIATE`), so the changes to one space are
//!   serialized across every node: sequence numbers have no gaps and no
//!   duplicates, they become visible in order (seq n+1 cannot commit before
//!   n, whose transaction held the lock), and a check made after the lock
//!   (is this a retry? is the member already there?) sees every earlier
//!   change, because under PostgreSQL's `READ COMMITTED` each statement reads
//!   the latest committed data. A change that turns out to be a no-op rolls
//!   back, giving its sequence number back.
//! - The space row is always the first row a write transaction locks, so
//!   transactions do not deadlock.
//! - Reads are single statements.
//! - Appends are group-committed ([`crate::batch`]): one transaction takes
//!   every append queued meanwhile, locking its spaces in id order.
//! - This process's writes take turns ([`Shared::write_lock`]) before they
//!   ask the database for its lock (on PostgreSQL, only those that append
//!   events).

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{Decode, Type};

use crate::batch::{Job, Writer};
use crate::{
    Appended, CommitListener, Event, EventKind, FileRecord, Membership, Millis, NewEvent, PostingSet, Preview,
    ReadMarker, Result, Role, Space, SpaceSummary, Store, StoreError, Webhook,
};

pub(crate) use sqlstore::Backend;

/// The store: a connection pool and which backend it talks to.
///
/// Obtain one through [`crate::open`], [`crate::open_postgres_schema`] or
/// [`SqlStore::connect`]. Opening installs sqlx's default `Any` drivers
/// (`sqlx::any::install_default_drivers`, process-wide and idempotent; it
/// panics only if other code installed a different driver set first).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) shared: Arc<Shared>,
    /// The way to the group-commit writer ([`crate::batch`]). Not in
    /// `shared`: the writer task holds `shared`, and must stop when the last
    /// handle (so the last sender) is gone.
    writer: Arc<Writer>,
}

/// What the handles of one store and its writer task share.
pub(crate) struct Shared {
    /// This process's turns at writing. On SQLite every write transaction
    /// takes it: the database has one writer at a time anyway, and waiting
    /// here, in order, beats waiting in SQLite's busy handler, which sleeps
    /// and retries and can starve a writer while group commits follow each
    /// other. On both backends the writes that append events take it, so
    /// that the commit listener hears of one space's events in order.
    /// (Two PostgreSQL writers committing at once, ordered for the listener
    /// by tickets, were measured: no gain at the benchmark's concurrency.)
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    listener: RwLock<Option<CommitListener>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Tells the listener, if any, of events just committed.
    pub(crate) fn committed(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let listener = self.listener.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(listener) = listener {
            listener(events);
        }
    }
}

impl SqlStore {
    pub(crate) fn new(pool: AnyPool, backend: Backend) -> SqlStore {
        SqlStore {
            pool,
            backend,
            shared: Arc::new(Shared { write_lock: tokio::sync::Mutex::new(()), listener: RwLock::new(None) }),
            writer: Arc::new(Writer::default()),
        }
    }

    /// A turn at writing, for a transaction that appends an event
    /// (`appends`) or only changes other rows (see [`Shared::write_lock`]).
    async fn turn(&self, appends: bool) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if appends || self.backend == Backend::Sqlite {
            Some(self.shared.write_lock.lock().await)
        } else {
            None
        }
    }

    /// Commits a transaction that appended `event`, then tells the listener
    /// (the caller holds its turn: in commit order).
    async fn commit_event(&self, tx: sqlx::Transaction<'_, sqlx::Any>, event: &Event) -> Result<()> {
        tx.commit().await?;
        self.shared.committed(std::slice::from_ref(event));
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    /// The store refuses work afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

// ---- column lists and row decoding

macro_rules! space_cols {
    () => {
        "id, resource_uri, org, title, creator, create_date, last_seq"
    };
}
macro_rules! event_cols {
    () => {
        "space_id, seq, id, client_event_id, kind, sender, parent, target, subject, ciphertext, key_uri, meta, create_date"
    };
}
macro_rules! file_cols {
    () => {
        "id, space_id, uploader, size, chunk_size, meta_ciphertext, key_uri, create_date, ready_event_id"
    };
}

/// The columns of `core_events`, in the order the statements bind them.
pub(crate) const EVENT_COLS: &str = event_cols!();

/// Reads a column, reporting a value that does not decode as a corrupt row.
pub(crate) fn col<'r, T: Decode<'r, sqlx::Any> + Type<sqlx::Any>>(
    row: &'r AnyRow,
    name: &str,
    table: &'static str,
) -> Result<T> {
    sqlstore::col(row, name, table).map_err(StoreError::from_shared)
}

fn space_from_row(row: &AnyRow) -> Result<Space> {
    const T: &str = "core_spaces";
    Ok(Space {
        id: col(row, "id", T)?,
        resource_uri: col(row, "resource_uri", T)?,
        org: col(row, "org", T)?,
        title: col(row, "title", T)?,
        creator: col(row, "creator", T)?,
        create_date: col(row, "create_date", T)?,
        last_seq: col(row, "last_seq", T)?,
    })
}

fn role_from_row(row: &AnyRow, table: &'static str) -> Result<Role> {
    let role: String = col(row, "role", table)?;
    Role::parse(&role).ok_or(StoreError::Corrupt(table))
}

fn membership_from_row(row: &AnyRow) -> Result<Membership> {
    const T: &str = "core_members";
    Ok(Membership {
        space_id: col(row, "space_id", T)?,
        user_id: col(row, "user_id", T)?,
        role: role_from_row(row, T)?,
        added_by: col(row, "added_by", T)?,
        added_at: col(row, "added_at", T)?,
    })
}

pub(crate) fn event_from_row(row: &AnyRow) -> Result<Event> {
    const T: &str = "core_events";
    let kind: String = col(row, "kind", T)?;
    Ok(Event {
        space_id: col(row, "space_id", T)?,
        seq: col(row, "seq", T)?,
        id: col(row, "id", T)?,
        client_event_id: col(row, "client_event_id", T)?,
        kind: EventKind::parse(&kind).ok_or(StoreError::Corrupt(T))?,
        sender: col(row, "sender", T)?,
        parent: col(row, "parent", T)?,
        target: col(row, "target", T)?,
        subject: col(row, "subject", T)?,
        ciphertext: col(row, "ciphertext", T)?,
        key_uri: col(row, "key_uri", T)?,
        meta: col(row, "meta", T)?,
        create_date: col(row, "create_date", T)?,
    })
}

/// A file row: the record, and the id of its `FileReady` event once ready.
fn file_from_row(row: &AnyRow) -> Result<(FileRecord, Option<String>)> {
    const T: &str = "core_files";
    let ready_event_id: Option<String> = col(row, "ready_event_id", T)?;
    let file = FileRecord {
        id: col(row, "id", T)?,
        space_id: col(row, "space_id", T)?,
        uploader: col(row, "uploader", T)?,
        size: col(row, "size", T)?,
        chunk_size: col(row, "chunk_size", T)?,
        meta_ciphertext: col(row, "meta_ciphertext", T)?,
        key_uri: col(row, "key_uri", T)?,
        ready: ready_event_id.is_some(),
        create_date: col(row, "create_date", T)?,
    };
    if file.size < 0 || file.chunk_size <= 0 {
        return Err(StoreError::Corrupt(T));
    }
    Ok((file, ready_event_id))
}

/// A unique violation becomes `Exists(what)`; other errors pass through.
fn exists_on_conflict(e: sqlx::Error, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Exists(what),
        _ => StoreError::Database(e),
    }
}

/// The size chunk `index` of `file` must have, or why it cannot exist.
fn expected_chunk_size(file: &FileRecord, index: i64) -> Result<i64> {
    let count = file.chunk_count();
    if index < 0 || index >= count {
        return Err(StoreError::Invalid(format!(
            "chunk index {index} out of range (file {} has {count} chunks)",
            file.id
        )));
    }
    Ok(if index == count - 1 { file.size - (count - 1) * file.chunk_size } else { file.chunk_size })
}

// ---- statements shared by several methods

/// Takes the next sequence number of a space (and its write lock), and moves
/// its activity time forward to `now`. No row: no such space.
const NEXT_SEQ: &str = "UPDATE core_spaces SET last_seq = last_seq + 1, \
     updated = CASE WHEN updated < $2 THEN $2 ELSE updated END \
     WHERE id = $1 RETURNING last_seq";

/// Inserts an event unless the same `(space, sender, client_event_id)` is
/// there (then no row comes back).
const INSERT_EVENT: &str = concat!(
    "INSERT INTO core_events (",
    event_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ",
    "ON CONFLICT (space_id, sender, client_event_id) WHERE client_event_id IS NOT NULL DO NOTHING ",
    "RETURNING ",
    event_cols!()
);

pub(crate) const SELECT_EVENT: &str =
    concat!("SELECT ", event_cols!(), " FROM core_events WHERE space_id = $1 AND id = $2");

pub(crate) const SELECT_EVENT_BY_CLIENT_ID: &str =
    concat!("SELECT ", event_cols!(), " FROM core_events WHERE space_id = $1 AND sender = $2 AND client_event_id = $3");

const SELECT_FILE: &str = concat!("SELECT ", file_cols!(), " FROM core_files WHERE id = $1");

/// Takes the next sequence number of `space_id` on `conn` (see [`NEXT_SEQ`]);
/// `None` if there is no such space.
async fn next_seq(conn: &mut AnyConnection, space_id: &str, now: Millis) -> Result<Option<i64>> {
    let row = sqlx::query(NEXT_SEQ).bind(space_id).bind(now).fetch_optional(&mut *conn).await?;
    row.as_ref().map(|r| col(r, "last_seq", "core_spaces")).transpose()
}

/// Inserts `e` as event `seq` of `space_id`; `None` if its client event id
/// was taken. `Exists("event")` if its id is.
async fn insert_event(
    conn: &mut AnyConnection,
    space_id: &str,
    seq: i64,
    e: &NewEvent,
    now: Millis,
) -> Result<Option<Event>> {
    let row = crate::batch::bind_row(sqlx::query(INSERT_EVENT), space_id, seq, e, now)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| exists_on_conflict(e, "event"))?;
    row.as_ref().map(event_from_row).transpose()
}

/// Inserts an event that cannot be a retry (no client event id).
async fn insert_new_event(
    conn: &mut AnyConnection,
    space_id: &str,
    seq: i64,
    e: &NewEvent,
    now: Millis,
) -> Result<Event> {
    debug_assert!(e.client_event_id.is_none());
    insert_event(conn, space_id, seq, e, now).await?.ok_or(StoreError::Corrupt("core_events"))
}

/// A server-made event (membership, file ready): no client id, no ciphertext.
fn system_event(id: &str, kind: EventKind, sender: &str) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        client_event_id: None,
        kind,
        sender: sender.to_owned(),
        parent: None,
        target: None,
        subject: None,
        ciphertext: None,
        key_uri: None,
        meta: None,
    }
}

fn role_meta(role: Role) -> String {
    json!({ "role": role.as_str() }).to_string()
}

impl SqlStore {
    async fn get_file(&self, id: &str) -> Result<Option<(FileRecord, Option<String>)>> {
        let row = sqlx::query(SELECT_FILE).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(file_from_row).transpose()
    }

    /// The `FileReady` event of a ready file.
    async fn ready_event(&self, file: &FileRecord, event_id: &str) -> Result<Event> {
        self.event(&file.space_id, event_id).await?.ok_or(StoreError::Corrupt("core_files"))
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    async fn touch_user(&self, user_id: &str, now: Millis) -> Result<()> {
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        sqlx::query(
            "INSERT INTO core_users (id, first_seen, last_seen) VALUES ($1, $2, $2) ON CONFLICT (id) DO UPDATE SET \
             first_seen = CASE WHEN excluded.first_seen < core_users.first_seen \
                 THEN excluded.first_seen ELSE core_users.first_seen END, \
             last_seen = CASE WHEN excluded.last_seen > core_users.last_seen \
                 THEN excluded.last_seen ELSE core_users.last_seen END",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- spaces and memberships

    async fn create_space(&self, space: &Space, event_id: &str) -> Result<Event> {
        let _turn = self.turn(true).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // Targetless DO NOTHING covers both the id and the resource URI; on
        // PostgreSQL it waits for a concurrent creator of either to finish.
        let inserted = sqlx::query(
            "INSERT INTO core_spaces (id, resource_uri, org, title, creator, create_date, last_seq, updated) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&space.id)
        .bind(&space.resource_uri)
        .bind(&space.org)
        .bind(space.title.as_deref())
        .bind(&space.creator)
        .bind(space.create_date)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Err(StoreError::Exists("space"));
        }
        sqlx::query(
            "INSERT INTO core_members (space_id, user_id, role, added_by, added_at) VALUES ($1, $2, $3, $2, $4)",
        )
        .bind(&space.id)
        .bind(&space.creator)
        .bind(Role::Moderator.as_str())
        .bind(space.create_date)
        .execute(&mut *tx)
        .await?;
        let mut e = system_event(event_id, EventKind::MemberAdded, &space.creator);
        e.subject = Some(space.creator.clone());
        e.meta = Some(role_meta(Role::Moderator));
        let event = insert_new_event(&mut tx, &space.id, 1, &e, space.create_date).await?;
        self.commit_event(tx, &event).await?;
        Ok(event)
    }

    async fn get_space(&self, id: &str) -> Result<Option<Space>> {
        let row = sqlx::query(concat!("SELECT ", space_cols!(), " FROM core_spaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(space_from_row).transpose()
    }

    async fn spaces_of(&self, user_id: &str) -> Result<Vec<SpaceSummary>> {
        let rows = sqlx::query(
            "SELECT s.id, s.resource_uri, s.org, s.title, s.creator, s.create_date, s.last_seq, m.role, \
                 COALESCE(r.seq, 0) AS read_seq \
             FROM core_members m \
             JOIN core_spaces s ON s.id = m.space_id \
             LEFT JOIN core_read_markers r ON r.space_id = m.space_id AND r.user_id = m.user_id \
             WHERE m.user_id = $1 \
             ORDER BY s.updated DESC, s.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SpaceSummary {
                    space: space_from_row(row)?,
                    role: role_from_row(row, "core_members")?,
                    read_seq: col(row, "read_seq", "core_read_markers")?,
                })
            })
            .collect()
    }

    async fn role(&self, space_id: &str, user_id: &str) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT role FROM core_members WHERE space_id = $1 AND user_id = $2")
            .bind(space_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| role_from_row(r, "core_members")).transpose()
    }

    async fn members(&self, space_id: &str) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT space_id, user_id, role, added_by, added_at FROM core_members WHERE space_id = $1 \
             ORDER BY added_at, user_id",
        )
        .bind(space_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(membership_from_row).collect()
    }

    async fn member_history(&self, space_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT subject FROM core_events \
             WHERE space_id = $1 AND kind = 'member_added' AND subject IS NOT NULL ORDER BY subject",
        )
        .bind(space_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| col(r, "subject", "core_events")).collect()
    }

    async fn add_member(&self, m: &Membership, event_id: &str) -> Result<Option<Event>> {
        let _turn = self.turn(true).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let Some(seq) = next_seq(&mut tx, &m.space_id, m.added_at).await? else {
            tx.rollback().await?;
            return Err(StoreError::NotFound("space"));
        };
        // Under the space lock: no concurrent membership change to this space.
        let current = sqlx::query("SELECT role FROM core_members WHERE space_id = $1 AND user_id = $2")
            .bind(&m.space_id)
            .bind(&m.user_id)
            .fetch_optional(&mut *tx)
            .await?;
        match current.as_ref().map(|r| role_from_row(r, "core_members")).transpose()? {
            Some(role) if role == m.role => {
                tx.rollback().await?;
                return Ok(None);
            }
            Some(_) => {
                sqlx::query("UPDATE core_members SET role = $3 WHERE space_id = $1 AND user_id = $2")
                    .bind(&m.space_id)
                    .bind(&m.user_id)
                    .bind(m.role.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO core_members (space_id, user_id, role, added_by, added_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&m.space_id)
                .bind(&m.user_id)
                .bind(m.role.as_str())
                .bind(&m.added_by)
                .bind(m.added_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        let mut e = system_event(event_id, EventKind::MemberAdded, &m.added_by);
        e.subject = Some(m.user_id.clone());
        e.meta = Some(role_meta(m.role));
        let event = insert_new_event(&mut tx, &m.space_id, seq, &e, m.added_at).await?;
        self.commit_event(tx, &event).await?;
        Ok(Some(event))
    }

    async fn remove_member(
        &self,
        space_id: &str,
        user_id: &str,
        by: &str,
        event_id: &str,
        now: Millis,
    ) -> Result<Option<Event>> {
        let _turn = self.turn(true).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let Some(seq) = next_seq(&mut tx, space_id, now).await? else {
            tx.rollback().await?;
            return Err(StoreError::NotFound("space"));
        };
        let removed = sqlx::query("DELETE FROM core_members WHERE space_id = $1 AND user_id = $2")
            .bind(space_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut e = system_event(event_id, EventKind::MemberRemoved, by);
        e.subject = Some(user_id.to_owned());
        let event = insert_new_event(&mut tx, space_id, seq, &e, now).await?;
        self.commit_event(tx, &event).await?;
        Ok(Some(event))
    }

    // ---- events

    async fn append(&self, space_id: &str, e: &NewEvent, now: Millis) -> Result<Appended> {
        // Group commit (crate::batch): one transaction for every append queued meanwhile.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job { space_id: space_id.to_owned(), event: e.clone(), now, reply };
        self.writer.submit(&self.pool, self.backend, &self.shared, job).await;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::CommitFailed("the store's writer task stopped before answering".into()))
        })
    }

    async fn events_after(&self, space_id: &str, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM core_events WHERE space_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(space_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_before(&self, space_id: &str, before: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM core_events WHERE space_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(space_id)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event(&self, space_id: &str, id: &str) -> Result<Option<Event>> {
        let row = sqlx::query(SELECT_EVENT).bind(space_id).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    // ---- read markers

    async fn put_preview(&self, p: &Preview) -> Result<()> {
        let _turn = self.turn(false).await;
        sqlx::query(
            "INSERT INTO core_previews (file_id, ciphertext, key_uri, creator, create_date) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (file_id) DO UPDATE SET ciphertext = excluded.ciphertext, key_uri = excluded.key_uri, \
             creator = excluded.creator, create_date = excluded.create_date",
        )
        .bind(&p.file_id)
        .bind(&p.ciphertext)
        .bind(&p.key_uri)
        .bind(&p.creator)
        .bind(p.create_date)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn preview(&self, file_id: &str) -> Result<Option<Preview>> {
        let row = sqlx::query(
            "SELECT file_id, ciphertext, key_uri, creator, create_date FROM core_previews WHERE file_id = $1",
        )
        .bind(file_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Preview {
                file_id: col(&r, "file_id", "core_previews")?,
                ciphertext: col(&r, "ciphertext", "core_previews")?,
                key_uri: col(&r, "key_uri", "core_previews")?,
                creator: col(&r, "creator", "core_previews")?,
                create_date: col(&r, "create_date", "core_previews")?,
            })
        })
        .transpose()
    }

    async fn set_postings_batch(&self, sets: &[PostingSet<'_>]) -> Result<()> {
        if sets.is_empty() {
            return Ok(());
        }
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        for set in sets {
            sqlx::query("DELETE FROM core_postings WHERE space_id = $1 AND seq = $2")
                .bind(set.space_id)
                .bind(set.seq)
                .execute(&mut *tx)
                .await?;
            let mut sorted: Vec<&[u8; 16]> = set.tokens.iter().collect();
            sorted.sort();
            sorted.dedup();
            // Multi-row inserts: one statement per 200 tokens.
            for chunk in sorted.chunks(200) {
                let mut sql = String::from("INSERT INTO core_postings (space_id, token, seq, key_uri) VALUES ");
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("($1, ${}, $2, $3)", i + 4));
                }
                // Only placeholders are interpolated: safe.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(set.space_id).bind(set.seq).bind(set.key_uri);
                for t in chunk {
                    q = q.bind(t.to_vec());
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn search_postings(
        &self,
        space_id: &str,
        key_uri: &str,
        tokens: &[[u8; 16]],
        before: i64,
        limit: u32,
    ) -> Result<Vec<i64>> {
        let mut sorted: Vec<&[u8; 16]> = tokens.iter().collect();
        sorted.sort();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(Vec::new());
        }
        // One arm per token, intersected: each arm is an equality lookup on the
        // primary key (space_id, token, seq), which both planners pick without
        // statistics (a GROUP BY over IN (…) made SQLite scan the space by seq).
        let arms: Vec<String> = (0..sorted.len())
            .map(|i| {
                format!(
                    "SELECT seq FROM core_postings WHERE space_id = $1 AND key_uri = $2 AND seq < $3 AND token = ${}",
                    i + 5
                )
            })
            .collect();
        let sql = format!("{} ORDER BY seq DESC LIMIT $4", arms.join(" INTERSECT "));
        // Only placeholders are interpolated: safe.
        let mut q =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(space_id).bind(key_uri).bind(before).bind(i64::from(limit));
        for t in &sorted {
            q = q.bind(t.to_vec());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(|r| col(r, "seq", "core_postings")).collect()
    }

    async fn posting_keys(&self, space_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT key_uri, COUNT(DISTINCT seq) AS n FROM core_postings WHERE space_id = $1 \
             GROUP BY key_uri ORDER BY key_uri",
        )
        .bind(space_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((col(r, "key_uri", "core_postings")?, col(r, "n", "core_postings")?))).collect()
    }

    async fn set_webhook(&self, w: &Webhook) -> Result<()> {
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        sqlx::query(
            "INSERT INTO core_webhooks (user_id, url, create_date) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET url = excluded.url, create_date = excluded.create_date",
        )
        .bind(&w.user_id)
        .bind(&w.url)
        .bind(w.create_date)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM core_webhook_cursors WHERE user_id = $1").bind(&w.user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_webhook(&self, user_id: &str) -> Result<bool> {
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let n = sqlx::query("DELETE FROM core_webhooks WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM core_webhook_cursors WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let rows = sqlx::query("SELECT user_id, url, create_date FROM core_webhooks ORDER BY user_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Webhook {
                    user_id: col(r, "user_id", "core_webhooks")?,
                    url: col(r, "url", "core_webhooks")?,
                    create_date: col(r, "create_date", "core_webhooks")?,
                })
            })
            .collect()
    }

    async fn webhook_cursor(&self, user_id: &str, space_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT seq FROM core_webhook_cursors WHERE user_id = $1 AND space_id = $2")
            .bind(user_id)
            .bind(space_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| col(r, "seq", "core_webhook_cursors")).transpose()
    }

    async fn set_webhook_cursor(&self, user_id: &str, space_id: &str, seq: i64) -> Result<()> {
        let _turn = self.turn(false).await;
        sqlx::query(
            "INSERT INTO core_webhook_cursors (user_id, space_id, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, space_id) DO UPDATE SET seq = excluded.seq \
             WHERE core_webhook_cursors.seq < excluded.seq",
        )
        .bind(user_id)
        .bind(space_id)
        .bind(seq.max(0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_read_marker(&self, space_id: &str, user_id: &str, seq: i64, now: Millis) -> Result<i64> {
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let last = sqlx::query("SELECT last_seq FROM core_spaces WHERE id = $1")
            .bind(space_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(last) = last else {
            tx.rollback().await?;
            return Err(StoreError::NotFound("space"));
        };
        let last: i64 = col(&last, "last_seq", "core_spaces")?;
        let seq = seq.clamp(0, last);
        // The row lock the upsert takes (even when it changes nothing) makes
        // the read that follows see the marker in force.
        sqlx::query(
            "INSERT INTO core_read_markers (space_id, user_id, seq, updated) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (space_id, user_id) DO UPDATE SET seq = excluded.seq, updated = excluded.updated \
             WHERE core_read_markers.seq < excluded.seq",
        )
        .bind(space_id)
        .bind(user_id)
        .bind(seq)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT seq FROM core_read_markers WHERE space_id = $1 AND user_id = $2")
            .bind(space_id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        col(&row, "seq", "core_read_markers")
    }

    async fn read_marker(&self, space_id: &str, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT seq FROM core_read_markers WHERE space_id = $1 AND user_id = $2")
            .bind(space_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(|r| col(r, "seq", "core_read_markers")).transpose()?.unwrap_or(0))
    }

    async fn read_markers(&self, space_id: &str) -> Result<Vec<ReadMarker>> {
        let rows = sqlx::query("SELECT user_id, seq FROM core_read_markers WHERE space_id = $1 ORDER BY user_id")
            .bind(space_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReadMarker {
                    user_id: col(r, "user_id", "core_read_markers")?,
                    seq: col(r, "seq", "core_read_markers")?,
                })
            })
            .collect()
    }

    // ---- files

    async fn create_file(&self, f: &FileRecord) -> Result<()> {
        if f.size < 0 || f.chunk_size <= 0 {
            return Err(StoreError::Invalid(format!(
                "file {}: size {} and chunk size {} (need size >= 0, chunk size > 0)",
                f.id, f.size, f.chunk_size
            )));
        }
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // Spaces are never deleted: once seen, the foreign key holds.
        let space =
            sqlx::query("SELECT id FROM core_spaces WHERE id = $1").bind(&f.space_id).fetch_optional(&mut *tx).await?;
        if space.is_none() {
            tx.rollback().await?;
            return Err(StoreError::NotFound("space"));
        }
        let inserted = sqlx::query(concat!(
            "INSERT INTO core_files (",
            file_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(&f.id)
        .bind(&f.space_id)
        .bind(&f.uploader)
        .bind(f.size)
        .bind(f.chunk_size)
        .bind(&f.meta_ciphertext)
        .bind(&f.key_uri)
        .bind(f.create_date)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Err(StoreError::Exists("file"));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>> {
        Ok(self.get_file(id).await?.map(|(f, _)| f))
    }

    async fn put_chunk(&self, file_id: &str, index: i64, size: i64) -> Result<()> {
        let (file, _) = self.get_file(file_id).await?.ok_or(StoreError::NotFound("file"))?;
        let expected = expected_chunk_size(&file, index)?;
        if size != expected {
            return Err(StoreError::Invalid(format!(
                "chunk {index} of file {file_id} has {size} bytes, expected {expected}"
            )));
        }
        let _turn = self.turn(false).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        sqlx::query(
            "INSERT INTO core_chunks (file_id, idx, size) VALUES ($1, $2, $3) ON CONFLICT (file_id, idx) DO NOTHING",
        )
        .bind(file_id)
        .bind(index)
        .bind(size)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn chunks(&self, file_id: &str) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT idx FROM core_chunks WHERE file_id = $1 ORDER BY idx")
            .bind(file_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| col(r, "idx", "core_chunks")).collect()
    }

    async fn complete_file(&self, file_id: &str, event_id: &str, now: Millis) -> Result<Option<Event>> {
        let (file, ready) = self.get_file(file_id).await?.ok_or(StoreError::NotFound("file"))?;
        if let Some(ready) = ready {
            return self.ready_event(&file, &ready).await.map(Some);
        }
        // Chunks are only ever added, and only in range: counting outside the
        // transaction cannot wrongly find them all.
        let count = file.chunk_count();
        let row = sqlx::query("SELECT COUNT(*) AS n FROM core_chunks WHERE file_id = $1 AND idx < $2")
            .bind(file_id)
            .bind(count)
            .fetch_one(&self.pool)
            .await?;
        let stored: i64 = col(&row, "n", "core_chunks")?;
        if stored < count {
            return Ok(None);
        }

        let _turn = self.turn(true).await;
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let seq = next_seq(&mut tx, &file.space_id, now).await?.ok_or(StoreError::Corrupt("core_files"))?;
        // Under the space lock; a concurrent completion that won already set it.
        let marked = sqlx::query("UPDATE core_files SET ready_event_id = $2 WHERE id = $1 AND ready_event_id IS NULL")
            .bind(file_id)
            .bind(event_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if marked == 0 {
            tx.rollback().await?;
            let (file, ready) = self.get_file(file_id).await?.ok_or(StoreError::Corrupt("core_files"))?;
            let ready = ready.ok_or(StoreError::Corrupt("core_files"))?;
            return self.ready_event(&file, &ready).await.map(Some);
        }
        let mut e = system_event(event_id, EventKind::FileReady, &file.uploader);
        e.target = Some(file.id.clone());
        e.meta = Some(json!({ "size": file.size }).to_string());
        let event = insert_new_event(&mut tx, &file.space_id, seq, &e, now).await?;
        self.commit_event(tx, &event).await?;
        Ok(Some(event))
    }

    fn set_commit_listener(&self, listener: CommitListener) {
        *self.shared.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }
}
