//! Who is asking: bearer tokens from trusted issuers, or the KMS's own
//! anonymous-authorization bearers.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A user authenticated by a trusted identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// `name@org-domain`.
    pub user_id: String,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
    /// A service's own token (OAuth client credentials), not a person's.
    pub client_credentials: bool,
}

/// Why a credential was refused (the reason goes to the client; never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// Validates OAuth 2.0 bearer tokens (implemented over `kms-identity`; tests use fakes).
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Validates a token meant for this KMS.
    async fn authenticate(&self, token: &str) -> Result<AuthenticatedUser, AuthError>;
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user (or service) from a trusted issuer.
    User {
        /// `name@org-domain`.
        user_id: String,
        /// A service's own token (client credentials): default-deny unless
        /// the org's policy lists it as a service; never an admin.
        client_credentials: bool,
    },
    /// A service (bot, indexer, DLP) authenticated by certificate. Its id lives
    /// in a namespace of its own (`service:<id>`), so a certificate can never
    /// act as a user or an admin: orgs authorize services by that id.
    Service {
        /// `name@domain` from its certificate.
        service_id: String,
    },
    /// A compliance officer reading `onBehalfOf` a user of the org: the
    /// subject's authorizations apply; the session belongs to the officer.
    Compliance {
        /// The officer (`name@org`), who authenticated.
        officer: String,
        /// The user whose authorizations apply.
        subject: String,
        /// The compliance case the request names, if any.
        case: Option<String>,
    },
    /// Another org's KMS (federation), authenticated by its static key and
    /// listed as an allowed peer in this org's policy. It reads, for its own
    /// users, what at least one of them is authorized for; it is told only
    /// about its own org's authorizations.
    Peer {
        /// Its KMS domain.
        kms_domain: String,
        /// The org it speaks for.
        org_domain: String,
        /// The user of that org it asks for (its word; audited).
        user: Option<String>,
    },
    /// The holder of an anonymous authorization's bearer: may read that resource's keys, nothing else.
    Anonymous {
        /// The authorization (object id).
        authorization_id: String,
        /// Its resource (object id).
        resource_id: String,
    },
}

impl Principal {
    /// The id a session is bound to.
    pub fn id(&self, kms_domain: &str) -> String {
        match self {
            Principal::User { user_id, .. } => user_id.clone(),
            Principal::Service { service_id } => format!("service:{service_id}"),
            Principal::Compliance { officer, .. } => officer.clone(),
            Principal::Peer { kms_domain, .. } => format!("kms://{kms_domain}"),
            Principal::Anonymous { authorization_id, .. } => {
                format!("kms://{kms_domain}/authorizations/{authorization_id}")
            }
        }
    }
}

/// Claims of an anonymous authorization bearer (signed in the `kms-anon-auth` context).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnonClaims {
    /// This KMS (`kms://<domain>`).
    pub iss: String,
    /// The authorization URI.
    pub sub: String,
    /// The resource URI.
    pub resource: String,
    /// Issued (Unix seconds).
    pub iat: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
}
