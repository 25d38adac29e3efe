//! The one implementation of [`Store`], over `sqlx::Any`, for SQLite and PostgreSQL.
//!
//! Both backends run the same SQL text: SQLite accepts PostgreSQL's `$N`
//! placeholders, and both speak `ON CONFLICT … DO NOTHING` and `RETURNING`.
//! What differs is chosen by [`Backend`]: how a transaction begins, and a
//! table lock that PostgreSQL needs where SQLite's single writer already
//! serializes.
//!
//! Concurrency model:
//! - SQLite: every write transaction is `BEGIN IMMEDIATE` (takes the write
//!   lock up front, waiting up to the busy timeout), so writers are serialized
//!   and a read-then-write never fails on a stale snapshot.
//! - PostgreSQL: `READ COMMITTED` write transactions built on conditional
//!   updates (`UPDATE … WHERE resource_id IS NULL`) and `INSERT … ON CONFLICT
//!   DO NOTHING`, which re-check their condition against the latest committed
//!   row and so stay correct with any number of nodes. Rows are locked in a
//!   fixed order (sorted ids) so that concurrent transactions do not deadlock.
//!   Reads spanning several statements run in `REPEATABLE READ READ ONLY`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{AssertSqlSafe, Decode, Type};

use crate::{
    AuthorizationRecord, BindOutcome, CreateResourceOutcome, Document, KekRecord, KeyRecord, MasterKeyState, Millis,
    ResourceRecord, ResourceView, Result, Store, StoreError,
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
    /// Key insertions waiting to be committed together (group commit).
    key_batch: Arc<KeyBatch>,
}

/// Group commit of [`Store::insert_keys`] without a task of its own (flat
/// combining): each call queues its keys, then takes `commit`; whoever holds
/// it commits everything queued in one transaction and answers each call. A
/// commit costs a disk flush, whatever it holds, so concurrent requests for
/// keys no longer pay one flush each.
#[derive(Debug, Default)]
struct KeyBatch {
    pending: std::sync::Mutex<Vec<KeyJob>>,
    commit: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct KeyJob {
    keys: Vec<KeyRecord>,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
}

impl SqlStore {
    pub(crate) fn new(pool: AnyPool, backend: Backend) -> SqlStore {
        SqlStore { pool, backend, key_batch: Arc::default() }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    /// The store refuses work afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

// ---- column lists and row decoding

macro_rules! key_cols {
    () => {
        "id, wrapped, kek_id, user_id, client_id, create_date, expiration_date, resource_id, bind_date"
    };
}
macro_rules! auth_cols {
    () => {
        "id, resource_id, auth_id, role_uri, creator, create_date, expiration_date"
    };
}
macro_rules! kek_cols {
    () => {
        "id, org, wrapped, cmk_id, state, create_date, update_date"
    };
}

impl SqlStore {
    /// Inserts `keys` in one transaction, all or none.
    async fn insert_keys_tx(&self, keys: &[&KeyRecord]) -> Result<()> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // Multi-row inserts (each statement is a round trip): 64 rows, 9 columns each.
        for chunk in keys.chunks(64) {
            let mut sql = String::from(concat!("INSERT INTO kms_keys (", key_cols!(), ") VALUES "));
            for i in 0..chunk.len() {
                let b = i * 9;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                ));
            }
            // Only placeholders are interpolated: safe.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for key in chunk {
                q = q
                    .bind(&key.id)
                    .bind(key.wrapped.as_slice())
                    .bind(&key.kek_id)
                    .bind(&key.user_id)
                    .bind(&key.client_id)
                    .bind(key.create_date)
                    .bind(key.expiration_date)
                    .bind(key.resource_id.as_deref())
                    .bind(key.bind_date);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Reads a column, reporting a value that does not decode as a corrupt row.
fn col<'r, T: Decode<'r, sqlx::Any> + Type<sqlx::Any>>(row: &'r AnyRow, name: &str, table: &'static str) -> Result<T> {
    sqlstore::col(row, name, table).map_err(StoreError::from_shared)
}

fn document_from_row(row: &AnyRow) -> Result<Document> {
    const T: &str = "kms_documents";
    Ok(Document {
        id: col(row, "id", T)?,
        version: col(row, "version", T)?,
        body: col(row, "body", T)?,
        update_date: col(row, "update_date", T)?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord> {
    const T: &str = "kms_keys";
    Ok(KeyRecord {
        id: col(row, "id", T)?,
        wrapped: col(row, "wrapped", T)?,
        kek_id: col(row, "kek_id", T)?,
        user_id: col(row, "user_id", T)?,
        client_id: col(row, "client_id", T)?,
        create_date: col(row, "create_date", T)?,
        expiration_date: col(row, "expiration_date", T)?,
        resource_id: col(row, "resource_id", T)?,
        bind_date: col(row, "bind_date", T)?,
    })
}

fn resource_from_row(row: &AnyRow) -> Result<ResourceRecord> {
    const T: &str = "kms_resources";
    Ok(ResourceRecord {
        id: col(row, "id", T)?,
        creator: col(row, "creator", T)?,
        create_date: col(row, "create_date", T)?,
        expiration_date: col(row, "expiration_date", T)?,
        ttl: col(row, "ttl", T)?,
    })
}

fn auth_from_row(row: &AnyRow) -> Result<AuthorizationRecord> {
    const T: &str = "kms_authorizations";
    Ok(AuthorizationRecord {
        id: col(row, "id", T)?,
        resource_id: col(row, "resource_id", T)?,
        auth_id: col(row, "auth_id", T)?,
        role_uri: col(row, "role_uri", T)?,
        creator: col(row, "creator", T)?,
        create_date: col(row, "create_date", T)?,
        expiration_date: col(row, "expiration_date", T)?,
    })
}

fn kek_from_row(row: &AnyRow) -> Result<KekRecord> {
    const T: &str = "kms_keks";
    let state: String = col(row, "state", T)?;
    Ok(KekRecord {
        id: col(row, "id", T)?,
        org: col(row, "org", T)?,
        wrapped: col(row, "wrapped", T)?,
        cmk_id: col(row, "cmk_id", T)?,
        state: MasterKeyState::parse(&state).ok_or(StoreError::Corrupt(T))?,
        create_date: col(row, "create_date", T)?,
        update_date: col(row, "update_date", T)?,
    })
}

/// `$start, $start+1, …` (`n` placeholders), for `IN (…)` lists. Contains no
/// data, only numbers, hence safe to splice.
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Largest `IN (…)` list per statement (well under both databases' parameter limits).
const IN_CHUNK: usize = 500;

// ---- statements shared by several methods

const SELECT_KEY: &str = concat!("SELECT ", key_cols!(), " FROM kms_keys WHERE id = $1");

/// The conditional bind: succeeds only for the creator, on an unbound key,
/// before its bind deadline.
const BIND_KEY: &str = concat!(
    "UPDATE kms_keys SET resource_id = $2, bind_date = $4, expiration_date = $5 ",
    "WHERE id = $1 AND user_id = $3 AND resource_id IS NULL AND expiration_date > $4 ",
    "RETURNING ",
    key_cols!()
);

const INSERT_AUTHORIZATION: &str = concat!(
    "INSERT INTO kms_authorizations (id, resource_id, auth_id, role_uri, creator, create_date, expiration_date) ",
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ",
    "ON CONFLICT (resource_id, auth_id) WHERE auth_id IS NOT NULL DO NOTHING ",
    "RETURNING ",
    auth_cols!()
);

const SELECT_AUTHORIZATION_BY_PAIR: &str =
    concat!("SELECT ", auth_cols!(), " FROM kms_authorizations WHERE resource_id = $1 AND auth_id = $2");

/// Attempts the conditional bind on `conn`; the bound key if it succeeded.
async fn try_bind(
    conn: &mut AnyConnection,
    id: &str,
    resource_id: &str,
    user_id: &str,
    bind_date: Millis,
    new_expiration: Millis,
) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(BIND_KEY)
        .bind(id)
        .bind(resource_id)
        .bind(user_id)
        .bind(bind_date)
        .bind(new_expiration)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(key_from_row).transpose()
}

/// Inserts one authorization on `resource_id` (the record's own `resource_id`
/// is not consulted), or returns the existing one for the same
/// `(resource_id, auth_id)`.
async fn insert_or_get_authorization(
    conn: &mut AnyConnection,
    resource_id: &str,
    auth: &AuthorizationRecord,
) -> Result<AuthorizationRecord> {
    // Under READ COMMITTED the existing row can vanish between the conflict
    // and the read (a concurrent delete); then the insert goes through on retry.
    for _ in 0..3 {
        let inserted = sqlx::query(INSERT_AUTHORIZATION)
            .bind(&auth.id)
            .bind(resource_id)
            .bind(auth.auth_id.as_deref())
            .bind(auth.role_uri.as_deref())
            .bind(&auth.creator)
            .bind(auth.create_date)
            .bind(auth.expiration_date)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = inserted {
            return auth_from_row(&row);
        }
        let Some(auth_id) = auth.auth_id.as_deref() else {
            // Anonymous authorizations never conflict on the pair index.
            return Err(StoreError::Corrupt("kms_authorizations"));
        };
        let existing = sqlx::query(SELECT_AUTHORIZATION_BY_PAIR)
            .bind(resource_id)
            .bind(auth_id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = existing {
            return auth_from_row(&row);
        }
    }
    Err(StoreError::Database(sqlx::Error::Protocol("authorization kept appearing and vanishing".into())))
}

/// Insertion order for a batch of authorizations: by `auth_id`, anonymous
/// ones last, so that concurrent batches take index locks in the same order.
fn lock_order(authorizations: &[AuthorizationRecord]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..authorizations.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&authorizations[a].auth_id, &authorizations[b].auth_id);
        match (a, b) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    order
}

impl SqlStore {
    /// On PostgreSQL, takes a lock on `table` that conflicts with itself and
    /// with every writer of the table, but not with readers; held to commit.
    async fn pg_serialize_writers(&self, conn: &mut AnyConnection, lock: &'static str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query(lock).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn view(conn: &mut AnyConnection, id: &str) -> Result<Option<ResourceView>> {
        let Some(row) =
            sqlx::query("SELECT id, creator, create_date, expiration_date, ttl FROM kms_resources WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        else {
            return Ok(None);
        };
        let resource = resource_from_row(&row)?;
        let key_ids = sqlx::query("SELECT id FROM kms_keys WHERE resource_id = $1 ORDER BY bind_date, id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| col(r, "id", "kms_keys"))
            .collect::<Result<_>>()?;
        let authorization_ids =
            sqlx::query("SELECT id FROM kms_authorizations WHERE resource_id = $1 ORDER BY create_date, seq")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| col(r, "id", "kms_authorizations"))
                .collect::<Result<_>>()?;
        Ok(Some(ResourceView { resource, key_ids, authorization_ids }))
    }

    /// Demotes the org's active KEK(s) other than `except` to inactive.
    async fn demote_active(conn: &mut AnyConnection, org: &str, except: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE kms_keks SET state = 'inactive', update_date = $3 WHERE org = $1 AND state = 'active' AND id <> $2",
        )
        .bind(org)
        .bind(except)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

const LOCK_KEKS: &str = "LOCK TABLE kms_keks IN SHARE ROW EXCLUSIVE MODE";
const LOCK_REVOCATIONS: &str = "LOCK TABLE kms_revoked_sessions IN SHARE ROW EXCLUSIVE MODE";

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    // ---- keys

    async fn cache_federated(
        &self,
        resource: &ResourceRecord,
        authorizations: &[AuthorizationRecord],
        keys: &[KeyRecord],
    ) -> Result<()> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        sqlx::query(
            "INSERT INTO kms_resources (id, creator, create_date, expiration_date, ttl) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&resource.id)
        .bind(&resource.creator)
        .bind(resource.create_date)
        .bind(resource.expiration_date)
        .bind(resource.ttl)
        .execute(&mut *tx)
        .await?;
        for key in keys {
            if key.resource_id.as_deref() != Some(resource.id.as_str()) {
                return Err(StoreError::Corrupt("a cached key must be bound to the cached resource"));
            }
            sqlx::query(concat!(
                "INSERT INTO kms_keys (",
                key_cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING"
            ))
            .bind(&key.id)
            .bind(key.wrapped.as_slice())
            .bind(&key.kek_id)
            .bind(&key.user_id)
            .bind(&key.client_id)
            .bind(key.create_date)
            .bind(key.expiration_date)
            .bind(key.resource_id.as_deref())
            .bind(key.bind_date)
            .execute(&mut *tx)
            .await?;
        }
        for a in authorizations {
            sqlx::query(
                "INSERT INTO kms_authorizations \
                 (id, resource_id, auth_id, role_uri, creator, create_date, expiration_date) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&a.id)
            .bind(&resource.id)
            .bind(a.auth_id.as_deref())
            .bind(a.role_uri.as_deref())
            .bind(&a.creator)
            .bind(a.create_date)
            .bind(a.expiration_date)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_keys(&self, keys: &[KeyRecord]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let batch = &self.key_batch;
        batch.pending.lock().unwrap_or_else(|p| p.into_inner()).push(KeyJob { keys: keys.to_vec(), reply });
        let turn = batch.commit.lock().await;
        match answer.try_recv() {
            // Committed (or refused) by the call that held the turn before us.
            Ok(result) => return result,
            // That call was dropped mid-commit: the outcome is unknown.
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                return Err(StoreError::Database(sqlx::Error::Protocol(
                    "the transaction holding these keys was abandoned".into(),
                )))
            }
            // Still queued: this call commits the queue.
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let jobs = std::mem::take(&mut *batch.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let all: Vec<&KeyRecord> = jobs.iter().flat_map(|j| &j.keys).collect();
        match self.insert_keys_tx(&all).await {
            Ok(()) => jobs.into_iter().for_each(|j| drop(j.reply.send(Ok(())))),
            // One call's failure (a taken id) must not fail the others: each alone.
            Err(_) if jobs.len() > 1 => {
                for j in jobs {
                    let r = self.insert_keys_tx(&j.keys.iter().collect::<Vec<_>>()).await;
                    let _ = j.reply.send(r);
                }
            }
            Err(e) => {
                if let Some(j) = jobs.into_iter().next() {
                    let _ = j.reply.send(Err(e));
                }
            }
        }
        drop(turn);
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Database(sqlx::Error::Protocol("the key batch was dropped unanswered".into())))
        })
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(SELECT_KEY).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn bind_key(
        &self,
        id: &str,
        resource_id: &str,
        user_id: &str,
        bind_date: Millis,
        new_expiration: Millis,
    ) -> Result<BindOutcome> {
        // On PostgreSQL the refusal and the read that explains it are two
        // statements: a key committed by a concurrent insert in between looks
        // bindable, so try again (SQLite serializes writers; never loops).
        for _ in 0..3 {
            let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
            if let Some(key) = try_bind(&mut tx, id, resource_id, user_id, bind_date, new_expiration).await? {
                tx.commit().await?;
                return Ok(BindOutcome::Bound(key));
            }
            // The conditional update refused: say why, from the latest committed row.
            let row = sqlx::query(SELECT_KEY).bind(id).fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            let Some(key) = row.as_ref().map(key_from_row).transpose()? else {
                return Ok(BindOutcome::NotFound);
            };
            return Ok(if key.user_id != user_id {
                BindOutcome::NotCreator
            } else if key.resource_id.as_deref() == Some(resource_id) {
                BindOutcome::AlreadyBound(key)
            } else if key.resource_id.is_some() {
                BindOutcome::BoundElsewhere
            } else if bind_date >= key.expiration_date {
                BindOutcome::Expired
            } else {
                continue;
            });
        }
        Err(StoreError::Database(sqlx::Error::Protocol("bind of a bindable key kept being refused".into())))
    }

    async fn list_resource_keys(
        &self,
        resource_id: &str,
        bound_after: Option<Millis>,
        bound_before: Option<Millis>,
        limit: Option<u32>,
    ) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM kms_keys WHERE resource_id = $1 ",
            "AND ($2 IS NULL OR bind_date >= $2) AND ($3 IS NULL OR bind_date < $3) ",
            "ORDER BY bind_date DESC, id DESC LIMIT $4"
        ))
        .bind(resource_id)
        .bind(bound_after)
        .bind(bound_before)
        .bind(limit.map_or(i64::MAX, i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    // ---- resources

    async fn create_resource(
        &self,
        resource: &ResourceRecord,
        authorizations: &[AuthorizationRecord],
        key_ids: &[String],
        key_expiration: Millis,
    ) -> Result<CreateResourceOutcome> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let inserted = sqlx::query(
            "INSERT INTO kms_resources (id, creator, create_date, expiration_date, ttl) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&resource.id)
        .bind(&resource.creator)
        .bind(resource.create_date)
        .bind(resource.expiration_date)
        .bind(resource.ttl)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(CreateResourceOutcome::Exists);
        }

        // Bind in sorted order (no deadlocks between concurrent creations);
        // a key listed twice is bound once.
        let mut sorted: Vec<&String> = key_ids.iter().collect();
        sorted.sort();
        sorted.dedup();
        for key_id in sorted {
            let bound =
                try_bind(&mut tx, key_id, &resource.id, &resource.creator, resource.create_date, key_expiration)
                    .await?;
            if bound.is_none() {
                tx.rollback().await?;
                return Ok(CreateResourceOutcome::KeyNotBindable(key_id.clone()));
            }
        }

        for i in lock_order(authorizations) {
            insert_or_get_authorization(&mut tx, &resource.id, &authorizations[i]).await?;
        }

        let view = Self::view(&mut tx, &resource.id).await?.ok_or(StoreError::Corrupt("kms_resources"))?;
        tx.commit().await?;
        Ok(CreateResourceOutcome::Created(view))
    }

    async fn get_resource(&self, id: &str) -> Result<Option<ResourceView>> {
        let mut tx = self.pool.begin_with(self.backend.read_begin()).await?;
        let view = Self::view(&mut tx, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    // ---- authorizations

    async fn create_authorizations(&self, authorizations: &[AuthorizationRecord]) -> Result<Vec<AuthorizationRecord>> {
        if authorizations.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let mut out: Vec<Option<AuthorizationRecord>> = vec![None; authorizations.len()];
        for i in lock_order(authorizations) {
            let auth = &authorizations[i];
            out[i] = Some(insert_or_get_authorization(&mut tx, &auth.resource_id, auth).await?);
        }
        tx.commit().await?;
        Ok(out.into_iter().flatten().collect())
    }

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>> {
        let row = sqlx::query(concat!("SELECT ", auth_cols!(), " FROM kms_authorizations WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(auth_from_row).transpose()
    }

    async fn list_authorizations(&self, resource_id: &str, auth_id: Option<&str>) -> Result<Vec<AuthorizationRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            auth_cols!(),
            " FROM kms_authorizations WHERE resource_id = $1 AND ($2 IS NULL OR auth_id = $2) ",
            "ORDER BY create_date, seq"
        ))
        .bind(resource_id)
        .bind(auth_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(auth_from_row).collect()
    }

    async fn has_authorization(&self, resource_id: &str, auth_ids: &[&str], now: Millis) -> Result<bool> {
        for chunk in auth_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT 1 AS found FROM kms_authorizations WHERE resource_id = $1 \
                 AND (expiration_date IS NULL OR expiration_date > $2) AND auth_id IN ({}) LIMIT 1",
                placeholders(3, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(resource_id).bind(now);
            for auth_id in chunk {
                query = query.bind(*auth_id);
            }
            if query.fetch_optional(&self.pool).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn delete_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let row = sqlx::query(concat!("DELETE FROM kms_authorizations WHERE id = $1 RETURNING ", auth_cols!()))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(auth_from_row).transpose()
    }

    async fn delete_authorizations(&self, resource_id: &str, auth_ids: &[String]) -> Result<Vec<AuthorizationRecord>> {
        let mut sorted: Vec<&String> = auth_ids.iter().collect();
        sorted.sort();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let mut deleted = Vec::new();
        for auth_id in sorted {
            let row = sqlx::query(concat!(
                "DELETE FROM kms_authorizations WHERE resource_id = $1 AND auth_id = $2 RETURNING ",
                auth_cols!()
            ))
            .bind(resource_id)
            .bind(auth_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                deleted.push(auth_from_row(&row)?);
            }
        }
        tx.commit().await?;
        deleted.sort_by_key(|a| a.create_date);
        Ok(deleted)
    }

    // ---- idempotency log

    async fn claim_request(&self, session: &str, request_id: &str, expires: Millis) -> Result<Option<Option<String>>> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let claimed = sqlx::query(
            "INSERT INTO kms_requests (session, request_id, response, expires) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (session, request_id) DO NOTHING",
        )
        .bind(session)
        .bind(request_id)
        .bind(expires)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 1 {
            tx.commit().await?;
            return Ok(None);
        }
        let row = sqlx::query("SELECT response FROM kms_requests WHERE session = $1 AND request_id = $2")
            .bind(session)
            .bind(request_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(Some(col(&row, "response", "kms_requests")?)),
            // Purged between the conflict and the read: it was there, unanswered as far as we know.
            None => Ok(Some(None)),
        }
    }

    async fn complete_request(&self, session: &str, request_id: &str, response: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        sqlx::query("UPDATE kms_requests SET response = $3 WHERE session = $1 AND request_id = $2")
            .bind(session)
            .bind(request_id)
            .bind(response)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_request(&self, session: &str, request_id: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        sqlx::query("DELETE FROM kms_requests WHERE session = $1 AND request_id = $2 AND response IS NULL")
            .bind(session)
            .bind(request_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- sessions

    async fn revoke_session(&self, session: &str, expires: Millis) -> Result<()> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // Sequence numbers must become visible in order, or a poller that saw
        // n+1 would skip an n committed later: serialize the writers.
        self.pg_serialize_writers(&mut tx, LOCK_REVOCATIONS).await?;
        sqlx::query("INSERT INTO kms_revoked_sessions (session, expires) VALUES ($1, $2)")
            .bind(session)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoked_sessions_since(&self, after: i64) -> Result<(Vec<String>, i64)> {
        let rows = sqlx::query("SELECT seq, session FROM kms_revoked_sessions WHERE seq > $1 ORDER BY seq")
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        let mut seen = HashSet::new();
        let mut sessions = Vec::new();
        let mut max = after;
        for row in &rows {
            let seq: i64 = col(row, "seq", "kms_revoked_sessions")?;
            let session: String = col(row, "session", "kms_revoked_sessions")?;
            max = max.max(seq);
            if seen.insert(session.clone()) {
                sessions.push(session);
            }
        }
        Ok((sessions, max))
    }

    // ---- key hierarchy

    async fn insert_kek(&self, kek: &KekRecord) -> Result<()> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        if kek.state == MasterKeyState::Active {
            self.pg_serialize_writers(&mut tx, LOCK_KEKS).await?;
            Self::demote_active(&mut tx, &kek.org, &kek.id, kek.update_date).await?;
        }
        sqlx::query(concat!("INSERT INTO kms_keks (", kek_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(&kek.id)
            .bind(&kek.org)
            .bind(kek.wrapped.as_slice())
            .bind(&kek.cmk_id)
            .bind(kek.state.as_str())
            .bind(kek.create_date)
            .bind(kek.update_date)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_kek(&self, id: &str) -> Result<Option<KekRecord>> {
        let row = sqlx::query(concat!("SELECT ", kek_cols!(), " FROM kms_keks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(kek_from_row).transpose()
    }

    async fn active_kek(&self, org: &str) -> Result<Option<KekRecord>> {
        let row = sqlx::query(concat!("SELECT ", kek_cols!(), " FROM kms_keks WHERE org = $1 AND state = 'active'"))
            .bind(org)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(kek_from_row).transpose()
    }

    async fn list_keks(&self, org: Option<&str>) -> Result<Vec<KekRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            kek_cols!(),
            " FROM kms_keks WHERE ($1 IS NULL OR org = $1) ORDER BY create_date DESC, id DESC"
        ))
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(kek_from_row).collect()
    }

    async fn set_kek_state(&self, id: &str, state: MasterKeyState, now: Millis) -> Result<bool> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        if state == MasterKeyState::Active {
            self.pg_serialize_writers(&mut tx, LOCK_KEKS).await?;
            let org = sqlx::query("SELECT org FROM kms_keks WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
            let Some(org) = org else {
                tx.rollback().await?;
                return Ok(false);
            };
            let org: String = col(&org, "org", "kms_keks")?;
            Self::demote_active(&mut tx, &org, id, now).await?;
        }
        let changed = sqlx::query("UPDATE kms_keks SET state = $2, update_date = $3 WHERE id = $1")
            .bind(id)
            .bind(state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn rewrap_kek(&self, id: &str, expected_cmk_id: &str, wrapped: &[u8], cmk_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // One conditional UPDATE: on PostgreSQL it re-checks cmk_id against the
        // latest committed row, so two nodes re-wrapping the same KEK do not both win.
        let n = sqlx::query("UPDATE kms_keks SET wrapped = $1, cmk_id = $2 WHERE id = $3 AND cmk_id = $4")
            .bind(wrapped)
            .bind(cmk_id)
            .bind(id)
            .bind(expected_cmk_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    // ---- retention

    async fn keys_wrapped_by(&self, kek_id: &str, after: &str, limit: u32) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM kms_keys WHERE kek_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(kek_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn rewrap_key(&self, id: &str, expected_kek: &str, wrapped: &[u8], kek_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let n = sqlx::query("UPDATE kms_keys SET wrapped = $1, kek_id = $2 WHERE id = $3 AND kek_id = $4")
            .bind(wrapped)
            .bind(kek_id)
            .bind(id)
            .bind(expected_kek)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn destroy_kek(&self, kek_id: &str) -> Result<u64> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let n =
            sqlx::query("DELETE FROM kms_keys WHERE kek_id = $1").bind(kek_id).execute(&mut *tx).await?.rows_affected();
        sqlx::query("DELETE FROM kms_keks WHERE id = $1").bind(kek_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn resources_of(&self, auth_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT resource_id FROM kms_authorizations WHERE auth_id = $1 ORDER BY resource_id")
                .bind(auth_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| col(r, "resource_id", "kms_authorizations")).collect()
    }

    // ---- small named values

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row =
            sqlx::query("SELECT value FROM kms_meta WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| col(r, "value", "kms_meta")).transpose()
    }

    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // On PostgreSQL the insert waits for a concurrent inserter of the same
        // name to finish; the read that follows sees whichever value won.
        sqlx::query("INSERT INTO kms_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT value FROM kms_meta WHERE name = $1").bind(name).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        col(&row, "value", "kms_meta")
    }

    async fn swap_meta(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let n = sqlx::query("UPDATE kms_meta SET value = $1 WHERE name = $2 AND value = $3")
            .bind(value)
            .bind(name)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn delete_meta_before(&self, prefix: &str, before: &str) -> Result<u64> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        // Names compare bytewise on both backends (COLLATE "C" on PostgreSQL).
        let deleted =
            sqlx::query("DELETE FROM kms_meta WHERE name >= $1 AND name < $2 AND substr(name, 1, length($1)) = $1")
                .bind(prefix)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    // ---- versioned documents

    async fn get_document(&self, kind: &str, id: &str) -> Result<Option<Document>> {
        let row = sqlx::query("SELECT id, version, body, update_date FROM kms_documents WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn put_document(&self, kind: &str, id: &str, expected: i64, body: &str, now: Millis) -> Result<bool> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let changed = if expected == 0 {
            sqlx::query(
                "INSERT INTO kms_documents (kind, id, version, body, update_date) VALUES ($1, $2, 1, $3, $4)
                 ON CONFLICT (kind, id) DO NOTHING",
            )
            .bind(kind)
            .bind(id)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "UPDATE kms_documents SET version = version + 1, body = $3, update_date = $4
                 WHERE kind = $1 AND id = $2 AND version = $5",
            )
            .bind(kind)
            .bind(id)
            .bind(body)
            .bind(now)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn list_documents(&self, kind: &str) -> Result<Vec<Document>> {
        let rows = sqlx::query("SELECT id, version, body, update_date FROM kms_documents WHERE kind = $1 ORDER BY id")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(document_from_row).collect()
    }

    // ---- housekeeping

    async fn purge_expired(&self, now: Millis) -> Result<u64> {
        let mut tx = self.pool.begin_with(self.backend.write_begin()).await?;
        let mut total = 0;
        for sql in [
            "DELETE FROM kms_keys WHERE resource_id IS NULL AND expiration_date <= $1",
            "DELETE FROM kms_requests WHERE expires <= $1",
            "DELETE FROM kms_revoked_sessions WHERE expires <= $1",
            "DELETE FROM kms_authorizations WHERE expiration_date IS NOT NULL AND expiration_date <= $1",
        ] {
            total += sqlx::query(sql).bind(now).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(total)
    }
}
