//! # kms: the Custos Key Management Server
//!
//! The enterprise's server that creates, stores, authorizes and hands out
//! content keys, following the KMS draft and `kms-protocol.md`.
//!
//! - [`engine`]: compact message in, compact message out; every operation.
//! - [`session`]: sealed session tickets (no database write per handshake).
//! - [`keyring`] and [`crypto`]: CMK → KEK → content key wrapping.
//! - [`masterkeys`]: the CMKs (file or PKCS#11 backend): the active one, rotation, BYOK, destruction.
//! - [`auth`]: bearer tokens (trusted issuers) and anonymous bearers.
//! - [`service_auth`]: `jwk` service credentials (x5c chain to a trust root, proof of possession).
//! - [`limit`]: per-source limits on unauthenticated RSA work.
//! - [`audit`](mod@audit): what goes into the hash-chained audit log (crate `audit`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod auth;
pub mod config;
pub mod connector;
pub mod crypto;
pub mod engine;
mod error;
pub mod federation;
pub mod http;
pub mod keyring;
pub mod limit;
pub mod masterkeys;
pub mod policy;
pub mod server;
pub mod service_auth;
pub mod session;
pub mod static_keys;

pub use engine::{Engine, EngineConfig, Throttled};
pub use error::EngineError;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    to_ms(&time::OffsetDateTime::now_utc())
}

/// A date as Unix milliseconds.
pub fn to_ms(d: &time::OffsetDateTime) -> i64 {
    (d.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as a date.
pub fn from_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
