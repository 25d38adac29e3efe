//! # client: the Custos SDK
//!
//! One [`Session`] per user. It holds the user's tokens ([`tokens`]), the
//! KMS key pinned from the org's configuration ([`KmsPin`], never taken from
//! the core), the KMS channel ([`kms::KmsClient`]: handshake, renewal on
//! expiry or a verified 499 reset, through the core's relay or directly, and
//! a bounded key cache a reset empties), and the high-level calls:
//!
//! - spaces: [`Session::create_space`] (one KMS resource per space; the
//!   space↔resource binding travels inside the sealed space metadata, so the
//!   core cannot swap it), [`Session::add_member`], [`Session::remove_member`]
//!   (de-authorize at the KMS, remove on the core, bind a fresh key);
//! - messages: [`Session::send`], [`Session::reply`], [`Session::edit`],
//!   [`Session::delete`], [`Session::react`], [`Session::history`],
//!   [`Session::live`]. Senders use the newest key bound to the space's own
//!   resource and rotate it when older than the rotation period (daily by
//!   default). The sender, the space and a timestamp travel inside each
//!   ciphertext and receivers check them against what the core claims
//!   ([`content`]); plaintexts are padded to size buckets;
//! - files: [`Session::upload`], [`Session::download`]: `filecrypt` streams
//!   (chunked AES-256-GCM, index and final flag in each nonce), bounded memory.
//!
//! Compliance officers read spaces they are not members of through a
//! [`ComplianceReader`]: ciphertext from the core's compliance path, keys
//! from the KMS `onBehalfOf` a user of the org (under an approved case when
//! the org requires one), checked exactly as members' clients check them.
//!
//! Errors ([`Error`]) tell "you are not authorized for this space's keys"
//! ([`Error::NotAuthorized`]) from "the KMS is unreachable"
//! ([`Error::KmsUnreachable`]) and from tampering ([`Error::Tampered`]).

pub mod compliance;
pub mod content;
pub mod core_api;
mod error;
mod events;
mod files;
pub mod kms;
mod live;
mod previews;
mod removal;
mod search;
mod session;
pub mod tokens;

pub use compliance::{ComplianceReader, ComplianceSpace};
pub use error::{Error, Result};
pub use files::{FileInfo, Progress, UPLOAD_CHUNK};
pub use kms::{KmsPin, Route};
pub use live::Live;
pub use previews::Preview;
pub use search::SearchHit;
pub use session::{Content, Message, Session, SessionConfig, Space};

/// The HTTP client every part of the SDK uses.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("the HTTP client builds")
}

/// Reads a response body, at most `cap` bytes: `Err(None)` when larger,
/// `Err(Some(why))` when it broke off.
pub(crate) async fn read_capped(
    mut r: reqwest::Response,
    cap: usize,
) -> std::result::Result<bytes::Bytes, Option<String>> {
    if r.content_length().is_some_and(|n| n > cap as u64) {
        return Err(None);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| Some(why(&e)))? {
        if out.len() + chunk.len() > cap {
            return Err(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Why a request failed, without the URL's query or any body.
pub(crate) fn why(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused or unreachable".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".into()
    } else {
        "the request failed".into()
    }
}
