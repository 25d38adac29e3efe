//! `custos core bench`: messages accepted, deliveries and send-to-deliver
//! latency of the core, over its real HTTP and WebSocket API.
//!
//! One process holds everything: a core on loopback (temporary data dir,
//! SQLite by default) on a runtime of its own, a tiny OpenID issuer that signs
//! RFC 9068 access tokens for the bench users, and the load generator on a
//! second runtime, so the two share the machine's cores as two processes
//! would.
//!
//! Set-up, through the API: `spaces` spaces, `clients` users spread evenly
//! over them (each user a member of exactly one space, the first one its
//! creator), and one WebSocket per user, opened with a `hello`. Then:
//!
//! 1. saturation: [`SENDERS`] tasks post messages as fast as the core answers,
//!    for `seconds`;
//! 2. fixed load: messages offered at a fixed rate (half the accepted rate of
//!    run 1, or `rate`) for `seconds`, open loop: when a message is due does
//!    not depend on earlier answers, and a late send is counted as late.
//!
//! Each message is what a client posts: a compact JWE (`dir`, `A256GCM`, kid
//! = a key URI of the org's KMS) of a 200-byte plaintext, freshly encrypted.
//! Its `client_event_id` is `b-<run>-<sender>-<n>-<µs since the epoch>`, so
//! whichever socket receives the event knows when it was sent: latency runs
//! from just before the POST to the event frame read by the client, across
//! the whole path (HTTP, token, checks, the durable append, the bus notice,
//! the fan-out to the sockets, the frame).
//!
//! To show where the time goes, each run reports the CPU it used by thread
//! role (core runtime, SQLite threads, load generator) and what other
//! processes took (read from `/proc`, Linux only), and a last section
//! measures the store alone (no HTTP, no sockets) and the disk's flush latency.
//!
//! Each socket is two file descriptors in this process (client and server
//! end): the soft open-file limit is raised as far as the hard limit allows,
//! and the run refuses to start when that is not enough (`ulimit -Hn`).
//! `CUSTOS_CORE_DATABASE_URL`, when set, overrides the database as it does
//! for `custos core serve`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use jose::jwe::EncryptKey;
use jose::{ContentEnc, HeaderParams, OctKey};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use custos_core::server::Running;

use super::common::Issuer;

/// The bench org (user ids `u<N>@bench.example`).
const ORG: &str = "bench.example";
/// The org's KMS (never contacted: the core only checks key URIs' shape).
const KMS: &str = "kms.bench.example";
/// The core's token audience.
const AUDIENCE: &str = "https://core.bench.example";
/// Concurrent senders at saturation.
pub const SENDERS: usize = 64;
/// Senders available to the fixed-load run (it needs rate x latency of them).
const FIXED_LOAD_SENDERS: usize = 256;
/// Plaintext bytes per message, before encryption.
const PLAINTEXT_LEN: usize = 200;
/// Requests in flight while setting up spaces, members and sockets.
const SETUP_CONCURRENCY: usize = 32;
/// How long to wait, after a run, for the deliveries still owed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors wanted beyond two per socket (HTTP pool, database, runtime).
const SPARE_FDS: u64 = 512;
/// Read buffer of each client socket (see `connect_all`).
const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Users, each with one WebSocket.
    pub clients: usize,
    /// Spaces; users are spread evenly over them (clients / spaces members each).
    pub spaces: usize,
    /// How long each run lasts.
    pub seconds: f64,
    /// A fixed offered load in messages/s: only the fixed-load run, at this
    /// rate. `None`: a saturation run, then a fixed-load run at half its
    /// accepted rate.
    pub rate: Option<f64>,
    /// Database URL (default: a SQLite file in a temporary directory). A
    /// PostgreSQL database gets its tables in a schema of its own, dropped
    /// at the end.
    pub database_url: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { clients: 1000, spaces: 50, seconds: 5.0, rate: None, database_url: None }
    }
}

/// Microseconds since the Unix epoch: the clock senders stamp messages with
/// and receivers compare against (one process, one clock).
fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

// ---- measurements

/// Sub-buckets per power of two in [`Histogram`] (2^5: about 3 % resolution).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// A lock-free log-linear histogram of microseconds: any task records, one
/// reads quantiles at the end. Values below 32 µs are exact.
struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Histogram {
    fn new() -> Self {
        Self { counts: (0..64 * SUB).map(|_| AtomicU64::new(0)).collect() }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        ((u64::from(shift) + 1) * SUB + ((v >> shift) - SUB)) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        ((SUB + i % SUB) << shift) + ((1u64 << shift) >> 1)
    }

    fn record(&self, d: Duration) {
        self.record_micros(d.as_micros() as u64);
    }

    fn record_micros(&self, us: u64) {
        self.counts[Self::index(us)].fetch_add(1, Relaxed);
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q` quantile (0..=1), in milliseconds; `None` when empty.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return Some(Self::value(i) as f64 / 1e3);
            }
        }
        None
    }

    /// `p50 / p99` in milliseconds, for the table.
    fn p50_p99(&self) -> String {
        match (self.quantile_ms(0.50), self.quantile_ms(0.99)) {
            (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
            _ => "-".into(),
        }
    }
}

/// What one run counts, shared by its senders and every socket.
struct RunStats {
    /// Posts answered 201 Created.
    accepted: AtomicU64,
    /// Posts answered otherwise, or not at all.
    failed: AtomicU64,
    /// Deliveries owed: the members of the space, for each accepted message.
    owed: AtomicU64,
    /// Event frames of this run's messages received, on any socket.
    delivered: AtomicU64,
    /// POST round trips.
    post: Histogram,
    /// Send to event frame read.
    deliver: Histogram,
    /// Fixed load: how late sends left against their schedule.
    lag: Histogram,
}

impl RunStats {
    fn new() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            owed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            post: Histogram::new(),
            deliver: Histogram::new(),
            lag: Histogram::new(),
        }
    }
}

/// Index of the saturation run in [`Shared::runs`].
const SATURATION: usize = 0;
/// Index of the fixed-load run.
const FIXED: usize = 1;

/// Counters every socket task and sender shares.
struct Shared {
    runs: [RunStats; 2],
    /// Event frames of any kind received on any socket.
    frames: AtomicU64,
}

// ---- the fixture: spaces, users, sockets

/// A bench user.
struct User {
    name: String,
    token: String,
    space: usize,
}

/// A space, its content key and its size.
struct BenchSpace {
    id: String,
    key: OctKey,
    key_uri: String,
    members: u64,
}

/// Everything senders need.
struct Fixture {
    http: reqwest::Client,
    url: String,
    users: Vec<User>,
    spaces: Vec<BenchSpace>,
    shared: Arc<Shared>,
}

/// Fails unless the response has status `want`; returns its JSON body.
async fn expect(r: reqwest::Response, want: u16, what: &str) -> anyhow::Result<Value> {
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.as_u16() == want, "{what}: HTTP {status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Runs `f` over `items` with at most `limit` in flight; fails on the first error.
async fn bounded<T, F, Fut, R>(items: Vec<T>, limit: usize, f: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    futures_util::stream::iter(items.into_iter().map(f)).buffered(limit).collect::<Vec<_>>().await.into_iter().collect()
}

impl Fixture {
    /// Issues tokens, creates the spaces and adds the members through the API.
    async fn build(
        issuer: &Issuer,
        url: String,
        clients: usize,
        spaces: usize,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Fixture> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(FIXED_LOAD_SENDERS).tcp_nodelay(true).build()?;
        // User i is in space i % spaces; users 0..spaces create them.
        let users: Vec<User> = (0..clients)
            .map(|i| {
                let name = format!("u{i}");
                User { token: issuer.token(&name), name, space: i % spaces }
            })
            .collect();
        let created = bounded((0..spaces).collect(), SETUP_CONCURRENCY, |s| {
            let (http, url, creator) = (&http, &url, &users[s]);
            let members = users.iter().filter(|u| u.space == s).count() as u64;
            async move {
                let resource = format!("kms://{KMS}/resources/{}", uuid::Uuid::new_v4());
                let r = http
                    .post(format!("{url}/v1/spaces"))
                    .bearer_auth(&creator.token)
                    .body(json!({"resource_uri": resource}).to_string())
                    .send()
                    .await?;
                let space = expect(r, 201, "creating a space").await?;
                let id = space["id"].as_str().context("a space id")?.to_string();
                Ok(BenchSpace {
                    id,
                    key: OctKey::generate(32, None)?,
                    key_uri: format!("kms://{KMS}/keys/{}", uuid::Uuid::new_v4()),
                    members,
                })
            }
        })
        .await?;
        bounded((spaces..clients).collect(), SETUP_CONCURRENCY, |i| {
            let (http, url, user) = (&http, &url, &users[i]);
            let (space, moderator) = (&created[user.space], &users[user.space]);
            async move {
                let r = http
                    .post(format!("{url}/v1/spaces/{}/members", space.id))
                    .bearer_auth(&moderator.token)
                    .body(json!({"user_id": format!("{}@{ORG}", user.name)}).to_string())
                    .send()
                    .await?;
                expect(r, 200, "adding a member").await.map(|_| ())
            }
        })
        .await?;
        Ok(Fixture { http, url, users, spaces: created, shared })
    }

    /// Opens one socket per user, waits for each `ready`, and leaves a task
    /// per socket counting event frames. Returns the sockets' tasks.
    async fn connect_all(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let ws_url = format!("{}/v1/ws", self.url.replacen("http://", "ws://", 1));
        bounded(self.users.iter().collect(), SETUP_CONCURRENCY, |u| {
            let (ws_url, shared) = (&ws_url, self.shared.clone());
            async move {
                // A 16 KiB read buffer, not tungstenite's 128 KiB: it zero-fills the
                // whole buffer before every read, which made the load generator
                // spend more on memset than on parsing frames.
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(CLIENT_READ_BUFFER);
                let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url.as_str(), Some(config), true)
                    .await
                    .context("opening a WebSocket")?;
                let (mut tx, mut rx) = ws.split();
                tx.send(Message::Text(json!({"type": "hello", "token": u.token}).to_string().into())).await?;
                loop {
                    let m = tokio::time::timeout(Duration::from_secs(30), rx.next())
                        .await
                        .context("no ready frame within 30 s")?;
                    match m {
                        Some(Ok(Message::Text(t))) if t.contains("\"ready\"") => break,
                        Some(Ok(Message::Text(t))) => anyhow::bail!("unexpected frame before ready: {t}"),
                        Some(Ok(_)) => {}
                        other => anyhow::bail!("the socket closed before ready: {other:?}"),
                    }
                }
                Ok(tokio::spawn(async move {
                    let _keep_open = tx;
                    while let Some(Ok(m)) = rx.next().await {
                        if let Message::Text(t) = m {
                            receive(&shared, &t);
                        }
                    }
                }))
            }
        })
        .await
    }

    /// Posts message `n` of `sender` as `user`, stamped with the send time.
    async fn post(&self, run: usize, sender: usize, n: u64, user: &User) {
        let stats = &self.shared.runs[run];
        let space = &self.spaces[user.space];
        let mut plain = format!("{{\"text\":\"message {n} from {} (sender {sender})\"}}", user.name).into_bytes();
        plain.resize(PLAINTEXT_LEN, b' ');
        let ciphertext = match jose::jwe::encrypt(
            EncryptKey::Dir(&space.key),
            ContentEnc::A256Gcm,
            &HeaderParams::kid(space.key_uri.as_str()),
            &plain,
        ) {
            Ok(c) => c,
            Err(_) => {
                stats.failed.fetch_add(1, Relaxed);
                return;
            }
        };
        let sent = now_micros();
        let body = json!({
            "kind": "message",
            "client_event_id": format!("b-{run}-{sender}-{n}-{sent}"),
            "sealed": {"ciphertext": ciphertext, "key_uri": space.key_uri},
        })
        .to_string();
        let t = Instant::now();
        let r = self
            .http
            .post(format!("{}/v1/spaces/{}/events", self.url, space.id))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let ok = match r {
            // Read the body: the connection goes back to the pool only then.
            Ok(r) => r.status().as_u16() == 201 && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            stats.post.record(t.elapsed());
            stats.owed.fetch_add(space.members, Relaxed);
            stats.accepted.fetch_add(1, Relaxed);
        } else {
            stats.failed.fetch_add(1, Relaxed);
        }
    }
}

/// An event frame, read only as far as the bench needs.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    event: Option<FrameEvent>,
}

#[derive(Deserialize)]
struct FrameEvent {
    #[serde(default)]
    client_event_id: Option<String>,
}

/// Counts a frame; a bench message's frame also records its latency.
fn receive(shared: &Shared, text: &str) {
    let now = now_micros();
    let Ok(f) = serde_json::from_str::<Frame>(text) else { return };
    if f.kind != "event" {
        return;
    }
    shared.frames.fetch_add(1, Relaxed);
    let Some(cid) = f.event.and_then(|e| e.client_event_id) else { return };
    // b-<run>-<sender>-<n>-<micros>
    let mut parts = cid.split('-');
    if parts.next() != Some("b") {
        return;
    }
    let run = parts.next().and_then(|r| r.parse::<usize>().ok());
    let sent = parts.nth(2).and_then(|s| s.parse::<u64>().ok());
    if let (Some(run), Some(sent)) = (run, sent) {
        if let Some(stats) = shared.runs.get(run) {
            stats.delivered.fetch_add(1, Relaxed);
            stats.deliver.record_micros(now.saturating_sub(sent));
        }
    }
}

// ---- CPU accounting (Linux /proc; empty elsewhere)

/// Where CPU time went over a span: the machine as a whole (this process,
/// and a PostgreSQL server if any) and this process's threads by role.
#[derive(Default, Clone)]
struct Cpu {
    /// Machine-wide clock ticks: busy (not idle, not iowait), iowait, all.
    machine: [u64; 3],
    /// This process's ticks per thread group (see [`thread_group`]).
    threads: std::collections::BTreeMap<&'static str, u64>,
}

/// The role of a thread, from its name.
fn thread_group(comm: &str) -> &'static str {
    if comm.starts_with("core") {
        "core runtime"
    } else if comm.starts_with("load") {
        "load generator"
    } else if comm.starts_with("sqlx-sqlite") {
        "SQLite threads"
    } else {
        "other"
    }
}

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            // cpu  user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> =
                stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            if v.len() >= 5 {
                let all: u64 = v.iter().take(8).sum();
                cpu.machine = [all - v[3] - v[4], v[4], all];
            }
        }
        for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            // pid (comm) state ... utime stime: fields 14 and 15.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            *cpu.threads.entry(thread_group(&stat[open + 1..close])).or_default() += ticks;
        }
        cpu
    }

    /// `"this process 1.35 of 2 cores (core runtime 0.61, …); other processes 0.63; iowait 0.01"`,
    /// in cores (CPU seconds per second) since `before`. With `db_server`, a
    /// database server on this machine is among the other processes.
    fn since(&self, before: &Cpu, secs: f64, cores: usize, db_server: bool) -> String {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        let all = self.machine[2].saturating_sub(before.machine[2]) as f64;
        if all == 0.0 {
            return "unavailable".into();
        }
        // /proc/stat adds up every core: its share of the span, times the cores.
        let machine = |i: usize| self.machine[i].saturating_sub(before.machine[i]) as f64 / all * cores as f64;
        let groups: Vec<(&str, f64)> = self
            .threads
            .iter()
            .map(|(g, t)| (*g, t.saturating_sub(before.threads.get(g).copied().unwrap_or(0)) as f64 / hz / secs))
            .filter(|(_, used)| *used >= 0.005)
            .collect();
        let ours: f64 = groups.iter().map(|(_, u)| u).sum();
        let detail: Vec<String> = groups.iter().map(|(g, u)| format!("{g} {u:.2}")).collect();
        let others = (machine(0) - ours).max(0.0);
        let who = if db_server { "other processes, the database server included," } else { "other processes" };
        let mut s = format!(
            "this process {ours:.2} of {cores} cores ({}); {who} {others:.2}; iowait {:.2}",
            detail.join(", "),
            machine(1)
        );
        if others > 0.25 && !db_server {
            s.push_str(" (not a quiet machine: other work took CPU from the core)");
        }
        s
    }
}

// ---- the runs

/// A finished run: how long it offered load and what arrived meanwhile.
struct Window {
    /// Until the last sender stopped (posts in flight at the deadline included).
    send_secs: f64,
    /// Event frames received on all sockets between start and deadline.
    frames: u64,
    /// The run's nominal length.
    secs: f64,
    /// Messages still owed after [`DRAIN_TIMEOUT`].
    undelivered: u64,
    /// CPU use between start and deadline.
    cpu: (Cpu, Cpu),
}

/// Counts frames over the run's window, waits for the senders, then for the
/// deliveries still owed.
async fn window(
    fix: &Fixture,
    run: usize,
    secs: f64,
    senders: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Window> {
    let start = Instant::now();
    let frames0 = fix.shared.frames.load(Relaxed);
    let cpu0 = Cpu::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let frames = fix.shared.frames.load(Relaxed) - frames0;
    let cpu = (cpu0, Cpu::now());
    for s in senders {
        s.await?;
    }
    let send_secs = start.elapsed().as_secs_f64();
    let stats = &fix.shared.runs[run];
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    while stats.delivered.load(Relaxed) < stats.owed.load(Relaxed) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let undelivered = stats.owed.load(Relaxed).saturating_sub(stats.delivered.load(Relaxed));
    Ok(Window { send_secs, frames, secs, undelivered, cpu })
}

/// Run 1: [`SENDERS`] closed-loop senders, as fast as the core answers.
/// Sender `k` posts its `n`-th message as user `k + n * SENDERS` (mod the
/// user count), so every user and space posts.
async fn saturation(fix: &Arc<Fixture>, secs: f64) -> anyhow::Result<Window> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let senders = (0..SENDERS)
        .map(|k| {
            let fix = fix.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let user = &fix.users[(k + n as usize * SENDERS) % fix.users.len()];
                    fix.post(SATURATION, k, n, user).await;
                    n += 1;
                }
            })
        })
        .collect();
    window(fix, SATURATION, secs, senders).await
}

/// Run 2: message `i` is due at `start + i / rate`, posted by whichever of
/// [`FIXED_LOAD_SENDERS`] senders is free, as user `i` (mod the user count).
async fn fixed_load(fix: &Arc<Fixture>, rate: f64, secs: f64) -> anyhow::Result<Window> {
    let start = tokio::time::Instant::now();
    let total = (rate * secs).round() as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let senders = (0..FIXED_LOAD_SENDERS)
        .map(|k| {
            let (fix, next) = (fix.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    fix.shared.runs[FIXED].lag.record(due.elapsed());
                    fix.post(FIXED, k, i as u64, &fix.users[i % fix.users.len()]).await;
                }
            })
        })
        .collect();
    window(fix, FIXED, secs, senders).await
}

// ---- where the time goes: the store and the disk alone

/// `count / secs` and latency quantiles of one measurement.
struct Probe {
    name: String,
    rate: f64,
    lat: Histogram,
}

impl Probe {
    fn row(&self) -> String {
        format!("  {:<54} {:>9.0} /s   p50 / p99 {:>12} ms", self.name, self.rate, self.lat.p50_p99())
    }
}

/// Runs `tasks` loops of `op` for `secs`.
async fn probe<F, Fut>(name: &str, tasks: usize, secs: f64, op: F) -> anyhow::Result<Probe>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let lat = Arc::new(Histogram::new());
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|k| {
            let (op, lat) = (op.clone(), lat.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(k, n).await?;
                    lat.record(t.elapsed());
                    n += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let lat = Arc::try_unwrap(lat).map_err(|_| anyhow::anyhow!("probe tasks still running"))?;
    Ok(Probe { name: name.into(), rate: lat.count() as f64 / secs, lat })
}

/// The store's own costs, on a space no socket watches: what one post and
/// one socket wake-up ask of it, without HTTP, JSON or sockets.
async fn store_probes(running: &Running, dir: &Path, secs: f64) -> anyhow::Result<Vec<Probe>> {
    let store = running.core.store.clone();
    let now = custos_core::service::now_ms();
    let space = core_store::Space {
        id: uuid::Uuid::new_v4().to_string(),
        resource_uri: format!("kms://{KMS}/resources/{}", uuid::Uuid::new_v4()),
        org: ORG.into(),
        title: None,
        creator: format!("u0@{ORG}"),
        create_date: now,
        last_seq: 1,
    };
    store.create_space(&space, &uuid::Uuid::new_v4().to_string()).await?;
    let key = OctKey::generate(32, None)?;
    let key_uri = format!("kms://{KMS}/keys/{}", uuid::Uuid::new_v4());
    let ciphertext: Arc<str> = jose::jwe::encrypt(
        EncryptKey::Dir(&key),
        ContentEnc::A256Gcm,
        &HeaderParams::kid(key_uri.as_str()),
        &[b' '; PLAINTEXT_LEN],
    )?
    .into();
    let space_id: Arc<str> = space.id.clone().into();

    let append = |tag: &'static str| {
        let (store, space_id, ciphertext, key_uri) =
            (store.clone(), space_id.clone(), ciphertext.clone(), key_uri.clone());
        move |k: usize, n: u64| {
            let (store, space_id) = (store.clone(), space_id.clone());
            let e = core_store::NewEvent {
                id: uuid::Uuid::new_v4().to_string(),
                client_event_id: Some(format!("{tag}-{k}-{n}")),
                kind: core_store::EventKind::Message,
                sender: format!("u{k}@{ORG}"),
                parent: None,
                target: None,
                subject: None,
                ciphertext: Some(ciphertext.to_string()),
                key_uri: Some(key_uri.clone()),
                meta: None,
            };
            async move {
                store.append(&space_id, &e, custos_core::service::now_ms()).await?;
                Ok(())
            }
        }
    };
    let mut probes = vec![
        probe("store.append, 1 writer", 1, secs, append("a1")).await?,
        probe(&format!("store.append, {SENDERS} writers"), SENDERS, secs, append("a64")).await?,
    ];
    let s = store.clone();
    probes.push(
        probe(&format!("store.touch_user, {SENDERS} writers"), SENDERS, secs, move |k, _| {
            let s = s.clone();
            async move { Ok(s.touch_user(&format!("u{k}@{ORG}"), custos_core::service::now_ms()).await?) }
        })
        .await?,
    );
    let (s, id) = (store.clone(), space_id.clone());
    let last = store.get_space(&space.id).await?.map_or(1, |s| s.last_seq);
    probes.push(
        probe(&format!("store.events_after (1 new event), {SENDERS} readers"), SENDERS, secs, move |_, _| {
            let (s, id) = (s.clone(), id.clone());
            async move { Ok(s.events_after(&id, last - 1, 200).await.map(drop)?) }
        })
        .await?,
    );
    // The disk: a small write and a data flush, as each commit does at least once.
    let path = dir.join("fsync-probe");
    let p = path.clone();
    let fsync = tokio::task::spawn_blocking(move || -> anyhow::Result<Probe> {
        use std::io::Write;
        let mut f = std::fs::File::create(&p)?;
        let lat = Histogram::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            let t = Instant::now();
            f.write_all(&[0u8; 4096])?;
            f.sync_data()?;
            lat.record(t.elapsed());
        }
        Ok(Probe {
            name: "write 4 KiB + fdatasync, data dir, 1 thread".into(),
            rate: lat.count() as f64 / start.elapsed().as_secs_f64(),
            lat,
        })
    })
    .await??;
    let _ = std::fs::remove_file(&path);
    probes.push(fsync);
    Ok(probes)
}

// ---- starting the core

/// The database the core will use, and for PostgreSQL the schema to drop at the end.
struct Database {
    url: String,
    pg_schema: Option<(String, String)>,
    label: String,
}

/// SQLite in `dir` by default; PostgreSQL in a fresh schema of its own
/// (selected on every connection through `options[search_path]`).
async fn database(opts: &BenchOptions, dir: &Path) -> anyhow::Result<Database> {
    let Some(url) = opts.database_url.clone() else {
        let url = format!("sqlite://{}", dir.join("core.db").display());
        return Ok(Database { url, pg_schema: None, label: "SQLite (WAL, synchronous=FULL)".into() });
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(Database { label: format!("database {url}"), url, pg_schema: None });
    }
    let schema = format!("custos_bench_{}", std::process::id());
    core_store::open_postgres_schema(&url, &schema).await.context("creating the bench schema")?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let with_path = format!("{url}{sep}options[search_path]={schema}");
    let label = format!("PostgreSQL (schema {schema}, dropped at the end)");
    Ok(Database { url: with_path, pg_schema: Some((url, schema)), label })
}

/// Starts a core on loopback that trusts `issuer_url`, on the current runtime.
async fn start_core(issuer_url: &str, dir: &Path, db_url: &str) -> anyhow::Result<Running> {
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {}\ndatabase_url = {}\n\n\
         [identity]\naudience = {}\n[[identity.issuers]]\nissuer = {}\norg_domain = {}\n\n\
         [[orgs]]\ndomain = {}\nkms_uri = {}\n",
        q(&dir.display().to_string()),
        q(db_url),
        q(AUDIENCE),
        q(issuer_url),
        q(ORG),
        q(ORG),
        q(&format!("kms://{KMS}")),
    );
    let cfg = custos_core::config::Config::parse(&text, dir)?;
    custos_core::server::start(cfg).await
}

/// Raises the soft open-file limit towards what `clients` sockets need
/// (two descriptors each in this process), up to the hard limit.
fn raise_fd_limit(clients: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = clients as u64 * 2 + SPARE_FDS;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(());
    }
    let new = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)?;
    anyhow::ensure!(
        new >= want,
        "{clients} clients need about {want} open files, and the hard limit is {hard}: raise it (`ulimit -Hn {want}` as root) or use fewer clients"
    );
    Ok(())
}

// ---- the report

fn row(name: &str, offered: Option<f64>, stats: &RunStats, w: &Window) -> String {
    let offered = offered.map_or("-".to_string(), |r| format!("{r:.0}"));
    format!(
        "{name:<26} {offered:>9} {:>11.0} {:>13.0} {:>16} {:>18} {:>8} {:>8}",
        stats.accepted.load(Relaxed) as f64 / w.send_secs,
        w.frames as f64 / w.secs,
        stats.post.p50_p99(),
        stats.deliver.p50_p99(),
        stats.failed.load(Relaxed),
        w.undelivered,
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Runs the benchmark and prints the report. Builds its own runtimes: call
/// it from outside any Tokio runtime. Takes about `2 x seconds` plus set-up,
/// draining and 10 s of probes.
pub fn run(opts: BenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.clients >= 1 && opts.spaces >= 1, "at least one client and one space");
    anyhow::ensure!(opts.seconds > 0.0, "seconds must be positive");
    if let Some(r) = opts.rate {
        anyhow::ensure!(r > 0.0, "rate must be positive");
    }
    let spaces = opts.spaces.min(opts.clients);
    raise_fd_limit(opts.clients)?;
    let dir = std::env::temp_dir().join(format!("custos-core-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&opts, spaces, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(opts: &BenchOptions, spaces: usize, dir: &Path) -> anyhow::Result<()> {
    // Two runtimes, the core's and the load generator's, each as wide as the
    // machine, as if they were two processes.
    let server_rt = tokio::runtime::Builder::new_multi_thread().thread_name("core").enable_all().build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread().thread_name("load").enable_all().build()?;
    let db = server_rt.block_on(database(opts, dir))?;
    let result = measure(opts, spaces, dir, &db, &server_rt, &client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(2));
    client_rt.shutdown_timeout(Duration::from_secs(2));
    if let Some((url, schema)) = &db.pg_schema {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(core_store::drop_postgres_schema(url, schema))
            .with_context(|| format!("dropping schema {schema}"))?;
    }
    result
}

/// Set-up, the two runs, the store probes, and the report.
fn measure(
    opts: &BenchOptions,
    spaces: usize,
    dir: &Path,
    db: &Database,
    server_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let issuer = client_rt.block_on(Issuer::start(AUDIENCE, 86_400))?;
    let running = server_rt.block_on(start_core(&issuer.url, dir, &db.url))?;
    let url = format!("http://{}", running.addr);
    let members = opts.clients / spaces;
    let plus = if opts.clients.is_multiple_of(spaces) { "" } else { "+" };
    println!("custos core bench: {} clients in {spaces} spaces of {members}{plus} members, {}", opts.clients, db.label);
    println!("core and load generator in this process, {cores} cores shared; {} s per run", opts.seconds);

    let shared = Arc::new(Shared { runs: [RunStats::new(), RunStats::new()], frames: AtomicU64::new(0) });
    let (sat, rate, fixed, connected) = client_rt.block_on(async {
        let t = Instant::now();
        let fix = Arc::new(Fixture::build(&issuer, url, opts.clients, spaces, shared.clone()).await?);
        println!(
            "set-up: {spaces} spaces and {} memberships through the API in {:.1} s",
            opts.clients,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let sockets = fix.connect_all().await?;
        println!("set-up: {} WebSockets open (hello, ready) in {:.1} s", sockets.len(), t.elapsed().as_secs_f64());

        let sat = match opts.rate {
            Some(_) => None,
            None => {
                println!("run 1: saturation, {SENDERS} senders ...");
                Some(saturation(&fix, opts.seconds).await?)
            }
        };
        let rate = match (opts.rate, &sat) {
            (Some(r), _) => r,
            (None, Some(w)) => (shared.runs[SATURATION].accepted.load(Relaxed) as f64 / w.send_secs / 2.0).max(1.0),
            (None, None) => unreachable!("saturation ran"),
        };
        println!("run 2: fixed load, {rate:.0} messages/s offered ...");
        let fixed = fixed_load(&fix, rate, opts.seconds).await?;
        let connected = sockets.iter().filter(|s| !s.is_finished()).count();
        for s in &sockets {
            s.abort();
        }
        anyhow::Ok((sat, rate, fixed, connected))
    })?;
    let fanout = {
        let s = &running.core.fanout.stats;
        (s.ring_frames.load(Relaxed), s.db_reads.load(Relaxed))
    };
    println!("store and disk probes ...");
    let probes = server_rt.block_on(store_probes(&running, dir, opts.seconds.min(2.0)))?;
    running.task.abort();
    {
        // The store's pool closes on the runtime it was opened on.
        let _in_core = server_rt.enter();
        drop(running);
    }

    println!();
    println!(
        "{:<26} {:>9} {:>11} {:>13} {:>16} {:>18} {:>8} {:>8}",
        "run", "offered/s", "accepted/s", "deliveries/s", "POST p50/p99 ms", "deliver p50/p99 ms", "failed", "undeliv."
    );
    if let Some(w) = &sat {
        println!("{}", row(&format!("saturation, {SENDERS} senders"), None, &shared.runs[SATURATION], w));
    }
    let label = if opts.rate.is_some() { "fixed load" } else { "fixed load, half of sat." };
    println!("{}", row(label, Some(rate), &shared.runs[FIXED], &fixed));
    let lag = &shared.runs[FIXED].lag;
    println!(
        "fixed load: sends left p50 {:.1} / p99 {:.1} ms behind schedule; {connected} of {} sockets still open at the end",
        lag.quantile_ms(0.5).unwrap_or(0.0),
        lag.quantile_ms(0.99).unwrap_or(0.0),
        opts.clients
    );
    for (name, w) in [("saturation", sat.as_ref()), ("fixed load", Some(&fixed))] {
        if let Some(w) = w {
            println!("CPU, {name}: {}", w.cpu.1.since(&w.cpu.0, w.secs, cores, db.pg_schema.is_some()));
        }
    }
    println!(
        "fan-out, whole session: {} frames sent from the node's rings (serialized once per event), {} database pages read by sockets (connects, catching up)",
        fanout.0, fanout.1
    );

    println!();
    println!("targets (product issue; 2-core machine, load generator on it):");
    if let Some(w) = &sat {
        let accepted = shared.runs[SATURATION].accepted.load(Relaxed) as f64 / w.send_secs;
        let deliveries = w.frames as f64 / w.secs;
        println!("  >= 10,000 messages/s accepted          {accepted:>9.0}   {}", verdict(accepted >= 10_000.0));
        println!("  >= 50,000 deliveries/s at saturation   {deliveries:>9.0}   {}", verdict(deliveries >= 50_000.0));
    }
    let p99 = shared.runs[FIXED].deliver.quantile_ms(0.99);
    let label = if opts.rate.is_some() { "at the offered load" } else { "at half load" };
    let met = p99.is_some_and(|p| p < 50.0) && fixed.undelivered == 0;
    println!("  p99 < 50 ms {label:<26} {:>9}   {}", p99.map_or("-".into(), |p| format!("{p:.1} ms")), verdict(met));
    println!("  1,000 connected clients                {connected:>9}   {}", verdict(connected >= 1000));

    println!();
    println!("where the time goes: the store and the disk alone (no HTTP, no sockets), with the operations");
    println!(
        "behind a post (touch_user when authenticating, append) and a delivery (events_after on a socket's wake-up):"
    );
    for p in &probes {
        println!("{}", p.row());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn histogram_buckets_are_contiguous_and_close() {
        let mut last = 0;
        for v in [0u64, 1, 31, 32, 33, 63, 64, 65, 100, 1_000, 12_345, 1 << 40, u64::MAX / 2] {
            let i = Histogram::index(v);
            assert!(i >= last, "monotonic at {v}");
            last = i;
            let mid = Histogram::value(i);
            assert!(mid.abs_diff(v) as f64 <= (v as f64 * 0.035).max(0.5), "{v} -> {mid}");
        }
        let h = Histogram::new();
        for us in 1..=1000 {
            h.record_micros(us * 10);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 5.0).abs() < 0.2, "{p50}");
        assert!((p99 - 9.9).abs() < 0.35, "{p99}");
    }
}
