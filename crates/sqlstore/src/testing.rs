//! The conformance-suite harness shared by the stores (feature `testing`;
//! use it from `[dev-dependencies]` only).
//!
//! Every test runs once against a fresh SQLite file (`sqlite::name`) and once
//! against PostgreSQL in a fresh, randomly named schema (`postgres::name`),
//! declared with [`conformance!`](crate::conformance).
//!
//! PostgreSQL comes from `CUSTOS_TEST_POSTGRES_URL` (default
//! [`DEFAULT_POSTGRES_URL`]). If it is unreachable, the PostgreSQL tests
//! report `SKIPPED (no PostgreSQL at …): postgres::name` on stderr and pass,
//! unless `CI` is set, where they fail.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// PostgreSQL used when `CUSTOS_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://127.0.0.1:5432/test";

/// `CUSTOS_TEST_POSTGRES_URL`, or [`DEFAULT_POSTGRES_URL`].
pub fn postgres_url() -> String {
    std::env::var("CUSTOS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A name unique within this machine for a while: pid, clock, counter.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    format!("{prefix}_{}_{nanos}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `url` with any password replaced by `***`, fit to print.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// Connects once (5 s timeout): `Err` says why PostgreSQL is unusable.
pub async fn postgres_reachable(url: &str) -> Result<(), String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    match tokio::time::timeout(Duration::from_secs(5), sqlx::AnyConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("timed out".into()),
    }
}

/// Where a test's database lives. Each suite adds its own `open` (a new
/// handle, i.e. a new "node") through an extension trait.
#[derive(Clone, Debug)]
pub enum Ctx {
    /// A SQLite file in a fresh temporary directory.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A fresh schema in a PostgreSQL database.
    Postgres {
        /// The database.
        url: String,
        /// The schema (dropped after the test).
        schema: String,
    },
}

impl Ctx {
    /// The store URL (`sqlite://PATH`, or the PostgreSQL URL).
    pub fn url(&self) -> String {
        match self {
            Ctx::Sqlite { path } => format!("sqlite://{}", path.display()),
            Ctx::Postgres { url, .. } => url.clone(),
        }
    }

    /// Whether this is the PostgreSQL run.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Ctx::Postgres { .. })
    }
}

/// A store's `drop_postgres_schema(url, schema)`, boxed; errors as text.
pub type DropSchema = fn(String, String) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What one store's suite tells the harness.
#[derive(Clone, Copy, Debug)]
pub struct Harness {
    /// Short store name: SQLite runs use `<tmp>/<name>_store_test_…/<name>.db`,
    /// PostgreSQL runs the schema `<name>_test_…`.
    pub name: &'static str,
    /// Drops a test schema afterwards (normally the store's own `drop_postgres_schema`).
    pub drop_schema: DropSchema,
}

impl Harness {
    /// Runs `test` against a fresh SQLite file, then removes its directory.
    pub async fn run_sqlite<F, Fut>(&self, test: F)
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = std::env::temp_dir().join(unique(&format!("{}_store_test", self.name)));
        std::fs::create_dir_all(&dir).unwrap();
        let outcome = run_guarded(Ctx::Sqlite { path: dir.join(format!("{}.db", self.name)) }, test).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `test` (called `name`) in a fresh PostgreSQL schema, then drops
    /// it; skips (or, under `CI`, fails) when PostgreSQL is unreachable.
    pub async fn run_postgres<F, Fut>(&self, name: &str, test: F)
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let url = postgres_url();
        if let Err(why) = postgres_reachable(&url).await {
            let shown = redacted(&url);
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL at {shown} unreachable ({why}) and CI is set");
            }
            // Straight to stderr: libtest captures print!/eprint!, not this.
            let _ = writeln!(std::io::stderr(), "SKIPPED (no PostgreSQL at {shown}): postgres::{name} [{why}]");
            return;
        }
        let schema = unique(&format!("{}_test", self.name));
        let outcome = run_guarded(Ctx::Postgres { url: url.clone(), schema: schema.clone() }, test).await;
        let dropped = (self.drop_schema)(url, schema).await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        dropped.expect("drop test schema");
    }
}

impl Harness {
    fn kill_env(&self) -> (String, String) {
        let prefix = format!("{}_STORE_KILL", self.name.to_uppercase());
        (format!("{prefix}_URL"), format!("{prefix}_SCHEMA"))
    }

    /// The parent half of a kill -9 test: runs this test binary's ignored
    /// test `child_test` as a writer on `ctx` (passed in the environment as
    /// `<NAME>_STORE_KILL_URL` / `_SCHEMA`; see [`Harness::child_ctx`]),
    /// collects `acks` stdout lines `ACK <payload>`, SIGKILLs the child and
    /// returns the payloads: writes acknowledged before the kill.
    pub async fn kill_child_after_acks(&self, ctx: &Ctx, child_test: &str, acks: usize) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let (url_var, schema_var) = self.kill_env();
        let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([child_test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(url_var, ctx.url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Ctx::Postgres { schema, .. } = ctx {
            cmd.env(schema_var, schema);
        }
        let mut child = cmd.spawn().expect("spawn child writer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        let read = async {
            while acked.len() < acks {
                match lines.next_line().await.unwrap() {
                    Some(line) => {
                        if let Some(ack) = line.strip_prefix("ACK ") {
                            acked.push(ack.to_owned());
                        }
                    }
                    None => panic!("child writer exited early"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read).await.expect("child writer too slow");
        child.start_kill().unwrap(); // SIGKILL
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "child was not killed");
        acked
    }

    /// The child half: the database the parent's [`Harness::kill_child_after_acks`] named.
    pub fn child_ctx(&self) -> Ctx {
        let (url_var, schema_var) = self.kill_env();
        let url = std::env::var(&url_var).unwrap_or_else(|_| panic!("{url_var}"));
        match std::env::var(&schema_var) {
            Ok(schema) => Ctx::Postgres { url, schema },
            Err(_) => Ctx::Sqlite { path: url.strip_prefix("sqlite://").expect("a sqlite:// URL").into() },
        }
    }
}

/// Awaits every task, in order; panics if one panicked.
pub async fn join_all<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

/// Runs `test` in a task, so that cleanup happens even when it panics; returns the panic.
async fn run_guarded<F, Fut>(ctx: Ctx, test: F) -> Result<(), Box<dyn std::any::Any + Send>>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match tokio::spawn(test(ctx)).await {
        Ok(()) => Ok(()),
        Err(e) => Err(e.into_panic()),
    }
}

/// Declares each test twice, `sqlite::name` and `postgres::name`, run by a
/// [`Harness`](crate::testing::Harness) given by path from the crate root:
///
/// ```ignore
/// const HARNESS: Harness = Harness {
///     name: "kms",
///     drop_schema: |url, schema| {
///         Box::pin(async move { kms_store::drop_postgres_schema(&url, &schema).await.map_err(|e| format!("{e:?}")) })
///     },
/// };
/// sqlstore::conformance!(crate::HARNESS; test_a, test_b);
/// ```
///
/// Each test is an `async fn name(ctx: Ctx)` at the crate root; the calling
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance {
    ($harness:path; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $harness.run_sqlite(super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $harness.run_postgres(stringify!($name), super::$name).await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn test_urls_are_redacted() {
        assert_eq!(redacted("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redacted("postgres://127.0.0.1:5432/test"), "postgres://127.0.0.1:5432/test");
    }
}
