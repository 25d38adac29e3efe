//! # primitives: the cryptography every Custos crate calls, one backend per target
//!
//! `jose`, `filecrypt` and `search` run in the KMS, the core and the native
//! SDK, and also in the browser, compiled to WebAssembly. aws-lc-rs, which
//! the servers and native clients use, does not build for
//! `wasm32-unknown-unknown`, so this crate offers the small set of
//! primitives those crates need behind one API and picks the implementation
//! by target:
//!
//! - natively, [aws-lc-rs] (unchanged from before this crate existed);
//! - on `wasm32`, RustCrypto (`aes-gcm`, `p256`, `hkdf`, `hmac`, `sha2`, and
//!   `rsa` for public-key operations only).
//!
//! The choice is `cfg(target_arch = "wasm32")`, not a cargo feature: features
//! are additive across a workspace, and one crate asking for RustCrypto would
//! switch every native binary over with it.
//!
//! **RSA private keys do not exist in the browser.** A client only encrypts to
//! and verifies the KMS's key; RustCrypto's RSA private operations are not
//! constant-time. On wasm [`rsa::PrivateKey`] is an empty type whose
//! constructors all fail with [`Error::Unsupported`].
//!
//! Both backends are compiled in native tests and answer the same
//! known-answer tests, and each checks the other's output (`src/tests.rs`).
//!
//! [aws-lc-rs]: https://docs.rs/aws-lc-rs

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

#[cfg(not(target_arch = "wasm32"))]
#[path = "aws.rs"]
mod backend;
#[cfg(target_arch = "wasm32")]
#[path = "rustcrypto.rs"]
mod backend;

// Natively, the RustCrypto backend is compiled for the cross-checks only.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(dead_code)]
mod rustcrypto;
#[cfg(test)]
mod tests;

pub use backend::{fill_random, hkdf_sha256, sha256, Aes256Gcm, HmacSha256};

/// Which backend this build uses: `"aws-lc-rs"` or `"RustCrypto"`.
pub const BACKEND: &str = backend::NAME;

/// AES-256-GCM key length in bytes.
pub const AES_KEY_LEN: usize = 32;
/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// RSA public-key operations (both targets) and private-key ones (native only).
pub mod rsa {
    pub use crate::backend::rsa::{PrivateKey, PublicKey};

    /// The two RSA signature schemes JOSE uses with SHA-256.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Padding {
        /// RSASSA-PKCS1-v1_5 (`RS256`).
        Pkcs1Sha256,
        /// RSASSA-PSS with MGF1-SHA-256 and a 32-byte salt (`PS256`).
        PssSha256,
    }

    /// Key sizes `PrivateKey::generate` takes.
    pub const GENERATE_BITS: [usize; 4] = [2048, 3072, 4096, 8192];
}

/// ECDSA and ECDH on P-256, with keys as bytes: a 32-byte big-endian scalar
/// and a 65-byte uncompressed SEC1 point.
pub mod p256 {
    pub use crate::backend::p256::{
        check_point, ecdh, generate, public_from_scalar, scalar_from_der, sign, to_pkcs8_der, verify,
    };
}

/// What went wrong, never with the values involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The operation failed: a bad key, a bad signature, a failed tag check.
    /// Deliberately says nothing more.
    Failed(&'static str),
    /// This backend does not offer the operation (RSA private keys in the browser).
    Unsupported(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(what) => write!(f, "{what} failed"),
            Error::Unsupported(what) => write!(f, "{what} is not available with the {} backend", BACKEND),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
