//! One error type for the whole crate, with a variant per thing that can be wrong.
//!
//! Messages never contain key material, plaintext, tokens or JSON string
//! values: they name the part of the input that was wrong, and at most an
//! algorithm, key type or member name from it (cut to 32 characters), so they
//! are safe to log.

use std::fmt;

/// The part of a compact serialization an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The protected header.
    Header,
    /// The JWE encrypted key.
    EncryptedKey,
    /// The JWE initialization vector.
    Iv,
    /// The JWE ciphertext.
    Ciphertext,
    /// The JWE authentication tag.
    Tag,
    /// The JWS payload.
    Payload,
    /// The JWS signature.
    Signature,
    /// A JWK member (named by the string).
    JwkMember(&'static str),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Header => f.write_str("protected header"),
            Part::EncryptedKey => f.write_str("encrypted key"),
            Part::Iv => f.write_str("initialization vector"),
            Part::Ciphertext => f.write_str("ciphertext"),
            Part::Tag => f.write_str("authentication tag"),
            Part::Payload => f.write_str("payload"),
            Part::Signature => f.write_str("signature"),
            Part::JwkMember(m) => write!(f, "JWK member `{m}`"),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is longer than the caller's limit.
    #[error("input is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The input is empty.
    #[error("input is empty")]
    Empty,
    /// Wrong number of `.`-separated segments.
    #[error("compact {kind} must have {expected} segments, found {found}")]
    SegmentCount {
        /// "JWE" or "JWS".
        kind: &'static str,
        /// Segments required.
        expected: usize,
        /// Segments found.
        found: usize,
    },
    /// A segment is not canonical unpadded base64url.
    #[error("{0} is not valid base64url")]
    Base64(Part),
    /// A segment that must not be empty is empty.
    #[error("{0} is empty")]
    EmptyPart(Part),
    /// JSON that does not parse, or has the wrong shape.
    #[error("{part} is not acceptable JSON: {detail}")]
    Json {
        /// Where the JSON was.
        part: Part,
        /// What was wrong (values redacted).
        detail: String,
    },
    /// A JSON object has the same member twice.
    #[error("{part} has duplicate member `{name}`")]
    DuplicateMember {
        /// Where the JSON was.
        part: Part,
        /// The repeated member name (truncated).
        name: String,
    },
    /// A required header parameter is absent.
    #[error("header parameter `{0}` is missing")]
    MissingHeader(&'static str),
    /// An algorithm name this crate never implements (e.g. `none`, `RSA1_5`).
    #[error("algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(String),
    /// A supported algorithm the caller did not allow here.
    #[error("algorithm `{0}` is not allowed here")]
    AlgorithmNotAllowed(String),
    /// A content encryption name this crate never implements.
    #[error("content encryption `{0}` is not supported")]
    UnsupportedEncryption(String),
    /// A supported content encryption the caller did not allow here.
    #[error("content encryption `{0}` is not allowed here")]
    EncryptionNotAllowed(String),
    /// A `crit` header this crate does not understand, or a malformed `crit`.
    #[error("critical header `{0}` is not understood")]
    UnsupportedCritical(String),
    /// A header parameter this crate refuses (e.g. `zip`).
    #[error("header parameter `{0}` is not supported")]
    UnsupportedHeader(&'static str),
    /// The key is of the wrong type for the algorithm.
    #[error("{alg} needs a {expected} key, got {found}")]
    WrongKeyType {
        /// Algorithm in use.
        alg: String,
        /// Key type required.
        expected: &'static str,
        /// Key type given.
        found: &'static str,
    },
    /// A key of an unacceptable size.
    #[error("{kind} key of {bits} bits is not acceptable ({allowed})")]
    KeySize {
        /// Key type.
        kind: &'static str,
        /// Its size.
        bits: usize,
        /// What is allowed.
        allowed: &'static str,
    },
    /// Key material that does not form a valid key.
    #[error("invalid {0} key")]
    InvalidKey(&'static str),
    /// A key this build cannot hold: RSA private keys in the browser (wasm32).
    #[error("{0} is not available in this build (the browser holds no RSA private keys)")]
    Unsupported(&'static str),
    /// A JWK member that is required is absent.
    #[error("JWK member `{0}` is missing")]
    MissingJwkMember(&'static str),
    /// A JWK whose `kty` is not RSA, EC or oct.
    #[error("JWK key type `{0}` is not supported")]
    UnsupportedKeyType(String),
    /// An EC curve other than P-256.
    #[error("EC curve `{0}` is not supported")]
    UnsupportedCurve(String),
    /// A JWE/JWS part of the wrong length.
    #[error("{part} must be {expected} bytes, found {found}")]
    Length {
        /// Which part.
        part: Part,
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// `dir` with a non-empty encrypted key.
    #[error("alg `dir` requires an empty encrypted key")]
    DirWithEncryptedKey,
    /// Authenticated decryption failed: wrong key, or tampered header, IV, ciphertext or tag.
    #[error("decryption failed: wrong key or tampered message")]
    DecryptionFailed,
    /// The signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// PEM that is malformed or of an unexpected label.
    #[error("PEM: {0}")]
    Pem(String),
    /// The underlying crypto library failed (should not happen on valid input).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

/// Every JOSE operation fails with one [`Error`], whose variant says which check refused.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a serde_json error into a message without any of the input's string values.
pub(crate) fn redact_json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let mut out = String::with_capacity(msg.len());
    // In "unknown variant `x`" and "unknown field `x`", x is an input value.
    let mut redact_next_tick = msg.starts_with("unknown variant") || msg.starts_with("unknown field");
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        match c {
            // Quoted strings are input values: drop them. serde quotes them with
            // `{:?}`, so an inner `"` arrives as `\"` and must not end the string.
            '"' => {
                out.push_str("\"…\"");
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            // Backticks quote field or variant names: keep short identifiers only.
            '`' => {
                let name: String = chars.by_ref().take_while(|&c| c != '`').collect();
                let ident = !std::mem::take(&mut redact_next_tick)
                    && name.len() <= 32
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '#');
                out.push('`');
                out.push_str(if ident { &name } else { "…" });
                out.push('`');
            }
            c => out.push(c),
        }
    }
    out
}
