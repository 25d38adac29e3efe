//! Queries: what the client sends the core, and the local ranking of what comes
//! back.

use std::collections::{HashMap, HashSet};

use crate::analyze::{
    english_stemmer, for_each_word, normalize, prefix_at_most, stem, word_fits, Term, MAX_PREFIX_CHARS, MAX_TERMS,
    MIN_PREFIX_CHARS,
};
use crate::key::{SearchKey, Token, PREFIX_TAG, STEM_TAG};

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalization.
const B: f32 = 0.75;
/// A word that merely starts with the query's type-ahead prefix counts this
/// much towards the prefix's term frequency; a word equal to it counts 1.
const PARTIAL_PREFIX_WEIGHT: f32 = 0.5;
/// A document containing the query's words in order, adjacent, gets its score
/// multiplied by `1 + PHRASE_BOOST`.
const PHRASE_BOOST: f32 = 0.25;

/// A parsed search query.
///
/// Built with [`Query::parse`]; [`Query::tokens`] gives what the client sends
/// the core, and [`rank`] orders the decrypted candidates that come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Distinct complete words, matched by stem.
    complete: Vec<Term>,
    /// The word being typed, matched as a prefix (2..=64 characters).
    prefix: Option<String>,
    /// Every kept word in query order (the prefix last), for the phrase boost.
    sequence: Vec<String>,
}

impl Query {
    /// Parses what the user typed, with the same analysis as messages (see
    /// [`terms`](crate::terms)).
    ///
    /// Every word is matched by its stem, except the last one when `text` does
    /// not end in whitespace: that one is being typed, and is matched as a
    /// prefix of a word (`"launch pl"` finds "launch plan" and "launch
    /// planning"). A type-ahead word of fewer than [`MIN_PREFIX_CHARS`]
    /// characters contributes nothing (it is not matched at all, not even as a
    /// complete word) until a second character is typed; one longer than
    /// [`MAX_PREFIX_CHARS`] is matched by the core on its first 12 characters
    /// and by [`rank`] on the whole of it. Words longer than
    /// [`MAX_WORD_CHARS`](crate::MAX_WORD_CHARS) are dropped, as in messages.
    pub fn parse(text: &str) -> Query {
        let stemmer = english_stemmer();
        let normalized = normalize(text);
        let mut words = Vec::new();
        for_each_word(&normalized, |w| words.push(w.to_owned()));

        let type_ahead = !text.ends_with(char::is_whitespace);
        let prefix = if type_ahead {
            words.pop().filter(|w| word_fits(w) && w.chars().nth(MIN_PREFIX_CHARS - 1).is_some())
        } else {
            None
        };
        words.retain(|w| word_fits(w));

        let mut seen = HashSet::new();
        let complete = words
            .iter()
            .filter(|w| seen.insert(w.as_str()))
            .take(MAX_TERMS)
            .map(|w| Term::new(w.clone(), stem(&stemmer, w)))
            .collect();
        let mut sequence = words;
        sequence.extend(prefix.clone());
        Query { complete, prefix, sequence }
    }

    /// The complete words of the query, matched by stem, distinct, in order.
    pub fn terms(&self) -> &[Term] {
        &self.complete
    }

    /// The word being typed, matched as a prefix, if any (at least 2
    /// characters).
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Whether the query has nothing to match on ([`Query::tokens`] is empty).
    /// The caller refuses such a query rather than sending it: to the core an
    /// empty token list would match every message.
    pub fn is_empty(&self) -> bool {
        self.complete.is_empty() && self.prefix.is_none()
    }

    /// The blinded tokens to send the core, sorted and without duplicates: the
    /// stem token of every complete word and the prefix token of the word being
    /// typed (its first [`MAX_PREFIX_CHARS`] characters). A message matches when
    /// its [`index_tokens`](crate::index_tokens) include all of them.
    ///
    /// Empty exactly when [`Query::is_empty`]; the caller must refuse to send
    /// an empty list.
    pub fn tokens(&self, key: &SearchKey) -> Vec<Token> {
        let hkey = key.hmac_key();
        let mut out: Vec<Token> = self.complete.iter().map(|t| Token::compute(&hkey, STEM_TAG, t.stem())).collect();
        if let Some(p) = &self.prefix {
            out.push(Token::compute(&hkey, PREFIX_TAG, prefix_at_most(p, MAX_PREFIX_CHARS)));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Ranks decrypted candidates for `query`, best first, with their scores.
///
/// The core's answer is not trusted: it may include messages that do not match
/// (a 2^-128 token collision, an index entry under a message that was since
/// edited, a bug, or a lie), so every document is checked again on its
/// plaintext, with the same analysis, and dropped unless it has every complete
/// query word (by stem) and a word starting with the whole type-ahead prefix.
/// An empty query ([`Query::is_empty`]) ranks nothing and returns an empty list.
///
/// The score is BM25 (k1 = 1.2, b = 0.75) over the query's terms, with document
/// frequencies and average length taken over `docs`. For the type-ahead
/// prefix, a word equal to it counts 1 and a longer word starting with it
/// counts 0.5 towards its term frequency. A document holding the query's words
/// in order and adjacent (the last one as a prefix when typing) has its score
/// multiplied by 1.25. Equal scores keep the order of `docs`.
pub fn rank<D: Clone>(query: &Query, docs: &[(D, &str)]) -> Vec<(D, f32)> {
    if query.is_empty() {
        return Vec::new();
    }
    let stemmer = english_stemmer();
    let n_terms = query.complete.len() + usize::from(query.prefix.is_some());

    struct DocStats {
        tf: Vec<f32>,
        len: usize,
        phrase: bool,
    }
    let stats: Vec<DocStats> = docs
        .iter()
        .map(|(_, text)| {
            let normalized = normalize(text);
            let mut words = Vec::new();
            for_each_word(&normalized, |w| {
                if word_fits(w) {
                    words.push(w.to_owned());
                }
            });
            let mut tf = vec![0f32; n_terms];
            let mut stems: HashMap<&str, String> = HashMap::new();
            for w in &words {
                let s = stems.entry(w).or_insert_with(|| stem(&stemmer, w));
                for (i, t) in query.complete.iter().enumerate() {
                    if t.stem() == s {
                        tf[i] += 1.0;
                    }
                }
                if let Some(p) = &query.prefix {
                    if w == p {
                        tf[n_terms - 1] += 1.0;
                    } else if w.starts_with(p.as_str()) {
                        tf[n_terms - 1] += PARTIAL_PREFIX_WEIGHT;
                    }
                }
            }
            let phrase = has_phrase(query, &words);
            DocStats { tf, len: words.len(), phrase }
        })
        .collect();

    let n = docs.len() as f32;
    let idf: Vec<f32> = (0..n_terms)
        .map(|i| {
            let df = stats.iter().filter(|s| s.tf[i] > 0.0).count() as f32;
            (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
        })
        .collect();
    let avg_len = (stats.iter().map(|s| s.len).sum::<usize>() as f32 / n).max(1.0);

    let mut out: Vec<(D, f32)> = docs
        .iter()
        .zip(&stats)
        .filter(|(_, s)| s.tf.iter().all(|&tf| tf > 0.0))
        .map(|((id, _), s)| {
            let norm = K1 * (1.0 - B + B * s.len as f32 / avg_len);
            let mut score: f32 = s.tf.iter().zip(&idf).map(|(&tf, &idf)| idf * tf * (K1 + 1.0) / (tf + norm)).sum();
            if s.phrase {
                score *= 1.0 + PHRASE_BOOST;
            }
            (id.clone(), score)
        })
        .collect();
    // Stable: equal scores keep the input order.
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// Whether `words` holds the query's words in order and adjacent (the last as
/// a prefix when the query is being typed). Only for queries of 2+ words.
fn has_phrase(query: &Query, words: &[String]) -> bool {
    let seq = &query.sequence;
    if seq.len() < 2 || words.len() < seq.len() {
        return false;
    }
    let last = seq.len() - 1;
    words.windows(seq.len()).any(|window| {
        window.iter().zip(seq).enumerate().all(|(j, (w, q))| {
            if j == last && query.prefix.is_some() {
                w.starts_with(q.as_str())
            } else {
                w == q
            }
        })
    })
}
