//! `custos sdk search-bench`: search at scale, on synthetic data.
//!
//! Measures, in one process, what encrypted search costs over many messages:
//!
//! 1. **Tokenization** (the client's half): [`search::index_tokens`] over
//!    generated messages, single-threaded, in messages/s and tokens/s.
//! 2. **Indexing** end to end: generated messages tokenized by a few threads
//!    and written with [`core_store::Store::set_postings_batch`] (one call,
//!    hence one transaction, per batch of up to 500 queued messages, as a
//!    backfill writes; live sends index one message per call) by writer tasks;
//!    messages/s and postings rows/s, with where the time went.
//! 3. **Queries**: [`search::Query::tokens`] answered by
//!    [`core_store::Store::search_postings`] (newest 50), for four kinds of
//!    query (one common word, one rare word, two words, a word plus a
//!    3-letter type-ahead prefix); p50/p90/p99/max latency and result counts.
//!
//! Figures on a shared machine are noisy, so each run also measures a
//! baseline on the spot: raw HMAC-SHA256 over 16-byte inputs (what one token
//! costs at the very least); tokenization is reported as a ratio to it, and
//! query latencies as ratios to the single-token rare-word query.
//!
//! The data are synthetic and deterministic (a fixed seed): a vocabulary of
//! 50,000 pronounceable pseudo-words, drawn with a Zipf distribution (s = 1:
//! a few words very common, most rare), 8 to 30 words per message, messages
//! spread round-robin over 100 spaces, one search key per space. The store is
//! SQLite in a temporary directory (removed at the end) unless
//! `--database-url` says otherwise; a PostgreSQL database gets a schema of its
//! own, dropped at the end. Postings reference no other table, so no spaces or
//! events are created.
//!
//! This is run by hand, outside CI (one million messages take a while):
//!
//! ```text
//! cargo run --release -p custos-cli -- sdk search-bench --messages 1000000
//! ```
//!
//! The summary goes to stdout, progress to stderr.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::hmac;
use core_store::{PostingSet, Store};
use search::{index_tokens, Query, SearchKey};

/// Options.
pub struct Options {
    /// Messages to generate and index.
    pub messages: u64,
    /// Queries to time.
    pub queries: u64,
    /// Database (default: SQLite in a temporary directory).
    pub database_url: Option<String>,
}

/// Seed of every pseudo-random choice: two runs index the same messages and
/// send the same queries.
const SEED: u64 = 0x5eac_4be1_c057_0501;
/// Distinct words in the synthetic language.
const VOCABULARY: usize = 50_000;
/// Zipf exponent: word of rank r (from 1) drawn with probability ∝ 1 / r^s.
const ZIPF_S: f64 = 1.0;
/// Spaces the messages are spread over (fewer if there are fewer messages).
const MAX_SPACES: u64 = 100;
/// Words per message, inclusive.
const MIN_WORDS: u64 = 8;
const MAX_WORDS: u64 = 30;
/// Messages the single-threaded tokenization figure is measured on.
const TOKENIZE_SAMPLE: u64 = 50_000;
/// Threads that generate and tokenize messages while indexing.
const TOKENIZERS: usize = 2;
/// Tasks calling `set_postings_batch` concurrently on PostgreSQL. On SQLite the
/// store serializes writes (one write lock), so one task, whose call latency
/// is then the store's own.
const PG_WRITERS: usize = 4;
/// Progress lines every 10% of the messages, and at least this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);
/// Tokenized messages waiting for a writer, at most.
const QUEUE: usize = 4096;
/// Most messages one `set_postings_batch` call (one transaction) writes, as
/// a backfill does; live sends index one message per call.
const BATCH: usize = 500;
/// Results asked of each query.
const LIMIT: u32 = 50;
/// "Common word" queries pick a word among the most frequent ones.
const COMMON_RANKS: u64 = 100;
/// Untimed queries run before the timed ones.
const WARMUP_QUERIES: u64 = 40;
/// How long the HMAC baseline runs.
const HMAC_SECS: f64 = 1.0;

/// Runs the benchmark.
pub fn run(opts: Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.messages >= 1, "at least one message");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let tmp = tempfile::Builder::new().prefix("custos-search-bench-").tempdir()?;
    let db = rt.block_on(database(&opts, tmp.path()))?;
    let result = rt.block_on(bench(&opts, &db));
    if let Some((url, schema)) = &db.pg_schema {
        rt.block_on(core_store::drop_postgres_schema(url, schema))
            .with_context(|| format!("dropping schema {schema}"))?;
    }
    result
}

// ---- the store

/// The database, and for PostgreSQL the schema to drop at the end.
struct Database {
    store: Arc<dyn Store>,
    label: String,
    /// The SQLite file, to report its size.
    sqlite_path: Option<PathBuf>,
    pg_schema: Option<(String, String)>,
}

async fn database(opts: &Options, dir: &std::path::Path) -> anyhow::Result<Database> {
    let Some(url) = opts.database_url.clone() else {
        let path = dir.join("core.db");
        let url = format!("sqlite://{}", path.display());
        let store = core_store::open(&url).await.context("opening the store")?;
        let label = format!("SQLite (WAL, synchronous=FULL) at {}, removed at the end", path.display());
        return Ok(Database { store, label, sqlite_path: Some(path), pg_schema: None });
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let schema = format!("custos_search_bench_{}", std::process::id());
        let store = core_store::open_postgres_schema(&url, &schema).await.context("creating the bench schema")?;
        let label = format!("PostgreSQL (schema {schema}, dropped at the end)");
        return Ok(Database { store, label, sqlite_path: None, pg_schema: Some((url, schema)) });
    }
    let store = core_store::open(&url).await.with_context(|| format!("opening {url}"))?;
    let sqlite_path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)));
    Ok(Database {
        store,
        label: format!("{url} (kept; earlier postings there would skew results)"),
        sqlite_path,
        pg_schema: None,
    })
}

/// Bytes of the SQLite database, its WAL and shared-memory file.
fn sqlite_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

// ---- deterministic pseudo-random numbers

/// SplitMix64's output function: a good 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: small, fast, and good enough to generate text.
struct Rng(u64);

impl Rng {
    /// An independent stream for item `i` of `domain` (message `i`, query `i`…),
    /// so any message can be regenerated on its own.
    fn stream(domain: u64, i: u64) -> Rng {
        Rng(mix64(SEED ^ mix64(domain.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix64(i))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Domains of [`Rng::stream`].
const VOCAB_DOMAIN: u64 = 1;
const MESSAGE_DOMAIN: u64 = 2;
const QUERY_DOMAIN: u64 = 3;
const KEY_DOMAIN: u64 = 4;

// ---- the synthetic corpus

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch", "cl", "dr",
    "fl", "gr", "pl", "pr", "sh", "st", "th", "tr",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "io"];
const CODAS: &[&str] = &["", "", "", "", "n", "r", "s", "l", "m", "t", "nd", "st", "rk"];

/// The language, the spaces and their keys; message `i` is a pure function
/// of `i`.
struct Corpus {
    /// Words by rank, most frequent first.
    words: Vec<String>,
    /// Cumulative Zipf probabilities, by rank.
    cdf: Vec<f64>,
    messages: u64,
    spaces: u64,
    keys: Vec<SearchKey>,
    space_ids: Vec<String>,
}

impl Corpus {
    fn new(messages: u64) -> Corpus {
        let mut rng = Rng::stream(VOCAB_DOMAIN, 0);
        let mut seen = std::collections::HashSet::with_capacity(VOCABULARY);
        let mut words = Vec::with_capacity(VOCABULARY);
        while words.len() < VOCABULARY {
            // Like natural languages, frequent words are short.
            let rank = words.len();
            let syllables = match rank {
                0..200 => 1 + rng.below(2),
                200..5000 => 2 + rng.below(2),
                _ => 2 + rng.below(3),
            };
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(rng.pick(ONSETS));
                w.push_str(rng.pick(VOWELS));
                w.push_str(rng.pick(CODAS));
            }
            // At least 3 letters, so that every word has a 3-letter prefix.
            if w.len() >= 3 && seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut cdf = Vec::with_capacity(VOCABULARY);
        let mut total = 0.0;
        for r in 1..=VOCABULARY {
            total += 1.0 / (r as f64).powf(ZIPF_S);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        let spaces = messages.clamp(1, MAX_SPACES);
        let keys = (0..spaces)
            .map(|s| {
                let mut r = Rng::stream(KEY_DOMAIN, s);
                let mut space_key = [0u8; 32];
                for chunk in space_key.chunks_mut(8) {
                    chunk.copy_from_slice(&r.next().to_le_bytes());
                }
                SearchKey::derive(&space_key, &format!("kms://kms.bench.example/keys/{s}"))
            })
            .collect();
        let space_ids = (0..spaces).map(|s| format!("search-bench-{s:03}")).collect();
        Corpus { words, cdf, messages, spaces, keys, space_ids }
    }

    fn zipf_rank(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(VOCABULARY - 1)
    }

    /// Message `i` as word ranks, in order.
    fn message_ranks(&self, i: u64) -> Vec<usize> {
        let mut rng = Rng::stream(MESSAGE_DOMAIN, i);
        let n = MIN_WORDS + rng.below(MAX_WORDS - MIN_WORDS + 1);
        (0..n).map(|_| self.zipf_rank(&mut rng)).collect()
    }

    fn text(&self, ranks: &[usize]) -> String {
        let mut text = String::with_capacity(ranks.len() * 8);
        for (k, &r) in ranks.iter().enumerate() {
            if k > 0 {
                text.push(' ');
            }
            text.push_str(&self.words[r]);
        }
        text.push('.');
        text
    }

    /// Messages go round-robin over the spaces: message `i` is event
    /// `i / spaces + 1` of space `i % spaces`.
    fn space_of(&self, i: u64) -> usize {
        (i % self.spaces) as usize
    }

    fn seq_of(&self, i: u64) -> i64 {
        (i / self.spaces + 1) as i64
    }

    fn messages_in(&self, space: usize) -> u64 {
        self.messages / self.spaces + u64::from((space as u64) < self.messages % self.spaces)
    }

    /// Message `local` of space `space` (0-based) as a global index.
    fn global(&self, space: usize, local: u64) -> u64 {
        local * self.spaces + space as u64
    }
}

// ---- measuring

/// Nearest-rank percentile of sorted values.
fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Baseline: HMAC-SHA256 over distinct 16-byte inputs, one thread, tokens/s.
fn hmac_baseline() -> (u64, Duration) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &[0x42; 32]);
    let mut input = [0u8; 16];
    let mut acc = 0u8;
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < HMAC_SECS {
        for _ in 0..10_000 {
            input[..8].copy_from_slice(&n.to_le_bytes());
            let tag = hmac::sign(&key, &input);
            acc ^= tag.as_ref()[0];
            n += 1;
        }
    }
    std::hint::black_box(acc);
    (n, start.elapsed())
}

/// Single-threaded tokenization of the first `sample` messages: (messages,
/// tokens, time). Texts are generated beforehand and not timed.
fn tokenize_sample(corpus: &Corpus, sample: u64) -> (u64, u64, Duration) {
    let texts: Vec<(usize, String)> =
        (0..sample).map(|i| (corpus.space_of(i), corpus.text(&corpus.message_ranks(i)))).collect();
    let mut tokens = 0u64;
    let start = Instant::now();
    for (space, text) in &texts {
        let t = index_tokens(&corpus.keys[*space], text);
        tokens += t.len() as u64;
        std::hint::black_box(&t);
    }
    (sample, tokens, start.elapsed())
}

/// One message, tokenized, on its way to the store.
struct Job {
    space: usize,
    seq: i64,
    tokens: Vec<[u8; 16]>,
}

/// What one tokenizer thread spent its time on.
#[derive(Default)]
struct TokenizerTime {
    busy: Duration,
    blocked: Duration,
}

struct IndexReport {
    wall: Duration,
    rows: u64,
    call_micros: Vec<u32>,
    tokenizers: Vec<TokenizerTime>,
}

/// Generates, tokenizes and stores every message.
async fn index_all(corpus: &Arc<Corpus>, store: &Arc<dyn Store>, writers_n: usize) -> anyhow::Result<IndexReport> {
    let n = corpus.messages;
    // Milliseconds since `start` of the last progress line.
    let last_line = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(QUEUE);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let done = Arc::new(AtomicU64::new(0));
    let rows = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    let mut tokenizers = Vec::new();
    for t in 0..TOKENIZERS {
        let (corpus, tx) = (corpus.clone(), tx.clone());
        tokenizers.push(tokio::task::spawn_blocking(move || -> anyhow::Result<TokenizerTime> {
            let mut time = TokenizerTime::default();
            let mut i = t as u64;
            while i < n {
                let t0 = Instant::now();
                let space = corpus.space_of(i);
                let text = corpus.text(&corpus.message_ranks(i));
                let tokens = index_tokens(&corpus.keys[space], &text).iter().map(|t| *t.as_bytes()).collect();
                let t1 = Instant::now();
                tx.blocking_send(Job { space, seq: corpus.seq_of(i), tokens })
                    .map_err(|_| anyhow::anyhow!("the writers stopped"))?;
                time.busy += t1 - t0;
                time.blocked += t1.elapsed();
                i += TOKENIZERS as u64;
            }
            Ok(time)
        }));
    }
    drop(tx);

    let mut writers = Vec::new();
    for _ in 0..writers_n {
        let (corpus, store, rx, done, rows, last_line) =
            (corpus.clone(), store.clone(), rx.clone(), done.clone(), rows.clone(), last_line.clone());
        writers.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut jobs = Vec::with_capacity(BATCH);
            loop {
                // One batch: whatever is queued, up to BATCH messages, at least one.
                {
                    let mut rx = rx.lock().await;
                    let Some(job) = rx.recv().await else { break };
                    jobs.push(job);
                    while jobs.len() < BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                }
                let sets: Vec<PostingSet<'_>> = jobs
                    .iter()
                    .map(|job| PostingSet {
                        space_id: &corpus.space_ids[job.space],
                        seq: job.seq,
                        key_uri: corpus.keys[job.space].key_uri(),
                        tokens: &job.tokens,
                    })
                    .collect();
                let t0 = Instant::now();
                store.set_postings_batch(&sets).await.context("set_postings_batch")?;
                micros.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                drop(sets);
                let batch_rows: usize = jobs.iter().map(|j| j.tokens.len()).sum();
                rows.fetch_add(batch_rows as u64, Relaxed);
                let k = jobs.len() as u64;
                jobs.clear();
                let d = done.fetch_add(k, Relaxed) + k;
                let now_ms = start.elapsed().as_millis() as u64;
                let due = now_ms.saturating_sub(last_line.load(Relaxed)) >= PROGRESS_EVERY.as_millis() as u64;
                if d * 10 / n != (d - k) * 10 / n || due {
                    last_line.store(now_ms, Relaxed);
                    let secs = start.elapsed().as_secs_f64();
                    let r = d as f64 / secs;
                    eprintln!(
                        "  indexed {:>3}% ({d}/{n}) in {secs:.0} s: {r:.0} msg/s, {:.0} rows/s, ETA {:.0} s",
                        d * 100 / n,
                        rows.load(Relaxed) as f64 / secs,
                        (n - d) as f64 / r,
                    );
                }
            }
            anyhow::Ok(micros)
        }));
    }

    let mut call_micros = Vec::with_capacity(n as usize);
    let mut first_err = None;
    for w in writers {
        match w.await? {
            Ok(m) => call_micros.extend(m),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    // Writers gone: the tokenizers' sends fail and they stop.
    drop(rx);
    let mut times = Vec::new();
    for t in tokenizers {
        match t.await? {
            Ok(time) => times.push(time),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let wall = start.elapsed();
    call_micros.sort_unstable();
    Ok(IndexReport { wall, rows: rows.load(Relaxed), call_micros, tokenizers: times })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Common,
    Rare,
    TwoWords,
    TypeAhead,
}

const KINDS: [Kind; 4] = [Kind::Common, Kind::Rare, Kind::TwoWords, Kind::TypeAhead];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Common => "common word",
            Kind::Rare => "rare word",
            Kind::TwoWords => "two words",
            Kind::TypeAhead => "word + 3-letter prefix",
        }
    }
}

struct Spec {
    kind: Kind,
    space: usize,
    text: String,
}

/// Query `q`: its kind by turns; its words, except for the common-word
/// query, from one message of the space, so that it matches at least once.
fn query_spec(corpus: &Corpus, q: u64) -> Spec {
    let kind = KINDS[(q % 4) as usize];
    let mut rng = Rng::stream(QUERY_DOMAIN, q);
    let space = rng.below(corpus.spaces) as usize;
    let local = rng.below(corpus.messages_in(space).max(1));
    let ranks = corpus.message_ranks(corpus.global(space, local));
    let word = |r: usize| corpus.words[r].as_str();
    let text = match kind {
        // A trailing space: a complete word, matched by stem.
        Kind::Common => format!("{} ", word(rng.below(COMMON_RANKS) as usize)),
        Kind::Rare => format!("{} ", word(ranks.iter().copied().max().unwrap_or(0))),
        Kind::TwoWords | Kind::TypeAhead => {
            let a = ranks[rng.below(ranks.len() as u64) as usize];
            let others: Vec<usize> = ranks.iter().copied().filter(|&r| r != a).collect();
            let b = if others.is_empty() { a } else { others[rng.below(others.len() as u64) as usize] };
            if kind == Kind::TwoWords {
                format!("{} {} ", word(a), word(b))
            } else {
                // No trailing space: the last word is being typed.
                format!("{} {}", word(a), &word(b)[..3])
            }
        }
    };
    Spec { kind, space, text }
}

struct KindStats {
    latencies: Vec<Duration>,
    results: Vec<usize>,
    tokens: usize,
}

async fn run_queries(corpus: &Corpus, store: &Arc<dyn Store>, queries: u64) -> anyhow::Result<Vec<KindStats>> {
    let mut stats: Vec<KindStats> =
        KINDS.iter().map(|_| KindStats { latencies: Vec::new(), results: Vec::new(), tokens: 0 }).collect();
    // Warm-up queries (another stream of specs), untimed.
    for q in 0..WARMUP_QUERIES {
        let spec = query_spec(corpus, u64::MAX - q);
        let tokens: Vec<[u8; 16]> =
            Query::parse(&spec.text).tokens(&corpus.keys[spec.space]).iter().map(|t| *t.as_bytes()).collect();
        let key_uri = corpus.keys[spec.space].key_uri();
        store.search_postings(&corpus.space_ids[spec.space], key_uri, &tokens, i64::MAX, LIMIT).await?;
    }
    let start = Instant::now();
    let mut next_report = 1;
    for q in 0..queries {
        let spec = query_spec(corpus, q);
        let key = &corpus.keys[spec.space];
        let query = Query::parse(&spec.text);
        anyhow::ensure!(!query.is_empty(), "empty query {:?}", spec.text);
        let tokens: Vec<[u8; 16]> = query.tokens(key).iter().map(|t| *t.as_bytes()).collect();
        let t0 = Instant::now();
        let found = store
            .search_postings(&corpus.space_ids[spec.space], key.key_uri(), &tokens, i64::MAX, LIMIT)
            .await
            .context("search_postings")?;
        let elapsed = t0.elapsed();
        let s = &mut stats[KINDS.iter().position(|&k| k == spec.kind).unwrap_or(0)];
        s.latencies.push(elapsed);
        s.results.push(found.len());
        s.tokens += tokens.len();
        if (q + 1) * 10 / queries >= next_report {
            next_report = (q + 1) * 10 / queries + 1;
            eprintln!(
                "  queried {:>3}% ({}/{queries}) in {:.1} s",
                (q + 1) * 100 / queries,
                q + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    for s in &mut stats {
        s.latencies.sort_unstable();
    }
    Ok(stats)
}

async fn bench(opts: &Options, db: &Database) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("search-bench: building the vocabulary and keys…");
    let corpus = Arc::new(Corpus::new(opts.messages));
    let store = &db.store;

    eprintln!("search-bench: baseline (HMAC-SHA256, {HMAC_SECS} s)…");
    let (hmacs, hmac_time) = tokio::task::spawn_blocking(hmac_baseline).await?;
    let hmac_rate = rate(hmacs, hmac_time);

    let sample = opts.messages.min(TOKENIZE_SAMPLE);
    eprintln!("search-bench: tokenizing {sample} messages on one thread…");
    let c = corpus.clone();
    let (tok_msgs, tok_tokens, tok_time) = tokio::task::spawn_blocking(move || tokenize_sample(&c, sample)).await?;
    let tok_rate = rate(tok_tokens, tok_time);

    let writers = if store.backend() == "sqlite" { 1 } else { PG_WRITERS };
    eprintln!(
        "search-bench: indexing {} messages into {} ({TOKENIZERS} tokenizer threads, {writers} writer task(s))…",
        opts.messages, db.label
    );
    let index = index_all(&corpus, store, writers).await?;
    let db_bytes = db.sqlite_path.as_deref().map(sqlite_bytes);

    let stats = if opts.queries > 0 {
        eprintln!("search-bench: {} queries, one at a time…", opts.queries);
        Some(run_queries(&corpus, store, opts.queries).await?)
    } else {
        None
    };

    // ---- the report
    println!("custos sdk search-bench");
    println!();
    println!("What is measured (one process, this machine, {cores} cores; figures on a shared machine are noisy,");
    println!("so compare the ratios to the baselines measured in the same run rather than absolute figures):");
    println!("  baseline      raw HMAC-SHA256 of 16-byte inputs, one thread: the least a blinded token costs.");
    println!("  tokenization  search::index_tokens (normalize, split, stem, one HMAC per stem and per 2..12-letter");
    println!("                prefix), one thread, over the first {sample} messages; text generation not timed.");
    println!(
        "  indexing      generate + tokenize ({TOKENIZERS} threads) + Store::set_postings_batch ({writers} task(s);"
    );
    println!("                one call = one transaction of up to {BATCH} messages, whatever is queued, as a backfill");
    println!("                writes), wall clock from the first message to the last;");
    println!("                one writer on SQLite, whose store serializes writes anyway.");
    println!("  queries       Store::search_postings(space, key_uri, tokens, i64::MAX, {LIMIT}), one at a time,");
    println!("                after {WARMUP_QUERIES} untimed warm-up queries; only the store call is timed (query");
    println!("                parsing and blinding are microseconds). Ratios are to the rare-word query, a single");
    println!("                token matching few messages: the cheapest lookup the store can do.");
    println!();
    println!("Data (synthetic, seed {SEED:#x})");
    println!(
        "  {} messages of {MIN_WORDS}-{MAX_WORDS} words, {VOCABULARY} pseudo-words with Zipf s={ZIPF_S}, {} spaces (one search key each)",
        opts.messages, corpus.spaces
    );
    println!("  store: {}", db.label);
    println!();
    println!("Baseline");
    println!("  HMAC-SHA256 (16-byte input)   {:>12.0} tokens/s   ({:.0} ns/token)", hmac_rate, 1e9 / hmac_rate);
    println!();
    println!("Tokenization (client side, one thread)");
    println!(
        "  {:>12.0} messages/s  {:>12.0} tokens/s   {:.1} tokens/message, {:.1} µs/message",
        rate(tok_msgs, tok_time),
        tok_rate,
        tok_tokens as f64 / tok_msgs as f64,
        tok_time.as_secs_f64() * 1e6 / tok_msgs as f64
    );
    println!(
        "  = {:.2} x the HMAC baseline in tokens/s (the rest is normalization, segmentation, stemming, sets)",
        tok_rate / hmac_rate
    );
    println!();
    println!("Indexing (end to end into the store)");
    let n = opts.messages;
    println!(
        "  {n} messages, {} postings rows ({:.1}/message) in {:.1} s",
        index.rows,
        index.rows as f64 / n as f64,
        index.wall.as_secs_f64()
    );
    println!(
        "  {:>12.0} messages/s  {:>12.0} rows/s   = {:.3} x single-threaded tokenization (messages/s)",
        rate(n, index.wall),
        rate(index.rows, index.wall),
        rate(n, index.wall) / rate(tok_msgs, tok_time)
    );
    let calls = &index.call_micros;
    let us = |v: u32| format!("{:.3}", f64::from(v) / 1e3);
    println!(
        "  set_postings_batch per call of <= {BATCH} messages (ms{}): p50 {}  p90 {}  p99 {}  max {}",
        if writers > 1 { ", with concurrent writers" } else { "" },
        us(pct(calls, 50.0)),
        us(pct(calls, 90.0)),
        us(pct(calls, 99.0)),
        us(pct(calls, 100.0))
    );
    let wall = index.wall.as_secs_f64();
    let busy: f64 = index.tokenizers.iter().map(|t| t.busy.as_secs_f64()).sum::<f64>() / TOKENIZERS as f64;
    let blocked: f64 = index.tokenizers.iter().map(|t| t.blocked.as_secs_f64()).sum::<f64>() / TOKENIZERS as f64;
    println!(
        "  tokenizer threads: {:.0}% of the wall clock generating/tokenizing, {:.0}% waiting for the store (queue full)",
        100.0 * busy / wall,
        100.0 * blocked / wall
    );
    let bottleneck = if blocked > busy { "the store (set_postings_batch)" } else { "tokenization" };
    println!("  bottleneck: {bottleneck}");
    if let Some(bytes) = db_bytes {
        println!(
            "  SQLite files (db + WAL + shm): {:.1} MiB, {:.0} bytes/row, {:.0} bytes/message",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / index.rows.max(1) as f64,
            bytes as f64 / n as f64
        );
    }

    if let Some(stats) = stats {
        println!();
        println!("Queries ({} in all, latency in ms)", opts.queries);
        let rare = &stats[1];
        let (rare50, rare99) = if rare.latencies.is_empty() {
            (None, None)
        } else {
            (Some(pct(&rare.latencies, 50.0)), Some(pct(&rare.latencies, 99.0)))
        };
        println!(
            "  {:<24} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6}",
            "kind", "n", "tokens", "p50", "p90", "p99", "max", "p50/rare", "p99/rare", "results", "at 50", "none"
        );
        for (kind, s) in KINDS.iter().zip(&stats) {
            if s.latencies.is_empty() {
                continue;
            }
            let l = &s.latencies;
            let ratio = |mine: Duration, base: Option<Duration>| {
                base.map_or("-".into(), |b| format!("{:.2}", mine.as_secs_f64() / b.as_secs_f64().max(1e-12)))
            };
            let mean_results = s.results.iter().sum::<usize>() as f64 / s.results.len() as f64;
            let full = s.results.iter().filter(|&&r| r == LIMIT as usize).count();
            let none = s.results.iter().filter(|&&r| r == 0).count();
            println!(
                "  {:<24} {:>5} {:>6.1} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8.1} {:>7.0}% {:>6}",
                kind.label(),
                l.len(),
                s.tokens as f64 / l.len() as f64,
                ms(pct(l, 50.0)),
                ms(pct(l, 90.0)),
                ms(pct(l, 99.0)),
                ms(pct(l, 100.0)),
                ratio(pct(l, 50.0), rare50),
                ratio(pct(l, 99.0), rare99),
                mean_results,
                100.0 * full as f64 / l.len() as f64,
                none
            );
        }
        println!("  (tokens: blinded tokens sent per query; results: mean count returned, at most {LIMIT};");
        println!("   at 50: share of queries that hit the limit; none: queries with no result, which must be 0");
        println!("   for every kind but the common word, whose words are taken from an indexed message.)");
        println!(
            "  common word: one of the {COMMON_RANKS} most frequent; rare word: the rarest word of a random message;"
        );
        println!(
            "  two words / word + prefix: from one random message of the space, e.g. \"{}\".",
            query_spec(&corpus, 3).text
        );
    }
    Ok(())
}
