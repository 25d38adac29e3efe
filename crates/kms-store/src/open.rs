//! Opening a store from a URL; the plumbing (URL parsing, pool set-up,
//! PRAGMAs, migration) is shared with core-store in `sqlstore`.

use std::sync::Arc;

use crate::sql::SqlStore;
use crate::{schema, Result, Store, StoreError};

/// Opens the store at `url` and brings its schema up to date.
///
/// - `sqlite://PATH` or `sqlite:PATH` (the file is created if missing;
///   `sqlite::memory:` gives a private in-memory database, for tests);
/// - `postgres://…` or `postgresql://…` (tables in the connection's default
///   schema, normally `public`; see [`open_postgres_schema`]).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::connect(url).await?))
}

/// Opens a PostgreSQL store whose tables live in `schema` (created if
/// missing): every pooled connection gets `search_path` set to it. Several
/// stores (KMS nodes) may open the same schema at once.
///
/// `schema` must match `[A-Za-z_][A-Za-z0-9_]*` (at most 63 bytes).
pub async fn open_postgres_schema(url: &str, schema: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::connect_postgres_schema(url, schema).await?))
}

/// Drops a PostgreSQL schema and everything in it (`DROP SCHEMA … CASCADE`),
/// if it exists. For tests that used [`open_postgres_schema`].
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<()> {
    sqlstore::drop_postgres_schema(url, schema).await.map_err(StoreError::from_shared)
}

impl SqlStore {
    /// Opens the store at `url` (see [`open`]) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        let (pool, backend) = sqlstore::connect(url, &schema::SCHEMA).await.map_err(StoreError::from_shared)?;
        Ok(SqlStore::new(pool, backend))
    }

    /// Opens a PostgreSQL store in `schema` (see [`open_postgres_schema`]).
    pub async fn connect_postgres_schema(url: &str, schema: &str) -> Result<SqlStore> {
        let (pool, backend) =
            sqlstore::connect_postgres_schema(url, schema, &schema::SCHEMA).await.map_err(StoreError::from_shared)?;
        Ok(SqlStore::new(pool, backend))
    }
}
