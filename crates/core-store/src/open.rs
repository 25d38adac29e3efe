//! Opening a store from a URL: backend choice, pool set-up, migrations.
//!
//! Copied from `kms-store` (same conventions); a candidate for a shared crate.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::sql::{quote_schema, Backend, SqlStore};
use crate::{schema, Result, Store, StoreError};

/// SQLite busy timeout: how long a writer waits for the write lock.
const SQLITE_BUSY_TIMEOUT_MS: i64 = 5_000;
/// Connections per SQLite pool (readers run in parallel; writers take turns).
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Connections per PostgreSQL pool (per node).
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Opens the store at `url` and brings its schema up to date.
///
/// - `sqlite://PATH` or `sqlite:PATH` (the file is created if missing;
///   `sqlite::memory:` gives a private in-memory database, for tests);
/// - `postgres://…` or `postgresql://…` (tables in the connection's default
///   schema, normally `public`; see [`open_postgres_schema`]).
///
/// Anything else is `StoreError::Config`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::connect(url).await?))
}

/// Opens a PostgreSQL store whose tables live in `schema` (created if
/// missing): every pooled connection gets `search_path` set to it. Several
/// stores (core nodes) may open the same schema at once.
///
/// `schema` must match `[A-Za-z_][A-Za-z0-9_]*` (at most 63 bytes).
pub async fn open_postgres_schema(url: &str, schema: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::connect_postgres_schema(url, schema).await?))
}

/// Drops a PostgreSQL schema and everything in it (`DROP SCHEMA … CASCADE`),
/// if it exists. For tests that used [`open_postgres_schema`].
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<()> {
    sqlx::any::install_default_drivers();
    if !is_postgres(url) {
        return Err(unsupported());
    }
    let quoted = quote_schema(schema)?;
    let mut conn = AnyConnection::connect(url).await?;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

fn unsupported() -> StoreError {
    StoreError::Config("unsupported database URL (use sqlite://PATH or postgres://...)".to_owned())
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A SQLite URL normalized for sqlx's `Any` driver, and whether it is in memory.
///
/// The path is re-encoded whole (`sqlite:%2Fdata%2Fcore.db`) so that URL
/// parsing cannot mistake part of it for a host or normalize `..` away;
/// sqlx decodes it back. `mode=rwc` (create if missing) is added unless a
/// mode is given.
fn sqlite_url(url: &str) -> Result<(String, bool)> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or_else(unsupported)?;
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    let params: Vec<&str> = params.split('&').filter(|p| !p.is_empty()).collect();
    let memory = path == ":memory:" || params.contains(&"mode=memory");
    if memory {
        return Ok(("sqlite::memory:".to_owned(), true));
    }
    if path.is_empty() {
        return Err(unsupported());
    }
    let path = percent_decode_str(path).decode_utf8().map_err(|_| unsupported())?;
    let mut params = params.join("&");
    if !params.split('&').any(|p| p.starts_with("mode=")) {
        if !params.is_empty() {
            params.push('&');
        }
        params.push_str("mode=rwc");
    }
    Ok((format!("sqlite:{}?{params}", utf8_percent_encode(&path, NON_ALPHANUMERIC)), false))
}

impl SqlStore {
    /// Opens the store at `url` (see [`open`]) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url).await
        } else if is_postgres(url) {
            Self::connect_postgres(url, None).await
        } else {
            Err(unsupported())
        }
    }

    /// Opens a PostgreSQL store in `schema` (see [`open_postgres_schema`]).
    pub async fn connect_postgres_schema(url: &str, schema: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        if !is_postgres(url) {
            return Err(unsupported());
        }
        quote_schema(schema)?;
        Self::connect_postgres(url, Some(schema)).await
    }

    async fn connect_sqlite(url: &str) -> Result<SqlStore> {
        let (url, memory) = sqlite_url(url)?;
        let options = AnyPoolOptions::new().after_connect(|conn, _meta| {
            Box::pin(async move {
                // Per-connection settings (WAL itself is persistent; set at migration).
                sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        });
        let options = if memory {
            // Each connection to `:memory:` would be its own database: keep exactly one, forever.
            options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            options.max_connections(SQLITE_MAX_CONNECTIONS)
        };
        let pool = options.connect(&url).await?;
        let store = SqlStore { pool, backend: Backend::Sqlite };
        store.migrate(None).await?;
        Ok(store)
    }

    async fn connect_postgres(url: &str, schema: Option<&str>) -> Result<SqlStore> {
        let search_path: Option<Arc<str>> = schema.map(quote_schema).transpose()?.map(Arc::from);
        let options = AnyPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    if let Some(search_path) = search_path {
                        sqlx::query("SELECT set_config('search_path', $1, false)")
                            .bind(&*search_path)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await?;
        let store = SqlStore { pool, backend: Backend::Postgres };
        store.migrate(schema).await?;
        Ok(store)
    }

    async fn migrate(&self, pg_schema: Option<&str>) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        schema::migrate(&mut conn, self.backend, pg_schema).await
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_url;

    #[test]
    fn sqlite_urls_are_normalized() {
        assert_eq!(sqlite_url("sqlite:///tmp/a b.db").unwrap(), ("sqlite:%2Ftmp%2Fa%20b%2Edb?mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite://core.db").unwrap(), ("sqlite:core%2Edb?mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite:../x.db?mode=ro").unwrap(), ("sqlite:%2E%2E%2Fx%2Edb?mode=ro".into(), false));
        assert_eq!(sqlite_url("sqlite::memory:").unwrap(), ("sqlite::memory:".into(), true));
        assert!(sqlite_url("sqlite://").is_err());
        assert!(sqlite_url("mysql://x").is_err());
    }
}
