//! Engine errors: internal failures. Protocol-level refusals are responses, not errors.

use crate::crypto::CryptoError;
use crate::session::TicketError;

/// What can go wrong inside the KMS (as opposed to a client's mistake).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kms_store::StoreError),
    /// Keys at rest failed to open.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A ticket was refused.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The protocol layer failed on our own data.
    #[error(transparent)]
    Protocol(#[from] kms_protocol::ProtocolError),
    /// The KEK of a key is revoked.
    #[error("the key's KEK is revoked")]
    KekRevoked,
    /// The KEK of a key was destroyed under the org's retention policy.
    #[error("the key's KEK was destroyed (retention)")]
    KekDestroyed,
    /// Anything else that should not happen.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The stored org policy or a case could not be read or written.
    #[error("org policy: {0}")]
    Policy(String),
}
