//! The migration skeleton: a store supplies its DDL as a [`Schema`].
//!
//! Migrations are idempotent (`CREATE … IF NOT EXISTS`) and run at every
//! open, in one transaction; on PostgreSQL under an advisory lock so that
//! several nodes starting at once do not race on the catalog.

use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::{quote_schema, Backend, Error, Result};

/// One store's schema: its DDL for each dialect and how its version is kept.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The version table (`id INTEGER PRIMARY KEY CHECK (id = 1), version …`),
    /// created by the DDL. A trusted constant: it is spliced into SQL.
    pub version_table: &'static str,
    /// The schema version this code writes and understands.
    pub version: i64,
    /// Advisory lock key serializing schema creation on PostgreSQL (one per store).
    pub pg_lock: i64,
    /// SQLite DDL, in order.
    pub sqlite: &'static [&'static str],
    /// PostgreSQL DDL, in order.
    pub postgres: &'static [&'static str],
}

/// Creates `schema` (and, on PostgreSQL, the named `pg_schema` first) if
/// missing, and checks that the database is not newer than this code.
pub async fn migrate(
    conn: &mut AnyConnection,
    backend: Backend,
    pg_schema: Option<&str>,
    schema: &Schema,
) -> Result<()> {
    let statements = match backend {
        Backend::Sqlite => {
            // WAL is persistent and cannot be switched inside a transaction.
            // In-memory databases answer "memory", which is fine.
            let mode: String = sqlx::query("PRAGMA journal_mode = WAL").fetch_one(&mut *conn).await?.try_get(0)?;
            if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
                return Err(Error::Migration(format!("SQLite refused WAL mode (journal_mode is {mode})")));
            }
            schema.sqlite
        }
        Backend::Postgres => schema.postgres,
    };

    let mut tx = conn.begin_with(backend.write_begin()).await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(schema.pg_lock).execute(&mut *tx).await?;
        if let Some(pg_schema) = pg_schema {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_schema(pg_schema)?);
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
    }
    for statement in statements {
        sqlx::query(*statement).execute(&mut *tx).await?;
    }
    let table = schema.version_table;
    sqlx::query(AssertSqlSafe(format!("INSERT INTO {table} (id, version) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")))
        .bind(schema.version)
        .execute(&mut *tx)
        .await?;
    let version: i64 = sqlx::query(AssertSqlSafe(format!("SELECT version FROM {table} WHERE id = 1")))
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if version > schema.version {
        return Err(Error::Migration(format!(
            "database schema version {version} is newer than this build understands ({})",
            schema.version
        )));
    }
    tx.commit().await?;
    Ok(())
}
