//! Why a token was refused.

/// Why a token was refused. The messages name the failed check only: they
/// never quote the token or any value taken from it, so they are safe to log
/// and to return to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Not a compact JWS with JSON header and claims, or too long.
    #[error("access token is malformed")]
    Malformed,
    /// `iss` is not one of the configured issuers.
    #[error("access token issuer is not trusted")]
    UnknownIssuer,
    /// `aud` is not this KMS's audience.
    #[error("access token is not meant for this KMS")]
    WrongAudience,
    /// `aud` names more than one audience (refused even if ours is among them).
    #[error("access token names more than one audience")]
    MultipleAudiences,
    /// Header `typ` is not `at+jwt` (RFC 9068), e.g. an ID token.
    #[error("token is not an RFC 9068 access token (typ at+jwt)")]
    WrongType,
    /// `exp` has passed.
    #[error("access token has expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("access token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("access token was issued in the future")]
    IssuedInFuture,
    /// The signature does not verify with the issuer's key.
    #[error("access token signature is invalid")]
    BadSignature,
    /// `alg` is not RS256, PS256 or ES256.
    #[error("access token signing algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// No key of the issuer's key set matches the token's `kid` and `alg`.
    #[error("access token signing key is unknown")]
    UnknownKey,
    /// The issuer's discovery document or key set could not be fetched.
    #[error("access token issuer is unreachable")]
    IssuerUnreachable,
    /// The user claim carries a domain other than the issuer's org domain.
    #[error("access token names a user outside the issuer's organization")]
    ForeignUserDomain,
    /// A required registered claim is absent.
    #[error("access token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// The configured user claim is absent.
    #[error("access token lacks the configured user claim")]
    MissingUserClaim,
    /// The user claim is not a usable user name (empty, not a string, spaces,
    /// control characters, several `@`, too long).
    #[error("access token user claim is not a valid user id")]
    InvalidUserId,
    /// The user claim falls in a namespace the KMS keeps for other
    /// principals: `service:…` (services that authenticate with a
    /// certificate) or a `kms:` URI (peer KMSs, anonymous bearers). A token
    /// must never become one of them.
    #[error("access token user claim falls in a namespace reserved for services and KMSs")]
    ReservedUserId,
}
