//! Errors of the protocol layer. Messages never quote tokens, keys or payload values.

use crate::status::Status;
use crate::uri::UriError;

/// Everything that can go wrong reading or writing KMS messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The JOSE layer refused the message.
    #[error(transparent)]
    Jose(#[from] jose::Error),
    /// A URI in the message is not acceptable.
    #[error("{field}: {source}")]
    Uri {
        /// The field that held it.
        field: &'static str,
        /// Why.
        source: UriError,
    },
    /// A required field is absent.
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    /// A field has an unacceptable value.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// Why (never the value itself).
        reason: &'static str,
    },
    /// A structured member (such as `policy`) does not decode.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidDocument {
        /// Which field.
        field: &'static str,
        /// What the decoder said (names the member, never echoes values).
        reason: String,
    },
    /// Method and URI name no operation of the protocol.
    #[error("no operation `{method}` on {target}")]
    UnknownOperation {
        /// The method.
        method: &'static str,
        /// The kind of URI.
        target: &'static str,
    },
    /// The URI names another KMS.
    #[error("URI names KMS `{0}`, not this one")]
    ForeignDomain(String),
    /// A signed object of another signing context (JWS `typ`).
    #[error("signed object has context {found:?}, expected `{expected}`")]
    WrongContext {
        /// The context required.
        expected: &'static str,
        /// The context found.
        found: Option<String>,
    },
    /// A response that answers another request.
    #[error("response answers another request")]
    RequestIdMismatch,
    /// A message encrypted under another key than the session's.
    #[error("message is for another session key")]
    KidMismatch,
    /// The session (ephemeral key) has expired.
    #[error("the ephemeral key has expired")]
    Expired,
    /// The KMS answered with an error status.
    #[error("KMS answered {status}: {reason}")]
    Status {
        /// The HTTP-style status the KMS put in its answer.
        status: Status,
        /// The KMS's reason.
        reason: String,
    },
    /// A verified reset (499): drop the session and handshake again.
    #[error("KMS reset the session: {0}")]
    Reset(String),
    /// A reset that failed verification, is stale, or answers another request: ignored.
    #[error("ignored a reset that was stale or unmatched")]
    StaleReset,
    /// A `jwk` credential's proof of possession was refused (see [`crate::pop`]).
    #[error("proof of possession refused: {0}")]
    ProofOfPossession(crate::pop::PopRefusal),
}

impl ProtocolError {
    pub(crate) fn uri(field: &'static str) -> impl FnOnce(UriError) -> Self {
        move |source| ProtocolError::Uri { field, source }
    }
}
