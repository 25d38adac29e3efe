//! # search: blinded search tokens for end-to-end encrypted spaces
//!
//! The core stores only ciphertext, yet every member of a space should be able
//! to search it, on any device, without downloading and decrypting its whole
//! history. This crate is the client's half of the answer:
//!
//! 1. When a client sends a message (or uploads a file, see [`extract_text`]),
//!    it computes the message's searchable terms — normalized, stemmed words,
//!    plus the prefixes of each word for type-ahead — and turns each into a
//!    *blinded* [`Token`] with [`index_tokens`]: a keyed hash, HMAC-SHA256
//!    truncated to 16 bytes, under the space's [`SearchKey`]. The tokens go to
//!    the core with the ciphertext; the core keeps postings `token → message`.
//! 2. A query is blinded the same way ([`Query::parse`], [`Query::tokens`]). The
//!    core returns the messages whose postings hold every query token.
//! 3. The client decrypts those candidates and [`rank`]s them locally, which
//!    also drops any that do not really match.
//!
//! ```
//! use search::{index_tokens, rank, Query, SearchKey};
//!
//! let key = SearchKey::derive(&[7u8; 32], "kms://acme/spaces/42/keys/3");
//! let message = "We launch the new Café menu on Monday";
//! let indexed = index_tokens(&key, message);
//!
//! let query = Query::parse("cafe laun"); // the user is still typing "laun…"
//! let sent = query.tokens(&key);
//! assert!(!sent.is_empty()); // an empty query is refused, never sent
//! assert!(sent.iter().all(|t| indexed.binary_search(t).is_ok()));
//!
//! let ranked = rank(&query, &[(1, message), (2, "nothing relevant")]);
//! assert_eq!(ranked.len(), 1);
//! assert_eq!(ranked[0].0, 1);
//! ```
//!
//! ## Why it is built this way
//!
//! - **Blinding.** The core sees tokens, never words: without the search key
//!   it can neither invert a token nor compute the token of a guessed word, so
//!   a dictionary attack needs the key. What it does learn (which messages
//!   share a term, how often, prefix chains, query and access patterns) is laid
//!   out in the crate's `README.md`, the threat model.
//! - **Per-space keys.** The search key is derived with HKDF-SHA256 from the
//!   space's content key (released by the enterprise's KMS to members only) and
//!   that key's URI: the same word gives unrelated tokens in two spaces, so the
//!   core cannot correlate terms across spaces, and only someone who can read
//!   a space can search it (or forge its index entries).
//! - **Re-keying.** When the space's content key rotates, the new key (new URI)
//!   gives a new search key and new tokens. Messages indexed under the old key
//!   stop matching queries under the new one until an indexing service, holding
//!   the keys, re-indexes the history under the newest key; a client that must
//!   search meanwhile can send one query per key version
//!   ([`SearchKey::key_uri`] says which version a key is). Rotation thus also
//!   limits how long the core can accumulate statistics on one set of tokens.
//! - **Sorted, capped output.** [`index_tokens`] returns a sorted set, so the
//!   token list says nothing about word order or repetition, and caps it
//!   ([`MAX_TERMS`], [`MAX_TOKENS_PER_MESSAGE`]) so that the number of tokens,
//!   which the core sees, is bounded.
//! - **Ranking on the client.** Only the client has the plaintext, so relevance
//!   is computed there, BM25-like, on the decrypted candidates; the core's job
//!   is only set intersection.
//!
//! ## Why not tantivy
//!
//! Tantivy's analyzers would do, but tantivy is a whole search engine (index
//! files, a query language, a thread pool, dozens of crates) and this is a
//! client library that needs only the analysis step and no index at all. The
//! same steps are built here from the crates tantivy itself uses or mirrors:
//! `unicode-normalization`, `unicode-segmentation` (UAX #29 words) and
//! `rust-stemmers` (the Snowball stemmers behind tantivy's `Stemmer` filter).
//!
//! ## Stability
//!
//! Tokens are only useful if every client computes the same ones, so the whole
//! analysis ([`terms`]) and the token construction are part of the format named
//! by the `custos-search-v1` HKDF salt. Changing either (another stemmer,
//! another cap, another Unicode version whose tables differ for characters
//! that appear in a space) means a new version and a re-index.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod analyze;
mod extract;
mod key;
mod query;

pub use analyze::{
    index_tokens, terms, Term, MAX_PREFIX_CHARS, MAX_TERMS, MAX_TOKENS_PER_MESSAGE, MAX_WORD_CHARS, MIN_PREFIX_CHARS,
};
pub use extract::{extract_text, MAX_TEXT_BYTES};
pub use key::{SearchKey, Token, SEARCH_KEY_LEN, SEARCH_KEY_SALT, TOKEN_LEN};
pub use query::{rank, Query};

/// What can go wrong: only reading a token from its wire form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The string is not unpadded, canonical base64url.
    #[error("search token is not unpadded base64url")]
    InvalidBase64,
    /// The string decodes to the wrong number of bytes.
    #[error("search token has {0} bytes, expected {TOKEN_LEN}")]
    InvalidTokenLength(usize),
}

#[cfg(test)]
mod tests;
