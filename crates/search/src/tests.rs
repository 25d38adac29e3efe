use std::collections::BTreeSet;

use crate::*;

fn key() -> SearchKey {
    SearchKey::derive(&[1u8; 32], "kms://acme/spaces/1/keys/1")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether every token of `query` is among the `indexed` tokens of a message:
/// what the core decides.
fn core_matches(indexed: &[Token], query: &[Token]) -> bool {
    assert!(indexed.windows(2).all(|w| w[0] < w[1]), "index is sorted and distinct");
    !query.is_empty() && query.iter().all(|t| indexed.binary_search(t).is_ok())
}

fn matches(key: &SearchKey, text: &str, query: &str) -> bool {
    core_matches(&index_tokens(key, text), &Query::parse(query).tokens(key))
}

fn words(text: &str) -> Vec<String> {
    terms(text).iter().map(|t| t.word().to_owned()).collect()
}

// ---- known answers, computed independently with Python 3.11's hmac/hashlib ----

// The vectors below were computed with:
//
// python3 -c '
// import hmac,hashlib,base64
// ikm=bytes(range(32)); uri=b"kms://acme/spaces/42/keys/3"
// prk=hmac.new(b"custos-search-v1",ikm,hashlib.sha256).digest()    # HKDF-Extract
// okm=hmac.new(prk,uri+b"\x01",hashlib.sha256).digest()            # HKDF-Expand, L=32
// print(okm.hex())
// for m in [b"s\x00run", b"p\x00laun", b"p\x00caf"]:
//   t=hmac.new(okm,m,hashlib.sha256).digest()[:16]; print(m, t.hex(), base64.urlsafe_b64encode(t).rstrip(b"=").decode())
// '
fn kat_key() -> SearchKey {
    let ikm: [u8; 32] = std::array::from_fn(|i| i as u8);
    SearchKey::derive(&ikm, "kms://acme/spaces/42/keys/3")
}

#[test]
fn hkdf_known_answer() {
    assert_eq!(hex(kat_key().bytes_for_test()), "4deab170d9f601d983de2b41786e92b3a51edf36d95bc03b8e1a7ae33ab68411");
}

#[test]
fn stem_token_known_answer() {
    let key = kat_key();
    let expected = "fd620796962ff02663202d42756173b6";
    // "running " is a complete word: its stem "run" is queried.
    let q = Query::parse("Running ").tokens(&key);
    assert_eq!(q.len(), 1);
    assert_eq!(hex(q[0].as_bytes()), expected);
    assert_eq!(q[0].to_base64url(), "_WIHlpYv8CZjIC1CdWFztg");
    assert!(index_tokens(&key, "runs").iter().any(|t| hex(t.as_bytes()) == expected));
}

#[test]
fn prefix_token_known_answer() {
    let key = kat_key();
    let q = Query::parse("laun").tokens(&key);
    assert_eq!(q.len(), 1);
    assert_eq!(hex(q[0].as_bytes()), "0ffc921f4c25af6d05fb00c580fa49f3");
    assert_eq!(q[0].to_base64url(), "D_ySH0wlr20F-wDFgPpJ8w");
    // Normalized first: "CAF" typed is the prefix "caf".
    let q = Query::parse("CAF").tokens(&key);
    assert_eq!(q[0].to_base64url(), "8R3hOYXBPKyxSNE6Bt-BjA");
}

// ---- normalization, stemming, prefixes ----

#[test]
fn normalization_folds_case_accents_and_compatibility_forms() {
    let key = key();
    let stem_token = |text: &str| {
        let q = Query::parse(&format!("{text} ")).tokens(&key);
        assert_eq!(q.len(), 1, "{text:?}");
        q[0]
    };
    let cafe = stem_token("cafe");
    for text in ["Café", "CAFE", "café", "cafe\u{301}", "ＣＡＦＥ", "CAFÉ"] {
        assert_eq!(stem_token(text), cafe, "{text:?}");
        assert!(index_tokens(&key, text).contains(&cafe), "{text:?}");
    }
    assert_ne!(stem_token("cafes"), stem_token("coffee"));
    assert_eq!(words("Café"), ["cafe"]);
    assert_eq!(words("ﬁnance"), ["finance"], "NFKC expands the ligature");
}

#[test]
fn stemming_joins_inflections() {
    let key = key();
    let run = Query::parse("run ").tokens(&key);
    for text in ["running", "runs", "run", "RUN", "Running late"] {
        assert!(core_matches(&index_tokens(&key, text), &run), "{text:?}");
    }
    for text in ["running", "runs", "RUN"] {
        assert!(matches(&key, "we run daily", &format!("{text} ")), "{text:?}");
    }
    assert!(!matches(&key, "the runner", "run "), "'runner' stems to 'runner'");
    let t = terms("Running runs");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].word(), "running");
    assert_eq!(t[0].stem(), "run");
    assert_eq!(t[1].stem(), "run");
}

#[test]
fn numbers_are_words_and_not_stemmed() {
    let t = terms("Q3 2024 revenue: 1,500 units; 3.14");
    let pairs: Vec<(&str, &str)> = t.iter().map(|t| (t.word(), t.stem())).collect();
    assert_eq!(
        pairs,
        [
            ("q3", "q3"),
            ("2024", "2024"),
            ("revenue", "revenu"),
            ("1", "1"),
            ("500", "500"),
            ("units", "unit"),
            ("3", "3"),
            ("14", "14")
        ]
    );
    let key = key();
    assert!(matches(&key, "due 2024-05-01", "2024 "));
    assert!(matches(&key, "due 2024-05-01", "20"), "numbers have prefix tokens");
    assert!(!matches(&key, "due 2024-05-01", "2025 "));
}

#[test]
fn word_splitting() {
    assert_eq!(words("Don’t stop, don't!"), ["dont", "stop"]);
    assert_eq!(words("snake_case e-mail"), ["snake", "case", "e", "mail"]);
    assert_eq!(words("hy\u{AD}phen zero\u{200C}width"), ["hyphen", "zerowidth"]);
    assert_eq!(words("zero\u{200B}space"), ["zero", "space"], "a word break");
    assert_eq!(words("東京タワー"), ["東", "京", "タワー"]);
    assert_eq!(words("Ελληνικά ΟΔΟΣ"), ["ελληνικα", "οδος"]);
    assert_eq!(words("🎉 -- ... "), Vec::<String>::new());
    assert_eq!(words("the the THE The"), ["the"], "distinct");
}

#[test]
fn prefixes_match_the_word_being_typed() {
    let key = key();
    let text = "Launch checklist for Monday";
    for q in ["laun", "la", "launch", "LAUN", "checklist mon", "launch chec"] {
        assert!(matches(&key, text, q), "{q:?}");
    }
    assert!(!matches(&key, text, "lunch"));
    assert!(!matches(&key, text, "laun "), "a complete word is matched by stem");
    assert!(!matches(&key, text, "aunch"), "prefixes, not substrings");
    assert!(!matches(&key, text, "mon checklist"), "only the last word is a prefix");
    assert!(matches(&key, text, "monday checklist"));
}

#[test]
fn query_shape() {
    let q = Query::parse("Launch pl");
    assert_eq!(q.terms().len(), 1);
    assert_eq!(q.terms()[0].word(), "launch");
    assert_eq!(q.prefix(), Some("pl"));

    let q = Query::parse("Launch pl ");
    assert_eq!(q.prefix(), None);
    assert_eq!(q.terms().len(), 2);

    // A one-character word being typed contributes nothing.
    let q = Query::parse("launch p");
    assert_eq!(q.prefix(), None);
    assert_eq!(q.terms().len(), 1);
    assert_eq!(q.tokens(&key()), Query::parse("launch ").tokens(&key()));
}

#[test]
fn empty_queries_have_no_tokens() {
    let key = key();
    for q in ["", "   ", "a", "!!", "🎉", "x"] {
        let query = Query::parse(q);
        assert!(query.is_empty(), "{q:?}");
        assert!(query.tokens(&key).is_empty(), "{q:?}");
        assert!(rank(&query, &[(0, "a x")]).is_empty(), "{q:?}");
    }
    // But a complete one-letter word is a word.
    assert_eq!(Query::parse("a ").tokens(&key).len(), 1);
}

#[test]
fn long_prefix_is_cut_to_twelve_characters() {
    let key = key();
    let typed = "internationalization";
    let q = Query::parse(typed).tokens(&key);
    assert_eq!(q, Query::parse(&typed[..MAX_PREFIX_CHARS]).tokens(&key));
    assert!(matches(&key, "internationalization", typed));
    // The core cannot tell these apart; rank (on the plaintext) can.
    assert!(matches(&key, "internationally", typed));
    assert!(rank(&Query::parse(typed), &[(0, "internationally")]).is_empty());
    // Characters, not bytes: twelve two-byte characters.
    let greek = "αβγδεζηθικλμνξ";
    let cut: String = greek.chars().take(12).collect();
    assert_eq!(Query::parse(greek).tokens(&key), Query::parse(&cut).tokens(&key));
    assert!(matches(&key, greek, greek));
}

#[test]
fn a_word_not_in_the_text_is_not_in_the_index() {
    let key = key();
    let index = index_tokens(&key, "apples and cherries");
    for q in ["banana ", "banana", "ba", "apple banana ", "cherry pe"] {
        let tokens = Query::parse(q).tokens(&key);
        assert!(!tokens.is_empty());
        assert!(!core_matches(&index, &tokens), "{q:?}");
    }
    let banana = Query::parse("banana ").tokens(&key);
    assert!(index.binary_search(&banana[0]).is_err());
    assert!(core_matches(&index, &Query::parse("apple cherry ").tokens(&key)));
}

// ---- keys ----

#[test]
fn tokens_are_per_space() {
    let a = SearchKey::derive(&[1u8; 32], "kms://acme/spaces/1/keys/1");
    let b = SearchKey::derive(&[2u8; 32], "kms://acme/spaces/2/keys/1");
    let text = "the quarterly launch plan";
    let ta: BTreeSet<Token> = index_tokens(&a, text).into_iter().collect();
    let tb: BTreeSet<Token> = index_tokens(&b, text).into_iter().collect();
    assert_eq!(ta.len(), tb.len());
    assert!(ta.is_disjoint(&tb));
    assert!(!core_matches(&index_tokens(&b, text), &Query::parse("launch").tokens(&a)));
    assert!(core_matches(&index_tokens(&b, text), &Query::parse("launch").tokens(&b)));
}

#[test]
fn tokens_differ_across_key_uris_of_the_same_bytes() {
    let v1 = SearchKey::derive(&[9u8; 32], "kms://acme/spaces/1/keys/1");
    let v2 = SearchKey::derive(&[9u8; 32], "kms://acme/spaces/1/keys/2");
    assert_ne!(v1.bytes_for_test(), v2.bytes_for_test());
    assert_eq!(v2.key_uri(), "kms://acme/spaces/1/keys/2");
    let t1: BTreeSet<Token> = index_tokens(&v1, "launch").into_iter().collect();
    let t2: BTreeSet<Token> = index_tokens(&v2, "launch").into_iter().collect();
    assert!(t1.is_disjoint(&t2));
    // After a rotation, old index entries stop matching until re-indexed.
    assert!(!core_matches(&index_tokens(&v1, "launch"), &Query::parse("launch").tokens(&v2)));
}

#[test]
fn search_key_debug_is_redacted() {
    let key = kat_key();
    let debug = format!("{key:?}");
    assert!(debug.contains("redacted"), "{debug}");
    assert!(debug.contains("kms://acme/spaces/42/keys/3"), "{debug}");
    let bytes = hex(key.bytes_for_test());
    assert!(!debug.to_lowercase().contains(&bytes[..8]), "{debug}");
    let decimal = format!("{:?}", key.bytes_for_test());
    assert!(!debug.contains(&decimal), "{debug}");
}

// ---- index shape and caps ----

#[test]
fn index_is_sorted_deduplicated_and_order_free() {
    let key = key();
    let a = index_tokens(&key, "alpha beta alpha gamma");
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(a, index_tokens(&key, "Gamma BETA alpha"));
    // alpha: stem + al alp alph alpha; beta: stem + be bet beta; gamma: stem +
    // ga gam gamm gamma.
    assert_eq!(a.len(), 3 + 4 + 3 + 4);
    // "plan" and "planning" share their stem and the prefixes pl pla plan:
    // one stem token and pl pla plan plann planni plannin planning.
    let p = index_tokens(&key, "plan planning");
    assert_eq!(p.len(), 1 + 7);
    assert!(index_tokens(&key, "").is_empty());
    assert!(index_tokens(&key, "!!! 🎉").is_empty());
}

#[test]
fn stem_and_prefix_tokens_are_domain_separated() {
    let key = key();
    // "ab" is both a stem (of the word "ab") and a prefix (of "ab" and "abc").
    let stem = Query::parse("ab ").tokens(&key);
    let prefix = Query::parse("ab").tokens(&key);
    assert_ne!(stem, prefix);
    assert!(matches(&key, "abc", "ab"));
    assert!(!matches(&key, "abc", "ab "));
}

#[test]
fn over_long_words_are_dropped() {
    let key = key();
    let w64 = "a".repeat(MAX_WORD_CHARS);
    let w65 = "b".repeat(MAX_WORD_CHARS + 1);
    let text = format!("{w64} {w65} short");
    assert_eq!(words(&text), [w64.clone(), "short".to_owned()]);
    assert!(matches(&key, &text, &format!("{w64} ")));
    assert!(!matches(&key, &text, &format!("{w65} ")));
    assert!(!matches(&key, &text, "bb"));
    // 64 characters of 2 bytes each is still 64 characters.
    let e64 = "é".repeat(MAX_WORD_CHARS);
    assert_eq!(words(&e64), ["e".repeat(MAX_WORD_CHARS)]);
    let omega64 = "ω".repeat(MAX_WORD_CHARS);
    assert_eq!(words(&omega64), std::slice::from_ref(&omega64));
}

/// `n` distinct 12-letter words: three letters counting up in base 26, then
/// nine `q`s (which no English suffix rule touches).
fn distinct_words(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let l = |d: usize| char::from(b'a' + (d % 26) as u8);
            format!("{}{}{}qqqqqqqqq", l(i / 676), l(i / 26), l(i))
        })
        .collect()
}

#[test]
fn terms_are_capped() {
    let words = distinct_words(MAX_TERMS + 500);
    let text = words.join(" ");
    let t = terms(&text);
    assert_eq!(t.len(), MAX_TERMS);
    assert_eq!(t[0].word(), words[0]);
    assert_eq!(t[MAX_TERMS - 1].word(), words[MAX_TERMS - 1]);
    // Repeats do not use up the cap.
    let repeated = format!("{} {text}", words[0]);
    assert_eq!(terms(&repeated).len(), MAX_TERMS);

    let key = key();
    let index = index_tokens(&key, &text);
    assert!(index.len() <= MAX_TOKENS_PER_MESSAGE);
    for w in &words[..MAX_TERMS] {
        assert!(core_matches(&index, &Query::parse(&format!("{w} ")).tokens(&key)), "{w}");
    }
    let past = &words[MAX_TERMS];
    assert!(!core_matches(&index, &Query::parse(&format!("{past} ")).tokens(&key)));
}

#[test]
fn token_cap_drops_the_longest_prefixes_first() {
    let words = distinct_words(MAX_TERMS);
    let key = key();
    let index = index_tokens(&key, &words.join(" "));
    // 1000 stems + 39 distinct 2-letter prefixes + 1000 3-letter prefixes =
    // 2039 fit; the 1000 4-letter prefixes would not, so they and all longer
    // ones are dropped.
    assert_eq!(index.len(), 1000 + 39 + 1000);
    for w in &words {
        assert!(core_matches(&index, &Query::parse(&format!("{w} ")).tokens(&key)));
        assert!(core_matches(&index, &Query::parse(&w[..2]).tokens(&key)));
        assert!(core_matches(&index, &Query::parse(&w[..3]).tokens(&key)));
        for len in 4..=MAX_PREFIX_CHARS {
            assert!(!core_matches(&index, &Query::parse(&w[..len]).tokens(&key)), "{len}");
        }
    }
    // A shorter message keeps every prefix.
    let small = index_tokens(&key, &words[..100].join(" "));
    assert!(core_matches(&small, &Query::parse(&words[0]).tokens(&key)));
}

// ---- tokens on the wire ----

#[test]
fn token_base64url_round_trip_and_errors() {
    let t = Query::parse("laun").tokens(&kat_key())[0];
    let s = t.to_base64url();
    assert_eq!(s.len(), 22);
    assert_eq!(Token::from_base64url(&s), Ok(t));
    assert_eq!(t.to_string(), s);
    assert_eq!(format!("{t:?}"), format!("Token({s})"));
    assert_eq!(Token::from_bytes(*t.as_bytes()), t);

    assert_eq!(Token::from_base64url("AAAA"), Err(Error::InvalidTokenLength(3)));
    assert_eq!(Token::from_base64url(""), Err(Error::InvalidTokenLength(0)));
    let long = "A".repeat(24);
    assert_eq!(Token::from_base64url(&long), Err(Error::InvalidTokenLength(18)));
    assert_eq!(Token::from_base64url("D_ySH0wlr20F+wDFgPpJ8w"), Err(Error::InvalidBase64));
    assert_eq!(Token::from_base64url("D_ySH0wlr20F-wDFgPpJ8w=="), Err(Error::InvalidBase64));
    // Non-canonical: the last character carries 4 unused bits, which must be 0.
    assert_eq!(Token::from_base64url("D_ySH0wlr20F-wDFgPpJ8x"), Err(Error::InvalidBase64));
}

#[test]
fn token_serde_is_the_base64url_string() {
    let t = Query::parse("laun").tokens(&kat_key())[0];
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, "\"D_ySH0wlr20F-wDFgPpJ8w\"");
    assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
    let list: Vec<Token> = serde_json::from_str("[\"D_ySH0wlr20F-wDFgPpJ8w\"]").unwrap();
    assert_eq!(list, [t]);
    assert!(serde_json::from_str::<Token>("\"AAAA\"").is_err());
    assert!(serde_json::from_str::<Token>("12").is_err());
    let err = serde_json::from_str::<Token>("\"!!\"").unwrap_err().to_string();
    assert!(err.contains("base64url"), "{err}");
}

// ---- rank ----

#[test]
fn rank_puts_the_better_match_first_and_drops_non_matches() {
    let docs = [
        ("weather", "The weather is nice today, launch the kite"),
        ("scattered", "Plan: we need a cake for Friday. Also, the launch of the new site was delayed again because the team is still finishing the copy and the images"),
        ("phrase", "The launch plan is ready"),
        ("plan-only", "A plan without the word"),
        ("twice", "launch plan, and the launch plan review"),
    ];
    let ranked = rank(&Query::parse("launch plan "), &docs);
    let ids: Vec<&str> = ranked.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["twice", "phrase", "scattered"]);
    assert!(ranked.windows(2).all(|w| w[0].1 > w[1].1), "{ranked:?}");
    assert!(ranked.iter().all(|(_, s)| s.is_finite() && *s > 0.0));
}

#[test]
fn rank_phrase_boost() {
    // Same words, same length: only the order differs.
    let docs = [(0, "plan the launch"), (1, "launch the plan"), (2, "the launch plan")];
    let ranked = rank(&Query::parse("launch plan"), &docs);
    assert_eq!(ranked.len(), 3);
    assert_eq!(ranked[0].0, 2, "{ranked:?}");
    assert_eq!(ranked[1].1, ranked[2].1);
}

#[test]
fn rank_ties_keep_input_order() {
    let docs = [(3, "alpha beta"), (1, "beta alpha"), (2, "ALPHA, Beta"), (0, "gamma")];
    let ranked = rank(&Query::parse("alpha "), &docs);
    let ids: Vec<i32> = ranked.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [3, 1, 2]);
    assert_eq!(ranked[0].1, ranked[2].1);
}

#[test]
fn rank_prefix_matches() {
    let docs = [("launcher", "the launcher crashed"), ("laun", "laun is a word here"), ("lunch", "lunch at noon")];
    let ranked = rank(&Query::parse("laun"), &docs);
    let ids: Vec<&str> = ranked.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["laun", "launcher"], "an exact word beats a longer one");
    // Stems: "running" in the query finds "runs".
    let ranked = rank(&Query::parse("running "), &[(0, "she runs"), (1, "the runner")]);
    assert_eq!(ranked.len(), 1);
    assert_eq!(ranked[0].0, 0);
}

#[test]
fn rank_agrees_with_the_core_on_honest_candidates() {
    let key = key();
    let corpus = ["Café opening on Monday", "the cafeteria menu", "Monday's launch", "nothing to see"];
    for q in ["cafe", "caf", "monday ", "mon", "launch mon", "cafe mon"] {
        let query = Query::parse(q);
        let tokens = query.tokens(&key);
        let from_core: Vec<(usize, &str)> = corpus
            .iter()
            .enumerate()
            .filter(|(_, text)| core_matches(&index_tokens(&key, text), &tokens))
            .map(|(i, t)| (i, *t))
            .collect();
        assert!(!from_core.is_empty(), "{q:?}");
        let ranked = rank(&query, &from_core);
        assert_eq!(ranked.len(), from_core.len(), "{q:?}");
    }
}

// ---- extract_text ----

#[test]
fn extract_declared_text() {
    assert_eq!(extract_text(b"hello world", Some("text/plain")).as_deref(), Some("hello world"));
    assert_eq!(extract_text(b"# Title", Some("Text/Markdown; charset=UTF-8")).as_deref(), Some("# Title"));
    assert_eq!(extract_text(b"{\"a\": 1}", Some("application/json")).as_deref(), Some("{\"a\": 1}"));
    assert!(extract_text(b"<a/>", Some("application/atom+xml")).is_some());
    // Declared text with invalid bytes: decoded with replacement characters.
    assert_eq!(extract_text(b"caf\xe9 ok", Some("text/plain")).as_deref(), Some("caf\u{FFFD} ok"));
    // A UTF-8 byte order mark is skipped.
    assert_eq!(extract_text(b"\xEF\xBB\xBFhi", Some("text/plain")).as_deref(), Some("hi"));
}

#[test]
fn extract_refuses_what_it_cannot_read() {
    assert_eq!(extract_text(b"caf\xe9", Some("text/plain; charset=iso-8859-1")), None);
    assert_eq!(extract_text(b"\xFF\xFEh\0i\0", Some("text/plain")), None);
    assert_eq!(extract_text(b"%PDF-1.7 hello", Some("application/pdf")), None);
    assert_eq!(extract_text(b"hello", Some("image/png")), None);
    assert_eq!(extract_text(b"", Some("text/plain")), None);
    assert_eq!(extract_text(b"  \n\t ", None), None);
}

#[test]
fn extract_sniffs_untyped_bytes() {
    assert_eq!(extract_text("plain notes, café".as_bytes(), None).as_deref(), Some("plain notes, café"));
    assert!(extract_text(b"line\r\nline\tx\x0c", Some("application/octet-stream")).is_some());
    assert_eq!(extract_text(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", None), None);
    assert_eq!(extract_text(b"abc\0def", None), None);
    assert_eq!(extract_text(b"caf\xe9", None), None, "not UTF-8");
    // One control character in 100 is text, two are not.
    let mut some = vec![b'a'; 99];
    some.push(0x01);
    assert!(extract_text(&some, None).is_some());
    some.push(0x02);
    assert_eq!(extract_text(&some, None), None);
}

#[test]
fn extract_caps_at_a_character_boundary() {
    // One ASCII byte then two-byte characters: byte MAX_TEXT_BYTES falls inside
    // a character, which is dropped whole.
    let text = format!("x{}", "é".repeat(MAX_TEXT_BYTES));
    for mt in [None, Some("text/plain")] {
        let out = extract_text(text.as_bytes(), mt).unwrap();
        assert_eq!(out.len(), MAX_TEXT_BYTES - 1, "{mt:?}");
        assert!(text.starts_with(&out));
    }
    let exact = "a".repeat(MAX_TEXT_BYTES);
    assert_eq!(extract_text(exact.as_bytes(), None).unwrap().len(), MAX_TEXT_BYTES);
    // Lossy decoding grows invalid bytes to 3; still capped.
    let bad = vec![0xFFu8; MAX_TEXT_BYTES];
    let out = extract_text(&bad, Some("text/plain")).unwrap();
    assert!(out.len() <= MAX_TEXT_BYTES && out.len() > MAX_TEXT_BYTES - 3);
}
