//! `custos sdk bench`: the SDK's load tool. Starts the `up` deployment in a
//! temporary directory (in this process), has senders post to spaces at a
//! fixed rate through the SDK, and receivers follow every space live through
//! the SDK; measures send-to-decrypted-at-receiver latency (p50, p99) with
//! warm key caches, and the delivered rate.
//!
//! Everything shares this machine's cores (servers, senders, receivers), so
//! read the figures as an upper bound on what the SDK adds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::Content;

use crate::demo::password_session;

/// Options.
pub struct BenchOptions {
    /// Spaces (each with one sender and two receivers).
    pub spaces: usize,
    /// Messages per second offered, over all spaces.
    pub rate: f64,
    /// Seconds to send for.
    pub seconds: f64,
}

/// Runs the load tool.
pub fn run(opts: BenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.spaces >= 1 && opts.rate > 0.0 && opts.seconds > 0.0,
        "spaces, rate and seconds must be positive"
    );
    let tmp = tempfile::tempdir()?;
    let (data, secrets) = crate::up::prepare(tmp.path())?;
    let base = free_base()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let d = crate::up::start(data, base, secrets).await?;
        let result = bench(&d.view(), &opts).await;
        d.stop().await;
        result
    })
}

fn free_base() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        let p = probe.local_addr()?.port();
        drop(probe);
        if p < u16::MAX - 7 && (0..7).all(|k| std::net::TcpListener::bind(("127.0.0.1", p + k)).is_ok()) {
            return Ok(p);
        }
    }
    anyhow::bail!("no seven consecutive free ports (what custos up takes)")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench(view: &crate::up::DemoView, opts: &BenchOptions) -> anyhow::Result<()> {
    let (acme, people) = view.orgs.first().context("no org")?;
    let pw: HashMap<&str, &str> = people.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let alice = Arc::new(password_session(acme, "alice@acme.test", pw["alice@acme.test"]).await?);
    let receivers = [
        Arc::new(password_session(acme, "bob@acme.test", pw["bob@acme.test"]).await?),
        Arc::new(password_session(acme, "carol@acme.test", pw["carol@acme.test"]).await?),
    ];
    let mut spaces = Vec::new();
    for i in 0..opts.spaces {
        let s = alice.create_space(&format!("bench {i}"), &["bob@acme.test".into(), "carol@acme.test".into()]).await?;
        spaces.push(s.id);
    }
    // Warm the key caches: one message per space, read by every receiver.
    for s in &spaces {
        alice.send(s, "warm-up").await?;
        for r in &receivers {
            r.history(s, None, 5).await?;
        }
    }

    let origin = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let expected = (opts.rate * opts.seconds).round() as usize;
    let mut tasks = Vec::new();
    for r in &receivers {
        let r = r.clone();
        let lat = latencies.clone();
        let since: HashMap<client::SpaceId, i64> = HashMap::new();
        let (started, ready) = tokio::sync::oneshot::channel::<()>();
        tasks.push((
            tokio::spawn(async move {
                let mut live = r.live(since).await?;
                let _ = started.send(());
                let mut got = 0usize;
                while got < expected {
                    let m = tokio::time::timeout(Duration::from_secs(10), live.next())
                        .await
                        .context("deliveries stopped")??;
                    if let Content::Text(t) = &m.content {
                        if let Some(ns) = t.strip_prefix("bench ").and_then(|n| n.parse::<u64>().ok()) {
                            let sent = origin + Duration::from_nanos(ns);
                            lat.lock().expect("not poisoned").push(Instant::now().saturating_duration_since(sent));
                            got += 1;
                        }
                    }
                }
                anyhow::Ok(got)
            }),
            ready,
        ));
    }
    let mut handles = Vec::new();
    for (h, ready) in tasks {
        ready.await.context("a receiver failed to connect")?;
        handles.push(h);
    }

    // Offer the load: one message every 1/rate seconds, round-robin over spaces.
    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let start = Instant::now();
    let mut senders = Vec::new();
    for i in 0..expected {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let alice = alice.clone();
        let space = spaces[i % spaces.len()].clone();
        senders.push(tokio::spawn(async move {
            let ns = origin.elapsed().as_nanos() as u64;
            alice.send(&space, &format!("bench {ns}")).await.map(drop)
        }));
    }
    for s in senders {
        s.await??;
    }
    let sent_in = start.elapsed();
    let mut delivered = 0;
    for h in handles {
        delivered += h.await??;
    }
    let all_in = start.elapsed();
    let mut lat = latencies.lock().expect("not poisoned").clone();
    lat.sort();
    println!("custos sdk bench: {} spaces, 1 sender and 2 receivers each, warm key caches", spaces.len());
    println!("  offered     {:>8.0} messages/s for {:.1} s ({} messages)", opts.rate, opts.seconds, expected);
    println!("  sent        {:>8.0} messages/s", expected as f64 / sent_in.as_secs_f64());
    println!(
        "  decrypted   {:>8.0} deliveries/s at the receivers ({delivered} deliveries)",
        delivered as f64 / all_in.as_secs_f64()
    );
    println!(
        "  send-to-decrypted-at-receiver latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
