//! Request and response payloads, the objects they carry, and the typed
//! [`Operation`] a request stands for.
//!
//! The wire structs ([`Request`], [`Response`]) are lenient about members they
//! do not know (real clients add some) and strict about the types of those
//! they do. [`Request::operation`] then checks that method, URI and fields
//! make one operation of the protocol, and canonicalizes every URI in it.

use std::fmt;

use jose::{Jwk, SecretString};
use serde::{Deserialize, Serialize};

use crate::date::{self, Date};
use crate::error::ProtocolError;
use crate::status::Status;
use crate::uri::{Kind, KmsUri, Target};

/// Most keys one `create /keys` may ask for.
pub const MAX_KEY_COUNT: u32 = 1000;
/// Most authIds (or keyUris) in one request.
pub const MAX_LIST_LEN: usize = 1000;

/// Request methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Create.
    Create,
    /// Retrieve.
    Retrieve,
    /// Update.
    Update,
    /// Delete.
    Delete,
}

impl Method {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Create => "create",
            Method::Retrieve => "retrieve",
            Method::Update => "update",
            Method::Delete => "delete",
        }
    }
}

/// Who is asking: a client id and a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Opaque client (device, app instance) id.
    #[serde(rename = "clientId", default)]
    pub client_id: String,
    /// The credential.
    #[serde(default)]
    pub credential: Credential,
}

/// A credential: a bearer token, or a JWK with a certificate chain and a proof of possession.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The user id the client believes it has: a hint only.
    #[serde(rename = "userId", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// OAuth 2.0 access token. Zeroized on drop, never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<SecretString>,
    /// A service's public key with `x5c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    /// Proof of possession of `jwk` (a compact JWS; see `kms-protocol.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// Compliance: the user whose authorizations apply.
    #[serde(rename = "onBehalfOf", default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl Credential {
    /// A bearer credential.
    pub fn bearer(token: impl Into<String>) -> Self {
        Self { bearer: Some(SecretString::new(token.into())), ..Self::default() }
    }
}

/// A request as it travels inside its JWE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// What to do.
    pub method: Method,
    /// To what.
    pub uri: String,
    /// Client-chosen id, echoed in the response; the KMS remembers it per session.
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// Operation-specific members.
    #[serde(flatten)]
    pub body: RequestBody,
}

/// The operation-specific members of a request; which are required depends on the operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestBody {
    /// `create /ecdhe`: the client's ephemeral public key (node-kms also sends `d`: ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    /// `create /keys`: how many; resource keys: at most how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Resource accesses: only those after this audit seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Bind key, create authorizations: the resource.
    #[serde(rename = "resourceUri", default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// Create resource, create/delete authorizations: who.
    #[serde(rename = "authIds", default, skip_serializing_if = "Option::is_none")]
    pub auth_ids: Option<Vec<String>>,
    /// The production client's synonym of `authIds`.
    #[serde(rename = "userIds", default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<String>>,
    /// Create resource: keys to bind to it.
    #[serde(rename = "keyUris", default, skip_serializing_if = "Option::is_none")]
    pub key_uris: Option<Vec<String>>,
    /// Create resource or authorizations: how many anonymous authorizations to
    /// create (the draft's integer; `true`/`false` are read as 1/0).
    #[serde(default, deserialize_with = "anonymous_count", skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<u32>,
    /// Create resource: lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Create authorizations: the role (participant when absent).
    #[serde(rename = "roleUri", default, skip_serializing_if = "Option::is_none")]
    pub role_uri: Option<String>,
    /// Resource keys: only keys bound after this.
    #[serde(rename = "boundAfter", default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub bound_after: Option<Date>,
    /// Resource keys: only keys bound before this.
    #[serde(rename = "boundBefore", default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub bound_before: Option<Date>,
    /// BYOK: the CMK wrapped to the KMS public key.
    #[serde(rename = "customerMasterKey", default, skip_serializing_if = "Option::is_none")]
    pub customer_master_key: Option<String>,
    /// BYOK: a backup copy of the wrapped CMK.
    #[serde(rename = "customerMasterKeyBackup", default, skip_serializing_if = "Option::is_none")]
    pub customer_master_key_backup: Option<String>,
    /// BYOK: how `customerMasterKey` was wrapped (JOSE name; `RSA-OAEP` when
    /// absent; a Custos extension).
    #[serde(rename = "customerMasterKeyAlg", default, skip_serializing_if = "Option::is_none")]
    pub customer_master_key_alg: Option<String>,
    /// Admin: the new state of a CMK/KEK.
    #[serde(rename = "keyState", default, skip_serializing_if = "Option::is_none")]
    pub key_state: Option<KeyState>,
    /// Admin: the org a CMK/KEK operation is for.
    #[serde(rename = "assignedOrgId", default, skip_serializing_if = "Option::is_none")]
    pub assigned_org_id: Option<String>,
    /// `update /policy`: the new org policy (a Custos extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
    /// `update /policy`: the version the change was made from (compare-and-swap).
    #[serde(rename = "policyVersion", default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
    /// `create /cases`: what the compliance case covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<crate::policy::CaseRequest>,
    /// `update /cases/<id>`: an approver's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::policy::CaseDecision>,
    /// Key requests made `onBehalfOf` someone: the compliance case they serve.
    #[serde(rename = "caseId", default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
}

/// Most anonymous authorizations one request may create.
pub const MAX_ANONYMOUS: u32 = 10;

fn anonymous_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum A {
        Flag(bool),
        Count(u32),
    }
    Ok(Option::<A>::deserialize(d)?.map(|a| match a {
        A::Flag(b) => u32::from(b),
        A::Count(n) => n,
    }))
}

/// How a customer wraps its own CMK to the KMS's `/publicKey` (BYOK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CmkWrapAlg {
    /// RSA-OAEP with SHA-1 and MGF1-SHA-1 (JOSE `RSA-OAEP`): the default.
    #[default]
    RsaOaep,
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 (JOSE `RSA-OAEP-256`).
    RsaOaep256,
}

impl CmkWrapAlg {
    /// From its JOSE name.
    pub fn from_jose(name: &str) -> Option<Self> {
        match name {
            "RSA-OAEP" => Some(CmkWrapAlg::RsaOaep),
            "RSA-OAEP-256" => Some(CmkWrapAlg::RsaOaep256),
            _ => None,
        }
    }
}

/// States of a CMK or KEK (the production client's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum KeyState {
    Pending,
    Recovering,
    Active,
    Revoked,
    Deactivated,
    Reencrypting,
    Retired,
    Deleted,
    Disabled,
    Removedclean,
    Removeddirty,
}

/// A key (content key or ephemeral key) as the KMS describes it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyObject {
    /// Canonical URI.
    pub uri: KmsUri,
    /// The key: `oct` for content keys, the KMS's public EC key for ephemeral keys.
    pub jwk: Jwk,
    /// Creator.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Creator's client.
    #[serde(rename = "clientId")]
    pub client_id: String,
    /// Created.
    #[serde(rename = "createDate", with = "date::rfc3339")]
    pub create_date: Date,
    /// Expires (unbound keys can no longer be bound; ephemeral keys stop working).
    #[serde(rename = "expirationDate", with = "date::rfc3339")]
    pub expiration_date: Date,
    /// The resource it is bound to.
    #[serde(rename = "resourceUri", default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<KmsUri>,
    /// When it was bound.
    #[serde(rename = "bindDate", default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub bind_date: Option<Date>,
}

impl fmt::Debug for KeyObject {
    // The JWK's secret member is already redacted; the rest is metadata.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyObject")
            .field("uri", &self.uri.to_string())
            .field("jwk", &self.jwk)
            .field("user_id", &self.user_id)
            .field("resource_uri", &self.resource_uri.as_ref().map(|u| u.to_string()))
            .finish_non_exhaustive()
    }
}

/// A resource (KRO).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceObject {
    /// Canonical URI.
    pub uri: KmsUri,
    /// Bound keys.
    #[serde(rename = "keyUris", default)]
    pub key_uris: Vec<KmsUri>,
    /// Authorizations.
    #[serde(rename = "authorizationUris", default)]
    pub authorization_uris: Vec<KmsUri>,
    /// Lifetime in seconds, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Created.
    #[serde(rename = "createDate", default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub create_date: Option<Date>,
    /// Expires, if it has a ttl.
    #[serde(
        rename = "expirationDate",
        default,
        with = "date::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_date: Option<Date>,
}

/// An authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationObject {
    /// Canonical URI.
    pub uri: KmsUri,
    /// Who: a user id (`name@org`), or a resource URI; absent for anonymous ones.
    #[serde(rename = "authId", default, skip_serializing_if = "Option::is_none")]
    pub auth_id: Option<String>,
    /// On what.
    #[serde(rename = "resourceUri")]
    pub resource_uri: KmsUri,
    /// Role; participant when absent.
    #[serde(rename = "roleUri", default, skip_serializing_if = "Option::is_none")]
    pub role_uri: Option<String>,
    /// Created.
    #[serde(rename = "createDate", with = "date::rfc3339")]
    pub create_date: Date,
    /// Anonymous authorizations only, only in the response that creates them:
    /// the KMS-signed JWT bearer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<SecretString>,
}

/// One release of a resource's keys to someone other than a member reading
/// for themselves, from the KMS's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessObject {
    /// The audit log entry (seq).
    pub seq: u64,
    /// When (ms since the epoch).
    pub time: u64,
    /// Who received the keys.
    pub actor: String,
    /// In which capacity: `service`, `compliance`, `admin`, `anonymous`, `peer_kms`, `kms`.
    #[serde(rename = "actorKind")]
    pub actor_kind: String,
    /// The user whose authorizations were used (compliance).
    #[serde(rename = "onBehalfOf", default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The compliance case, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// `key_release` or `key_denied`.
    pub action: String,
    /// The keys concerned.
    #[serde(rename = "keyUris", default)]
    pub key_uris: Vec<String>,
    /// How the KMS granted the release (`member`, `resource <uri>`,
    /// `org_agent`, `anonymous`, `compliance`, `peer`, `creator`); absent on
    /// entries written before it was recorded, and on denials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// `retrieve /resources/<id>/explain?authId=`: the authorization rule applied to one authId.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessExplanation {
    /// Whose access (canonical authId).
    #[serde(rename = "authId")]
    pub auth_id: String,
    /// Whether it may read the resource's keys now.
    pub authorized: bool,
    /// How: `member` (its own authorization), `resource <uri>` (authorized
    /// there, and that resource is authorized here), `org_agent` (an org-wide
    /// service in scope); absent when not authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Why not, in words (when not authorized), or what still limits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A CMK or KEK, as the administrative API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterKeyObject {
    /// Canonical URI (`/cmk/<id>` or `/kek/<id>`).
    pub uri: KmsUri,
    /// The org it serves.
    #[serde(rename = "assignedOrgId", default, skip_serializing_if = "Option::is_none")]
    pub assigned_org_id: Option<String>,
    /// Its state (the production client reads `usageState`).
    #[serde(rename = "usageState")]
    pub usage_state: KeyState,
    /// Created.
    #[serde(rename = "createDate", with = "date::rfc3339")]
    pub create_date: Date,
    /// Last state change.
    #[serde(rename = "updateDate", default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub update_date: Option<Date>,
}

/// A response as it travels inside its JWE (or, for handshakes and resets, its JWS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// HTTP-like status.
    pub status: Status,
    /// Human-readable reason, for errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request this answers (empty when it could not be read).
    #[serde(rename = "requestId", default)]
    pub request_id: String,
    /// One key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyObject>,
    /// Several keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyObject>>,
    /// One resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceObject>,
    /// One authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationObject>,
    /// Several authorizations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizations: Option<Vec<AuthorizationObject>>,
    /// Key-access transparency: who received a resource's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accesses: Option<Vec<AccessObject>>,
    /// `…/explain`: one authId's access, explained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessExplanation>,
    /// `/publicKey`: the key (PEM) a customer wraps its CMK to.
    #[serde(rename = "publicKey", default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// CMKs/KEKs (the production client's `customerMasterKeys`).
    #[serde(rename = "customerMasterKeys", default, skip_serializing_if = "Option::is_none")]
    pub master_keys: Option<Vec<MasterKeyObject>>,
    /// Resets: when the KMS signed it (clients ignore stale resets).
    #[serde(default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Date>,
    /// Pushed resets: the session (ephemeral key URI) they reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<KmsUri>,
    /// `retrieve /policy`, `update /policy`: the org policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyObject>,
    /// One compliance case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<crate::policy::CaseObject>,
    /// Compliance cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<Vec<crate::policy::CaseObject>>,
    /// Resource keys and resources: a service or user that could read this
    /// resource lost that right at this time; a client about to encrypt
    /// binds a fresh key if its newest one was bound before (a Custos extension).
    #[serde(rename = "rekeyAfter", default, with = "date::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub rekey_after: Option<Date>,
}

impl Response {
    /// A response with only a status and request id.
    pub fn new(status: Status, request_id: impl Into<String>) -> Self {
        Self {
            status,
            reason: None,
            request_id: request_id.into(),
            key: None,
            keys: None,
            resource: None,
            authorization: None,
            authorizations: None,
            accesses: None,
            access: None,
            public_key: None,
            master_keys: None,
            timestamp: None,
            uri: None,
            policy: None,
            case: None,
            cases: None,
            rekey_after: None,
        }
    }

    /// An error response.
    pub fn error(status: Status, request_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { reason: Some(reason.into()), ..Self::new(status, request_id) }
    }

    /// Parses JSON strictly (duplicate members refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtocolError> {
        Ok(jose::json::from_slice(bytes, jose::Part::Payload)?)
    }

    /// Serializes to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("responses serialize")
    }

    /// `Ok(self)` for 2xx, else the status as an error.
    pub fn into_success(self) -> Result<Self, ProtocolError> {
        if self.status.is_success() {
            Ok(self)
        } else if self.status == Status::RESET {
            Err(ProtocolError::Reset(self.reason.unwrap_or_default()))
        } else {
            Err(ProtocolError::Status { status: self.status, reason: self.reason.unwrap_or_default() })
        }
    }
}

/// An authorization subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthId {
    /// A user (or group, or service) id, always `name@org-domain`.
    User(String),
    /// Everyone authorized on that resource.
    Resource(KmsUri),
}

impl AuthId {
    /// Canonicalizes: resource URIs become absolute; a name without `@` is a user of `own_org`.
    pub fn parse(s: &str, own_kms_domain: &str, own_org: &str) -> Result<Self, ProtocolError> {
        if s.starts_with(crate::uri::SCHEME) || s.starts_with('/') {
            let uri = KmsUri::parse(s, own_kms_domain).map_err(ProtocolError::uri("authIds"))?;
            if !uri.is_object(Kind::Resources) {
                return Err(ProtocolError::InvalidField {
                    field: "authIds",
                    reason: "a URI authId must name a resource",
                });
            }
            return Ok(AuthId::Resource(uri));
        }
        Ok(AuthId::User(qualify_user_id(s, own_org)?))
    }
}

impl fmt::Display for AuthId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthId::User(u) => f.write_str(u),
            AuthId::Resource(r) => write!(f, "{r}"),
        }
    }
}

/// `name` becomes `name@org`; `name@Org.Example` gets a lowercase domain. At most one `@`.
pub fn qualify_user_id(s: &str, org: &str) -> Result<String, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::InvalidField { field: "authIds", reason: "not a user id" };
    if s.is_empty() || s.len() > 320 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(BAD);
    }
    match s.split_once('@') {
        None => Ok(format!("{s}@{}", crate::uri::canonical_domain(org).map_err(|_| BAD)?)),
        Some((name, domain)) if !name.is_empty() && !domain.contains('@') => {
            Ok(format!("{name}@{}", crate::uri::canonical_domain(domain).map_err(|_| BAD)?))
        }
        _ => Err(BAD),
    }
}

/// A request checked and typed: exactly one operation of the protocol, URIs canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `create /ecdhe` (only inside an RSA-OAEP JWE).
    CreateEphemeralKey {
        /// The client's public key (any `d` it sent is dropped here).
        jwk: jose::EcPublicKey,
    },
    /// `delete /ecdhe/<id>`.
    DeleteEphemeralKey {
        /// The ephemeral key's URI, which names the session.
        uri: KmsUri,
    },
    /// `create /resources`.
    CreateResource {
        /// Who besides the creator.
        auth_ids: Vec<AuthId>,
        /// Keys to bind.
        key_uris: Vec<KmsUri>,
        /// How many anonymous authorizations.
        anonymous: u32,
        /// Lifetime in seconds.
        ttl: Option<u64>,
    },
    /// `retrieve /resources/<id>`.
    RetrieveResource {
        /// The resource.
        uri: KmsUri,
    },
    /// `create /keys`.
    CreateKeys {
        /// How many (1 to [`MAX_KEY_COUNT`]).
        count: u32,
    },
    /// `update /keys/<id>` with `resourceUri`.
    BindKey {
        /// The key to bind (unbound until now; binding is once only).
        key: KmsUri,
        /// The resource.
        resource: KmsUri,
    },
    /// `retrieve /keys/<id>`.
    RetrieveKey {
        /// The key asked for, possibly of another KMS (federation).
        uri: KmsUri,
    },
    /// `retrieve /resources/<id>/accesses` (a Custos extension). Key-access transparency: who (services, compliance officers, peer
    /// KMSes, anonymous bearers, admins; not members reading for themselves)
    /// received keys of `resource`, oldest first, after the audit seq `after`.
    RetrieveResourceAccesses {
        /// The resource.
        resource: KmsUri,
        /// Only accesses after this audit seq (paging).
        after: Option<u64>,
        /// At most this many.
        count: Option<u32>,
    },
    /// `retrieve /resources/<id>/keys`.
    RetrieveResourceKeys {
        /// The resource.
        resource: KmsUri,
        /// Bound after.
        bound_after: Option<Date>,
        /// Bound before.
        bound_before: Option<Date>,
        /// At most this many, newest bindDate first.
        count: Option<u32>,
    },
    /// `create /authorizations`.
    CreateAuthorizations {
        /// The resource.
        resource: KmsUri,
        /// Who.
        auth_ids: Vec<AuthId>,
        /// How many anonymous authorizations.
        anonymous: u32,
        /// Role.
        role_uri: Option<String>,
    },
    /// `retrieve /resources/<id>/authorizations[?authId=]`.
    RetrieveAuthorizations {
        /// The resource.
        resource: KmsUri,
        /// Only this authId.
        auth_id: Option<AuthId>,
    },
    /// `retrieve /resources/<id>/explain?authId=` (a Custos extension):
    /// whether `auth_id` may read the resource's keys, and through what
    /// (the KMS's one authorization rule, applied and explained).
    ExplainAccess {
        /// The resource.
        resource: KmsUri,
        /// Whose access.
        auth_id: AuthId,
    },
    /// `delete /authorizations/<id>`.
    DeleteAuthorization {
        /// The authorization.
        uri: KmsUri,
    },
    /// `delete /resources/<id>/authorizations?authId=`.
    DeleteAuthorizationByAuthId {
        /// The resource.
        resource: KmsUri,
        /// Who.
        auth_id: AuthId,
    },
    /// `delete /authorizations` with `resourceUri` and `authIds`.
    DeleteAuthorizations {
        /// The resource.
        resource: KmsUri,
        /// Who.
        auth_ids: Vec<AuthId>,
    },
    /// `update /ping`.
    Ping,
    /// `retrieve /publicKey`.
    RetrievePublicKey,
    /// `create /cmk` (admin): a new active CMK, generated by the KMS's CMK
    /// backend, or (BYOK) the customer's own, wrapped to `/publicKey`.
    CreateCmk {
        /// BYOK: the CMK wrapped to the KMS public key (base64url); `None`: generate one.
        customer_master_key: Option<String>,
        /// BYOK: how it was wrapped (`customerMasterKeyAlg`, default `RSA-OAEP`).
        alg: CmkWrapAlg,
        /// Its backup copy.
        backup: Option<String>,
        /// For which org (default: the caller's).
        assigned_org_id: Option<String>,
    },
    /// `retrieve /cmk` or `/kek` (admin).
    ListMasterKeys {
        /// CMKs or KEKs.
        kind: Kind,
        /// For which org (default: the caller's).
        assigned_org_id: Option<String>,
    },
    /// `create /kek` (admin): a new active KEK; the previous one becomes inactive.
    CreateKek {
        /// For which org (default: the caller's).
        assigned_org_id: Option<String>,
    },
    /// `update /cmk/<id>` or `/kek/<id>` with `keyState` (admin).
    UpdateMasterKey {
        /// The CMK or KEK whose state changes.
        uri: KmsUri,
        /// New state.
        state: KeyState,
    },
    /// `retrieve /policy` (org admins).
    RetrievePolicy,
    /// `update /policy` with `policy` and `policyVersion` (org admins).
    UpdatePolicy {
        /// The new document, canonicalized.
        policy: Box<crate::policy::OrgPolicy>,
        /// The version it replaces.
        version: u64,
    },
    /// `create /cases` with `case` (compliance officers).
    CreateCase {
        /// What it covers, resource URIs canonicalized.
        case: crate::policy::CaseRequest,
    },
    /// `retrieve /cases` (officers, approvers, admins).
    ListCases,
    /// `retrieve /cases/<id>`.
    RetrieveCase {
        /// The case.
        uri: KmsUri,
    },
    /// `update /cases/<id>` with `decision`.
    UpdateCase {
        /// The case.
        uri: KmsUri,
        /// Approve, deny or close.
        decision: crate::policy::CaseDecision,
    },
}

/// What an operation is, for the KMS's authorization rule: every operation
/// belongs to exactly one class, and the rule decides per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Ping, deleting one's own ephemeral key: the session itself.
    Session,
    /// `create /ecdhe` sent inside a session (refused: it belongs in a handshake).
    Handshake,
    /// Create unbound keys.
    CreateKeys,
    /// Create a resource (the creator is authorized on it).
    CreateResource,
    /// Bind an unbound key to a resource.
    BindKey,
    /// Read one key (unbound: its creator; bound: those authorized on its resource).
    ReadKey,
    /// Read a resource's bound keys.
    ReadResourceKeys,
    /// Read a resource or its authorizations (no key material).
    ReadResource,
    /// Key-access transparency and access explanations (audit-derived, no key material).
    Transparency,
    /// Create or delete authorizations on a resource.
    ChangeAuthorizations,
    /// The org policy, CMKs, KEKs and BYOK: org admins only.
    Admin,
    /// Open a compliance case (officers).
    OpenCase,
    /// List or read compliance cases (officers, approvers, admins).
    ReadCases,
    /// Approve, deny or close a case.
    DecideCase,
}

impl Operation {
    /// The operation's class (see [`OpClass`]).
    pub fn class(&self) -> OpClass {
        match self {
            Operation::Ping | Operation::DeleteEphemeralKey { .. } => OpClass::Session,
            Operation::CreateEphemeralKey { .. } => OpClass::Handshake,
            Operation::CreateKeys { .. } => OpClass::CreateKeys,
            Operation::CreateResource { .. } => OpClass::CreateResource,
            Operation::BindKey { .. } => OpClass::BindKey,
            Operation::RetrieveKey { .. } => OpClass::ReadKey,
            Operation::RetrieveResourceKeys { .. } => OpClass::ReadResourceKeys,
            Operation::RetrieveResource { .. } | Operation::RetrieveAuthorizations { .. } => OpClass::ReadResource,
            Operation::RetrieveResourceAccesses { .. } | Operation::ExplainAccess { .. } => OpClass::Transparency,
            Operation::CreateAuthorizations { .. }
            | Operation::DeleteAuthorization { .. }
            | Operation::DeleteAuthorizationByAuthId { .. }
            | Operation::DeleteAuthorizations { .. } => OpClass::ChangeAuthorizations,
            Operation::RetrievePublicKey
            | Operation::CreateCmk { .. }
            | Operation::ListMasterKeys { .. }
            | Operation::CreateKek { .. }
            | Operation::UpdateMasterKey { .. }
            | Operation::RetrievePolicy
            | Operation::UpdatePolicy { .. } => OpClass::Admin,
            Operation::CreateCase { .. } => OpClass::OpenCase,
            Operation::ListCases | Operation::RetrieveCase { .. } => OpClass::ReadCases,
            Operation::UpdateCase { .. } => OpClass::DecideCase,
        }
    }

    /// Whether the operation changes state (and so runs at most once per
    /// session and requestId; reads are re-evaluated on a repeat).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Operation::RetrieveResource { .. }
                | Operation::RetrieveKey { .. }
                | Operation::RetrieveResourceKeys { .. }
                | Operation::RetrieveResourceAccesses { .. }
                | Operation::ExplainAccess { .. }
                | Operation::RetrieveAuthorizations { .. }
                | Operation::Ping
                | Operation::RetrievePublicKey
                | Operation::ListMasterKeys { .. }
                | Operation::RetrievePolicy
                | Operation::ListCases
                | Operation::RetrieveCase { .. }
        )
    }

    /// The resource the operation acts on, when it names one.
    pub fn resource(&self) -> Option<&KmsUri> {
        match self {
            Operation::BindKey { resource, .. }
            | Operation::RetrieveResourceKeys { resource, .. }
            | Operation::RetrieveResourceAccesses { resource, .. }
            | Operation::ExplainAccess { resource, .. }
            | Operation::CreateAuthorizations { resource, .. }
            | Operation::RetrieveAuthorizations { resource, .. }
            | Operation::DeleteAuthorizationByAuthId { resource, .. }
            | Operation::DeleteAuthorizations { resource, .. } => Some(resource),
            Operation::RetrieveResource { uri } => Some(uri),
            _ => None,
        }
    }
}

/// Where this KMS stands, for resolving and checking URIs and user ids.
#[derive(Debug, Clone, Copy)]
pub struct Realm<'a> {
    /// This KMS's domain (`kms://<domain>`).
    pub kms_domain: &'a str,
    /// The org its users belong to (user ids without `@` get it).
    pub org_domain: &'a str,
}

impl Request {
    /// Parses JSON strictly (duplicate members refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let r: Request = jose::json::from_slice(bytes, jose::Part::Payload)?;
        if r.request_id.is_empty() || r.request_id.len() > 256 {
            return Err(ProtocolError::InvalidField { field: "requestId", reason: "must be 1 to 256 characters" });
        }
        Ok(r)
    }

    /// Serializes to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("requests serialize")
    }

    /// A new request with a random requestId.
    pub fn new(method: Method, uri: impl Into<String>, client: Option<ClientInfo>) -> Self {
        Self {
            client,
            method,
            uri: uri.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            body: RequestBody::default(),
        }
    }

    /// Checks the request and names the one operation it asks for.
    pub fn operation(&self, realm: Realm<'_>) -> Result<Operation, ProtocolError> {
        let uri = KmsUri::parse(&self.uri, realm.kms_domain).map_err(ProtocolError::uri("uri"))?;
        // Another KMS's keys, resources and authorizations may be named (federation:
        // the KMS asks their owner, or refuses); its collections and the rest may not.
        let federable = matches!(
            uri.target(),
            Target::Object(Kind::Keys | Kind::Resources | Kind::Authorizations, _)
                | Target::ResourceKeys(_)
                | Target::ResourceAuthorizations(..)
                | Target::ResourceAccesses(_)
                | Target::ResourceExplain(..)
        );
        if !federable && uri.domain() != crate::uri::canonical_domain(realm.kms_domain).unwrap_or_default() {
            return Err(ProtocolError::ForeignDomain(uri.domain().to_string()));
        }
        let b = &self.body;
        let own_uri = |s: &str, field: &'static str| -> Result<KmsUri, ProtocolError> {
            let u = KmsUri::parse(s, realm.kms_domain).map_err(ProtocolError::uri(field))?;
            Ok(u)
        };
        let resource_field = || -> Result<KmsUri, ProtocolError> {
            let u =
                own_uri(b.resource_uri.as_deref().ok_or(ProtocolError::MissingField("resourceUri"))?, "resourceUri")?;
            if !u.is_object(Kind::Resources) {
                return Err(ProtocolError::InvalidField { field: "resourceUri", reason: "must name a resource" });
            }
            Ok(u)
        };
        let auth_ids = |required: bool| -> Result<Vec<AuthId>, ProtocolError> {
            let list = match (&b.auth_ids, &b.user_ids) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::InvalidField {
                        field: "authIds",
                        reason: "give authIds or userIds, not both",
                    })
                }
                (Some(l), None) | (None, Some(l)) => l.as_slice(),
                (None, None) if required => return Err(ProtocolError::MissingField("authIds")),
                (None, None) => &[],
            };
            if list.len() > MAX_LIST_LEN {
                return Err(ProtocolError::InvalidField { field: "authIds", reason: "too many entries" });
            }
            let mut out: Vec<AuthId> =
                list.iter().map(|s| AuthId::parse(s, realm.kms_domain, realm.org_domain)).collect::<Result<_, _>>()?;
            out.sort();
            out.dedup();
            Ok(out)
        };
        let anonymous = || -> Result<u32, ProtocolError> {
            match b.anonymous.unwrap_or(0) {
                n if n <= MAX_ANONYMOUS => Ok(n),
                _ => Err(ProtocolError::InvalidField { field: "anonymous", reason: "at most 10 per request" }),
            }
        };
        let op = match (self.method, uri.target()) {
            (Method::Create, Target::Collection(Kind::Ecdhe)) => {
                let jwk = b.jwk.as_ref().ok_or(ProtocolError::MissingField("jwk"))?;
                // Only the public part is read: node-kms also sends `d`, which we never keep.
                Operation::CreateEphemeralKey { jwk: jwk.to_ec_public()? }
            }
            (Method::Delete, Target::Object(Kind::Ecdhe, _)) => Operation::DeleteEphemeralKey { uri },
            (Method::Create, Target::Collection(Kind::Resources)) => {
                let key_uris = b.key_uris.as_deref().unwrap_or_default();
                if key_uris.len() > MAX_LIST_LEN {
                    return Err(ProtocolError::InvalidField { field: "keyUris", reason: "too many entries" });
                }
                let mut keys = Vec::with_capacity(key_uris.len());
                for k in key_uris {
                    let k = own_uri(k, "keyUris")?;
                    if !k.is_object(Kind::Keys) {
                        return Err(ProtocolError::InvalidField { field: "keyUris", reason: "must name keys" });
                    }
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                Operation::CreateResource {
                    auth_ids: auth_ids(false)?,
                    key_uris: keys,
                    anonymous: anonymous()?,
                    ttl: b.ttl,
                }
            }
            (Method::Retrieve, Target::Object(Kind::Resources, _)) => Operation::RetrieveResource { uri },
            (Method::Create, Target::Collection(Kind::Keys)) => {
                let count = b.count.ok_or(ProtocolError::MissingField("count"))?;
                if count == 0 || count > MAX_KEY_COUNT {
                    return Err(ProtocolError::InvalidField { field: "count", reason: "must be 1 to 1000" });
                }
                Operation::CreateKeys { count }
            }
            (Method::Update, Target::Object(Kind::Keys, _)) => {
                Operation::BindKey { key: uri, resource: resource_field()? }
            }
            (Method::Retrieve, Target::Object(Kind::Keys, _)) => Operation::RetrieveKey { uri },
            (Method::Retrieve, Target::ResourceAccesses(_)) => {
                if b.count == Some(0) {
                    return Err(ProtocolError::InvalidField { field: "count", reason: "must be positive" });
                }
                Operation::RetrieveResourceAccesses {
                    resource: uri.parent_resource().expect("sub-collection has a parent"),
                    after: b.after,
                    count: b.count,
                }
            }
            (Method::Retrieve, Target::ResourceKeys(_)) => {
                if let (Some(a), Some(bf)) = (b.bound_after, b.bound_before) {
                    if a >= bf {
                        return Err(ProtocolError::InvalidField {
                            field: "boundBefore",
                            reason: "must be after boundAfter",
                        });
                    }
                }
                if b.count == Some(0) {
                    return Err(ProtocolError::InvalidField { field: "count", reason: "must be positive" });
                }
                Operation::RetrieveResourceKeys {
                    resource: uri.parent_resource().expect("sub-collection has a parent"),
                    bound_after: b.bound_after,
                    bound_before: b.bound_before,
                    count: b.count,
                }
            }
            (Method::Create, Target::Collection(Kind::Authorizations)) => {
                let anonymous = anonymous()?;
                let ids = auth_ids(anonymous == 0)?;
                if ids.is_empty() && anonymous == 0 {
                    return Err(ProtocolError::InvalidField { field: "authIds", reason: "must not be empty" });
                }
                Operation::CreateAuthorizations {
                    resource: resource_field()?,
                    auth_ids: ids,
                    anonymous,
                    role_uri: b.role_uri.clone(),
                }
            }
            (Method::Retrieve, Target::ResourceAuthorizations(_, q)) => Operation::RetrieveAuthorizations {
                resource: uri.parent_resource().expect("sub-collection has a parent"),
                auth_id: q.as_deref().map(|a| AuthId::parse(a, realm.kms_domain, realm.org_domain)).transpose()?,
            },
            (Method::Retrieve, Target::ResourceExplain(_, q)) => Operation::ExplainAccess {
                resource: uri.parent_resource().expect("sub-collection has a parent"),
                auth_id: AuthId::parse(
                    q.as_deref().ok_or(ProtocolError::MissingField("authId"))?,
                    realm.kms_domain,
                    realm.org_domain,
                )?,
            },
            (Method::Delete, Target::Object(Kind::Authorizations, _)) => Operation::DeleteAuthorization { uri },
            (Method::Delete, Target::ResourceAuthorizations(_, Some(a))) => Operation::DeleteAuthorizationByAuthId {
                resource: uri.parent_resource().expect("sub-collection has a parent"),
                auth_id: AuthId::parse(a, realm.kms_domain, realm.org_domain)?,
            },
            (Method::Delete, Target::Collection(Kind::Authorizations)) => {
                let ids = auth_ids(true)?;
                if ids.is_empty() {
                    return Err(ProtocolError::InvalidField { field: "authIds", reason: "must not be empty" });
                }
                Operation::DeleteAuthorizations { resource: resource_field()?, auth_ids: ids }
            }
            (Method::Update, Target::Ping) => Operation::Ping,
            (Method::Retrieve, Target::Policy) => Operation::RetrievePolicy,
            (Method::Update, Target::Policy) => Operation::UpdatePolicy {
                // Decoded here rather than with the request, so that a bad policy is a 400 naming the member.
                policy: Box::new(
                    serde_json::from_value::<crate::policy::OrgPolicy>(
                        b.policy.clone().ok_or(ProtocolError::MissingField("policy"))?,
                    )
                    .map_err(|e| ProtocolError::InvalidDocument { field: "policy", reason: policy_error(&e) })?
                    .canonicalize(realm.kms_domain, realm.org_domain)?,
                ),
                version: b.policy_version.ok_or(ProtocolError::MissingField("policyVersion"))?,
            },
            (Method::Create, Target::Collection(Kind::Cases)) => {
                let mut case = b.case.clone().ok_or(ProtocolError::MissingField("case"))?;
                if case.spaces.is_empty() || case.spaces.len() > MAX_LIST_LEN {
                    return Err(ProtocolError::InvalidField {
                        field: "case.spaces",
                        reason: "1 to 1000 resource URIs",
                    });
                }
                for s in &mut case.spaces {
                    let u = own_uri(s, "case.spaces")?;
                    if !u.is_object(Kind::Resources) {
                        return Err(ProtocolError::InvalidField {
                            field: "case.spaces",
                            reason: "must name resources",
                        });
                    }
                    *s = u.to_string();
                }
                case.spaces.sort();
                case.spaces.dedup();
                if let (Some(f), Some(u)) = (case.from, case.until) {
                    if f >= u {
                        return Err(ProtocolError::InvalidField { field: "case.until", reason: "must be after from" });
                    }
                }
                if case.reason.as_ref().is_some_and(|r| r.len() > 256) {
                    return Err(ProtocolError::InvalidField { field: "case.reason", reason: "at most 256 characters" });
                }
                Operation::CreateCase { case }
            }
            (Method::Retrieve, Target::Collection(Kind::Cases)) => Operation::ListCases,
            (Method::Retrieve, Target::Object(Kind::Cases, _)) => Operation::RetrieveCase { uri },
            (Method::Update, Target::Object(Kind::Cases, _)) => {
                Operation::UpdateCase { decision: b.decision.ok_or(ProtocolError::MissingField("decision"))?, uri }
            }
            (Method::Retrieve, Target::PublicKey) => Operation::RetrievePublicKey,
            (Method::Create, Target::Collection(Kind::Cmk)) => Operation::CreateCmk {
                customer_master_key: b.customer_master_key.clone(),
                alg: match b.customer_master_key_alg.as_deref() {
                    None => CmkWrapAlg::default(),
                    Some(name) => CmkWrapAlg::from_jose(name).ok_or(ProtocolError::InvalidField {
                        field: "customerMasterKeyAlg",
                        reason: "must be RSA-OAEP or RSA-OAEP-256",
                    })?,
                },
                backup: b.customer_master_key_backup.clone(),
                assigned_org_id: b.assigned_org_id.clone(),
            },
            (Method::Create, Target::Collection(Kind::Kek)) => {
                Operation::CreateKek { assigned_org_id: b.assigned_org_id.clone() }
            }
            (Method::Retrieve, Target::Collection(kind @ (Kind::Cmk | Kind::Kek))) => {
                Operation::ListMasterKeys { kind: *kind, assigned_org_id: b.assigned_org_id.clone() }
            }
            (Method::Update, Target::Object(Kind::Cmk | Kind::Kek, _)) => {
                Operation::UpdateMasterKey { state: b.key_state.ok_or(ProtocolError::MissingField("keyState"))?, uri }
            }
            (m, t) => {
                return Err(ProtocolError::UnknownOperation { method: m.name(), target: target_name(t) });
            }
        };
        Ok(op)
    }
}

/// serde's message without the offending value (it may be anything the client sent).
fn policy_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.find(", expected") {
        Some(i) if msg.starts_with("unknown field") => msg[..i].to_string(),
        _ if msg.starts_with("unknown field") || msg.starts_with("missing field") => msg,
        _ => "has members of the wrong type".to_string(),
    }
}

fn target_name(t: &Target) -> &'static str {
    match t {
        Target::Collection(Kind::Ecdhe) => "/ecdhe",
        Target::Collection(Kind::Keys) => "/keys",
        Target::Collection(Kind::Resources) => "/resources",
        Target::Collection(Kind::Authorizations) => "/authorizations",
        Target::Collection(Kind::Cmk) => "/cmk",
        Target::Collection(Kind::Kek) => "/kek",
        Target::Object(Kind::Ecdhe, _) => "an ephemeral key",
        Target::Object(Kind::Keys, _) => "a key",
        Target::Object(Kind::Resources, _) => "a resource",
        Target::Object(Kind::Authorizations, _) => "an authorization",
        Target::Object(Kind::Cmk, _) => "a CMK",
        Target::Object(Kind::Kek, _) => "a KEK",
        Target::ResourceKeys(_) => "a resource's keys",
        Target::ResourceAccesses(_) => "a resource's key accesses",
        Target::ResourceAuthorizations(..) => "a resource's authorizations",
        Target::ResourceExplain(..) => "a resource's access explanation",
        Target::Ping => "/ping",
        Target::PublicKey => "/publicKey",
        Target::Policy => "/policy",
        Target::Collection(Kind::Cases) => "/cases",
        Target::Object(Kind::Cases, _) => "a compliance case",
    }
}
