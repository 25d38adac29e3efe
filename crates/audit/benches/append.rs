//! Append throughput with 1 and 64 concurrent callers, on SQLite (a file in
//! the temporary directory) and PostgreSQL (`CUSTOS_TEST_POSTGRES_URL`,
//! default `postgres://127.0.0.1:5432/test`, skipped if unreachable).
//!
//! `cargo bench -p audit --bench append [-- SECONDS]` prints appends/s and
//! append latency percentiles. Every append is acknowledged only after its
//! transaction committed (SQLite WAL with `synchronous = FULL`, or a
//! PostgreSQL commit). The `max_batch = 1` rows disable group commit, for comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit::{Action, ActorKind, AuditLog, AuditOptions, CheckpointSigner, NewEntry, Outcome, RsaCheckpointSigner};
use sqlstore::testing::{postgres_reachable, postgres_url, unique};

fn entry(i: u64) -> NewEntry {
    NewEntry::new("search-indexer@example.com", ActorKind::Service, Action::KeyRelease, Outcome::Allowed)
        .resource("kms://kms.example.com/resources/6a1f5e0c-2d4b-4c1e-9a77-3b2f1d0e8c55")
        .keys([format!("kms://kms.example.com/keys/00000000-0000-4000-8000-{i:012}")])
        .detail("request_id", format!("req-{i}"))
}

struct Figures {
    appends: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(log: Arc<AuditLog>, callers: usize, duration: Duration) -> Figures {
    // Warm up (pool connections, prepared statements).
    for i in 0..50 {
        log.append(entry(i)).await.unwrap();
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = (c as u64) << 32;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    log.append(entry(i)).await.unwrap();
                    latencies.push(t.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Figures { appends: latencies.len() as u64, secs, p50: pct(0.50), p99: pct(0.99) }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let duration = Duration::from_secs(secs);
    let key = jose::RsaPrivateKey::generate(2048, Some("bench".into())).unwrap();
    let signer: Arc<dyn CheckpointSigner> = Arc::new(RsaCheckpointSigner::new(key));

    let pg = postgres_url();
    let pg_ok = postgres_reachable(&pg).await.is_ok();
    if !pg_ok {
        eprintln!("PostgreSQL at {pg} unreachable: SQLite only");
    }
    println!("backend   callers  max_batch   appends/s   p50 ms   p99 ms");
    for backend in ["sqlite", "postgres"] {
        if backend == "postgres" && !pg_ok {
            continue;
        }
        for (callers, max_batch) in [(1, 1024), (64, 1024), (64, 1)] {
            let options = AuditOptions { max_batch, ..AuditOptions::default() };
            let (log, cleanup): (AuditLog, Box<dyn FnOnce()>) = if backend == "sqlite" {
                let dir = std::env::temp_dir().join(unique("audit_bench"));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}", dir.join("audit.db").display());
                let log = AuditLog::open_with(&url, "bench", signer.clone(), options).await.unwrap();
                (log, Box::new(move || drop(std::fs::remove_dir_all(dir))))
            } else {
                let schema = unique("audit_bench");
                let log = AuditLog::open_postgres_schema(&pg, &schema, "bench", signer.clone(), options).await.unwrap();
                let pg = pg.clone();
                (
                    log,
                    Box::new(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                        std::thread::spawn(move || rt.block_on(audit::drop_postgres_schema(&pg, &schema)).unwrap())
                            .join()
                            .unwrap();
                    }),
                )
            };
            let log = Arc::new(log);
            let f = run(Arc::clone(&log), callers, duration).await;
            println!(
                "{backend:<9} {callers:>7} {max_batch:>10} {:>11.0} {:>8.2} {:>8.2}",
                f.appends as f64 / f.secs,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3
            );
            log.close().await;
            cleanup();
        }
    }
}
