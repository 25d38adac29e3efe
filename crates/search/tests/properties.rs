//! Properties of the public API over arbitrary text.

use proptest::prelude::*;
use search::{
    index_tokens, rank, terms, Query, SearchKey, Token, MAX_PREFIX_CHARS, MAX_TERMS, MAX_TOKENS_PER_MESSAGE,
    MAX_WORD_CHARS, MIN_PREFIX_CHARS,
};

fn key() -> SearchKey {
    SearchKey::derive(&[5u8; 32], "kms://acme/spaces/5/keys/1")
}

/// Every token of the query is in the (sorted) index: the core would return
/// the message.
fn all_in(index: &[Token], query: &[Token]) -> bool {
    query.iter().all(|t| index.binary_search(t).is_ok())
}

fn first_chars(word: &str, n: usize) -> String {
    word.chars().take(n).collect()
}

/// Text of several kinds: anything at all, Latin text with accents and
/// punctuation, and mixed scripts.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9éÉèüÜßøœçÇñ ,.;:!?'’_()/-]{0,300}",
        "[a-zα-ωΑ-Ωа-яА-Я東京語タワーカナ한국어0-9 \t\n.]{0,200}",
        proptest::collection::vec("\\PC{1,20}", 0..40).prop_map(|w| w.join(" ")),
    ]
}

/// Assertions that hold for the index of any text.
fn check_shape(index: &[Token], text: &str) {
    assert!(index.len() <= MAX_TOKENS_PER_MESSAGE);
    assert!(index.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    let t = terms(text);
    assert!(t.len() <= MAX_TERMS);
    assert!(t.iter().all(|t| {
        let n = t.word().chars().count();
        (1..=MAX_WORD_CHARS).contains(&n) && !t.stem().is_empty()
    }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every query made of words of the text finds it: a word typed complete,
    /// typed without the final space, or any prefix of 2+ characters of it as
    /// the word being typed, alone or after another word of the text.
    #[test]
    fn queries_from_the_text_match_its_index(text in text()) {
        let key = key();
        let index = index_tokens(&key, &text);
        check_shape(&index, &text);
        let t = terms(&text);
        prop_assume!(t.len() < 150); // far from the caps, so nothing is dropped
        for (i, term) in t.iter().enumerate() {
            let w = term.word();
            let complete = Query::parse(&format!("{w} ")).tokens(&key);
            prop_assert_eq!(complete.len(), 1, "{:?}", w);
            prop_assert!(all_in(&index, &complete), "complete {:?}", w);
            prop_assert!(all_in(&index, &Query::parse(w).tokens(&key)), "typed {:?}", w);
            let n = w.chars().count();
            for len in MIN_PREFIX_CHARS..=n.min(MAX_PREFIX_CHARS + 2) {
                let p = first_chars(w, len);
                let q = Query::parse(&p).tokens(&key);
                prop_assert_eq!(q.len(), 1, "{:?}", p);
                prop_assert!(all_in(&index, &q), "prefix {:?} of {:?}", p, w);
            }
            let other = t[(i + 1) % t.len()].word();
            let two = format!("{other} {}", first_chars(w, 2));
            let q = Query::parse(&two);
            prop_assert!(!q.is_empty() || n < 2, "{:?}", two);
            prop_assert!(all_in(&index, &q.tokens(&key)), "{:?}", two);
        }
    }

    /// The words of the text as the user would type them (whitespace-separated
    /// runs of the raw text, not yet normalized) find it too, and the ranking
    /// of the decrypted text keeps it.
    #[test]
    fn raw_fragments_match_and_rank(text in text()) {
        let key = key();
        let index = index_tokens(&key, &text);
        prop_assume!(terms(&text).len() < 150);
        for fragment in text.split_whitespace().take(50) {
            let query = Query::parse(&format!("{fragment} "));
            prop_assert!(all_in(&index, &query.tokens(&key)), "{:?}", fragment);
            if !query.is_empty() {
                let ranked = rank(&query, &[((), text.as_str())]);
                prop_assert_eq!(ranked.len(), 1, "{:?}", fragment);
                prop_assert!(ranked[0].1.is_finite() && ranked[0].1 > 0.0);
            }
            let typing = Query::parse(fragment);
            prop_assert!(all_in(&index, &typing.tokens(&key)), "typing {:?}", fragment);
            if !typing.is_empty() {
                prop_assert_eq!(rank(&typing, &[((), text.as_str())]).len(), 1, "{:?}", fragment);
            }
        }
    }

    /// Rank never panics, keeps only candidates it was given, and orders by
    /// score.
    #[test]
    fn rank_is_well_behaved(query in text(), docs in proptest::collection::vec(text(), 0..8)) {
        let query = Query::parse(&query);
        let docs: Vec<(usize, &str)> = docs.iter().map(|d| d.as_str()).enumerate().collect();
        let ranked = rank(&query, &docs);
        prop_assert!(ranked.len() <= docs.len());
        prop_assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1));
        prop_assert!(ranked.iter().all(|(_, s)| s.is_finite() && *s > 0.0));
        if query.is_empty() {
            prop_assert!(ranked.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Long texts: the caps hold, and every word that is indexed is found by
    /// stem (stem tokens are never dropped).
    #[test]
    fn caps_hold_on_long_texts(words in proptest::collection::vec("[a-z]{1,16}|[0-9]{1,6}|\\PC{1,8}", 800..3000)) {
        let text = words.join(" ");
        let key = key();
        let index = index_tokens(&key, &text);
        check_shape(&index, &text);
        let t = terms(&text);
        for term in t.iter().step_by(7) {
            let q = Query::parse(&format!("{} ", term.word())).tokens(&key);
            prop_assert!(all_in(&index, &q), "{:?}", term);
        }
    }
}
