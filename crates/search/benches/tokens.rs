//! Benchmarks for search tokens.
//!
//! - `search/index_tokens_200_words`: [`index_tokens`] of a 200-word message
//!   (1.6 KB, 134 distinct words, 846 tokens), what a client does once per
//!   message it sends.
//! - `search/query_3_words`: [`Query::parse`] and [`Query::tokens`] of a
//!   three-word query whose last word is being typed, what a client does per
//!   keystroke in the search box.
//! - `search/rank_50_docs`: [`rank`] of 50 candidate messages of 200 words.
//!
//! Run with `cargo bench -p search --bench tokens`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use search::{index_tokens, rank, Query, SearchKey};

const VOCABULARY: &str = "\
    the quarterly launch plan was reviewed by Finance and Engineering teams before Monday's \
    deadline café meeting notes include budget forecasts for 2025 running servers \
    migrations customers complained about latency in Europe we should prioritise \
    reliability over features this sprint please review attached documents carefully \
    internationalization requirements remain unchanged since January onboarding checklist \
    security audit findings were addressed except two minor issues tracked separately \
    thanks everyone great work account action agenda agreement analysis answer approval \
    architecture assumption backlog balance benchmark billing blocker board branch bug \
    build calendar campaign capacity change channel client cloud code commit compliance \
    config contract cost coverage dashboard database decision delivery demand deployment \
    design developer dependency discount discussion draft email estimate event expense \
    experiment feedback file finding firewall goal growth guideline hiring holiday incident \
    infrastructure invoice issue keynote latency lawyer lead license logging manager market \
    metric milestone mobile network office offsite outage owner partner password payment \
    performance pipeline policy pricing priority process product project proposal quality \
    quarter question rate refund release report request research retention revenue risk \
    roadmap rollout salary schedule scope script service signup slide storage strategy \
    summary supplier support survey target task template testing ticket timeline training \
    travel update upgrade usage vendor version vote website widget workshop yesterday \
    tomorrow morning afternoon evening quickly slowly finally probably";

/// A deterministic `n`-word message drawn from the vocabulary.
fn message(n: usize, seed: u64) -> String {
    let vocabulary: Vec<&str> = VOCABULARY.split_whitespace().collect();
    let mut state = seed;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        words.push(vocabulary[(state >> 33) as usize % vocabulary.len()]);
    }
    words.join(" ")
}

fn tokens(c: &mut Criterion) {
    let key = SearchKey::derive(&[42u8; 32], "kms://acme/spaces/7/keys/1");
    let text = message(200, 1);
    let mut g = c.benchmark_group("search");

    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("index_tokens_200_words", |b| b.iter(|| index_tokens(&key, black_box(&text))));

    g.throughput(Throughput::Elements(1));
    g.bench_function("query_3_words", |b| b.iter(|| Query::parse(black_box("quarterly launch pl")).tokens(&key)));

    let docs: Vec<(usize, String)> = (0..50).map(|i| (i, message(200, i as u64 + 2))).collect();
    let docs: Vec<(usize, &str)> = docs.iter().map(|(i, t)| (*i, t.as_str())).collect();
    let query = Query::parse("launch plan rev");
    g.throughput(Throughput::Elements(docs.len() as u64));
    g.bench_function("rank_50_docs", |b| b.iter(|| rank(&query, black_box(&docs))));
    g.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
