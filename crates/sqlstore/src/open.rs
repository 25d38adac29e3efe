//! Opening a pool from a URL: backend choice, pool set-up, migrations.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{AssertSqlSafe, Connection};

use crate::{migrate, quote_schema, Backend, Error, Result, Schema};

/// SQLite busy timeout: how long a writer waits for the write lock.
const SQLITE_BUSY_TIMEOUT_MS: i64 = 5_000;
/// Connections per SQLite pool (readers run in parallel; writers take turns).
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Connections per PostgreSQL pool (per node).
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Whether `url` names PostgreSQL (`postgres://…` or `postgresql://…`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens a pool on `url` and brings `schema` up to date.
///
/// - `sqlite://PATH` or `sqlite:PATH` (the file is created if missing;
///   `sqlite::memory:` gives a private in-memory database, for tests);
/// - `postgres://…` or `postgresql://…` (tables in the connection's default
///   schema, normally `public`; see [`connect_postgres_schema`]).
///
/// Anything else is [`Error::UnsupportedUrl`]. Installs sqlx's default `Any`
/// drivers (process-wide, idempotent).
pub async fn connect(url: &str, schema: &Schema) -> Result<(AnyPool, Backend)> {
    sqlx::any::install_default_drivers();
    if url.starts_with("sqlite:") {
        connect_sqlite(url, schema).await
    } else if is_postgres(url) {
        connect_postgres(url, None, schema).await
    } else {
        Err(Error::UnsupportedUrl)
    }
}

/// Opens a PostgreSQL pool whose connections have `search_path` set to
/// `pg_schema` (created if missing) and brings `schema` up to date there.
///
/// `pg_schema` must match `[A-Za-z_][A-Za-z0-9_]*` (at most 63 bytes), else
/// [`Error::Config`]; a non-PostgreSQL URL is [`Error::UnsupportedUrl`].
pub async fn connect_postgres_schema(url: &str, pg_schema: &str, schema: &Schema) -> Result<(AnyPool, Backend)> {
    sqlx::any::install_default_drivers();
    if !is_postgres(url) {
        return Err(Error::UnsupportedUrl);
    }
    quote_schema(pg_schema)?;
    connect_postgres(url, Some(pg_schema), schema).await
}

/// Drops a PostgreSQL schema and everything in it (`DROP SCHEMA … CASCADE`),
/// if it exists.
pub async fn drop_postgres_schema(url: &str, pg_schema: &str) -> Result<()> {
    sqlx::any::install_default_drivers();
    if !is_postgres(url) {
        return Err(Error::UnsupportedUrl);
    }
    let quoted = quote_schema(pg_schema)?;
    let mut conn = AnyConnection::connect(url).await?;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// A SQLite URL normalized for sqlx's `Any` driver, and whether it is in memory.
///
/// The path is re-encoded whole (`sqlite:%2Fdata%2Fkms.db`) so that URL
/// parsing cannot mistake part of it for a host or normalize `..` away;
/// sqlx decodes it back. `mode=rwc` (create if missing) is added unless a
/// mode is given.
fn sqlite_url(url: &str) -> Result<(String, bool)> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or(Error::UnsupportedUrl)?;
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    let params: Vec<&str> = params.split('&').filter(|p| !p.is_empty()).collect();
    let memory = path == ":memory:" || params.contains(&"mode=memory");
    if memory {
        return Ok(("sqlite::memory:".to_owned(), true));
    }
    if path.is_empty() {
        return Err(Error::UnsupportedUrl);
    }
    let path = percent_decode_str(path).decode_utf8().map_err(|_| Error::UnsupportedUrl)?;
    let mut params = params.join("&");
    if !params.split('&').any(|p| p.starts_with("mode=")) {
        if !params.is_empty() {
            params.push('&');
        }
        params.push_str("mode=rwc");
    }
    Ok((format!("sqlite:{}?{params}", utf8_percent_encode(&path, NON_ALPHANUMERIC)), false))
}

async fn connect_sqlite(url: &str, schema: &Schema) -> Result<(AnyPool, Backend)> {
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
    // Several processes opening one new file at once: the WAL switch and the
    // first schema write can answer SQLITE_BUSY at once, without waiting in
    // the busy handler (SQLite does so where waiting could deadlock). The
    // migration is idempotent, so it is simply tried again.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS as u64);
    let mut pause = Duration::from_millis(5);
    loop {
        match migrate_pool(&pool, Backend::Sqlite, None, schema).await {
            Ok(()) => return Ok((pool, Backend::Sqlite)),
            Err(e) if is_sqlite_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` is SQLITE_BUSY or SQLITE_LOCKED (any extended code).
fn is_sqlite_busy(e: &Error) -> bool {
    let Error::Database(sqlx::Error::Database(db)) = e else { return false };
    db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

async fn connect_postgres(url: &str, pg_schema: Option<&str>, schema: &Schema) -> Result<(AnyPool, Backend)> {
    let search_path: Option<Arc<str>> = pg_schema.map(quote_schema).transpose()?.map(Arc::from);
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
    migrate_pool(&pool, Backend::Postgres, pg_schema, schema).await?;
    Ok((pool, Backend::Postgres))
}

async fn migrate_pool(pool: &AnyPool, backend: Backend, pg_schema: Option<&str>, schema: &Schema) -> Result<()> {
    let mut conn = pool.acquire().await?;
    migrate(&mut conn, backend, pg_schema, schema).await
}

#[cfg(test)]
mod tests {
    use super::sqlite_url;

    #[test]
    fn sqlite_urls_are_normalized() {
        assert_eq!(sqlite_url("sqlite:///tmp/a b.db").unwrap(), ("sqlite:%2Ftmp%2Fa%20b%2Edb?mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite://kms.db").unwrap(), ("sqlite:kms%2Edb?mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite://core.db").unwrap(), ("sqlite:core%2Edb?mode=rwc".into(), false));
        assert_eq!(sqlite_url("sqlite:../x.db?mode=ro").unwrap(), ("sqlite:%2E%2E%2Fx%2Edb?mode=ro".into(), false));
        assert_eq!(sqlite_url("sqlite::memory:").unwrap(), ("sqlite::memory:".into(), true));
        assert!(sqlite_url("sqlite://").is_err());
        assert!(sqlite_url("mysql://x").is_err());
    }
}
