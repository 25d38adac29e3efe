//! Compact JWS (RFC 7515) with `PS256`, `RS256` or `ES256`.

use primitives::rsa::Padding;

use crate::b64;
use crate::error::{Error, Part, Result};
use crate::header::{HeaderParams, OutHeader, RawHeader, SigAlg};
use crate::jwe::check_len;
use crate::keys::{EcPrivateKey, EcPublicKey, RsaPrivateKey, RsaPublicKey};

/// What a caller accepts when reading a JWS.
#[derive(Debug, Clone, Copy)]
pub struct JwsPolicy<'a> {
    /// Algorithms allowed.
    pub algs: &'a [SigAlg],
    /// Longest compact input accepted, in bytes.
    pub max_len: usize,
}

impl JwsPolicy<'static> {
    /// RSA signatures (`PS256`, `RS256`).
    pub const RSA: JwsPolicy<'static> =
        JwsPolicy { algs: &[SigAlg::PS256, SigAlg::RS256], max_len: crate::DEFAULT_MAX_LEN };
    /// `PS256` only.
    pub const PS256: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256], max_len: crate::DEFAULT_MAX_LEN };
    /// `ES256` only.
    pub const ES256: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::ES256], max_len: crate::DEFAULT_MAX_LEN };
}

/// The checked protected header of a JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsHeader {
    /// Signature algorithm.
    pub alg: SigAlg,
    /// Key id.
    pub kid: Option<String>,
    /// Type (a signing context).
    pub typ: Option<String>,
    /// Content type.
    pub cty: Option<String>,
}

/// A parsed, not yet verified, compact JWS. Its payload is reachable only through [`Jws::verify`].
#[derive(Clone)]
pub struct Jws {
    header: JwsHeader,
    signing_input: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl std::fmt::Debug for Jws {
    // A JWS may be a bearer credential (e.g. an anonymous authorization): never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jws")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// A key to verify with.
#[derive(Debug, Clone, Copy)]
pub enum VerifyKey<'a> {
    /// For `PS256` and `RS256`.
    Rsa(&'a RsaPublicKey),
    /// For `ES256`.
    Ec(&'a EcPublicKey),
}

/// A key to sign with.
#[derive(Debug, Clone, Copy)]
pub enum SignKey<'a> {
    /// For `PS256` and `RS256`.
    Rsa(&'a RsaPrivateKey),
    /// For `ES256`.
    Ec(&'a EcPrivateKey),
}

impl Jws {
    /// Parses a compact JWS and checks its header against `policy`. Verifies nothing.
    pub fn parse(input: &str, policy: &JwsPolicy<'_>) -> Result<Self> {
        check_len(input, policy.max_len)?;
        let parts: Vec<&str> = input.split('.').collect();
        if parts.len() != 3 {
            return Err(Error::SegmentCount { kind: "JWS", expected: 3, found: parts.len() });
        }
        let raw = RawHeader::parse(parts[0])?;
        if raw.enc.is_some() {
            // A JWE header presented as a JWS: refuse rather than guess.
            return Err(Error::UnsupportedHeader("enc"));
        }
        let alg = SigAlg::from_name(raw.alg()?)?;
        if !policy.algs.contains(&alg) {
            return Err(Error::AlgorithmNotAllowed(alg.name().into()));
        }
        let payload = b64::decode(parts[1], Part::Payload)?;
        if parts[2].is_empty() {
            return Err(Error::EmptyPart(Part::Signature));
        }
        let signature = b64::decode(parts[2], Part::Signature)?;
        if alg == SigAlg::ES256 && signature.len() != 64 {
            return Err(Error::Length { part: Part::Signature, expected: 64, found: signature.len() });
        }
        Ok(Self {
            header: JwsHeader { alg, kid: raw.kid, typ: raw.typ, cty: raw.cty },
            signing_input: format!("{}.{}", parts[0], parts[1]),
            payload,
            signature,
        })
    }

    /// The checked protected header (use its `kid` to pick the key).
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// Verifies the signature with `key` and returns the payload.
    pub fn verify(&self, key: VerifyKey<'_>) -> Result<&[u8]> {
        let msg = self.signing_input.as_bytes();
        match (self.header.alg, key) {
            (SigAlg::PS256, VerifyKey::Rsa(k)) => {
                check_rsa_sig_len(k, &self.signature)?;
                k.verify(Padding::PssSha256, msg, &self.signature)?
            }
            (SigAlg::RS256, VerifyKey::Rsa(k)) => {
                check_rsa_sig_len(k, &self.signature)?;
                k.verify(Padding::Pkcs1Sha256, msg, &self.signature)?
            }
            (SigAlg::ES256, VerifyKey::Ec(k)) => k.verify_es256(msg, &self.signature)?,
            (alg, key) => {
                return Err(Error::WrongKeyType {
                    alg: alg.name().into(),
                    expected: if alg == SigAlg::ES256 { "EC" } else { "RSA" },
                    found: match key {
                        VerifyKey::Rsa(_) => "RSA",
                        VerifyKey::Ec(_) => "EC",
                    },
                })
            }
        }
        Ok(&self.payload)
    }
}

fn check_rsa_sig_len(k: &RsaPublicKey, sig: &[u8]) -> Result<()> {
    let expected = k.bits().div_ceil(8);
    if sig.len() != expected {
        return Err(Error::Length { part: Part::Signature, expected, found: sig.len() });
    }
    Ok(())
}

/// Signs `payload` to a compact JWS.
pub fn sign(alg: SigAlg, key: SignKey<'_>, params: &HeaderParams, payload: &[u8]) -> Result<String> {
    let header = OutHeader {
        alg: alg.name(),
        enc: None,
        kid: params.kid.as_deref(),
        typ: params.typ.as_deref(),
        cty: params.cty.as_deref(),
    }
    .encode();
    let mut input = header;
    input.push('.');
    input.push_str(&b64::encode(payload));
    let sig = match (alg, key) {
        (SigAlg::PS256, SignKey::Rsa(k)) => k.sign(Padding::PssSha256, input.as_bytes())?,
        (SigAlg::RS256, SignKey::Rsa(k)) => k.sign(Padding::Pkcs1Sha256, input.as_bytes())?,
        (SigAlg::ES256, SignKey::Ec(k)) => k.sign_es256(input.as_bytes())?,
        (alg, key) => {
            return Err(Error::WrongKeyType {
                alg: alg.name().into(),
                expected: if alg == SigAlg::ES256 { "EC" } else { "RSA" },
                found: match key {
                    SignKey::Rsa(_) => "RSA",
                    SignKey::Ec(_) => "EC",
                },
            })
        }
    };
    input.push('.');
    input.push_str(&b64::encode(sig));
    Ok(input)
}
