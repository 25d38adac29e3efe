//! A table of malformed and hostile inputs, each with the exact `jose::Error`
//! it must produce. Every row runs under `catch_unwind`: a panic is a failure
//! that names the row. Error messages are also checked never to echo a marker
//! planted in the inputs.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::{rsa as lc_rsa, signature as lc_sig};
use common::*;
use jose::jwe::{self, DecryptKey, EncryptKey};
use jose::jws::{self, SignKey, VerifyKey};
use jose::{
    ContentEnc, EcPrivateKey, EcPublicKey, Error, HeaderParams, Jwe, JwePolicy, Jwk, Jws, JwsPolicy, KeyAlg, OctKey,
    Part, RsaPrivateKey, RsaPublicKey, SigAlg, DEFAULT_MAX_LEN,
};

/// Planted in inputs; must never come back in an error's `Display` or `Debug`.
const MARKER: &str = "ZZsecretMARKERzz";

/// Everything the rows need, built once.
struct Fx {
    oct: OctKey,
    oct_other: OctKey,
    oct16: OctKey,
    oct64: OctKey,
    rsa: RsaPrivateKey,
    rsa_other: RsaPrivateKey,
    ec: EcPrivateKey,
    ec_other: EcPrivateKey,
    /// dir JWE under `oct`, kid "k1", plaintext "hello world".
    dir: String,
    /// RSA-OAEP JWE to `rsa`.
    oaep: String,
    /// JWSs over "payload" by `rsa` / `ec`.
    ps256: String,
    rs256: String,
    es256: String,
}

impl Fx {
    fn new() -> Self {
        let oct = oct();
        let rsa = rsa();
        let ec = ec_a();
        let p = HeaderParams::kid("k1");
        Fx {
            dir: jwe::encrypt(EncryptKey::Dir(&oct), ContentEnc::A256Gcm, &p, b"hello world").unwrap(),
            oaep: jwe::encrypt(EncryptKey::RsaOaep(rsa.public_key()), ContentEnc::A256Gcm, &p, b"hello world").unwrap(),
            ps256: jws::sign(SigAlg::PS256, SignKey::Rsa(&rsa), &p, b"payload").unwrap(),
            rs256: jws::sign(SigAlg::RS256, SignKey::Rsa(&rsa), &p, b"payload").unwrap(),
            es256: jws::sign(SigAlg::ES256, SignKey::Ec(&ec), &p, b"payload").unwrap(),
            oct_other: OctKey::new(vec![0x42; 32], None).unwrap(),
            oct16: OctKey::new(vec![1; 16], None).unwrap(),
            oct64: OctKey::new(vec![1; 64], None).unwrap(),
            rsa_other: rsa_other(),
            ec_other: ec_b(),
            oct,
            rsa,
            ec,
        }
    }
}

// ------------------------------------------------------------ input builders

const DIR_HDR: &str = r#"{"alg":"dir","enc":"A256GCM"}"#;

/// The `dir` JWE with its protected header replaced by `json` (base64url-encoded).
fn dir_with_header(fx: &Fx, json: &str) -> String {
    with_segment(&fx.dir, 0, &b64(json))
}
/// The ES256 JWS with its protected header replaced.
fn es_with_header(fx: &Fx, json: &str) -> String {
    with_segment(&fx.es256, 0, &b64(json))
}
/// The PS256 JWS with its protected header replaced.
fn ps_with_header(fx: &Fx, json: &str) -> String {
    with_segment(&fx.ps256, 0, &b64(json))
}
fn parse_dir(s: &str) -> Result<Jwe, Error> {
    Jwe::parse(s, &JwePolicy::DIR)
}
fn open_dir(fx: &Fx, s: &str) -> Result<(), Error> {
    parse_dir(s)?.decrypt(DecryptKey::Dir(&fx.oct)).map(drop)
}
fn open_oaep(fx: &Fx, s: &str) -> Result<(), Error> {
    Jwe::parse(s, &JwePolicy::RSA_OAEP)?.decrypt(DecryptKey::RsaOaep(&fx.rsa)).map(drop)
}
fn verify(s: &str, policy: &JwsPolicy<'_>, key: VerifyKey<'_>) -> Result<(), Error> {
    Jws::parse(s, policy)?.verify(key).map(drop)
}
/// Makes the last character of a base64url segment carry non-zero padding bits.
fn noncanonical_tail(seg: &str) -> String {
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(seg.len() % 4 == 2 || seg.len() % 4 == 3, "segment must have padding bits");
    let mut s = seg.to_owned();
    let last = s.pop().unwrap();
    let v = ALPHA.iter().position(|&c| c == last as u8).unwrap();
    s.push(ALPHA[v | 1] as char);
    assert_ne!(s, seg);
    s
}
/// Decodes the header of `compact`, applies `f` to the JSON text, re-encodes.
fn edit_header(compact: &str, f: impl FnOnce(String) -> String) -> String {
    let h = String::from_utf8(unb64(&segments(compact)[0])).unwrap();
    with_segment(compact, 0, &b64(f(h)))
}
fn jwk_from(json: &str) -> Result<Jwk, Error> {
    Jwk::from_json(json.as_bytes())
}
fn to_key(json: &str) -> Result<(), Error> {
    jwk_from(json)?.to_key().map(drop)
}
/// The fixture RSA key's private JWK as a JSON object, for editing.
fn rsa_jwk_value(fx: &Fx) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&fx.rsa.to_jwk().to_json()).unwrap()
}
fn ec_jwk_value(fx: &Fx) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&fx.ec.to_jwk().to_json()).unwrap()
}
fn rsa_n(fx: &Fx) -> String {
    fx.rsa.public_key().to_jwk().n.unwrap()
}
/// A raw RSA signature over `input` with the fixture key, via aws-lc directly.
fn raw_rsa_sign(fx: &Fx, enc: &'static dyn lc_sig::RsaEncoding, input: &str) -> Vec<u8> {
    let kp = lc_rsa::KeyPair::from_pkcs8(&fx.rsa.to_pkcs8_der()).unwrap();
    let mut sig = vec![0u8; kp.public_modulus_len()];
    kp.sign(enc, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    sig
}
fn pem(label: &str, body: &str) -> String {
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

// ------------------------------------------------------------ the table

type Run = Box<dyn Fn(&Fx) -> Result<(), Error>>;

struct Row {
    name: &'static str,
    run: Run,
    expect: &'static str,
    check: Box<dyn Fn(&Error) -> bool>,
}

macro_rules! rows {
    ($( $name:literal : |$fx:ident| $body:expr => $pat:pat $(if $guard:expr)? , )*) => {
        vec![$(
            Row {
                name: $name,
                run: Box::new(|$fx: &Fx| -> Result<(), Error> { ($body).map(drop) }),
                expect: stringify!($pat $(if $guard)?),
                check: Box::new(|e: &Error| matches!(e, $pat $(if $guard)?)),
            },
        )*]
    };
}

const NO_ENCS: JwePolicy<'static> = JwePolicy { algs: &[KeyAlg::Dir], encs: &[], max_len: DEFAULT_MAX_LEN };
const P256_ORDER_B64: &str = "_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE";

#[allow(unused_variables)]
fn table() -> Vec<Row> {
    rows! {
        // ---------------------------------------------------- size and shape
        "jwe empty": |fx| parse_dir("") => Error::Empty,
        "jws empty": |fx| Jws::parse("", &JwsPolicy::RSA) => Error::Empty,
        "jwe over the default 1 MiB limit": |fx| parse_dir(&"A".repeat(DEFAULT_MAX_LEN + 1))
            => Error::TooLarge { len, max: DEFAULT_MAX_LEN } if *len == DEFAULT_MAX_LEN + 1,
        "jwe one byte over policy.max_len": |fx| Jwe::parse(&fx.dir, &JwePolicy { max_len: fx.dir.len() - 1, ..JwePolicy::DIR })
            => Error::TooLarge { len, max } if *len == *max + 1,
        "jws one byte over policy.max_len": |fx| Jws::parse(&fx.es256, &JwsPolicy { max_len: fx.es256.len() - 1, ..JwsPolicy::ES256 })
            => Error::TooLarge { .. },
        "jwe 1 segment": |fx| parse_dir("eyJhbGciOiJkaXIifQ") => Error::SegmentCount { kind: "JWE", expected: 5, found: 1 },
        "jwe 2 segments": |fx| parse_dir(&segments(&fx.dir)[..2].join(".")) => Error::SegmentCount { kind: "JWE", expected: 5, found: 2 },
        "jwe 4 segments (truncated: tag dropped)": |fx| parse_dir(fx.dir.rsplit_once('.').unwrap().0)
            => Error::SegmentCount { kind: "JWE", expected: 5, found: 4 },
        "jwe 6 segments": |fx| parse_dir(&format!("{}.AAAA", fx.dir)) => Error::SegmentCount { kind: "JWE", expected: 5, found: 6 },
        "jwe given a JWS": |fx| parse_dir(&fx.es256) => Error::SegmentCount { kind: "JWE", expected: 5, found: 3 },
        "jwe only dots": |fx| parse_dir("....") => Error::EmptyPart(Part::Header),
        "jwe truncated mid-tag (21 chars)": |fx| parse_dir(&fx.dir[..fx.dir.len() - 1]) => Error::Base64(Part::Tag),
        "jws 1 segment": |fx| Jws::parse("eyJhbGciOiJFUzI1NiJ9", &JwsPolicy::ES256) => Error::SegmentCount { kind: "JWS", expected: 3, found: 1 },
        "jws 2 segments (signature dropped)": |fx| Jws::parse(fx.es256.rsplit_once('.').unwrap().0, &JwsPolicy::ES256)
            => Error::SegmentCount { kind: "JWS", expected: 3, found: 2 },
        "jws 4 segments": |fx| Jws::parse(&format!("{}.AAAA", fx.es256), &JwsPolicy::ES256) => Error::SegmentCount { kind: "JWS", expected: 3, found: 4 },
        "jws given a JWE": |fx| Jws::parse(&fx.dir, &JwsPolicy::RSA) => Error::SegmentCount { kind: "JWS", expected: 3, found: 5 },
        "jws truncated mid-signature": |fx| Jws::parse(&fx.es256[..fx.es256.len() - 1], &JwsPolicy::ES256) => Error::Base64(Part::Signature),
        "jws empty signature": |fx| Jws::parse(&format!("{}.", fx.es256.rsplit_once('.').unwrap().0), &JwsPolicy::ES256)
            => Error::EmptyPart(Part::Signature),

        // ---------------------------------------------------- base64url
        "jwe header with '=' padding": |fx| parse_dir(&with_segment(&fx.dir, 0, &format!("{}=", segments(&fx.dir)[0])))
            => Error::Base64(Part::Header),
        "jwe header in padded standard base64": |fx| parse_dir(&with_segment(&fx.dir, 0, "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0="))
            => Error::Base64(Part::Header),
        "jwe header with a space": |fx| parse_dir(&with_segment(&fx.dir, 0, &format!("eyJh {}", &segments(&fx.dir)[0][4..])))
            => Error::Base64(Part::Header),
        "jwe iv with '+'": |fx| parse_dir(&with_segment(&fx.dir, 2, &format!("+{}", &segments(&fx.dir)[2][1..]))) => Error::Base64(Part::Iv),
        "jwe ciphertext with '/'": |fx| parse_dir(&with_segment(&fx.dir, 3, &format!("/{}", &segments(&fx.dir)[3][1..])))
            => Error::Base64(Part::Ciphertext),
        "jwe tag with a newline": |fx| parse_dir(&with_segment(&fx.dir, 4, &format!("{}\n", &segments(&fx.dir)[4][..21])))
            => Error::Base64(Part::Tag),
        "jwe tag with non-canonical trailing bits": |fx| parse_dir(&with_segment(&fx.dir, 4, &noncanonical_tail(&segments(&fx.dir)[4])))
            => Error::Base64(Part::Tag),
        "jwe header with non-canonical trailing bits": |fx| {
            let h = b64(DIR_HDR); // 29 bytes: 39 characters, 2 padding bits
            parse_dir(&with_segment(&fx.dir, 0, &noncanonical_tail(&h)))
        } => Error::Base64(Part::Header),
        "jwe encrypted key not base64": |fx| Jwe::parse(&with_segment(&fx.oaep, 1, "*"), &JwePolicy::RSA_OAEP) => Error::Base64(Part::EncryptedKey),
        "jws payload with '+'": |fx| Jws::parse(&with_segment(&fx.es256, 1, "cGF5+G9hZA"), &JwsPolicy::ES256) => Error::Base64(Part::Payload),
        "jws signature with '=' padding": |fx| Jws::parse(&format!("{}==", fx.es256), &JwsPolicy::ES256) => Error::Base64(Part::Signature),
        "jws signature with non-canonical trailing bits": |fx| Jws::parse(&with_segment(&fx.es256, 2, &noncanonical_tail(&segments(&fx.es256)[2])), &JwsPolicy::ES256)
            => Error::Base64(Part::Signature),

        // ---------------------------------------------------- header JSON
        "header not JSON": |fx| parse_dir(&dir_with_header(fx, "alg=dir")) => Error::Json { part: Part::Header, .. },
        "header JSON array": |fx| parse_dir(&dir_with_header(fx, r#"["alg","dir"]"#)) => Error::Json { part: Part::Header, .. },
        "header JSON string": |fx| parse_dir(&dir_with_header(fx, r#""dir""#)) => Error::Json { part: Part::Header, .. },
        "header empty JSON object": |fx| parse_dir(&dir_with_header(fx, "{}")) => Error::MissingHeader("alg"),
        "header JSON with trailing data": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM"} {}"#)) => Error::Json { part: Part::Header, .. },
        "header JSON nested 40 deep": |fx| parse_dir(&dir_with_header(fx, &format!(r#"{{"alg":"dir","enc":"A256GCM","x":{}0{}}}"#, "[".repeat(40), "]".repeat(40))))
            => Error::Json { part: Part::Header, .. },
        "header not UTF-8": |fx| parse_dir(&with_segment(&fx.dir, 0, &b64(b"{\"alg\":\"dir\xff\",\"enc\":\"A256GCM\"}"))) => Error::Json { part: Part::Header, .. },
        "header duplicate alg": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","alg":"dir"}"#))
            => Error::DuplicateMember { part: Part::Header, name } if name == "alg",
        "header duplicate alg, escaped \\u0061lg": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"RSA-OAEP","enc":"A256GCM","\u0061lg":"dir"}"#))
            => Error::DuplicateMember { part: Part::Header, name } if name == "alg",
        "jws header duplicate alg with different values": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","alg":"RS256"}"#), &JwsPolicy::RSA)
            => Error::DuplicateMember { part: Part::Header, name } if name == "alg",
        "header duplicate nested member": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","x":{"a":1,"a":2}}"#))
            => Error::DuplicateMember { part: Part::Header, name } if name == "a",
        "header missing alg": |fx| parse_dir(&dir_with_header(fx, r#"{"enc":"A256GCM"}"#)) => Error::MissingHeader("alg"),
        "header alg null": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":null,"enc":"A256GCM"}"#)) => Error::MissingHeader("alg"),
        "header alg is a number": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":1,"enc":"A256GCM"}"#)) => Error::Json { part: Part::Header, .. },
        "header missing enc": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir"}"#)) => Error::MissingHeader("enc"),
        "jws header missing alg": |fx| Jws::parse(&es_with_header(fx, r#"{"kid":"k1"}"#), &JwsPolicy::ES256) => Error::MissingHeader("alg"),

        // ---------------------------------------------------- algorithms
        "jwe alg none": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"none","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "none",
        "jwe alg RSA1_5": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"RSA1_5","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "RSA1_5",
        "jwe alg A128KW": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"A128KW","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "A128KW",
        "jwe alg ECDH-ES": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"ECDH-ES","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "ECDH-ES",
        "jwe alg RSA-OAEP-256": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "RSA-OAEP-256",
        "jwe alg Dir (case)": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"Dir","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "Dir",
        "jwe alg is a JWS alg": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"PS256","enc":"A256GCM"}"#)) => Error::UnsupportedAlgorithm(a) if a == "PS256",
        "jwe very long alg is truncated in the error": |fx| parse_dir(&dir_with_header(fx, &format!(r#"{{"alg":"{}","enc":"A256GCM"}}"#, "X".repeat(5000))))
            => Error::UnsupportedAlgorithm(a) if a.len() == 32,
        "jws alg none": |fx| Jws::parse(&format!("{}.{}.", b64(r#"{"alg":"none"}"#), RFC7515_PAYLOAD_B64), &JwsPolicy::RSA)
            => Error::UnsupportedAlgorithm(a) if a == "none",
        "jws alg none with a signature": |fx| Jws::parse(&es_with_header(fx, r#"{"alg":"none"}"#), &JwsPolicy::ES256) => Error::UnsupportedAlgorithm(a) if a == "none",
        "jws alg HS256": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"HS256"}"#), &JwsPolicy::RSA) => Error::UnsupportedAlgorithm(a) if a == "HS256",
        "jws alg ES384": |fx| Jws::parse(&es_with_header(fx, r#"{"alg":"ES384"}"#), &JwsPolicy::ES256) => Error::UnsupportedAlgorithm(a) if a == "ES384",
        "jws alg EdDSA": |fx| Jws::parse(&es_with_header(fx, r#"{"alg":"EdDSA"}"#), &JwsPolicy::ES256) => Error::UnsupportedAlgorithm(a) if a == "EdDSA",
        "jws alg is a JWE alg": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"dir"}"#), &JwsPolicy::RSA) => Error::UnsupportedAlgorithm(a) if a == "dir",
        "jwe enc A128GCM": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A128GCM"}"#)) => Error::UnsupportedEncryption(e) if e == "A128GCM",
        "jwe enc A256CBC-HS512": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256CBC-HS512"}"#)) => Error::UnsupportedEncryption(e) if e == "A256CBC-HS512",
        "jwe enc a256gcm (case)": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"a256gcm"}"#)) => Error::UnsupportedEncryption(e) if e == "a256gcm",
        "jwe enc is a number": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":256}"#)) => Error::Json { part: Part::Header, .. },

        // ---------------------------------------------------- policy
        "dir JWE under the RSA_OAEP policy": |fx| Jwe::parse(&fx.dir, &JwePolicy::RSA_OAEP) => Error::AlgorithmNotAllowed(a) if a == "dir",
        "RSA-OAEP JWE under the DIR policy": |fx| Jwe::parse(&fx.oaep, &JwePolicy::DIR) => Error::AlgorithmNotAllowed(a) if a == "RSA-OAEP",
        "A256GCM not in policy.encs": |fx| Jwe::parse(&fx.dir, &NO_ENCS) => Error::EncryptionNotAllowed(e) if e == "A256GCM",
        "empty policy.algs": |fx| Jwe::parse(&fx.dir, &JwePolicy { algs: &[], ..JwePolicy::DIR }) => Error::AlgorithmNotAllowed(a) if a == "dir",
        "RS256 JWS under a PS256-only policy": |fx| Jws::parse(&fx.rs256, &JwsPolicy::PS256) => Error::AlgorithmNotAllowed(a) if a == "RS256",
        "ES256 JWS under the RSA policy": |fx| Jws::parse(&fx.es256, &JwsPolicy::RSA) => Error::AlgorithmNotAllowed(a) if a == "ES256",
        "PS256 JWS under the ES256 policy": |fx| Jws::parse(&fx.ps256, &JwsPolicy::ES256) => Error::AlgorithmNotAllowed(a) if a == "PS256",

        // ---------------------------------------------------- refused header parameters
        "jwe crit [\"exp\"]": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","crit":["exp"],"exp":1}"#))
            => Error::UnsupportedCritical(c) if c == "exp",
        "jwe crit naming a standard header": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","crit":["kid"],"kid":"k1"}"#))
            => Error::UnsupportedCritical(c) if c == "kid",
        "jwe crit empty array": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","crit":[]}"#))
            => Error::UnsupportedCritical(c) if c == "(malformed crit)",
        "jwe crit a string": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","crit":"exp"}"#))
            => Error::UnsupportedCritical(c) if c == "(malformed crit)",
        "jwe crit null": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","crit":null}"#))
            => Error::UnsupportedCritical(c) if c == "(malformed crit)",
        "jwe crit [1]": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","crit":[1]}"#))
            => Error::UnsupportedCritical(c) if c == "(non-string)",
        "jws crit [\"b64\"] (RFC 7797)": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","b64":false,"crit":["b64"]}"#), &JwsPolicy::PS256)
            => Error::UnsupportedCritical(c) if c == "b64",
        "jwe zip DEF": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","zip":"DEF"}"#)) => Error::UnsupportedHeader("zip"),
        "jwe zip null": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","zip":null}"#)) => Error::UnsupportedHeader("zip"),
        "jws zip": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","zip":"DEF"}"#), &JwsPolicy::PS256) => Error::UnsupportedHeader("zip"),
        "jws b64 false": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","b64":false}"#), &JwsPolicy::PS256) => Error::UnsupportedHeader("b64"),
        "jws b64 true": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","b64":true}"#), &JwsPolicy::PS256) => Error::UnsupportedHeader("b64"),
        "jwe b64": |fx| parse_dir(&dir_with_header(fx, r#"{"alg":"dir","enc":"A256GCM","b64":false}"#)) => Error::UnsupportedHeader("b64"),
        "jws header containing enc": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","enc":"A256GCM"}"#), &JwsPolicy::PS256) => Error::UnsupportedHeader("enc"),
        "jws given a JWE header": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"dir","enc":"A256GCM"}"#), &JwsPolicy::PS256) => Error::UnsupportedHeader("enc"),
        "jws header with enc null": |fx| Jws::parse(&ps_with_header(fx, r#"{"alg":"PS256","enc":null}"#), &JwsPolicy::PS256) => Error::UnsupportedHeader("enc"),

        // ---------------------------------------------------- JWE structure
        "dir with a non-empty encrypted key": |fx| parse_dir(&with_segment(&fx.dir, 1, "AAAA")) => Error::DirWithEncryptedKey,
        "dir with the encrypted key of an RSA-OAEP JWE": |fx| parse_dir(&with_segment(&fx.dir, 1, &segments(&fx.oaep)[1])) => Error::DirWithEncryptedKey,
        "RSA-OAEP with an empty encrypted key": |fx| Jwe::parse(&with_segment(&fx.oaep, 1, ""), &JwePolicy::RSA_OAEP) => Error::EmptyPart(Part::EncryptedKey),
        "iv of 11 bytes": |fx| parse_dir(&with_segment(&fx.dir, 2, &b64([0u8; 11]))) => Error::Length { part: Part::Iv, expected: 12, found: 11 },
        "iv of 16 bytes": |fx| parse_dir(&with_segment(&fx.dir, 2, &b64([0u8; 16]))) => Error::Length { part: Part::Iv, expected: 12, found: 16 },
        "iv empty": |fx| parse_dir(&with_segment(&fx.dir, 2, "")) => Error::Length { part: Part::Iv, expected: 12, found: 0 },
        "tag of 15 bytes": |fx| parse_dir(&with_segment(&fx.dir, 4, &b64(&unb64(&segments(&fx.dir)[4])[..15])))
            => Error::Length { part: Part::Tag, expected: 16, found: 15 },
        "tag of 17 bytes": |fx| parse_dir(&with_segment(&fx.dir, 4, &b64([0u8; 17]))) => Error::Length { part: Part::Tag, expected: 16, found: 17 },
        "tag empty": |fx| parse_dir(&with_segment(&fx.dir, 4, "")) => Error::Length { part: Part::Tag, expected: 16, found: 0 },

        // ---------------------------------------------------- JWE tampering and keys
        "tampered header (a character flipped)": |fx| open_dir(fx, &flip_first_char(&fx.dir, 0))
            => Error::DecryptionFailed | Error::Base64(Part::Header) | Error::Json { part: Part::Header, .. },
        "tampered header (same JSON, re-encoded with a space)": |fx| open_dir(fx, &edit_header(&fx.dir, |h| h.replacen(',', ", ", 1)))
            => Error::DecryptionFailed,
        "tampered header (member order changed)": |fx| open_dir(fx, &edit_header(&fx.dir, |h| {
            let v: serde_json::Value = serde_json::from_str(&h).unwrap();
            format!(r#"{{"kid":{},"enc":"A256GCM","alg":"dir"}}"#, v["kid"])
        })) => Error::DecryptionFailed,
        "kid swapped (AAD changed)": |fx| open_dir(fx, &edit_header(&fx.dir, |h| h.replace(r#""kid":"k1""#, r#""kid":"k2""#)))
            => Error::DecryptionFailed,
        "kid removed (AAD changed)": |fx| open_dir(fx, &edit_header(&fx.dir, |_| DIR_HDR.into())) => Error::DecryptionFailed,
        "tampered iv": |fx| open_dir(fx, &flip_first_char(&fx.dir, 2)) => Error::DecryptionFailed,
        "tampered ciphertext": |fx| open_dir(fx, &flip_first_char(&fx.dir, 3)) => Error::DecryptionFailed,
        "ciphertext truncated by one block": |fx| open_dir(fx, &with_segment(&fx.dir, 3, &b64(&unb64(&segments(&fx.dir)[3])[..8]))) => Error::DecryptionFailed,
        "ciphertext emptied": |fx| open_dir(fx, &with_segment(&fx.dir, 3, "")) => Error::DecryptionFailed,
        "tampered tag": |fx| open_dir(fx, &flip_first_char(&fx.dir, 4)) => Error::DecryptionFailed,
        "tag all zeros": |fx| open_dir(fx, &with_segment(&fx.dir, 4, &b64([0u8; 16]))) => Error::DecryptionFailed,
        "ciphertext and tag from another JWE under the same key": |fx| {
            let other = jwe::encrypt(EncryptKey::Dir(&fx.oct), ContentEnc::A256Gcm, &HeaderParams::kid("k1"), b"other message").unwrap();
            let mut s = segments(&fx.dir);
            s[3] = segments(&other)[3].clone();
            s[4] = segments(&other)[4].clone();
            open_dir(fx, &join(&s))
        } => Error::DecryptionFailed,
        "dir decrypt with the wrong oct key": |fx| parse_dir(&fx.dir)?.decrypt(DecryptKey::Dir(&fx.oct_other)) => Error::DecryptionFailed,
        "dir decrypt with a 16-byte oct key": |fx| parse_dir(&fx.dir)?.decrypt(DecryptKey::Dir(&fx.oct16))
            => Error::KeySize { kind: "oct", bits: 128, .. },
        "dir decrypt with a 64-byte oct key": |fx| parse_dir(&fx.dir)?.decrypt(DecryptKey::Dir(&fx.oct64))
            => Error::KeySize { kind: "oct", bits: 512, .. },
        "dir encrypt with a 16-byte oct key": |fx| jwe::encrypt(EncryptKey::Dir(&fx.oct16), ContentEnc::A256Gcm, &HeaderParams::default(), b"x")
            => Error::KeySize { kind: "oct", bits: 128, .. },
        "RSA key for a dir JWE": |fx| parse_dir(&fx.dir)?.decrypt(DecryptKey::RsaOaep(&fx.rsa))
            => Error::WrongKeyType { alg, expected: "oct", found: "RSA private" } if alg == "dir",
        "oct key for an RSA-OAEP JWE": |fx| Jwe::parse(&fx.oaep, &JwePolicy::RSA_OAEP)?.decrypt(DecryptKey::Dir(&fx.oct))
            => Error::WrongKeyType { alg, expected: "RSA private", found: "oct" } if alg == "RSA-OAEP",
        "RSA-OAEP tampered encrypted key": |fx| open_oaep(fx, &flip_first_char(&fx.oaep, 1)) => Error::DecryptionFailed,
        "RSA-OAEP encrypted key all 0xff (>= n)": |fx| open_oaep(fx, &with_segment(&fx.oaep, 1, &b64([0xff; 256]))) => Error::DecryptionFailed,
        "RSA-OAEP encrypted key of 255 bytes": |fx| open_oaep(fx, &with_segment(&fx.oaep, 1, &b64(&unb64(&segments(&fx.oaep)[1])[1..])))
            => Error::DecryptionFailed,
        "RSA-OAEP encrypted key of 1 byte": |fx| open_oaep(fx, &with_segment(&fx.oaep, 1, "AQ")) => Error::DecryptionFailed,
        "RSA-OAEP wrapped to another key": |fx| {
            let c = jwe::encrypt(EncryptKey::RsaOaep(fx.rsa_other.public_key()), ContentEnc::A256Gcm, &HeaderParams::default(), b"x")?;
            open_oaep(fx, &c)
        } => Error::DecryptionFailed,
        "RSA-OAEP tampered tag (same error as a bad key)": |fx| open_oaep(fx, &flip_first_char(&fx.oaep, 4)) => Error::DecryptionFailed,
        "RSA-OAEP with a validly wrapped 16-byte CEK": |fx| {
            // OAEP succeeds but yields a CEK of the wrong length: must look like any other failure.
            let pk = lc_rsa::PublicEncryptingKey::from_der(&fx.rsa.public_key().to_spki_der()).unwrap();
            let enc = lc_rsa::OaepPublicEncryptingKey::new(pk).unwrap();
            let mut ek = vec![0u8; enc.ciphertext_size()];
            let ek = enc.encrypt(&lc_rsa::OAEP_SHA1_MGF1SHA1, &[7u8; 16], &mut ek, None).unwrap().to_vec();
            open_oaep(fx, &with_segment(&fx.oaep, 1, &b64(ek)))
        } => Error::DecryptionFailed,
        "RSA-OAEP with a validly wrapped 32-byte CEK that is not the right one": |fx| {
            let pk = lc_rsa::PublicEncryptingKey::from_der(&fx.rsa.public_key().to_spki_der()).unwrap();
            let enc = lc_rsa::OaepPublicEncryptingKey::new(pk).unwrap();
            let mut ek = vec![0u8; enc.ciphertext_size()];
            let ek = enc.encrypt(&lc_rsa::OAEP_SHA1_MGF1SHA1, &[7u8; 32], &mut ek, None).unwrap().to_vec();
            open_oaep(fx, &with_segment(&fx.oaep, 1, &b64(ek)))
        } => Error::DecryptionFailed,
        "dir JWE sealed by hand with a different AAD": |fx| {
            // Sealed with AAD = the header *without* its base64url encoding (a classic mistake).
            let lc = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, fx.oct.expose()).unwrap());
            let mut buf = b"x".to_vec();
            let tag = lc.seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(DIR_HDR.as_bytes()), &mut buf).unwrap();
            open_dir(fx, &join(&[b64(DIR_HDR), String::new(), b64([0u8; 12]), b64(&buf), b64(tag.as_ref())]))
        } => Error::DecryptionFailed,

        // ---------------------------------------------------- JWS keys and signatures
        "EC key for a PS256 JWS": |fx| verify(&fx.ps256, &JwsPolicy::PS256, VerifyKey::Ec(fx.ec.public_key()))
            => Error::WrongKeyType { alg, expected: "RSA", found: "EC" } if alg == "PS256",
        "RSA key for an ES256 JWS": |fx| verify(&fx.es256, &JwsPolicy::ES256, VerifyKey::Rsa(fx.rsa.public_key()))
            => Error::WrongKeyType { alg, expected: "EC", found: "RSA" } if alg == "ES256",
        "sign ES256 with an RSA key": |fx| jws::sign(SigAlg::ES256, SignKey::Rsa(&fx.rsa), &HeaderParams::default(), b"x")
            => Error::WrongKeyType { alg, expected: "EC", found: "RSA" } if alg == "ES256",
        "sign PS256 with an EC key": |fx| jws::sign(SigAlg::PS256, SignKey::Ec(&fx.ec), &HeaderParams::default(), b"x")
            => Error::WrongKeyType { alg, expected: "RSA", found: "EC" } if alg == "PS256",
        "PS256 signed by another key": |fx| verify(&fx.ps256, &JwsPolicy::PS256, VerifyKey::Rsa(fx.rsa_other.public_key())) => Error::BadSignature,
        "RS256 signed by another key": |fx| verify(&fx.rs256, &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa_other.public_key())) => Error::BadSignature,
        "ES256 signed by another key": |fx| verify(&fx.es256, &JwsPolicy::ES256, VerifyKey::Ec(fx.ec_other.public_key())) => Error::BadSignature,
        "jws tampered payload": |fx| verify(&with_segment(&fx.ps256, 1, &b64("pAyload")), &JwsPolicy::PS256, VerifyKey::Rsa(fx.rsa.public_key()))
            => Error::BadSignature,
        "jws tampered header (kid changed)": |fx| verify(&edit_header(&fx.es256, |h| h.replace("k1", "k2")), &JwsPolicy::ES256, VerifyKey::Ec(fx.ec.public_key()))
            => Error::BadSignature,
        "jws tampered signature": |fx| verify(&flip_first_char(&fx.rs256, 2), &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa.public_key())) => Error::BadSignature,
        "ES256 signature of 63 bytes": |fx| Jws::parse(&with_segment(&fx.es256, 2, &b64(&unb64(&segments(&fx.es256)[2])[..63])), &JwsPolicy::ES256)
            => Error::Length { part: Part::Signature, expected: 64, found: 63 },
        "ES256 signature of 65 bytes": |fx| Jws::parse(&with_segment(&fx.es256, 2, &b64([1u8; 65])), &JwsPolicy::ES256)
            => Error::Length { part: Part::Signature, expected: 64, found: 65 },
        "ES256 signature in ASN.1 DER form": |fx| {
            let kp = lc_sig::EcdsaKeyPair::from_pkcs8(&lc_sig::ECDSA_P256_SHA256_ASN1_SIGNING, &fx.ec.to_pkcs8_der()).unwrap();
            let input = fx.es256.rsplit_once('.').unwrap().0;
            let sig = kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            Jws::parse(&format!("{input}.{}", b64(sig.as_ref())), &JwsPolicy::ES256)
        } => Error::Length { part: Part::Signature, expected: 64, .. },
        "ES256 signature all zeros (r = s = 0)": |fx| verify(&with_segment(&fx.es256, 2, &b64([0u8; 64])), &JwsPolicy::ES256, VerifyKey::Ec(fx.ec.public_key()))
            => Error::BadSignature,
        "ES256 signature r = s = group order": |fx| {
            let n = unb64(P256_ORDER_B64);
            let sig = [n.clone(), n].concat();
            verify(&with_segment(&fx.es256, 2, &b64(sig)), &JwsPolicy::ES256, VerifyKey::Ec(fx.ec.public_key()))
        } => Error::BadSignature,
        "RSA signature of 255 bytes": |fx| verify(&with_segment(&fx.ps256, 2, &b64(&unb64(&segments(&fx.ps256)[2])[1..])), &JwsPolicy::PS256, VerifyKey::Rsa(fx.rsa.public_key()))
            => Error::Length { part: Part::Signature, expected: 256, found: 255 },
        "RSA signature of 512 bytes": |fx| verify(&with_segment(&fx.rs256, 2, &b64([1u8; 512])), &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa.public_key()))
            => Error::Length { part: Part::Signature, expected: 256, found: 512 },
        "RSA signature all 0xff (>= n)": |fx| verify(&with_segment(&fx.rs256, 2, &b64([0xff; 256])), &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa.public_key()))
            => Error::BadSignature,
        "alg confusion: RS256 signature under a PS256 header": |fx| {
            let input = format!("{}.{}", b64(r#"{"alg":"PS256"}"#), b64("payload"));
            let sig = raw_rsa_sign(fx, &lc_sig::RSA_PKCS1_SHA256, &input);
            verify(&format!("{input}.{}", b64(sig)), &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa.public_key()))
        } => Error::BadSignature,
        "alg confusion: PS256 signature under an RS256 header": |fx| {
            let input = format!("{}.{}", b64(r#"{"alg":"RS256"}"#), b64("payload"));
            let sig = raw_rsa_sign(fx, &lc_sig::RSA_PSS_SHA256, &input);
            verify(&format!("{input}.{}", b64(sig)), &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa.public_key()))
        } => Error::BadSignature,
        "RFC 7515 A.2 JWS against another RSA key": |fx| verify(RFC7515_A2_JWS, &JwsPolicy::RSA, VerifyKey::Rsa(fx.rsa.public_key())) => Error::BadSignature,
        "RFC 7515 A.3 JWS against another EC key": |fx| verify(RFC7515_A3_JWS, &JwsPolicy::ES256, VerifyKey::Ec(fx.ec.public_key())) => Error::BadSignature,

        // ---------------------------------------------------- JWK
        "JWK not JSON": |fx| jwk_from("kty=RSA") => Error::Json { .. },
        "JWK JSON array": |fx| jwk_from(r#"[{"kty":"oct"}]"#) => Error::Json { .. },
        "JWK missing kty": |fx| jwk_from(r#"{"k":"AAAA"}"#) => Error::Json { .. },
        "JWK kty a number": |fx| jwk_from(r#"{"kty":1}"#) => Error::Json { .. },
        "JWK duplicate kty": |fx| jwk_from(r#"{"kty":"oct","k":"AAAA","kty":"RSA"}"#) => Error::DuplicateMember { name, .. } if name == "kty",
        "JWK duplicate k, escaped \\u006b": |fx| jwk_from(r#"{"kty":"oct","k":"AAAA","\u006b":"BBBB"}"#) => Error::DuplicateMember { name, .. } if name == "k",
        "JWK kty OKP": |fx| to_key(r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
            => Error::UnsupportedKeyType(k) if k == "OKP",
        "JWK kty empty": |fx| to_key(r#"{"kty":""}"#) => Error::UnsupportedKeyType(k) if k.is_empty(),
        "JWK kty rsa (case)": |fx| to_key(r#"{"kty":"rsa","n":"AQAB","e":"AQAB"}"#) => Error::UnsupportedKeyType(k) if k == "rsa",
        "JWK EC asked for as RSA": |fx| jwk_from(&fx.ec.public_key().to_jwk().to_json())?.to_rsa_public()
            => Error::WrongKeyType { expected: "RSA", found: "EC", .. },
        "JWK RSA asked for as oct": |fx| fx.rsa.public_key().to_jwk().to_oct() => Error::WrongKeyType { expected: "oct", found: "RSA", .. },
        "RSA JWK of 1024 bits": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, b64([0xc5u8; 128])))
            => Error::KeySize { kind: "RSA", bits: 1024, .. },
        "RSA JWK of 2047 bits": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, b64([[0x7fu8].as_slice(), &[0xc5; 255]].concat())))
            => Error::KeySize { kind: "RSA", bits: 2047, .. },
        "RSA JWK of 8200 bits": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, b64([0xc5u8; 1025])))
            => Error::KeySize { kind: "RSA", bits: 8200, .. },
        "RSA JWK with empty n": |fx| to_key(r#"{"kty":"RSA","n":"","e":"AQAB"}"#) => Error::KeySize { kind: "RSA", bits: 0, .. },
        "RSA JWK with n all zero bytes": |fx| to_key(r#"{"kty":"RSA","n":"AAAA","e":"AQAB"}"#) => Error::KeySize { kind: "RSA", bits: 0, .. },
        "RSA JWK with an even exponent": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQAA"}}"#, rsa_n(fx))) => Error::InvalidKey("RSA public exponent"),
        "RSA JWK with exponent 1": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQ"}}"#, rsa_n(fx))) => Error::InvalidKey("RSA public exponent"),
        "RSA JWK with empty exponent": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":""}}"#, rsa_n(fx))) => Error::InvalidKey("RSA public exponent"),
        "RSA JWK with a 6-byte exponent": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQAAAAAB"}}"#, rsa_n(fx))) => Error::InvalidKey("RSA public exponent"),
        "RSA JWK with an even modulus": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, b64([0xc4u8; 256]))) => Error::InvalidKey("RSA"),
        "RSA JWK missing n": |fx| to_key(r#"{"kty":"RSA","e":"AQAB"}"#) => Error::MissingJwkMember("n"),
        "RSA JWK missing e": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}"}}"#, rsa_n(fx))) => Error::MissingJwkMember("e"),
        "RSA JWK n padded base64": |fx| to_key(&format!(r#"{{"kty":"RSA","n":"{}=","e":"AQAB"}}"#, &rsa_n(fx)[..rsa_n(fx).len() - 2]))
            => Error::Base64(Part::JwkMember("n")),
        "RSA private JWK with inconsistent d": |fx| {
            let mut v = rsa_jwk_value(fx);
            v["d"] = fx.rsa_other.to_jwk().d.unwrap().expose().into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("RSA"),
        "RSA private JWK with d off by one bit": |fx| {
            let mut v = rsa_jwk_value(fx);
            let mut d = unb64(v["d"].as_str().unwrap());
            *d.last_mut().unwrap() ^= 2;
            v["d"] = b64(d).into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("RSA"),
        "RSA private JWK with another key's p and q": |fx| {
            let mut v = rsa_jwk_value(fx);
            let o = fx.rsa_other.to_jwk();
            v["p"] = o.p.unwrap().expose().into();
            v["q"] = o.q.unwrap().expose().into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("RSA"),
        "RSA private JWK with inconsistent qi": |fx| {
            let mut v = rsa_jwk_value(fx);
            v["qi"] = v["dp"].clone();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("RSA"),
        "RSA private JWK missing qi": |fx| {
            let mut v = rsa_jwk_value(fx);
            v.remove("qi");
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::MissingJwkMember("qi"),
        "EC JWK x of 31 bytes": |fx| {
            let mut v = ec_jwk_value(fx);
            v.remove("d");
            v["x"] = b64(&unb64(v["x"].as_str().unwrap())[1..]).into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256 (coordinates must be 32 bytes)"),
        "EC JWK y of 33 bytes": |fx| {
            let mut v = ec_jwk_value(fx);
            v.remove("d");
            v["y"] = b64([&[0u8][..], &unb64(v["y"].as_str().unwrap())].concat()).into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256 (coordinates must be 32 bytes)"),
        "EC JWK point not on the curve": |fx| {
            let mut v = ec_jwk_value(fx);
            v.remove("d");
            let mut y = unb64(v["y"].as_str().unwrap());
            y[31] ^= 1;
            v["y"] = b64(y).into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256 (point not on the curve)"),
        "EC JWK point (0, 0) (infinity encoding)": |fx| to_key(&format!(r#"{{"kty":"EC","crv":"P-256","x":"{0}","y":"{0}"}}"#, b64([0u8; 32])))
            => Error::InvalidKey("P-256 (point not on the curve)"),
        "EC JWK x, y = p (not reduced)": |fx| {
            let p = "_____wAAAAEAAAAAAAAAAAAAAAD_______________8";
            to_key(&format!(r#"{{"kty":"EC","crv":"P-256","x":"{p}","y":"{p}"}}"#))
        } => Error::InvalidKey("P-256 (point not on the curve)"),
        "EC JWK crv P-384": |fx| to_key(r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#) => Error::UnsupportedCurve(c) if c == "P-384",
        "EC JWK crv secp256k1": |fx| to_key(r#"{"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"}"#) => Error::UnsupportedCurve(c) if c == "secp256k1",
        "EC JWK missing crv": |fx| {
            let mut v = ec_jwk_value(fx);
            v.remove("crv");
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::MissingJwkMember("crv"),
        "EC JWK missing y": |fx| to_key(r#"{"kty":"EC","crv":"P-256","x":"AA"}"#) => Error::MissingJwkMember("y"),
        "EC private JWK whose d does not match x, y": |fx| {
            let mut v = ec_jwk_value(fx);
            v["d"] = fx.ec_other.to_jwk().d.unwrap().expose().into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256 (d does not match x, y)"),
        "EC private JWK d of 31 bytes": |fx| {
            let mut v = ec_jwk_value(fx);
            v["d"] = b64([1u8; 31]).into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256 (private scalar must be 32 bytes)"),
        "EC private JWK d = 0": |fx| {
            let mut v = ec_jwk_value(fx);
            v["d"] = b64([0u8; 32]).into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256"),
        "EC private JWK d = group order": |fx| {
            let mut v = ec_jwk_value(fx);
            v["d"] = P256_ORDER_B64.into();
            to_key(&serde_json::to_string(&v).unwrap())
        } => Error::InvalidKey("P-256"),
        "oct JWK with empty k": |fx| to_key(r#"{"kty":"oct","k":""}"#) => Error::KeySize { kind: "oct", bits: 0, .. },
        "oct JWK with a 65-byte k": |fx| to_key(&format!(r#"{{"kty":"oct","k":"{}"}}"#, b64([1u8; 65]))) => Error::KeySize { kind: "oct", bits: 520, .. },
        "oct JWK missing k": |fx| to_key(r#"{"kty":"oct","kid":"x"}"#) => Error::MissingJwkMember("k"),
        "oct JWK k in standard base64": |fx| to_key(r#"{"kty":"oct","k":"AAEC+/8="}"#) => Error::Base64(Part::JwkMember("k")),
        "JWK x5c a string, not an array": |fx| jwk_from(&format!(r#"{{"kty":"RSA","x5c":"{MARKER}"}}"#)) => Error::Json { .. },
        "JWK x5c string with an escaped quote before the marker": |fx| jwk_from(&format!(r#"{{"kty":"RSA","x5c":"a\"{MARKER}\"b"}}"#))
            => Error::Json { .. },
        "JWK x5c string ending in a backslash, then the marker": |fx| jwk_from(&format!(r#"{{"kty":"RSA","x5c":"a\\","k":"{MARKER}"}}"#))
            => Error::Json { .. },
        "JWK x5c string with many escapes around the marker": |fx| jwk_from(&format!(r#"{{"kty":"RSA","x5c":"\"\\\"{MARKER}\u0022\n`{MARKER}`"}}"#))
            => Error::Json { .. },
        "JWK kid an object holding the marker": |fx| jwk_from(&format!(r#"{{"kty":"oct","kid":{{"v":"{MARKER}"}}}}"#)) => Error::Json { .. },

        // ---------------------------------------------------- PEM
        "RSA private from a PUBLIC KEY PEM": |fx| RsaPrivateKey::from_pem(RSA_SPKI_PEM, None) => Error::Pem(_),
        "RSA private from an EC PRIVATE KEY PEM": |fx| RsaPrivateKey::from_pem(EC_A_SEC1_PEM, None) => Error::Pem(_),
        "EC private from an RSA PRIVATE KEY PEM": |fx| EcPrivateKey::from_pem(RSA_PKCS1_PEM, None) => Error::Pem(_),
        "EC public from an RSA PUBLIC KEY PEM": |fx| EcPublicKey::from_pem(include_str!("fixtures/rsa2048_pkcs1_public.pem"), None) => Error::Pem(_),
        "RSA public from a PRIVATE KEY PEM": |fx| RsaPublicKey::from_pem(RSA_PKCS8_PEM, None) => Error::Pem(_),
        "PEM with a CERTIFICATE label": |fx| RsaPublicKey::from_pem(&RSA_SPKI_PEM.replace("PUBLIC KEY", "CERTIFICATE"), None) => Error::Pem(_),
        "PEM garbage": |fx| RsaPrivateKey::from_pem("this is not PEM at all", None) => Error::Pem(_),
        "PEM empty": |fx| EcPrivateKey::from_pem("", None) => Error::Pem(_),
        "PEM body not base64": |fx| RsaPrivateKey::from_pem(&pem("PRIVATE KEY", &format!("{MARKER}!!**"))
            , None) => Error::Pem(_),
        "PEM END label mismatch": |fx| RsaPrivateKey::from_pem(&RSA_PKCS8_PEM.replace("END PRIVATE KEY", "END PUBLIC KEY"), None) => Error::Pem(_),
        "PEM truncated (last body line dropped)": |fx| {
            let mut lines: Vec<&str> = RSA_PKCS8_PEM.lines().collect();
            lines.remove(lines.len() - 2);
            RsaPrivateKey::from_pem(&lines.join("\n"), None)
        } => Error::InvalidKey("RSA"),
        "PEM PRIVATE KEY holding an EC key, read as RSA": |fx| RsaPrivateKey::from_pem(EC_A_PKCS8_PEM, None) => Error::InvalidKey("RSA"),
        "PEM PRIVATE KEY holding an RSA key, read as EC": |fx| EcPrivateKey::from_pem(RSA_PKCS8_PEM, None) => Error::InvalidKey("P-256"),
        "PEM PUBLIC KEY holding an EC key, read as RSA": |fx| RsaPublicKey::from_pem(EC_A_SPKI_PEM, None) => Error::InvalidKey("RSA"),
        "PEM PUBLIC KEY holding an RSA key, read as EC": |fx| EcPublicKey::from_pem(RSA_SPKI_PEM, None)
            => Error::InvalidKey("P-256 SPKI (not an id-ecPublicKey on P-256)"),
        "PEM RSA-1024 PKCS#8": |fx| RsaPrivateKey::from_pem(include_str!("fixtures/rsa1024_pkcs8.pem"), None)
            => Error::InvalidKey("RSA"),
        "PEM body of random DER garbage": |fx| RsaPrivateKey::from_pem(&pem("PRIVATE KEY", &b64std(&[0x30, 0x03, 0x02, 0x01, 0x00])), None)
            => Error::InvalidKey("RSA"),

        // ---------------------------------------------------- the marker must not come back
        "marker in kid, bad iv": |fx| parse_dir(&with_segment(&dir_with_header(fx, &format!(r#"{{"alg":"dir","enc":"A256GCM","kid":"{MARKER}"}}"#)), 2, "AAAA"))
            => Error::Length { part: Part::Iv, .. },
        "marker in kid, wrong key": |fx| {
            let c = jwe::encrypt(EncryptKey::Dir(&fx.oct_other), ContentEnc::A256Gcm, &HeaderParams::kid(MARKER), MARKER.as_bytes())?;
            open_dir(fx, &c)
        } => Error::DecryptionFailed,
        "marker in a header value of the wrong type": |fx| parse_dir(&dir_with_header(fx, &format!(r#"{{"alg":"dir","enc":"A256GCM","kid":["{MARKER}"]}}"#)))
            => Error::Json { part: Part::Header, .. },
        "marker in typ with an escaped quote, header truncated": |fx| parse_dir(&dir_with_header(fx, &format!(r#"{{"alg":"dir","typ":"\"{MARKER}"#)))
            => Error::Json { part: Part::Header, .. },
        "marker as an unknown header member's value, crit present": |fx| parse_dir(&dir_with_header(fx, &format!(r#"{{"alg":"dir","enc":"A256GCM","x":"{MARKER}","crit":["x"]}}"#)))
            => Error::UnsupportedCritical(c) if c == "x",
        "marker as JWS payload, bad signature": |fx| verify(&with_segment(&fx.ps256, 1, &b64(MARKER)), &JwsPolicy::PS256, VerifyKey::Rsa(fx.rsa.public_key()))
            => Error::BadSignature,
        "marker in oct k that is not base64url": |fx| to_key(&format!(r#"{{"kty":"oct","k":"{MARKER}=="}}"#)) => Error::Base64(Part::JwkMember("k")),
        "marker as the header bytes themselves": |fx| parse_dir(&dir_with_header(fx, MARKER)) => Error::Json { part: Part::Header, .. },
    }
}

fn b64std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn bad_inputs_give_the_expected_errors() {
    let fx = Fx::new();
    let rows = table();
    assert!(rows.len() >= 60, "the table must have at least 60 rows, has {}", rows.len());
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for row in &rows {
        assert!(names.insert(row.name), "duplicate row name {:?}", row.name);
        match catch_unwind(AssertUnwindSafe(|| (row.run)(&fx))) {
            Err(p) => {
                let msg =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                failures.push(format!("[{}] PANICKED: {}", row.name, msg.unwrap_or_default()));
            }
            Ok(Ok(())) => failures.push(format!("[{}] succeeded, expected {}", row.name, row.expect)),
            Ok(Err(e)) => {
                if !(row.check)(&e) {
                    failures.push(format!("[{}] got {e:?}, expected {}", row.name, row.expect));
                }
                let shown = format!("{e} / {e:?}");
                if shown.contains(MARKER) || shown.contains("secretMARKER") {
                    failures.push(format!("[{}] error message echoes the planted marker: {shown}", row.name));
                }
                if e.to_string().is_empty() {
                    failures.push(format!("[{}] empty error message", row.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    eprintln!("{} bad-input rows passed", rows.len());
}

/// No error message quotes key material from its input.
#[test]
fn errors_do_not_echo_key_material() {
    let fx = Fx::new();
    // A JWK whose secret member is valid base64url but the key is invalid.
    let mut v = ec_jwk_value(&fx);
    let d = fx.ec_other.to_jwk().d.unwrap().expose().to_owned();
    v["d"] = d.clone().into();
    let e = to_key(&serde_json::to_string(&v).unwrap()).unwrap_err();
    assert!(!format!("{e} {e:?}").contains(&d));
    // A secret of the wrong JSON type.
    let e = jwk_from(&format!(r#"{{"kty":"oct","k":["{MARKER}"]}}"#)).unwrap_err();
    assert!(!format!("{e} {e:?}").contains(MARKER), "{e}");
    // Both RSA-OAEP failure modes give byte-identical errors (no padding oracle).
    let bad_key = open_oaep(&fx, &flip_first_char(&fx.oaep, 1)).unwrap_err();
    let bad_tag = open_oaep(&fx, &flip_first_char(&fx.oaep, 4)).unwrap_err();
    assert_eq!(bad_key, bad_tag);
    assert_eq!(bad_key.to_string(), bad_tag.to_string());
}
