//! Proof of possession for `jwk` credentials (services, bots, other KMSs).
//!
//! A `jwk` credential (a public key with an `x5c` chain) counts only together
//! with a proof that the caller holds the matching private key, bound to this
//! very request (`kms-protocol.md`, "Proof of possession"). The proof is a
//! compact JWS by that key, with header `typ: "kms-pop"` and the payload
//! [`PopClaims`]:
//!
//! ```json
//! {"typ":"kms-pop","binding":"ecdhe:<thumbprint>","requestId":"<id>","iat":1700000000}
//! ```
//!
//! - `binding` ties the proof to one channel: `"ecdhe:" +` the RFC 7638
//!   thumbprint of the client's ephemeral EC public key in a handshake
//!   ([`handshake_binding`]), or `"session:" +` the canonical ephemeral key URI
//!   on every later request ([`session_binding`]).
//! - `requestId` ties it to one request; `iat` (Unix seconds) must be within
//!   `max_skew_secs` of the verifier's clock, either way.
//!
//! Knowing someone's certificate is not enough: without the private key there
//! is no proof, and a recorded proof names another ephemeral key or session
//! and another requestId. The `x5c` chain itself is checked by the KMS
//! against its trust roots (crate `kms`, module `service_auth`).
//!
//! Client side: [`begin_service_handshake`], then [`attach_session_proof`] on
//! each request; or [`sign_pop`] / [`service_credential`] for other shapes.
//! Server side: [`verify_pop`].

use std::fmt;

use jose::jws::{SignKey, VerifyKey};
use jose::{EcPublicKey, HeaderParams, Jwk, Jws, JwsPolicy, SigAlg};
use serde::{Deserialize, Serialize};

use crate::channel::{begin_handshake_with, KmsInfo, PendingHandshake, Session};
use crate::error::ProtocolError;
use crate::message::{ClientInfo, Credential, Request};
use crate::uri::KmsUri;

/// The JWS header `typ` and the claims' `typ` of a proof of possession.
pub const POP_TYP: &str = "kms-pop";
/// How far `iat` may be from the verifier's clock, by default (seconds).
pub const DEFAULT_MAX_SKEW_SECS: i64 = 300;
/// Longest compact proof accepted (an RSA-8192 signature is 1366 characters).
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// Prefix of a handshake binding.
pub const HANDSHAKE_PREFIX: &str = "ecdhe:";
/// Prefix of a session binding.
pub const SESSION_PREFIX: &str = "session:";

/// The signed payload of a proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopClaims {
    /// Always [`POP_TYP`].
    pub typ: String,
    /// What the proof is bound to: [`handshake_binding`] or [`session_binding`].
    pub binding: String,
    /// The requestId of the request that carries the proof.
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// When the proof was made (Unix seconds).
    pub iat: i64,
}

/// Why a proof of possession was refused. Never carries input values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PopRefusal {
    /// The credential has a `jwk` but no `proof`.
    Missing,
    /// The credential `jwk` is not a usable public RSA or P-256 key (or carries private members).
    Key,
    /// The proof is not a compact JWS, or uses an algorithm that is not allowed for the key.
    Algorithm,
    /// The JWK's `alg` member names another algorithm than the proof's.
    KeyAlgorithm,
    /// The proof is not a well-formed compact JWS.
    Malformed,
    /// The signature does not verify with the credential key.
    Signature,
    /// The header or claims `typ` is not `kms-pop`.
    Type,
    /// The claims are not a [`PopClaims`] object.
    Claims,
    /// The proof is bound to another ephemeral key or session.
    Binding,
    /// The proof is for another request.
    RequestId,
    /// `iat` is too far in the past.
    Stale,
    /// `iat` is too far in the future.
    Future,
}

impl fmt::Display for PopRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PopRefusal::Missing => "a jwk credential needs a proof",
            PopRefusal::Key => "the credential key is not a usable public RSA or P-256 key",
            PopRefusal::Algorithm => "the proof's algorithm is not allowed for the credential key",
            PopRefusal::KeyAlgorithm => "the proof's algorithm differs from the key's alg",
            PopRefusal::Malformed => "the proof is not a well-formed compact JWS",
            PopRefusal::Signature => "the proof's signature does not verify with the credential key",
            PopRefusal::Type => "the proof is not of type kms-pop",
            PopRefusal::Claims => "the proof's claims are malformed",
            PopRefusal::Binding => "the proof is bound to another ephemeral key or session",
            PopRefusal::RequestId => "the proof is for another request",
            PopRefusal::Stale => "the proof is too old",
            PopRefusal::Future => "the proof is dated in the future",
        })
    }
}

fn refuse(r: PopRefusal) -> ProtocolError {
    ProtocolError::ProofOfPossession(r)
}

/// The binding of a handshake: `"ecdhe:"` + the RFC 7638 thumbprint of the
/// client's ephemeral public key (the one sent in the `create /ecdhe` request).
pub fn handshake_binding(ephemeral: &EcPublicKey) -> String {
    format!("{HANDSHAKE_PREFIX}{}", ephemeral.thumbprint())
}

/// The binding of a request in an established session: `"session:"` + the
/// canonical (absolute) ephemeral key URI.
pub fn session_binding(uri: &KmsUri) -> String {
    format!("{SESSION_PREFIX}{uri}")
}

/// Signs a proof of possession: a compact JWS (header `typ: "kms-pop"`) over
/// [`PopClaims`] with `binding`, `request_id` and `iat = now` (Unix seconds).
///
/// `alg` must fit `key`: `ES256` for P-256, `PS256` or `RS256` for RSA.
pub fn sign_pop(
    key: SignKey<'_>,
    alg: SigAlg,
    binding: &str,
    request_id: &str,
    now: i64,
) -> Result<String, ProtocolError> {
    let claims = PopClaims { typ: POP_TYP.into(), binding: binding.into(), request_id: request_id.into(), iat: now };
    let json = serde_json::to_vec(&claims)
        .map_err(|_| ProtocolError::InvalidField { field: "proof", reason: "does not serialize" })?;
    let params = HeaderParams::default().with_typ(POP_TYP);
    Ok(jose::jws::sign(alg, key, &params, &json)?)
}

/// Verifies a proof of possession of `jwk_pub` (the credential's public key).
///
/// Refuses unless all of these hold:
/// - `jwk_pub` is a public RSA or P-256 key (no private members);
/// - the proof is a compact JWS with `ES256` for an EC key, or `PS256`/`RS256`
///   for an RSA key (nothing else: no `none`, no HMAC, no cross-type), and
///   that algorithm equals the JWK's `alg` member when it has one;
/// - the signature verifies with `jwk_pub`;
/// - header `typ` and claims `typ` are both `kms-pop`;
/// - `binding` and `requestId` equal the expected values exactly;
/// - `|now - iat| <= max_skew_secs` (Unix seconds; a negative skew counts as 0).
///
/// Every refusal is [`ProtocolError::ProofOfPossession`] with a [`PopRefusal`].
pub fn verify_pop(
    jwk_pub: &Jwk,
    proof: &str,
    expected_binding: &str,
    expected_request_id: &str,
    now: i64,
    max_skew_secs: i64,
) -> Result<(), ProtocolError> {
    const EC: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::ES256], max_len: MAX_PROOF_LEN };
    const RSA: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256, SigAlg::RS256], max_len: MAX_PROOF_LEN };
    if jwk_pub.has_private() || jwk_pub.p.is_some() || jwk_pub.q.is_some() {
        return Err(refuse(PopRefusal::Key));
    }
    let (rsa, ec) = match jwk_pub.kty.as_str() {
        "RSA" => (Some(jwk_pub.to_rsa_public().map_err(|_| refuse(PopRefusal::Key))?), None),
        "EC" => (None, Some(jwk_pub.to_ec_public().map_err(|_| refuse(PopRefusal::Key))?)),
        _ => return Err(refuse(PopRefusal::Key)),
    };
    let (policy, key) = match (&rsa, &ec) {
        (Some(k), _) => (RSA, VerifyKey::Rsa(k)),
        (_, Some(k)) => (EC, VerifyKey::Ec(k)),
        _ => return Err(refuse(PopRefusal::Key)),
    };
    let jws = Jws::parse(proof, &policy).map_err(|e| match e {
        jose::Error::UnsupportedAlgorithm(_)
        | jose::Error::AlgorithmNotAllowed(_)
        | jose::Error::MissingHeader("alg") => refuse(PopRefusal::Algorithm),
        _ => refuse(PopRefusal::Malformed),
    })?;
    let alg = jws.header().alg;
    if jwk_pub.alg.as_deref().is_some_and(|a| a != alg.name()) {
        return Err(refuse(PopRefusal::KeyAlgorithm));
    }
    let payload = jws.verify(key).map_err(|_| refuse(PopRefusal::Signature))?;
    if jws.header().typ.as_deref() != Some(POP_TYP) {
        return Err(refuse(PopRefusal::Type));
    }
    let claims: PopClaims =
        jose::json::from_slice(payload, jose::Part::Payload).map_err(|_| refuse(PopRefusal::Claims))?;
    if claims.typ != POP_TYP {
        return Err(refuse(PopRefusal::Type));
    }
    if claims.binding != expected_binding {
        return Err(refuse(PopRefusal::Binding));
    }
    if claims.request_id != expected_request_id {
        return Err(refuse(PopRefusal::RequestId));
    }
    let skew = i128::from(max_skew_secs.max(0));
    let age = i128::from(now) - i128::from(claims.iat);
    if age > skew {
        return Err(refuse(PopRefusal::Stale));
    }
    if -age > skew {
        return Err(refuse(PopRefusal::Future));
    }
    Ok(())
}

/// The public JWK of a signing key, with `x5c` set to `cert_chain`.
fn public_jwk(key: SignKey<'_>, cert_chain: Vec<String>) -> Jwk {
    let mut jwk = match key {
        SignKey::Rsa(k) => k.public_key().to_jwk(),
        SignKey::Ec(k) => k.public_key().to_jwk(),
    };
    debug_assert!(!jwk.has_private());
    jwk.x5c = Some(cert_chain);
    jwk
}

/// A `jwk` credential: the public key of `key` with `x5c = cert_chain` (leaf
/// first, standard base64 DER) and a proof over `binding`, `request_id` and `now`.
pub fn service_credential(
    key: SignKey<'_>,
    alg: SigAlg,
    cert_chain: Vec<String>,
    binding: &str,
    request_id: &str,
    now: i64,
) -> Result<Credential, ProtocolError> {
    let proof = sign_pop(key, alg, binding, request_id, now)?;
    Ok(Credential { jwk: Some(public_jwk(key, cert_chain)), proof: Some(proof), ..Credential::default() })
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Starts a handshake authenticated by a service key: like
/// [`begin_handshake`](crate::channel::begin_handshake), with a `jwk`
/// credential (the public key of `key`, `x5c = cert_chain`: leaf first,
/// standard base64 DER) proven over the new ephemeral key and requestId.
pub fn begin_service_handshake(
    kms: &KmsInfo,
    client_id: &str,
    key: SignKey<'_>,
    alg: SigAlg,
    cert_chain: Vec<String>,
) -> Result<PendingHandshake, ProtocolError> {
    begin_handshake_with(kms, |ephemeral, request_id| {
        let credential =
            service_credential(key, alg, cert_chain, &handshake_binding(ephemeral), request_id, unix_now())?;
        Ok(ClientInfo { client_id: client_id.to_string(), credential })
    })
}

/// Sets `req.client` to a `jwk` credential proven over `session`'s URI and
/// `req.request_id` (call it after the requestId is final, before
/// [`Session::wrap`]). The client id is kept if `req.client` has one, else
/// it is the session's.
pub fn attach_session_proof(
    req: &mut Request,
    session: &Session,
    key: SignKey<'_>,
    alg: SigAlg,
    cert_chain: Vec<String>,
) -> Result<(), ProtocolError> {
    let credential =
        service_credential(key, alg, cert_chain, &session_binding(session.uri()), &req.request_id, unix_now())?;
    let client_id = match req.client.take() {
        Some(c) if !c.client_id.is_empty() => c.client_id,
        _ => session.info().client_id.clone(),
    };
    req.client = Some(ClientInfo { client_id, credential });
    Ok(())
}

/// KMS-to-KMS federation: a KMS proves itself to another with its static key
/// (a `jwk` credential with its certificate in `x5c`, and `kms-pop` proofs:
/// structures this KMS builds, never bytes a peer chose). The credential's
/// `userId` names the asking KMS (`kms://<domain>`), so the answering KMS
/// knows which peer entry of its policy to check the certificate against.
impl crate::channel::ServerKey {
    /// The `userId` a KMS puts in its federation credential.
    pub fn peer_id(&self) -> String {
        format!("kms://{}", self.domain())
    }

    /// Starts a handshake with the KMS `peer`, as this KMS.
    pub fn begin_peer_handshake(
        &self,
        peer: &KmsInfo,
        cert_chain: Vec<String>,
    ) -> Result<PendingHandshake, ProtocolError> {
        let id = self.peer_id();
        begin_handshake_with(peer, |ephemeral, request_id| {
            let mut credential = service_credential(
                SignKey::Rsa(self.private_key()),
                SigAlg::PS256,
                cert_chain,
                &handshake_binding(ephemeral),
                request_id,
                unix_now(),
            )?;
            credential.user_id = Some(id.clone());
            Ok(ClientInfo { client_id: id, credential })
        })
    }

    /// Sets `req.client` to this KMS's credential for `session` with a peer,
    /// asking for its user `on_behalf_of` (call after the requestId is final).
    pub fn attach_peer_proof(
        &self,
        req: &mut Request,
        session: &Session,
        cert_chain: Vec<String>,
        on_behalf_of: Option<&str>,
    ) -> Result<(), ProtocolError> {
        let mut credential = service_credential(
            SignKey::Rsa(self.private_key()),
            SigAlg::PS256,
            cert_chain,
            &session_binding(session.uri()),
            &req.request_id,
            unix_now(),
        )?;
        credential.user_id = Some(self.peer_id());
        credential.on_behalf_of = on_behalf_of.map(str::to_string);
        req.client = Some(ClientInfo { client_id: self.peer_id(), credential });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jose::{EcPrivateKey, RsaPrivateKey};
    use std::sync::OnceLock;

    const NOW: i64 = 1_700_000_000;
    const RID: &str = "req-1";

    fn ec() -> &'static EcPrivateKey {
        static K: OnceLock<EcPrivateKey> = OnceLock::new();
        K.get_or_init(|| EcPrivateKey::generate(None).unwrap())
    }
    fn rsa() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::generate(2048, None).unwrap())
    }
    fn binding() -> String {
        handshake_binding(EcPrivateKey::generate(None).unwrap().public_key())
    }
    fn err(r: PopRefusal) -> Result<(), ProtocolError> {
        Err(ProtocolError::ProofOfPossession(r))
    }
    /// A compact JWS with any header, payload and signature bytes.
    fn forge(header: &str, payload: &str, sig: &[u8]) -> String {
        format!("{}.{}.{}", jose::b64::encode(header), jose::b64::encode(payload), jose::b64::encode(sig))
    }

    #[test]
    fn ec_round_trip() {
        let b = binding();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        let jwk = ec().public_key().to_jwk();
        verify_pop(&jwk, &proof, &b, RID, NOW, DEFAULT_MAX_SKEW_SECS).unwrap();
        // Header typ is kms-pop.
        let jws = Jws::parse(&proof, &JwsPolicy::ES256).unwrap();
        assert_eq!(jws.header().typ.as_deref(), Some(POP_TYP));
        let claims: PopClaims = serde_json::from_slice(jws.verify(VerifyKey::Ec(ec().public_key())).unwrap()).unwrap();
        assert_eq!(claims, PopClaims { typ: POP_TYP.into(), binding: b, request_id: RID.into(), iat: NOW });
    }

    #[test]
    fn rsa_round_trip_ps256_and_rs256() {
        let b = binding();
        let jwk = rsa().public_key().to_jwk();
        for alg in [SigAlg::PS256, SigAlg::RS256] {
            let proof = sign_pop(SignKey::Rsa(rsa()), alg, &b, RID, NOW).unwrap();
            verify_pop(&jwk, &proof, &b, RID, NOW, DEFAULT_MAX_SKEW_SECS).unwrap();
        }
    }

    #[test]
    fn skew_limits_are_inclusive() {
        let b = binding();
        let jwk = ec().public_key().to_jwk();
        for iat in [NOW - 300, NOW + 300] {
            let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, iat).unwrap();
            verify_pop(&jwk, &proof, &b, RID, NOW, 300).unwrap();
        }
    }

    #[test]
    fn refuses_stale_and_future() {
        let b = binding();
        let jwk = ec().public_key().to_jwk();
        let old = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW - 301).unwrap();
        assert_eq!(verify_pop(&jwk, &old, &b, RID, NOW, 300), err(PopRefusal::Stale));
        let future = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW + 301).unwrap();
        assert_eq!(verify_pop(&jwk, &future, &b, RID, NOW, 300), err(PopRefusal::Future));
        // Extreme values do not overflow.
        let min = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, i64::MIN).unwrap();
        assert_eq!(verify_pop(&jwk, &min, &b, RID, i64::MAX, i64::MAX), err(PopRefusal::Stale));
        let max = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, i64::MAX).unwrap();
        assert_eq!(verify_pop(&jwk, &max, &b, RID, i64::MIN, 300), err(PopRefusal::Future));
        // A negative skew counts as zero.
        let exact = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        verify_pop(&jwk, &exact, &b, RID, NOW, -5).unwrap();
        let one = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW - 1).unwrap();
        assert_eq!(verify_pop(&jwk, &one, &b, RID, NOW, -5), err(PopRefusal::Stale));
    }

    #[test]
    fn refuses_other_request_and_binding() {
        let b = binding();
        let jwk = ec().public_key().to_jwk();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        assert_eq!(verify_pop(&jwk, &proof, &b, "req-2", NOW, 300), err(PopRefusal::RequestId));
        assert_eq!(verify_pop(&jwk, &proof, &binding(), RID, NOW, 300), err(PopRefusal::Binding));
        // A handshake proof is no session proof, and the other way round.
        let uri = KmsUri::object("kms.example.com", crate::uri::Kind::Ecdhe, "s1").unwrap();
        assert_eq!(verify_pop(&jwk, &proof, &session_binding(&uri), RID, NOW, 300), err(PopRefusal::Binding));
        let sess = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &session_binding(&uri), RID, NOW).unwrap();
        verify_pop(&jwk, &sess, &session_binding(&uri), RID, NOW, 300).unwrap();
        let other = KmsUri::object("kms.example.com", crate::uri::Kind::Ecdhe, "s2").unwrap();
        assert_eq!(verify_pop(&jwk, &sess, &session_binding(&other), RID, NOW, 300), err(PopRefusal::Binding));
        // Exact match: no prefix, no case folding.
        assert_eq!(verify_pop(&jwk, &proof, &b.to_uppercase(), RID, NOW, 300), err(PopRefusal::Binding));
        assert_eq!(verify_pop(&jwk, &proof, &b[..b.len() - 1], RID, NOW, 300), err(PopRefusal::Binding));
        assert_eq!(verify_pop(&jwk, &proof, &b, "REQ-1", NOW, 300), err(PopRefusal::RequestId));
    }

    #[test]
    fn refuses_wrong_key() {
        let b = binding();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        let other = EcPrivateKey::generate(None).unwrap().public_key().to_jwk();
        assert_eq!(verify_pop(&other, &proof, &b, RID, NOW, 300), err(PopRefusal::Signature));
        let rsa_proof = sign_pop(SignKey::Rsa(rsa()), SigAlg::PS256, &b, RID, NOW).unwrap();
        let other_rsa = RsaPrivateKey::generate(2048, None).unwrap().public_key().to_jwk();
        assert!(matches!(
            verify_pop(&other_rsa, &rsa_proof, &b, RID, NOW, 300),
            Err(ProtocolError::ProofOfPossession(PopRefusal::Signature))
        ));
        // An EC proof presented with an RSA credential key, and the reverse.
        let rsa_jwk = rsa().public_key().to_jwk();
        assert_eq!(verify_pop(&rsa_jwk, &proof, &b, RID, NOW, 300), err(PopRefusal::Algorithm));
        let ec_jwk = ec().public_key().to_jwk();
        assert_eq!(verify_pop(&ec_jwk, &rsa_proof, &b, RID, NOW, 300), err(PopRefusal::Algorithm));
    }

    #[test]
    fn refuses_rsa_key_with_es256_header() {
        // An RSA-keyed credential whose proof claims ES256 (whatever the signature bytes).
        let b = binding();
        let ec_proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        let rsa_jwk = rsa().public_key().to_jwk();
        assert_eq!(verify_pop(&rsa_jwk, &ec_proof, &b, RID, NOW, 300), err(PopRefusal::Algorithm));
        // And an RSA signature relabelled ES256.
        let rsa_proof = sign_pop(SignKey::Rsa(rsa()), SigAlg::PS256, &b, RID, NOW).unwrap();
        let parts: Vec<&str> = rsa_proof.split('.').collect();
        let h = jose::b64::encode(r#"{"alg":"ES256","typ":"kms-pop"}"#);
        let relabelled = format!("{h}.{}.{}", parts[1], parts[2]);
        assert_eq!(verify_pop(&rsa_jwk, &relabelled, &b, RID, NOW, 300), err(PopRefusal::Algorithm));
        // Signing refuses the mismatch too.
        assert!(sign_pop(SignKey::Rsa(rsa()), SigAlg::ES256, &b, RID, NOW).is_err());
        assert!(sign_pop(SignKey::Ec(ec()), SigAlg::PS256, &b, RID, NOW).is_err());
    }

    #[test]
    fn refuses_hs256_none_and_unknown_algorithms() {
        let b = binding();
        let claims = serde_json::to_string(&PopClaims {
            typ: POP_TYP.into(),
            binding: b.clone(),
            request_id: RID.into(),
            iat: NOW,
        })
        .unwrap();
        let ec_jwk = ec().public_key().to_jwk();
        let rsa_jwk = rsa().public_key().to_jwk();
        for header in [
            r#"{"alg":"none","typ":"kms-pop"}"#,
            r#"{"alg":"HS256","typ":"kms-pop"}"#,
            r#"{"alg":"ES384","typ":"kms-pop"}"#,
            r#"{"alg":"EdDSA","typ":"kms-pop"}"#,
            r#"{"typ":"kms-pop"}"#,
        ] {
            for sig in [&[7u8; 64][..], &[7u8; 256][..], &[7u8; 32][..]] {
                let compact = forge(header, &claims, sig);
                for jwk in [&ec_jwk, &rsa_jwk] {
                    assert_eq!(verify_pop(jwk, &compact, &b, RID, NOW, 300), err(PopRefusal::Algorithm), "{header}");
                }
            }
            // With an empty signature (the `none` form) too.
            let unsigned = format!("{}.{}.", jose::b64::encode(header), jose::b64::encode(&claims));
            for jwk in [&ec_jwk, &rsa_jwk] {
                assert_eq!(verify_pop(jwk, &unsigned, &b, RID, NOW, 300), err(PopRefusal::Algorithm), "{header}");
            }
        }
        // HS256 "keyed" with an oct JWK is refused at the key.
        let oct = jose::OctKey::generate(32, None).unwrap().to_jwk();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        assert_eq!(verify_pop(&oct, &proof, &b, RID, NOW, 300), err(PopRefusal::Key));
    }

    #[test]
    fn refuses_wrong_typ() {
        let b = binding();
        let jwk = ec().public_key().to_jwk();
        let claims = |typ: &str| {
            serde_json::to_vec(&PopClaims { typ: typ.into(), binding: b.clone(), request_id: RID.into(), iat: NOW })
                .unwrap()
        };
        // Header typ of another context (e.g. a reset), claims fine.
        for typ in [None, Some("kms-reset"), Some("KMS-POP"), Some("JWT")] {
            let params = HeaderParams { typ: typ.map(str::to_string), ..HeaderParams::default() };
            let proof = jose::jws::sign(SigAlg::ES256, SignKey::Ec(ec()), &params, &claims(POP_TYP)).unwrap();
            assert_eq!(verify_pop(&jwk, &proof, &b, RID, NOW, 300), err(PopRefusal::Type), "{typ:?}");
        }
        // Header typ fine, claims typ wrong.
        let proof = jose::jws::sign(
            SigAlg::ES256,
            SignKey::Ec(ec()),
            &HeaderParams::default().with_typ(POP_TYP),
            &claims("kms-ecdhe"),
        )
        .unwrap();
        assert_eq!(verify_pop(&jwk, &proof, &b, RID, NOW, 300), err(PopRefusal::Type));
    }

    #[test]
    fn refuses_malformed_claims() {
        let b = binding();
        let jwk = ec().public_key().to_jwk();
        let params = HeaderParams::default().with_typ(POP_TYP);
        for payload in [
            "not json".to_string(),
            format!(r#"{{"typ":"kms-pop","binding":"{b}","requestId":"{RID}"}}"#),
            format!(r#"{{"typ":"kms-pop","binding":"{b}","requestId":"{RID}","iat":"{NOW}"}}"#),
            format!(r#"{{"typ":"kms-pop","binding":"{b}","requestId":"{RID}","iat":{NOW},"extra":1}}"#),
            format!(r#"{{"typ":"kms-pop","binding":"x","binding":"{b}","requestId":"{RID}","iat":{NOW}}}"#),
        ] {
            let proof = jose::jws::sign(SigAlg::ES256, SignKey::Ec(ec()), &params, payload.as_bytes()).unwrap();
            assert_eq!(verify_pop(&jwk, &proof, &b, RID, NOW, 300), err(PopRefusal::Claims), "{payload}");
        }
    }

    #[test]
    fn refuses_tampering_and_garbage() {
        let b = binding();
        let jwk = ec().public_key().to_jwk();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        // Payload swapped for one with another requestId, signature kept.
        let parts: Vec<&str> = proof.split('.').collect();
        let other = jose::b64::encode(
            serde_json::to_vec(&PopClaims {
                typ: POP_TYP.into(),
                binding: b.clone(),
                request_id: "req-2".into(),
                iat: NOW,
            })
            .unwrap(),
        );
        let swapped = format!("{}.{other}.{}", parts[0], parts[2]);
        assert_eq!(verify_pop(&jwk, &swapped, &b, "req-2", NOW, 300), err(PopRefusal::Signature));
        for garbage in ["", "a.b", "a.b.c.d", "!!!.x.y", &format!("{}.{}.", parts[0], parts[1])] {
            assert!(
                matches!(verify_pop(&jwk, garbage, &b, RID, NOW, 300), Err(ProtocolError::ProofOfPossession(_))),
                "{garbage}"
            );
        }
        let huge = "a".repeat(MAX_PROOF_LEN + 1);
        assert_eq!(verify_pop(&jwk, &huge, &b, RID, NOW, 300), err(PopRefusal::Malformed));
    }

    #[test]
    fn refuses_unusable_credential_keys() {
        let b = binding();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        // A private JWK as credential.
        assert_eq!(verify_pop(&ec().to_jwk(), &proof, &b, RID, NOW, 300), err(PopRefusal::Key));
        // Unknown kty, other curve, missing members.
        for json in [
            r#"{"kty":"OKP","crv":"Ed25519","x":"AA"}"#,
            r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#,
            r#"{"kty":"EC","crv":"P-256"}"#,
            r#"{"kty":"RSA","e":"AQAB"}"#,
        ] {
            let jwk = Jwk::from_json(json.as_bytes()).unwrap();
            assert_eq!(verify_pop(&jwk, &proof, &b, RID, NOW, 300), err(PopRefusal::Key), "{json}");
        }
        // A small RSA key.
        let mut small = rsa().public_key().to_jwk();
        small.n = Some(jose::b64::encode([0xffu8; 128]));
        assert_eq!(verify_pop(&small, &proof, &b, RID, NOW, 300), err(PopRefusal::Key));
    }

    #[test]
    fn jwk_alg_must_match() {
        let b = binding();
        let mut jwk = rsa().public_key().to_jwk();
        jwk.alg = Some("PS256".into());
        let rs = sign_pop(SignKey::Rsa(rsa()), SigAlg::RS256, &b, RID, NOW).unwrap();
        assert_eq!(verify_pop(&jwk, &rs, &b, RID, NOW, 300), err(PopRefusal::KeyAlgorithm));
        let ps = sign_pop(SignKey::Rsa(rsa()), SigAlg::PS256, &b, RID, NOW).unwrap();
        verify_pop(&jwk, &ps, &b, RID, NOW, 300).unwrap();
    }

    #[test]
    fn errors_quote_no_values() {
        let b = binding();
        let proof = sign_pop(SignKey::Ec(ec()), SigAlg::ES256, &b, RID, NOW).unwrap();
        let e = verify_pop(&ec().public_key().to_jwk(), &proof, "ecdhe:zzqx", "req-secret", NOW, 300).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(&b) && !shown.contains("req-") && !shown.contains("zzqx"), "{shown}");
    }

    #[test]
    fn service_handshake_and_session_request_end_to_end() {
        use crate::channel::{classify, open_request, HandshakeGrant, Incoming, ServerKey};
        use crate::message::Method;
        use crate::uri::Kind;
        let srv =
            ServerKey::new(RsaPrivateKey::generate(2048, Some("static".into())).unwrap(), "kms.example.com").unwrap();
        let kms = srv.info();
        let chain = vec!["bGVhZg==".to_string(), "Y2E=".to_string()];
        let pending = begin_service_handshake(&kms, "bot-1", SignKey::Ec(ec()), SigAlg::ES256, chain.clone()).unwrap();
        let Incoming::Handshake(jwe) = classify(&pending.wrapped).unwrap() else { panic!("handshake") };
        let opened = srv.open_handshake(&jwe).unwrap();
        let client = opened.request.client.as_ref().unwrap();
        assert_eq!(client.client_id, "bot-1");
        let cred = &client.credential;
        let jwk = cred.jwk.as_ref().unwrap();
        assert!(!jwk.has_private());
        assert_eq!(jwk.x5c.as_ref(), Some(&chain));
        assert!(cred.bearer.is_none());
        let now = unix_now();
        let proof = cred.proof.as_deref().unwrap();
        verify_pop(
            jwk,
            proof,
            &handshake_binding(&opened.client_key),
            &opened.request.request_id,
            now,
            DEFAULT_MAX_SKEW_SECS,
        )
        .unwrap();
        // Not valid for another ephemeral key.
        assert_eq!(
            verify_pop(jwk, proof, &binding(), &opened.request.request_id, now, DEFAULT_MAX_SKEW_SECS),
            err(PopRefusal::Binding)
        );

        let grant = HandshakeGrant {
            user_id: "bot@acme.example".into(),
            client_id: "bot-1".into(),
            expires: crate::date::now() + time::Duration::hours(1),
        };
        let uri = KmsUri::object("kms.example.com", Kind::Ecdhe, "s1").unwrap();
        let acc = srv.accept_handshake(&opened, &grant, |_| Ok(uri.clone())).unwrap();
        let session = pending.finish(&kms, &acc.response).unwrap();

        let mut req = Request::new(Method::Create, "/keys", None);
        req.body.count = Some(1);
        attach_session_proof(&mut req, &session, SignKey::Ec(ec()), SigAlg::ES256, chain).unwrap();
        let Incoming::Session { jwe, .. } = classify(&session.wrap(&req).unwrap()).unwrap() else { panic!("session") };
        let seen = open_request(&acc.shared, &uri, &jwe).unwrap();
        let client = seen.client.as_ref().unwrap();
        assert_eq!(client.client_id, "bot-1");
        let jwk = client.credential.jwk.as_ref().unwrap();
        let proof = client.credential.proof.as_deref().unwrap();
        verify_pop(jwk, proof, &session_binding(&uri), &seen.request_id, unix_now(), DEFAULT_MAX_SKEW_SECS).unwrap();
        // A session proof replayed on a new request id is refused.
        assert_eq!(
            verify_pop(jwk, proof, &session_binding(&uri), "other", unix_now(), 300),
            err(PopRefusal::RequestId)
        );
    }

    #[test]
    fn bindings() {
        let k = ec().public_key();
        assert_eq!(handshake_binding(k), format!("ecdhe:{}", k.thumbprint()));
        let rel = KmsUri::parse("/ecdhe/abc", "KMS.Example.com").unwrap();
        assert_eq!(session_binding(&rel), "session:kms://kms.example.com/ecdhe/abc");
    }
}
