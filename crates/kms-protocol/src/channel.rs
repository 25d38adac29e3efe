//! The secure channel: ECDHE handshake to the KMS static key, then `dir` +
//! `A256GCM` messages under the derived key, and signed 499 resets.
//!
//! Client side: [`begin_handshake`] → [`PendingHandshake::finish`] →
//! [`Session::wrap`] / [`Session::unwrap`]. Server side: [`ServerKey`] opens
//! handshakes and signs their responses and resets; [`open_request`] and
//! [`seal_response`] carry the rest.

use std::fmt;

use jose::jwe::{DecryptKey, EncryptKey};
use jose::jws::{SignKey, VerifyKey};
use jose::{
    ContentEnc, EcPrivateKey, EcPublicKey, HeaderParams, Jwe, JwePolicy, Jws, JwsPolicy, KeyAlg, OctKey, RsaPrivateKey,
    RsaPublicKey, SigAlg,
};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::date::{self, Date};
use crate::error::ProtocolError;
use crate::message::{ClientInfo, KeyObject, Method, Request, Response};
use crate::status::Status;
use crate::uri::{Kind, KmsUri, Target};

/// Longest compact KMS message accepted (256 KiB).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// How old a reset may be and still be believed.
pub const RESET_MAX_AGE: time::Duration = time::Duration::minutes(5);

const DIR: JwePolicy<'static> =
    JwePolicy { algs: &[KeyAlg::Dir], encs: &[ContentEnc::A256Gcm], max_len: MAX_MESSAGE_LEN };
// node-jose verifies both; the draft mandates PS256, which is what we sign.
const SIGNED: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256, SigAlg::RS256], max_len: MAX_MESSAGE_LEN };

/// The structures the KMS static key signs, each with its own JWS `typ`.
/// The key signs nothing else, and never bytes chosen by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningContext {
    /// ECDHE handshake responses.
    Ecdhe,
    /// 499 resets.
    Reset,
    /// Anonymous authorization bearers (JWTs).
    AnonAuth,
    /// Audit log checkpoints.
    AuditCheckpoint,
    /// The KMS's proof of identity when it connects out to a core.
    Connect,
}

impl SigningContext {
    /// The JWS `typ`.
    pub fn typ(self) -> &'static str {
        match self {
            SigningContext::Ecdhe => "kms-ecdhe",
            SigningContext::Reset => "kms-reset",
            SigningContext::AnonAuth => "kms-anon-auth",
            SigningContext::AuditCheckpoint => "kms-audit-checkpoint",
            SigningContext::Connect => "kms-connect",
        }
    }
}

/// What a client knows of its KMS: its domain and pinned static public key.
#[derive(Debug, Clone)]
pub struct KmsInfo {
    /// `kms://<domain>`.
    pub domain: String,
    /// The static key, pinned from configuration (its `kid` must be set).
    pub key: RsaPublicKey,
}

/// A kind of compact message, told apart by its shape and header.
#[derive(Debug)]
pub enum Incoming {
    /// An RSA-OAEP JWE to the static key: a handshake.
    Handshake(Jwe),
    /// A `dir` JWE under a session key, named by `kid`.
    Session {
        /// The session's (ephemeral key's) URI, as the header gives it.
        kid: String,
        /// The message.
        jwe: Jwe,
    },
}

/// Tells a handshake from a session message, checking the header only.
pub fn classify(compact: &str) -> Result<Incoming, ProtocolError> {
    const ANY: JwePolicy<'static> =
        JwePolicy { algs: &[KeyAlg::Dir, KeyAlg::RsaOaep], encs: &[ContentEnc::A256Gcm], max_len: MAX_MESSAGE_LEN };
    let jwe = Jwe::parse(compact, &ANY)?;
    match jwe.header().alg {
        KeyAlg::RsaOaep => Ok(Incoming::Handshake(jwe)),
        KeyAlg::Dir => {
            let kid = jwe.header().kid.clone().ok_or(jose::Error::MissingHeader("kid"))?;
            Ok(Incoming::Session { kid, jwe })
        }
    }
}

// ------------------------------------------------------------------ client

/// A handshake sent and not yet answered. Holds the client's ephemeral private key.
pub struct PendingHandshake {
    local: EcPrivateKey,
    request_id: String,
    /// The compact JWE to send.
    pub wrapped: String,
}

impl fmt::Debug for PendingHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingHandshake").field("request_id", &self.request_id).finish_non_exhaustive()
    }
}

/// Starts a handshake: a fresh P-256 key, sent (public part only) in a
/// `create <kms>/ecdhe` request encrypted with RSA-OAEP to the pinned key.
pub fn begin_handshake(kms: &KmsInfo, client: ClientInfo) -> Result<PendingHandshake, ProtocolError> {
    let local = EcPrivateKey::generate(None)?;
    let uri = KmsUri::new(&kms.domain, Target::Collection(Kind::Ecdhe)).map_err(ProtocolError::uri("uri"))?;
    let mut req = Request::new(Method::Create, uri.to_string(), Some(client));
    req.body.jwk = Some(local.public_key().to_jwk());
    let kid = kms.key.kid().ok_or(ProtocolError::MissingField("kid of the KMS key"))?;
    let wrapped = jose::jwe::encrypt(
        EncryptKey::RsaOaep(&kms.key),
        ContentEnc::A256Gcm,
        &HeaderParams::kid(kid),
        &req.to_json(),
    )?;
    Ok(PendingHandshake { local, request_id: req.request_id, wrapped })
}

/// Starts a handshake like [`begin_handshake`], for credentials that depend
/// on the request itself (a `jwk` credential's proof of possession, see
/// [`crate::pop::begin_service_handshake`]): `client` gets the new ephemeral
/// public key and the requestId, and returns who is asking.
pub fn begin_handshake_with(
    kms: &KmsInfo,
    client: impl FnOnce(&EcPublicKey, &str) -> Result<ClientInfo, ProtocolError>,
) -> Result<PendingHandshake, ProtocolError> {
    let local = EcPrivateKey::generate(None)?;
    let uri = KmsUri::new(&kms.domain, Target::Collection(Kind::Ecdhe)).map_err(ProtocolError::uri("uri"))?;
    let mut req = Request::new(Method::Create, uri.to_string(), None);
    req.client = Some(client(local.public_key(), &req.request_id)?);
    req.body.jwk = Some(local.public_key().to_jwk());
    let kid = kms.key.kid().ok_or(ProtocolError::MissingField("kid of the KMS key"))?;
    let wrapped = jose::jwe::encrypt(
        EncryptKey::RsaOaep(&kms.key),
        ContentEnc::A256Gcm,
        &HeaderParams::kid(kid),
        &req.to_json(),
    )?;
    Ok(PendingHandshake { local, request_id: req.request_id, wrapped })
}

/// Verifies a JWS from the KMS static key in the expected context, and reads its response.
fn verify_signed(kms: &KmsInfo, compact: &str, ctx: SigningContext) -> Result<Response, ProtocolError> {
    let jws = Jws::parse(compact, &SIGNED)?;
    let payload = jws.verify(VerifyKey::Rsa(&kms.key))?;
    if jws.header().typ.as_deref() != Some(ctx.typ()) {
        return Err(ProtocolError::WrongContext { expected: ctx.typ(), found: jws.header().typ.clone() });
    }
    Response::from_json(payload)
}

/// Checks a signed reset: it must answer `request_id` (or be unsolicited when
/// `request_id` is `None`) and be fresh. Returns the reset as an error.
fn check_reset(resp: Response, request_id: Option<&str>, now: Date) -> ProtocolError {
    let fresh = resp.timestamp.is_some_and(|t| (now - t).abs() <= RESET_MAX_AGE);
    let matches = match request_id {
        Some(id) => resp.request_id == id,
        None => true,
    };
    if resp.status == Status::RESET && fresh && matches {
        ProtocolError::Reset(resp.reason.unwrap_or_default())
    } else {
        ProtocolError::StaleReset
    }
}

impl PendingHandshake {
    /// The requestId the response must echo.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Verifies the KMS's signed answer and derives the session.
    /// A verified 499 for this request is `ProtocolError::Reset`.
    pub fn finish(self, kms: &KmsInfo, response: &str) -> Result<Session, ProtocolError> {
        self.finish_at(kms, response, date::now())
    }

    /// [`finish`](Self::finish) at `now` (the browser passes its clock in:
    /// reading the system clock panics on wasm32-unknown-unknown).
    pub fn finish_at(self, kms: &KmsInfo, response: &str, now: Date) -> Result<Session, ProtocolError> {
        let jws = Jws::parse(response, &SIGNED)?;
        let payload = jws.verify(VerifyKey::Rsa(&kms.key))?;
        let typ = jws.header().typ.as_deref();
        if typ == Some(SigningContext::Reset.typ()) {
            return Err(check_reset(Response::from_json(payload)?, Some(&self.request_id), now));
        }
        if typ != Some(SigningContext::Ecdhe.typ()) {
            return Err(ProtocolError::WrongContext {
                expected: SigningContext::Ecdhe.typ(),
                found: typ.map(str::to_string),
            });
        }
        let resp = Response::from_json(payload)?;
        if resp.request_id != self.request_id {
            return Err(ProtocolError::RequestIdMismatch);
        }
        let resp = resp.into_success()?;
        if resp.status != Status::CREATED {
            return Err(ProtocolError::InvalidField { field: "status", reason: "a handshake answers 201" });
        }
        let key = resp.key.ok_or(ProtocolError::MissingField("key"))?;
        if !key.uri.is_object(Kind::Ecdhe) || key.uri.domain() != jose_domain(&kms.domain) {
            return Err(ProtocolError::InvalidField {
                field: "key.uri",
                reason: "must be an ephemeral key of this KMS",
            });
        }
        if key.expiration_date <= now {
            return Err(ProtocolError::Expired);
        }
        let remote = key.jwk.to_ec_public()?;
        let shared = jose::ecdh_hkdf(&self.local, &remote, Some(key.uri.to_string()))?;
        Ok(Session { key: shared, info: key })
    }
}

fn jose_domain(d: &str) -> String {
    crate::uri::canonical_domain(d).unwrap_or_default()
}

/// An established channel: the shared key and what the KMS said about it.
pub struct Session {
    key: OctKey,
    info: KeyObject,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("uri", &self.info.uri.to_string())
            .field("expires", &date::format(&self.info.expiration_date))
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The ephemeral key's URI (every message's `kid`).
    pub fn uri(&self) -> &KmsUri {
        &self.info.uri
    }

    /// When the KMS stops accepting this session.
    pub fn expires(&self) -> Date {
        self.info.expiration_date
    }

    /// The KMS's description of the ephemeral key (user, client, dates).
    pub fn info(&self) -> &KeyObject {
        &self.info
    }

    /// The shared key. Handle with care.
    pub fn shared_key(&self) -> &OctKey {
        &self.key
    }

    /// Encrypts a request for the KMS. Fails if the session has expired.
    pub fn wrap(&self, req: &Request) -> Result<String, ProtocolError> {
        self.wrap_at(req, date::now())
    }

    /// [`wrap`](Self::wrap) at `now`.
    pub fn wrap_at(&self, req: &Request, now: Date) -> Result<String, ProtocolError> {
        if self.info.expiration_date <= now {
            return Err(ProtocolError::Expired);
        }
        Ok(seal(&self.key, &self.info.uri, &req.to_json())?)
    }

    /// Reads the KMS's answer to the request with `request_id`. A verified,
    /// fresh, matching 499 is `ProtocolError::Reset`: drop this session.
    pub fn unwrap(&self, kms: &KmsInfo, compact: &str, request_id: &str) -> Result<Response, ProtocolError> {
        self.unwrap_at(kms, compact, request_id, date::now())
    }

    /// [`unwrap`](Self::unwrap) at `now` (a reset's freshness is judged against it).
    pub fn unwrap_at(&self, kms: &KmsInfo, compact: &str, request_id: &str, now: Date) -> Result<Response, ProtocolError> {
        let dots = compact.bytes().filter(|&b| b == b'.').count();
        if dots == 2 {
            let resp = verify_signed(kms, compact, SigningContext::Reset)?;
            return Err(check_reset(resp, Some(request_id), now));
        }
        let resp = open_dir(&self.key, &self.info.uri, compact, Response::from_json)?;
        if resp.request_id != request_id {
            return Err(ProtocolError::RequestIdMismatch);
        }
        Ok(resp)
    }
}

/// Checks an unsolicited reset pushed by the KMS (e.g. on revocation) for
/// the session at `session`. `Ok(reason)` when it is genuine, fresh and names
/// that session; the client then drops it. A reset naming no session (the
/// answer to unreadable input, which anyone can obtain) or another session is
/// `StaleReset`: ignored.
pub fn verify_pushed_reset(kms: &KmsInfo, compact: &str, session: &KmsUri) -> Result<String, ProtocolError> {
    verify_pushed_reset_at(kms, compact, session, date::now())
}

/// [`verify_pushed_reset`] at `now`.
pub fn verify_pushed_reset_at(
    kms: &KmsInfo,
    compact: &str,
    session: &KmsUri,
    now: Date,
) -> Result<String, ProtocolError> {
    let resp = verify_signed(kms, compact, SigningContext::Reset)?;
    if resp.uri.as_ref() != Some(session) {
        return Err(ProtocolError::StaleReset);
    }
    match check_reset(resp, None, now) {
        ProtocolError::Reset(reason) => Ok(reason),
        other => Err(other),
    }
}

/// Reads a signed reset without tying it to a session (diagnostics, tests):
/// `Ok(reason)` when genuine and fresh.
pub fn read_reset(kms: &KmsInfo, compact: &str) -> Result<String, ProtocolError> {
    let resp = verify_signed(kms, compact, SigningContext::Reset)?;
    match check_reset(resp, None, date::now()) {
        ProtocolError::Reset(reason) => Ok(reason),
        other => Err(other),
    }
}

fn seal(key: &OctKey, uri: &KmsUri, json: &[u8]) -> Result<String, jose::Error> {
    jose::jwe::encrypt(EncryptKey::Dir(key), ContentEnc::A256Gcm, &HeaderParams::kid(uri.to_string()), json)
}

fn open_dir<T>(
    key: &OctKey,
    uri: &KmsUri,
    compact: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, ProtocolError>,
) -> Result<T, ProtocolError> {
    let jwe = Jwe::parse(compact, &DIR)?;
    check_kid(&jwe, uri)?;
    let plain: Zeroizing<Vec<u8>> = jwe.decrypt(DecryptKey::Dir(key))?;
    parse(&plain)
}

fn check_kid(jwe: &Jwe, uri: &KmsUri) -> Result<(), ProtocolError> {
    let kid = jwe.header().kid.as_deref().ok_or(jose::Error::MissingHeader("kid"))?;
    // Relative kids (`/ecdhe/<id>`) name the same session as absolute ones.
    match KmsUri::parse(kid, uri.domain()) {
        Ok(k) if &k == uri => Ok(()),
        _ => Err(ProtocolError::KidMismatch),
    }
}

// ------------------------------------------------------------------ server

/// The KMS static key: decrypts handshakes, signs in [`SigningContext`]s only.
pub struct ServerKey {
    key: RsaPrivateKey,
    domain: String,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey").field("domain", &self.domain).field("kid", &self.key.kid()).finish_non_exhaustive()
    }
}

/// A handshake request, decrypted and checked.
#[derive(Debug)]
pub struct OpenedHandshake {
    /// The whole request (credential included; `jwk.d`, if sent, already dropped).
    pub request: Request,
    /// The client's ephemeral public key.
    pub client_key: EcPublicKey,
}

/// The server's half of a finished handshake.
pub struct AcceptedHandshake {
    /// The shared key.
    pub shared: OctKey,
    /// The signed response to send.
    pub response: String,
}

impl fmt::Debug for AcceptedHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptedHandshake").finish_non_exhaustive()
    }
}

/// What the KMS vouches for in a handshake response.
#[derive(Debug, Clone)]
pub struct HandshakeGrant {
    /// The authenticated user.
    pub user_id: String,
    /// The client id.
    pub client_id: String,
    /// When the session ends.
    pub expires: Date,
}

impl ServerKey {
    /// Wraps the static key (its `kid` must be set) for KMS `domain`.
    pub fn new(key: RsaPrivateKey, domain: &str) -> Result<Self, ProtocolError> {
        if key.kid().is_none() {
            return Err(ProtocolError::MissingField("kid of the static key"));
        }
        let domain = crate::uri::canonical_domain(domain).map_err(ProtocolError::uri("domain"))?;
        Ok(Self { key, domain })
    }

    /// The KMS domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The private key, for this crate's own signing contexts only.
    pub(crate) fn private_key(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// The public half, as clients pin it.
    pub fn public_key(&self) -> &RsaPublicKey {
        self.key.public_key()
    }

    /// The client-side view of this KMS.
    pub fn info(&self) -> KmsInfo {
        KmsInfo { domain: self.domain.clone(), key: self.key.public_key().clone() }
    }

    /// Decrypts a handshake (RSA-OAEP JWE) and checks it is `create /ecdhe` with an EC public key.
    pub fn open_handshake(&self, jwe: &Jwe) -> Result<OpenedHandshake, ProtocolError> {
        if let Some(kid) = jwe.header().kid.as_deref() {
            if Some(kid) != self.key.kid() {
                return Err(ProtocolError::KidMismatch);
            }
        }
        let plain = jwe.decrypt(DecryptKey::RsaOaep(&self.key))?;
        let mut request = Request::from_json(&plain)?;
        drop(plain);
        let uri = KmsUri::parse(&request.uri, &self.domain).map_err(ProtocolError::uri("uri"))?;
        if request.method != Method::Create
            || uri.target() != &Target::Collection(Kind::Ecdhe)
            || uri.domain() != self.domain
        {
            return Err(ProtocolError::UnknownOperation {
                method: request.method.name(),
                target: "the static key (only create /ecdhe)",
            });
        }
        let jwk = request.body.jwk.take().ok_or(ProtocolError::MissingField("jwk"))?;
        // `to_ec_public` reads x and y only; `jwk` (with any `d`) zeroizes as it drops here.
        let client_key = jwk.to_ec_public()?;
        Ok(OpenedHandshake { request, client_key })
    }

    /// Answers a handshake: a fresh server key pair, the derived shared key,
    /// and the PS256-signed 201 response. `session_uri` turns the shared key
    /// into the session's URI (e.g. a sealed ticket).
    pub fn accept_handshake(
        &self,
        opened: &OpenedHandshake,
        grant: &HandshakeGrant,
        session_uri: impl FnOnce(&OctKey) -> Result<KmsUri, ProtocolError>,
    ) -> Result<AcceptedHandshake, ProtocolError> {
        let server_eph = EcPrivateKey::generate(None)?;
        let shared = jose::ecdh_hkdf(&server_eph, &opened.client_key, None)?;
        let uri = session_uri(&shared)?;
        if !uri.is_object(Kind::Ecdhe) || uri.domain() != self.domain {
            return Err(ProtocolError::InvalidField {
                field: "key.uri",
                reason: "must be an ephemeral key of this KMS",
            });
        }
        let shared = shared.with_kid(uri.to_string());
        let mut resp = Response::new(Status::CREATED, opened.request.request_id.clone());
        resp.key = Some(KeyObject {
            uri,
            jwk: server_eph.public_key().to_jwk(),
            user_id: grant.user_id.clone(),
            client_id: grant.client_id.clone(),
            create_date: date::now(),
            expiration_date: date::truncate(grant.expires),
            resource_uri: None,
            bind_date: None,
        });
        let response = self.sign(SigningContext::Ecdhe, &resp)?;
        Ok(AcceptedHandshake { shared, response })
    }

    /// A signed 499 reset answering `request_id` (empty when unknown), with a timestamp.
    pub fn reset(&self, request_id: Option<&str>, reason: &str) -> Result<String, ProtocolError> {
        let mut resp = Response::error(Status::RESET, request_id.unwrap_or_default(), reason);
        resp.timestamp = Some(date::now());
        self.sign(SigningContext::Reset, &resp)
    }

    /// A signed 499 pushed, unasked, for the session at `session`.
    pub fn push_reset(&self, session: &KmsUri, reason: &str) -> Result<String, ProtocolError> {
        let mut resp = Response::error(Status::RESET, "", reason);
        resp.timestamp = Some(date::now());
        resp.uri = Some(session.clone());
        self.sign(SigningContext::Reset, &resp)
    }

    /// Signs a structure the KMS built, in one of its contexts (PS256, `typ` = context).
    pub fn sign<T: Serialize>(&self, ctx: SigningContext, body: &T) -> Result<String, ProtocolError> {
        let kid = self.key.kid().expect("checked in new").to_string();
        let json = serde_json::to_vec(body)
            .map_err(|_| ProtocolError::InvalidField { field: "body", reason: "does not serialize" })?;
        Ok(jose::jws::sign(SigAlg::PS256, SignKey::Rsa(&self.key), &HeaderParams::kid(kid).with_typ(ctx.typ()), &json)?)
    }
}

/// Decrypts a session request with the session's shared key.
pub fn open_request(shared: &OctKey, session_uri: &KmsUri, jwe: &Jwe) -> Result<Request, ProtocolError> {
    check_kid(jwe, session_uri)?;
    let plain = jwe.decrypt(DecryptKey::Dir(shared))?;
    Request::from_json(&plain)
}

/// A session request that decrypted but is not a request the KMS can read
/// (unknown method, members of the wrong type…): answered with an ordinary
/// 400 that carries its requestId when it has a usable one, so that clients
/// that match answers by requestId (node-kms) see the refusal.
#[derive(Debug)]
pub struct Unreadable {
    /// The requestId member, if it is a string of 1 to 256 printable characters.
    pub request_id: Option<String>,
    /// Why it could not be read.
    pub error: ProtocolError,
}

/// Decrypts a session request. `Err`: it did not decrypt under the session
/// (answer with a signed reset). `Ok(Err)`: it decrypted but does not parse.
pub fn open_session_request(
    shared: &OctKey,
    session_uri: &KmsUri,
    jwe: &Jwe,
) -> Result<Result<Request, Unreadable>, ProtocolError> {
    check_kid(jwe, session_uri)?;
    let plain = jwe.decrypt(DecryptKey::Dir(shared))?;
    Ok(Request::from_json(&plain).map_err(|error| Unreadable { request_id: loose_request_id(&plain), error }))
}

/// The `requestId` of a payload that is JSON but not a valid request.
fn loose_request_id(plain: &[u8]) -> Option<String> {
    // Only this member is read: the others (a bearer token among them) are
    // skipped without being copied into memory that is not zeroized.
    #[derive(serde::Deserialize)]
    struct OnlyId {
        #[serde(rename = "requestId")]
        request_id: Option<String>,
    }
    let id = serde_json::from_slice::<OnlyId>(plain).ok()?.request_id?;
    (!id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)).then_some(id)
}

/// Encrypts a response under the session's shared key.
pub fn seal_response(shared: &OctKey, session_uri: &KmsUri, resp: &Response) -> Result<String, ProtocolError> {
    Ok(seal(shared, session_uri, &resp.to_json())?)
}
