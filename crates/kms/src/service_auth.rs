//! Service credentials: a `jwk` credential (bots, search indexers, other
//! KMSs) with an `x5c` certificate chain to a configured trust root, and a
//! proof of possession of the key (`kms-protocol.md`, "Proof of possession").
//!
//! Two checks, both required; [`authenticate_service`] runs them in order:
//!
//! 1. [`kms_protocol::pop::verify_pop`]: a JWS by the credential key over this
//!    request's binding (the ephemeral key in a handshake, the session URI
//!    later), its requestId and a fresh timestamp. Knowing someone's
//!    certificate is not enough.
//! 2. [`verify_service`]: the `x5c` chain leads to one of the [`TrustRoots`]
//!    (RFC 5280 path validation by `rustls-webpki` over aws-lc-rs), the leaf
//!    allows `clientAuth`, the JWK is the leaf's key, and the leaf names the
//!    service (see [`verify_service`] for exactly how).
//!
//! Errors ([`AuthError`]) name what was wrong, never key material,
//! certificate contents or the proof.

use std::fmt;

use base64::Engine as _;
use jose::Jwk;
use kms_protocol::message::Credential;
use kms_protocol::pop::{verify_pop, PopRefusal, DEFAULT_MAX_SKEW_SECS};
use kms_protocol::ProtocolError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;

use crate::auth::AuthError;

/// Most certificates in an `x5c` chain: the leaf and up to three issuers
/// (intermediates, optionally followed by the root itself).
pub const MAX_CHAIN_LEN: usize = 4;
/// Longest DER certificate accepted in `x5c` (bytes).
pub const MAX_CERT_LEN: usize = 16 * 1024;

/// Signature algorithms accepted on certificates in a chain.
static SIG_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The CA certificates a KMS trusts to vouch for services.
///
/// Each root is used as a trust anchor (its name and key, plus any name
/// constraints it carries); its own validity period is not checked, as in
/// every PKIX trust store. Every root may vouch for any service id: keep one
/// CA per trust domain you mean to admit.
pub struct TrustRoots {
    anchors: Vec<TrustAnchor<'static>>,
}

impl fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustRoots").field("count", &self.anchors.len()).finish()
    }
}

/// Why trust roots could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustRootsError {
    /// The PEM holds no `CERTIFICATE` block.
    #[error("no CERTIFICATE found in the trust roots PEM")]
    NoCertificates,
    /// The PEM is malformed.
    #[error("the trust roots PEM is malformed")]
    Pem,
    /// A certificate (0-based position among the certificates) is not a usable trust anchor.
    #[error("trust root certificate #{0} is not a valid X.509 certificate")]
    BadCertificate(usize),
}

impl TrustRoots {
    /// Loads every `CERTIFICATE` block of `pem` (other blocks are ignored).
    /// At least one is required.
    pub fn from_pem(pem: &str) -> Result<Self, TrustRootsError> {
        let mut anchors = Vec::new();
        for (i, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let der = der.map_err(|_| TrustRootsError::Pem)?;
            let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|_| TrustRootsError::BadCertificate(i))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(TrustRootsError::NoCertificates);
        }
        Ok(Self { anchors })
    }

    /// How many roots are configured.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Never true for roots built by [`TrustRoots::from_pem`].
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

fn refuse(reason: &str) -> AuthError {
    AuthError(reason.to_string())
}

/// Checks a service's `jwk` credential against `roots` at `now` (Unix
/// **seconds**) and returns the service id. Does not check the proof of
/// possession: use [`authenticate_service`], or call
/// [`kms_protocol::pop::verify_pop`] too.
///
/// Refuses unless all of these hold:
/// - `jwk` is a public RSA or P-256 key (no private members) with an `x5c` of
///   1 to [`MAX_CHAIN_LEN`] certificates, leaf first, each standard base64
///   (padded, RFC 4648 §4) DER of at most [`MAX_CERT_LEN`] bytes;
/// - the JWK's key is the leaf certificate's key (compared as SPKI DER);
/// - the chain validates to one of `roots` at `now` (RFC 5280 as
///   `rustls-webpki` does it: signatures by the issuers' keys with an allowed
///   algorithm, validity periods of the leaf and every intermediate, CA basic
///   constraints and path lengths on issuers, no CA as leaf, name constraints;
///   the certificates after the leaf are only candidates for the path, in any
///   order);
/// - the leaf has an extended key usage extension that lists `clientAuth`
///   (an absent extension is refused, `anyExtendedKeyUsage` is not enough),
///   and an issuer's EKU, if present, lists it too;
/// - the leaf names the service. The service id is, in this order:
///   1. the leaf's subjectAltName `rfc822Name`, if it has any: exactly one is
///      required;
///   2. otherwise its subject commonName: exactly one is required.
///
///   SAN URIs and DNS names are never used. The id must be `local@domain`:
///   one `@`, a local part of 1 to 64 characters from `A-Z a-z 0-9 . _ + -`,
///   and a valid DNS domain without port, which is lowercased (as user ids are
///   everywhere in Custos). E.g. `search-indexer@Acme.Example` gives
///   `search-indexer@acme.example`.
pub fn verify_service(roots: &TrustRoots, jwk: &Jwk, now: i64) -> Result<String, AuthError> {
    let chain = certified_chain(jwk)?;
    let leaf =
        EndEntityCert::try_from(&chain[0]).map_err(|_| refuse("the x5c leaf is not a valid X.509 certificate"))?;
    let time = unix_time(now)?;
    leaf.verify_for_usage(SIG_ALGS, &roots.anchors, &chain[1..], time, KeyUsage::client_auth(), None, None)
        .map_err(|e| refuse(path_error(&e)))?;

    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map_err(|_| refuse("the x5c leaf is not a valid X.509 certificate"))?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(_) => return Err(refuse("the x5c leaf certificate does not allow client authentication")),
        Err(_) => return Err(refuse("the x5c leaf has a malformed extension")),
    }
    service_id(&cert)
}

fn unix_time(now: i64) -> Result<UnixTime, AuthError> {
    let now = u64::try_from(now).map_err(|_| refuse("the KMS clock is before 1970"))?;
    Ok(UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)))
}

/// How another KMS's certificate is being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// It asks us (its credential).
    Client,
    /// It answers us (its `/kms/info` key, whose signatures we then check).
    Server,
}

/// Checks another KMS's static key `jwk` (with `x5c`) against the trust
/// this org's policy gives that peer (`trust_pem`): the leaf certificate is
/// one of those certificates (pinned: exact DER match; a pinned certificate
/// is trusted as a trust anchor is, its validity period unchecked), or it
/// chains to one of them at `now` (Unix seconds) and names `kms_domain` as a
/// DNS subject alternative name. The JWK must be the leaf's key.
pub fn verify_peer(trust_pem: &str, jwk: &Jwk, kms_domain: &str, role: PeerRole, now: i64) -> Result<(), AuthError> {
    let chain = certified_chain(jwk)?;
    let pinned: Vec<CertificateDer<'_>> =
        CertificateDer::pem_slice_iter(trust_pem.as_bytes()).filter_map(Result::ok).collect();
    if pinned.iter().any(|c| c.as_ref() == chain[0].as_ref()) {
        return Ok(());
    }
    let roots = TrustRoots::from_pem(trust_pem).map_err(|_| refuse("the trust configured for this KMS is unusable"))?;
    let leaf = EndEntityCert::try_from(&chain[0]).map_err(|_| refuse("the KMS certificate is not valid X.509"))?;
    let usage = match role {
        PeerRole::Client => KeyUsage::client_auth(),
        PeerRole::Server => KeyUsage::server_auth(),
    };
    leaf.verify_for_usage(SIG_ALGS, &roots.anchors, &chain[1..], unix_time(now)?, usage, None, None)
        .map_err(|e| refuse(path_error(&e)))?;
    let host = kms_domain.rsplit_once(':').map_or(kms_domain, |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(host).map_err(|_| refuse("not a DNS name"))?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|_| refuse("the KMS certificate does not name this KMS domain"))?;
    Ok(())
}

/// The `x5c` chain of a public `jwk` whose key is the leaf's key.
fn certified_chain(jwk: &Jwk) -> Result<Vec<CertificateDer<'static>>, AuthError> {
    if jwk.has_private() || jwk.p.is_some() || jwk.q.is_some() {
        return Err(refuse("the credential jwk must be a public key"));
    }
    let jwk_spki = match jwk.kty.as_str() {
        "RSA" => jwk.to_rsa_public().map(|k| k.to_spki_der()),
        "EC" => jwk.to_ec_public().map(|k| k.to_spki_der()),
        _ => return Err(refuse("the credential jwk must be an RSA or P-256 key")),
    }
    .map_err(|_| refuse("the credential jwk is not a valid RSA or P-256 public key"))?;

    let chain = decode_chain(jwk.x5c.as_deref())?;
    let leaf =
        EndEntityCert::try_from(&chain[0]).map_err(|_| refuse("the x5c leaf is not a valid X.509 certificate"))?;

    // The key that signed the proof must be the certified one.
    let leaf_spki = leaf.subject_public_key_info();
    let leaf_key = jose::RsaPublicKey::from_der(leaf_spki.as_ref(), None)
        .map(|k| k.to_spki_der())
        .or_else(|_| jose::EcPublicKey::from_spki_der(leaf_spki.as_ref(), None).map(|k| k.to_spki_der()))
        .map_err(|_| refuse("the x5c leaf key is not an RSA or P-256 key"))?;
    if leaf_key != jwk_spki {
        return Err(refuse("the credential jwk is not the key of the x5c leaf certificate"));
    }
    Ok(chain)
}

/// Decodes `x5c`: present, 1 to [`MAX_CHAIN_LEN`] entries, each strict standard base64 of a bounded DER blob.
fn decode_chain(x5c: Option<&[String]>) -> Result<Vec<CertificateDer<'static>>, AuthError> {
    let x5c = x5c.ok_or_else(|| refuse("the credential jwk needs an x5c certificate chain"))?;
    if x5c.is_empty() {
        return Err(refuse("the credential jwk needs an x5c certificate chain"));
    }
    if x5c.len() > MAX_CHAIN_LEN {
        return Err(refuse("the x5c certificate chain is too long"));
    }
    x5c.iter()
        .map(|b64| {
            if b64.len() > MAX_CERT_LEN.div_ceil(3) * 4 {
                return Err(refuse("an x5c certificate is too large"));
            }
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| refuse("an x5c entry is not standard base64"))?;
            if der.is_empty() || der.len() > MAX_CERT_LEN {
                return Err(refuse("an x5c certificate is empty or too large"));
            }
            Ok(CertificateDer::from(der))
        })
        .collect()
}

/// A fixed description of a path validation failure (no certificate contents).
fn path_error(e: &webpki::Error) -> &'static str {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => "the x5c chain does not lead to a trusted root",
        E::CertExpired { .. } => "a certificate in the x5c chain has expired",
        E::CertNotValidYet { .. } => "a certificate in the x5c chain is not valid yet",
        E::InvalidCertValidity => "a certificate in the x5c chain has an invalid validity period",
        E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => "the x5c chain does not allow client authentication",
        E::CaUsedAsEndEntity => "the x5c leaf is a CA certificate",
        E::EndEntityUsedAsCa => "an issuer in the x5c chain is not a CA",
        E::PathLenConstraintViolated => "the x5c chain violates a path length constraint",
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => {
            "a signature in the x5c chain does not verify"
        }
        E::UnsupportedSignatureAlgorithmContext(_) | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate in the x5c chain uses an unsupported signature algorithm"
        }
        E::NameConstraintViolation => "the x5c chain violates a name constraint",
        E::MaximumSignatureChecksExceeded | E::MaximumPathBuildCallsExceeded | E::MaximumPathDepthExceeded => {
            "the x5c chain is too complex"
        }
        _ => "the x5c certificate chain is not valid",
    }
}

/// The service id named by the leaf (see [`verify_service`]).
fn service_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<String, AuthError> {
    let san = cert.subject_alternative_name().map_err(|_| refuse("the x5c leaf has a malformed subjectAltName"))?;
    let emails: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::RFC822Name(e) => Some(*e),
            _ => None,
        })
        .collect();
    let raw = match emails.as_slice() {
        [one] => one.to_string(),
        [] => {
            let cns: Vec<_> = cert.subject().iter_common_name().collect();
            let [cn] = cns.as_slice() else {
                return Err(refuse("the x5c leaf names no service (no rfc822Name, not exactly one commonName)"));
            };
            cn.as_str().map_err(|_| refuse("the x5c leaf commonName is not a string"))?.to_string()
        }
        _ => return Err(refuse("the x5c leaf has more than one rfc822Name")),
    };
    canonical_service_id(&raw).ok_or_else(|| refuse("the x5c leaf's service name is not of the form name@domain"))
}

/// `local@domain` with a conservative local part and a DNS domain (lowercased); `None` otherwise.
fn canonical_service_id(s: &str) -> Option<String> {
    let (local, domain) = s.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if !local_ok || domain.contains(':') || domain.contains('@') {
        return None;
    }
    let domain = kms_protocol::uri::canonical_domain(domain).ok()?;
    Some(format!("{local}@{domain}"))
}

/// Authenticates a `jwk` credential for one request: the proof of possession
/// over `binding` and `request_id` (at most [`DEFAULT_MAX_SKEW_SECS`] from
/// `now`), then [`verify_service`]. `now` is Unix **seconds**.
///
/// `binding` is [`kms_protocol::pop::handshake_binding`] of the client's
/// ephemeral key in a handshake, [`kms_protocol::pop::session_binding`] of
/// the session URI afterwards. Also refused: a credential with both `jwk`
/// and `bearer`, and an `onBehalfOf` naming anyone but the service itself
/// (compliance delegation is for bearer identities under org policy). The
/// credential's `userId` is a hint and is ignored.
pub fn authenticate_service(
    roots: &TrustRoots,
    credential: &Credential,
    binding: &str,
    request_id: &str,
    now: i64,
) -> Result<String, AuthError> {
    let jwk = credential.jwk.as_ref().ok_or_else(|| refuse("a jwk credential is required"))?;
    if credential.bearer.is_some() {
        return Err(refuse("a credential has either a bearer or a jwk, not both"));
    }
    let proof = credential
        .proof
        .as_deref()
        .ok_or_else(|| AuthError(ProtocolError::ProofOfPossession(PopRefusal::Missing).to_string()))?;
    verify_pop(jwk, proof, binding, request_id, now, DEFAULT_MAX_SKEW_SECS).map_err(|e| AuthError(e.to_string()))?;
    let id = verify_service(roots, jwk, now)?;
    if let Some(obo) = credential.on_behalf_of.as_deref() {
        if !obo.is_empty() && !obo.eq_ignore_ascii_case(&id) {
            return Err(refuse("onBehalfOf is not allowed for this identity"));
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_forms() {
        assert_eq!(canonical_service_id("search-indexer@Acme.Example").as_deref(), Some("search-indexer@acme.example"));
        assert_eq!(canonical_service_id("a.b_c+d-e@x.y").as_deref(), Some("a.b_c+d-e@x.y"));
        for bad in [
            "bob",
            "@acme.example",
            "bob@",
            "bob@acme.example:443",
            "a@b@c",
            "bo b@x.y",
            "bob@-x.y",
            "bob@x..y",
            "\u{e9}@x.y",
        ] {
            assert_eq!(canonical_service_id(bad), None, "{bad}");
        }
        assert_eq!(canonical_service_id(&format!("{}@x.y", "a".repeat(65))), None);
    }

    #[test]
    fn trust_roots_need_a_certificate() {
        assert_eq!(TrustRoots::from_pem("").unwrap_err(), TrustRootsError::NoCertificates);
        assert_eq!(TrustRoots::from_pem("hello").unwrap_err(), TrustRootsError::NoCertificates);
        let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(TrustRoots::from_pem(not_a_cert).unwrap_err(), TrustRootsError::BadCertificate(0));
    }
}
