//! # jose: the JOSE subset of the Custos KMS protocol
//!
//! Compact JWE (`dir` or `RSA-OAEP`, with `A256GCM`), compact JWS (`PS256`,
//! `RS256`, `ES256`), and JWKs for RSA, EC P-256 and oct keys, over the
//! [`primitives`] crate (aws-lc-rs natively, RustCrypto in the browser, where
//! RSA private keys do not exist). It is small on purpose:
//!
//! - **Allowlists, not negotiation.** Every reader takes a policy naming the
//!   algorithms the caller accepts ([`JwePolicy`], [`JwsPolicy`]). `none`,
//!   `RSA1_5`, key wrapping, compression (`zip`), unencoded payloads (`b64`)
//!   and every `crit` extension are refused.
//! - **Keys choose nothing.** The caller passes a typed key; a key of the
//!   wrong type for the header's algorithm is an error, never a fallback.
//! - **Strict parsing.** Canonical unpadded base64url only, exact segment
//!   counts and lengths, duplicate JSON members refused, size-capped input.
//! - **Secrets stay secret.** Private and symmetric key material zeroizes on
//!   drop and is redacted by `Debug`; error messages never quote input values.
//!   RSA-OAEP failures look exactly like tag failures (no padding oracle).
//!
//! ```
//! use jose::{jwe, ContentEnc, HeaderParams, JwePolicy, OctKey};
//! let key = OctKey::generate(32, Some("k1".into())).unwrap();
//! let c = jwe::encrypt(jwe::EncryptKey::Dir(&key), ContentEnc::A256Gcm, &HeaderParams::kid("k1"), b"hi").unwrap();
//! let parsed = jose::Jwe::parse(&c, &JwePolicy::DIR).unwrap();
//! assert_eq!(parsed.header().kid.as_deref(), Some("k1"));
//! assert_eq!(&parsed.decrypt(jwe::DecryptKey::Dir(&key)).unwrap()[..], b"hi");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod b64;
mod ecdh;
mod error;
mod header;
pub mod json;
pub mod jwe;
pub mod jwk;
pub mod jws;
mod keys;

pub use ecdh::ecdh_hkdf;
pub use error::{Error, Part, Result};
pub use header::{ContentEnc, HeaderParams, KeyAlg, SigAlg};
pub use jwe::{Jwe, JweHeader, JwePolicy};
pub use jwk::{Jwk, Key, SecretString};
pub use jws::{Jws, JwsHeader, JwsPolicy};
pub use keys::{EcPrivateKey, EcPublicKey, OctKey, RsaPrivateKey, RsaPublicKey, RSA_MAX_BITS, RSA_MIN_BITS};

/// Longest compact serialization accepted by the default policies (1 MiB).
pub const DEFAULT_MAX_LEN: usize = 1 << 20;
