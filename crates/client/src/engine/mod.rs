//! The SDK's transport-free part: decisions over typed inputs, no I/O.
//!
//! What belongs here: building what the SDK sends (KMS request bodies, sealed
//! envelopes, blinded search tokens) and checking what it receives (KMS
//! answers parsed into typed values, envelopes opened and checked against
//! what the core claims). Each function takes everything it needs as
//! arguments — state in, bytes or typed values out — and the caller does the
//! I/O: the native [`crate::Session`] (reqwest, tokio) today, the browser's
//! WebAssembly bindings next (`fetch`, IndexedDB), so both make the same
//! checks with the same code.
//!
//! What does not: no `reqwest`, no `tokio`, no file system, and no clock
//! reads (`Instant` and `SystemTime` panic on `wasm32-unknown-unknown`): a
//! time a decision needs is passed in by the caller.
//!
//! - [`policy`]: the org policy at the KMS (read it, write an edited document
//!   back naming the version read);
//! - [`cases`]: compliance cases at the KMS (open, decide, list; case and
//!   resource URIs from what a person types);
//! - [`envelope`]: sealing and opening the content of events, files and
//!   space metadata;
//! - [`events`]: opening a core event with its key (every check a member's
//!   client makes, the replay guard included);
//! - [`key`]: a content key from the KMS's key object;
//! - [`pin`]: the KMS key a client trusts, from its org's configuration;
//! - [`search`]: the search key of a content key and the blinded tokens of a
//!   text.

use kms_protocol::message::RequestBody;
use kms_protocol::Method;

use crate::error::Error;

pub mod cases;
pub mod envelope;
pub mod events;
pub mod key;
pub mod pin;
pub mod policy;
pub mod search;

/// A KMS request, built but not sent: send it on the KMS channel
/// ([`crate::kms::KmsClient::call`]) and hand the answer to the matching
/// parser of this module.
#[derive(Debug, Clone)]
pub struct KmsRequest {
    /// The method.
    pub method: Method,
    /// The target (`/policy`, `kms://…/cases/<id>`…).
    pub uri: String,
    /// The body.
    pub body: RequestBody,
}

impl KmsRequest {
    pub(crate) fn new(method: Method, uri: impl Into<String>, body: RequestBody) -> Self {
        Self { method, uri: uri.into(), body }
    }
}

/// A KMS answer that lacks what the request asks for.
pub(crate) fn missing(what: &str) -> Error {
    Error::Kms { status: 500, reason: format!("the KMS answered without {what}") }
}
