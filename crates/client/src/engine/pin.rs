//! The KMS key a client trusts, pinned from its org's configuration.

use jose::RsaPublicKey;
use kms_protocol::channel::KmsInfo;

use crate::error::{Error, Result};

/// The KMS key a client trusts, from its org's configuration (never from
/// the core).
#[derive(Debug, Clone)]
pub struct KmsPin {
    /// KMS domain (`kms.acme.example`).
    pub domain: String,
    /// Its static public key (with `kid`).
    pub key: RsaPublicKey,
}

impl KmsPin {
    /// From the KMS domain and its public key as a JWK (JSON text), the form
    /// `GET /kms/info` serves and org configuration carries.
    pub fn from_jwk_json(domain: &str, jwk: &str) -> Result<Self> {
        let jwk: jose::Jwk =
            serde_json::from_str(jwk).map_err(|e| Error::Invalid(format!("the pinned KMS key is not a JWK ({e})")))?;
        let key =
            jwk.to_rsa_public().map_err(|e| Error::Invalid(format!("the pinned KMS key is not an RSA key ({e})")))?;
        Self::new(domain, key)
    }

    /// From the KMS domain and its public key in PEM; `kid` as the KMS names it.
    pub fn from_pem(domain: &str, pem: &str, kid: &str) -> Result<Self> {
        let key = RsaPublicKey::from_pem(pem, Some(kid.to_string()))
            .map_err(|e| Error::Invalid(format!("the pinned KMS key is not an RSA public key in PEM ({e})")))?;
        Self::new(domain, key)
    }

    /// From the domain and key.
    pub fn new(domain: &str, key: RsaPublicKey) -> Result<Self> {
        if key.kid().is_none() {
            return Err(Error::Invalid("the pinned KMS key has no kid".into()));
        }
        let domain = kms_protocol::uri::canonical_domain(domain.trim_start_matches("kms://"))
            .map_err(|e| Error::Invalid(format!("KMS domain: {e}")))?;
        Ok(Self { domain, key })
    }

    /// What the channel code takes: the domain and the pinned key.
    pub fn info(&self) -> KmsInfo {
        KmsInfo { domain: self.domain.clone(), key: self.key.clone() }
    }
}
