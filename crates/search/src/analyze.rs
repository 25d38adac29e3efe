//! Text analysis: normalization, word splitting, stemming, and the tokens of a
//! message.

use std::collections::HashSet;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

use crate::key::{SearchKey, Token, PREFIX_TAG, STEM_TAG};

/// At most this many distinct terms are taken from one text (the first ones,
/// in text order); the rest of a longer text is not searchable.
pub const MAX_TERMS: usize = 1000;

/// Words longer than this many characters (after normalization) are dropped:
/// they are hashes, keys, URLs run together and the like, and each would cost
/// [`MAX_PREFIX_CHARS`] tokens.
pub const MAX_WORD_CHARS: usize = 64;

/// Shortest prefix (in characters) that gets a token: a one-character prefix
/// would match a large part of any space and leak the first letters.
pub const MIN_PREFIX_CHARS: usize = 2;

/// Longest prefix (in characters) that gets a token. A query whose last word is
/// longer is matched on its first `MAX_PREFIX_CHARS` characters by the core and
/// on the whole word by [`rank`](crate::rank).
pub const MAX_PREFIX_CHARS: usize = 12;

/// At most this many tokens are computed for one message; see [`index_tokens`]
/// for which are dropped.
pub const MAX_TOKENS_PER_MESSAGE: usize = 2048;

// Every stem token always fits, so only prefix tokens are ever dropped.
const _: () = assert!(MAX_TERMS <= MAX_TOKENS_PER_MESSAGE);

/// A searchable term of a text: a normalized word and its stem.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Term {
    word: String,
    stem: String,
}

impl Term {
    pub(crate) fn new(word: String, stem: String) -> Term {
        Term { word, stem }
    }

    /// The word as normalized (NFKC, lowercase, no combining marks, only
    /// alphanumeric characters). Prefix tokens are prefixes of this.
    pub fn word(&self) -> &str {
        &self.word
    }

    /// The English Snowball stem of [`Term::word`], or the word itself for
    /// numbers and words that are not all ASCII. The stem token is of this.
    pub fn stem(&self) -> &str {
        &self.stem
    }
}

/// The distinct searchable terms of `text`, in order of first appearance, at
/// most [`MAX_TERMS`] of them.
///
/// The analysis (the same for messages and queries):
/// 1. NFKC, then Unicode lowercase, then NFD with every combining mark
///    (General_Category M) removed, then NFC: `"Café"`, `"CAFE"`, `"cafe\u{301}"`
///    and `"ｃａｆé"` all become `"cafe"`.
/// 2. Split on Unicode (UAX #29) word boundaries, keeping the words that have a
///    letter or digit. Inside such a word, apostrophes (`'`, `’`), middle dots,
///    soft hyphens and zero-width joiners/non-joiners are removed (`"don't"` is
///    `"dont"`), and any other character that is not alphanumeric splits it
///    (`"snake_case"` is `"snake"`, `"case"`; `"3.14"` is `"3"`, `"14"`).
///    Scripts written without spaces (Chinese, Japanese kana) come out one
///    character per word.
/// 3. Words longer than [`MAX_WORD_CHARS`] characters are dropped.
/// 4. Stem: numbers (all characters numeric) and words with any non-ASCII
///    character are their own stem; other words are stemmed with the English
///    Snowball stemmer (`"running"`, `"runs"` and `"run"` all stem to `"run"`).
pub fn terms(text: &str) -> Vec<Term> {
    let stemmer = english_stemmer();
    let normalized = normalize(text);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for_each_word(&normalized, |word| {
        if out.len() >= MAX_TERMS || !word_fits(word) || !seen.insert(word.to_owned()) {
            return;
        }
        out.push(Term { word: word.to_owned(), stem: stem(&stemmer, word) });
    });
    out
}

/// The blinded tokens under which a message with this text is indexed: sorted,
/// without duplicates, at most [`MAX_TOKENS_PER_MESSAGE`].
///
/// For every distinct [term](terms): the stem token `HMAC(key, "s\0" ‖ stem)`
/// and the prefix tokens `HMAC(key, "p\0" ‖ prefix)` of the normalized word, for
/// every prefix of [`MIN_PREFIX_CHARS`]`..=min(len, `[`MAX_PREFIX_CHARS`]`)`
/// characters (so a word of up to 12 characters also has its whole self as a
/// prefix token).
///
/// The output is sorted by token value, which is unrelated to word order, so
/// the core learns the set of tokens and nothing about positions.
///
/// **Cap.** Stem tokens are always kept (at most [`MAX_TERMS`] of them). Prefix
/// tokens are added one prefix length at a time, shortest first: all distinct
/// 2-character prefixes, then all 3-character ones, and so on; the first length
/// whose tokens would take the total past [`MAX_TOKENS_PER_MESSAGE`] is dropped
/// whole, with every longer one. A message is thus either prefix-searchable up
/// to some length `L` for all of its words or not at all past `L`, never for
/// some words only. A message needs several hundred distinct words before this
/// happens; for such messages a query whose last word is longer than `L` finds
/// it only once the word is completed (a query ending in whitespace matches by
/// stem, which is never dropped).
pub fn index_tokens(key: &SearchKey, text: &str) -> Vec<Token> {
    let terms = terms(text);
    let hkey = key.hmac_key();
    let mut out: Vec<Token> = terms.iter().map(|t| Token::compute(&hkey, STEM_TAG, &t.stem)).collect();
    out.sort_unstable();
    out.dedup();

    let mut level: HashSet<&str> = HashSet::new();
    for len in MIN_PREFIX_CHARS..=MAX_PREFIX_CHARS {
        level.clear();
        level.extend(terms.iter().filter_map(|t| prefix_exact(&t.word, len)));
        if level.is_empty() {
            break;
        }
        // Distinct prefixes of the same length give distinct tokens (up to a
        // 2^-128 collision), and never collide with stem tokens (another tag),
        // nor with prefixes of another length (another text).
        if out.len() + level.len() > MAX_TOKENS_PER_MESSAGE {
            break;
        }
        out.extend(level.iter().map(|p| Token::compute(&hkey, PREFIX_TAG, p)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Step 1 of [`terms`]: NFKC, lowercase, strip combining marks, NFC.
pub(crate) fn normalize(text: &str) -> String {
    let nfkc: String = text.nfkc().collect();
    nfkc.to_lowercase().nfd().filter(|c| !is_combining_mark(*c)).nfc().collect()
}

/// Step 2 of [`terms`], over already [normalized](normalize) text: calls `f`
/// with every word in order, repeats and over-long words included.
pub(crate) fn for_each_word(normalized: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    for segment in normalized.unicode_words() {
        for c in segment.chars() {
            if c.is_alphanumeric() {
                word.push(c);
            } else if !is_joiner(c) && !word.is_empty() {
                f(&word);
                word.clear();
            }
        }
        if !word.is_empty() {
            f(&word);
            word.clear();
        }
    }
}

/// Characters removed from inside a word rather than splitting it.
fn is_joiner(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2019}' // apostrophe, right single quotation mark
            | '\u{00B7}' // middle dot (Catalan l·l; NFKC maps U+0387 to it)
            | '\u{00AD}' // soft hyphen
            | '\u{200C}' | '\u{200D}' // zero width non-joiner, joiner
            | '\u{2060}' // word joiner
            | '\u{FEFF}' // zero width no-break space
    )
}

/// Step 3 of [`terms`].
pub(crate) fn word_fits(word: &str) -> bool {
    word.chars().nth(MAX_WORD_CHARS).is_none()
}

/// Step 4 of [`terms`].
pub(crate) fn stem(stemmer: &Stemmer, word: &str) -> String {
    if !word.is_ascii() || word.chars().all(char::is_numeric) {
        return word.to_owned();
    }
    let stemmed = stemmer.stem(word);
    if stemmed.is_empty() {
        word.to_owned()
    } else {
        stemmed.into_owned()
    }
}

pub(crate) fn english_stemmer() -> Stemmer {
    Stemmer::create(Algorithm::English)
}

/// The first `len` characters of `word`, if it has at least `len`.
fn prefix_exact(word: &str, len: usize) -> Option<&str> {
    match word.char_indices().nth(len) {
        Some((end, _)) => Some(&word[..end]),
        None if word.chars().count() == len => Some(word),
        None => None,
    }
}

/// The first `min(len, chars)` characters of `word`.
pub(crate) fn prefix_at_most(word: &str, len: usize) -> &str {
    match word.char_indices().nth(len) {
        Some((end, _)) => &word[..end],
        None => word,
    }
}
