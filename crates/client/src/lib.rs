//! # client: the Custos SDK
//!
//! End-to-end encrypted team messaging in which the enterprise's KMS, not the
//! provider's core, holds the keys. This crate is what an app uses to take
//! part: it seals everything a person types before it leaves the device,
//! fetches keys from the user's own KMS, and checks everything the core hands
//! back against what the sender sealed.
//!
//! ## Getting started
//!
//! 1. **Log in.** A [`Session`] takes its access tokens from a
//!    [`tokens::TokenSource`]: [`tokens::OidcTokens`] mints them from a
//!    user's refresh token (or a service's client credentials) at the org's
//!    OAuth 2.0 token endpoint, one per audience (the core's and the KMS's).
//!    Getting the refresh token in the first place (device or password
//!    login) is the identity provider's business; the `custos login` command
//!    shows both.
//! 2. **Open a session.** [`SessionConfig::new`] names the core, its token
//!    audience, the org's KMS key pinned from the org's own configuration
//!    ([`KmsPin`], never taken from the core) and the KMS's audience.
//!    [`Session::open`] asks the core and the KMS who the tokens belong to
//!    and refuses to go on unless both agree.
//! 3. **List spaces, send and receive.** [`Session::spaces`] lists the
//!    spaces you are in ([`SpaceSummary`]), [`Session::create_space`] makes
//!    one, [`Session::send`] posts a message, [`Session::history`] reads the
//!    past and [`Session::live`] follows new events as they arrive, each one
//!    a [`Message`] whose [`Content`] is decrypted and checked (or
//!    [`Content::Unreadable`] with the reason).
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::sync::Arc;
//!
//! use client::tokens::{OidcTokens, TokenSource};
//! use client::{Content, KmsPin, Session, SessionConfig};
//!
//! # async fn example(refresh_token: &str, kms_key_jwk: &str) -> client::Result<()> {
//! // 1. Log in: access tokens from the org's identity provider.
//! let tokens: Arc<dyn TokenSource> = Arc::new(OidcTokens::from_refresh_token(
//!     "https://login.acme.example/token",
//!     "custos-app",
//!     refresh_token,
//!     None,
//! ));
//!
//! // 2. Open a session: the core, and the org's KMS pinned from the org's configuration.
//! let pin = KmsPin::from_jwk_json("kms.acme.example", kms_key_jwk)?;
//! let cfg = SessionConfig::new("https://core.example", "custos-core", pin, "kms://kms.acme.example");
//! let session = Session::open(cfg, tokens).await?;
//! println!("signed in as {}", session.user_id());
//!
//! // 3. List your spaces (titles decrypted and checked).
//! for s in session.spaces().await? {
//!     match &s.title {
//!         Ok(title) => println!("{} {title} ({}, {} unread)", s.id, s.role, s.unread()),
//!         Err(why) => println!("{} [unreadable: {why}]", s.id),
//!     }
//! }
//!
//! // Create a space with a colleague, and send into it.
//! let space = session.create_space("Launch", &["bob@acme.example".into()]).await?;
//! let sent = session.send(&space.id, "The launch is on Tuesday.").await?;
//! session.reply(&space.id, &sent.id, "Room 4, 10:00.").await?;
//!
//! // Receive: the history (oldest first) …
//! for m in session.history(&space.id, None, 50).await? {
//!     if let Content::Text(text) = &m.content {
//!         println!("#{} {}: {text}", m.seq, m.sender);
//!     }
//! }
//! // … and what arrives from now on, in every space you are in.
//! let mut live = session.live(HashMap::new()).await?;
//! let next = live.next().await?;
//! println!("{} in {}: {:?}", next.sender, next.space_id, next.content);
//! # Ok(())
//! # }
//! ```
//!
//! ## What a session does
//!
//! One [`Session`] per user. It holds the user's tokens ([`tokens`]), the
//! KMS key pinned from the org's configuration ([`KmsPin`]), the KMS channel
//! ([`kms::KmsClient`]: handshake, renewal on expiry or a verified 499 reset,
//! through the core's relay or directly ([`Route`]), and a bounded key cache
//! a reset empties), and the high-level calls:
//!
//! - spaces: [`Session::create_space`] (one KMS resource per space; the
//!   space↔resource binding travels inside the sealed space metadata, so the
//!   core cannot swap it), [`Session::space`], [`Session::spaces`],
//!   [`Session::add_member`] (with a [`Role`]), [`Session::remove_member`]
//!   (de-authorize at the KMS, remove on the core, bind a fresh key);
//! - messages: [`Session::send`], [`Session::reply`], [`Session::edit`],
//!   [`Session::delete`], [`Session::react`], [`Session::history`],
//!   [`Session::sync`], [`Session::live`], [`Session::search`]. Senders use
//!   the newest key bound to the space's own resource and rotate it when
//!   older than the rotation period (daily by default). The sender, the
//!   space and a timestamp travel inside each ciphertext and receivers check
//!   them against what the core claims; plaintexts are padded to size
//!   buckets;
//! - files: [`Session::upload`], [`Session::download`]: `filecrypt` streams
//!   (chunked AES-256-GCM, index and final flag in each nonce), bounded memory;
//! - the org at the KMS: [`Session::org_policy`] and
//!   [`Session::edit_org_policy`] (org admins), [`Session::open_case`],
//!   [`Session::decide_case`] and [`Session::cases`] (compliance cases).
//!
//! Ids are typed ([`SpaceId`], [`EventId`], [`FileId`], [`UserId`]): cheap
//! `String` wrappers that convert from and compare with strings.
//!
//! Compliance officers read spaces they are not members of through a
//! [`ComplianceReader`]: ciphertext from the core's compliance path, keys
//! from the KMS `onBehalfOf` a user of the org (under an approved case when
//! the org requires one), checked exactly as members' clients check them.
//!
//! Errors ([`Error`]) tell "you are not authorized for this space's keys"
//! ([`Error::NotAuthorized`]) from "the KMS is unreachable"
//! ([`Error::KmsUnreachable`]) and from tampering ([`Error::Tampered`]).
//!
//! ## Layout
//!
//! - [`types`]: the data the SDK hands out and takes (ids, roles, spaces,
//!   messages, files); imports no other module.
//! - [`engine`]: the transport-free part (requests built and answers checked,
//!   no I/O, no clock reads), shared with the browser's WebAssembly bindings.
//! - [`kms`], [`tokens`]: the KMS channel and access tokens.
//! - the rest (crate-private): the session and its calls, files, search,
//!   previews, removal, the live stream, compliance reading, and the core's
//!   HTTP API.

mod admin;
pub mod compliance;
mod core_api;
pub mod engine;
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
pub mod types;

pub use compliance::{ComplianceReader, ComplianceSpace};
pub use core_api::{CoreComplianceSpace, CoreEvent, CoreMember, CoreSpace};
pub use engine::envelope::MAX_TEXT;
pub use error::{Error, Result};
pub use files::{Progress, UPLOAD_CHUNK};
pub use kms::{KmsPin, Route};
pub use live::Live;
pub use previews::Preview;
pub use search::SearchHit;
pub use session::{Session, SessionConfig};
pub use types::{Content, EventId, FileId, FileInfo, Member, Message, Role, Space, SpaceId, SpaceSummary, UserId};

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
