//! # sqlstore: the plumbing the Custos SQL stores share
//!
//! `kms-store` and `core-store` each keep their own schema, SQL, records,
//! `Store` trait and `StoreError`; what they share lives here:
//!
//! - [`Backend`]: SQLite or PostgreSQL, and how each begins a transaction;
//! - [`connect`] / [`connect_postgres_schema`]: URL parsing (`sqlite://PATH`,
//!   `sqlite:PATH`, `sqlite::memory:`, `postgres://…`, `postgresql://…`), pool
//!   set-up (SQLite PRAGMAs `synchronous = FULL`, `foreign_keys = ON`, 5 s
//!   busy timeout; PostgreSQL `search_path`) and migration;
//! - [`migrate`] with a store's [`Schema`]: WAL on SQLite, one transaction,
//!   PostgreSQL advisory lock, version table check;
//! - [`drop_postgres_schema`], [`quote_schema`], [`col`];
//! - with the `testing` feature, `sqlstore::testing`: the conformance-suite harness
//!   (backend selection, random PostgreSQL schema, `SKIPPED`/`CI` logic).
//!
//! Errors are this crate's [`Error`]; each store converts it into its own
//! `StoreError` at the boundary.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use sqlx::any::AnyRow;
use sqlx::{Decode, Row, Type};

mod migrate;
mod open;
#[cfg(feature = "testing")]
pub mod testing;

pub use migrate::{migrate, Schema};
pub use open::{connect, connect_postgres_schema, drop_postgres_schema, is_postgres};

/// Errors of the shared plumbing; each store maps them onto its own error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(String),
    /// A URL that is neither SQLite nor PostgreSQL (or a SQLite URL without a path).
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// A row that does not decode.
    #[error("corrupt row in {0}")]
    Corrupt(&'static str),
    /// A refused setting (an invalid PostgreSQL schema name).
    #[error("configuration: {0}")]
    Config(String),
}

/// SQL plumbing fails with one [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The name a store's `backend()` reports: "sqlite" or "postgres".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Statement starting a write transaction (SQLite takes the write lock up front).
    pub fn write_begin(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Statement starting a consistent read-only transaction.
    pub fn read_begin(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }
}

/// Validates a PostgreSQL schema name (`[A-Za-z_][A-Za-z0-9_]*`, at most 63
/// bytes) and returns it double-quoted, safe to splice into SQL.
pub fn quote_schema(schema: &str) -> Result<String> {
    let mut chars = schema.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 63;
    if valid {
        Ok(format!("\"{schema}\""))
    } else {
        Err(Error::Config(format!("invalid PostgreSQL schema name {schema:?} (use [A-Za-z_][A-Za-z0-9_]*)")))
    }
}

/// Reads a column, reporting a value that does not decode as a corrupt row
/// of `table` ([`Error::Corrupt`]); other failures are [`Error::Database`].
pub fn col<'r, T>(row: &'r AnyRow, name: &str, table: &'static str) -> Result<T>
where
    T: Decode<'r, sqlx::Any> + Type<sqlx::Any>,
{
    row.try_get(name).map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => Error::Corrupt(table),
        other => Error::Database(other),
    })
}

#[cfg(test)]
mod tests {
    use super::quote_schema;

    #[test]
    fn schema_names_are_checked_and_quoted() {
        assert_eq!(quote_schema("kms_test_1").unwrap(), "\"kms_test_1\"");
        assert_eq!(quote_schema("_x").unwrap(), "\"_x\"");
        assert!(quote_schema("1x").is_err());
        assert!(quote_schema("bad\"name").is_err());
        assert!(quote_schema("").is_err());
        assert!(quote_schema(&"a".repeat(64)).is_err());
    }
}
