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

// What the browser's WebAssembly build has too: the transport-free engine,
// the types, the core's records and the error. The rest does I/O (reqwest,
// tokio, files) and is native only.
pub mod engine;
mod error;
pub mod types;
pub mod wire;

#[cfg(not(target_arch = "wasm32"))]
mod admin;
#[cfg(not(target_arch = "wasm32"))]
pub mod compliance;
#[cfg(not(target_arch = "wasm32"))]
mod core_api;
#[cfg(not(target_arch = "wasm32"))]
mod events;
#[cfg(not(target_arch = "wasm32"))]
mod files;
#[cfg(not(target_arch = "wasm32"))]
pub mod kms;
#[cfg(not(target_arch = "wasm32"))]
mod live;
#[cfg(not(target_arch = "wasm32"))]
mod previews;
#[cfg(not(target_arch = "wasm32"))]
mod removal;
#[cfg(not(target_arch = "wasm32"))]
mod search;
#[cfg(not(target_arch = "wasm32"))]
mod session;
#[cfg(not(target_arch = "wasm32"))]
pub mod tokens;

pub use engine::envelope::MAX_TEXT;
pub use engine::key::ContentKey;
pub use engine::pin::KmsPin;
pub use error::{Error, Result};
pub use types::{Content, EventId, FileId, FileInfo, Member, Message, Role, Space, SpaceId, SpaceSummary, UserId};
pub use wire::{CoreComplianceSpace, CoreEvent, CoreMember, CoreSpace};

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

/// The native SDK's entry points.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    pub use crate::compliance::{ComplianceReader, ComplianceSpace};
    pub use crate::files::{Progress, UPLOAD_CHUNK};
    pub use crate::kms::Route;
    pub use crate::live::Live;
    pub use crate::previews::Preview;
    pub use crate::search::SearchHit;
    pub use crate::session::{Session, SessionConfig};
}

#[cfg(not(target_arch = "wasm32"))]
mod net;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use net::{http_client, read_capped, why};
