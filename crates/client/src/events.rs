//! Decrypting one core event as a member's client does: the one pipeline
//! shared by [`crate::Session`] and [`crate::compliance::ComplianceReader`].
//! The checks are the engine's ([`crate::engine::events`]); this adds the
//! key fetch.

use std::sync::Mutex;

use kms_protocol::KmsUri;

use crate::engine::events::{sealed_key_uri, ReplayGuard};
use crate::error::Result;
use crate::kms::KmsClient;
use crate::types::Content;
use crate::wire::CoreEvent;

pub(crate) use crate::engine::events::{message, plain_content};

/// The session's replay guard.
pub(crate) type Seen = Mutex<ReplayGuard>;

/// Fetches the key a sealed event names and opens it ([`crate::engine::events::open_sealed`]).
pub(crate) async fn open_sealed(kms: &KmsClient, seen: &Seen, resource: &KmsUri, e: &CoreEvent) -> Result<Content> {
    let key = kms.key(sealed_key_uri(e)?).await?;
    let mut guard = seen.lock().expect("not poisoned");
    crate::engine::events::open_sealed(&key, &mut guard, resource, e)
}
