//! The SDK's errors: each says which party failed and what the user can do.
//!
//! Messages never quote tokens, keys or plaintext.

use kms_protocol::ProtocolError;

/// Everything an SDK call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The KMS refused to give this user the keys (not authorized on the
    /// space's resource, de-authorized, or stopped by org policy).
    #[error("you are not authorized for this space's keys (the KMS said: {reason})")]
    NotAuthorized {
        /// The KMS's reason.
        reason: String,
    },
    /// The KMS could not be reached (directly or through the core's relay).
    #[error("the KMS for {domain} is unreachable: {detail}")]
    KmsUnreachable {
        /// The KMS domain.
        domain: String,
        /// What failed (connection refused, timeout, relay's 502…).
        detail: String,
    },
    /// An answer claiming to come from the KMS is not signed by the KMS key
    /// pinned from the org's configuration: someone in between (the core, a
    /// proxy) is not relaying faithfully. Nothing from it was used.
    #[error("the KMS answer for {domain} is not signed by the pinned KMS key: refused (the relay or network is not trustworthy)")]
    KmsKeyMismatch {
        /// The KMS domain.
        domain: String,
    },
    /// The space's keys are held by another organization's KMS. Your KMS
    /// fetches them for you (federation), but only that organization's
    /// members add or remove people there and bind its new keys.
    #[error("this space belongs to {domain}, another organization's KMS: only that organization's members add or remove people and rotate its key")]
    OtherKms {
        /// The key's KMS domain.
        domain: String,
    },
    /// The KMS answered with another error status.
    #[error("the KMS refused the request: {status} {reason}")]
    Kms {
        /// Status code.
        status: u16,
        /// The KMS's reason.
        reason: String,
    },
    /// The core could not be reached.
    #[error("the core is unreachable: {0}")]
    CoreUnreachable(String),
    /// The core answered with an error.
    #[error("the core refused the request: {status} {code}: {message}")]
    Core {
        /// HTTP status.
        status: u16,
        /// The core's error code (`not_member`, `too_large`…).
        code: String,
        /// The core's message.
        message: String,
    },
    /// No valid token (not logged in, refresh refused).
    #[error("sign-in needed: {0}")]
    Auth(String),
    /// Content failed verification: a bad tag, a sender or space that does not
    /// match what the core claims, a key bound to another resource, a file
    /// truncated or reordered.
    #[error("content failed verification: {0}")]
    Tampered(String),
    /// A removal could not be made complete: the removed person (or
    /// something set up while they were a member) still has a way to the
    /// space's keys. The key was not rotated: a new key would reach them too.
    #[error("the removal is not complete: {0}; the space's key was not rotated")]
    RemovalIncomplete(String),
    /// The caller asked for something impossible (bad id, oversize text).
    #[error("{0}")]
    Invalid(String),
    /// Local I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A protocol-level failure not covered above.
    #[error("KMS protocol: {0}")]
    Protocol(ProtocolError),
}

impl Error {
    /// Whether this says the user may not have the keys (as opposed to a
    /// failure of the KMS or the network).
    pub fn is_not_authorized(&self) -> bool {
        matches!(self, Error::NotAuthorized { .. })
    }

    /// Whether the KMS could not be reached.
    pub fn is_kms_unreachable(&self) -> bool {
        matches!(self, Error::KmsUnreachable { .. })
    }
}

impl From<filecrypt::Error> for Error {
    fn from(e: filecrypt::Error) -> Self {
        match e {
            filecrypt::Error::Io(io) => Error::Io(io),
            other => Error::Tampered(format!("file: {other}")),
        }
    }
}

impl From<jose::Error> for Error {
    fn from(e: jose::Error) -> Self {
        Error::Tampered(format!("ciphertext refused: {e}"))
    }
}

/// Result with the SDK's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
