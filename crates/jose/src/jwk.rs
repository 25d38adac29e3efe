//! JSON Web Keys (RFC 7517/7518) for RSA, EC P-256 and oct, with serde.
//!
//! [`Jwk`] is the wire form: every member optional, private members in
//! [`SecretString`] so they zeroize and never print. Convert it to a typed key
//! with [`Jwk::to_key`] (or the narrower `to_*` methods), which validate it.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Part, Result};
use crate::keys::{EcPrivateKey, EcPublicKey, OctKey, RsaPrivateKey, RsaPublicKey};

/// A string holding secret material (a JWK's `d`, `k`, primes…): zeroized on
/// drop, redacted by `Debug`.
#[derive(Clone, Default, Serialize, Deserialize, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string.
    pub fn new(s: String) -> Self {
        Self(s)
    }
    /// The secret value. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A JSON Web Key as it travels. Unknown members are ignored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    /// Key type: `RSA`, `EC` or `oct`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`sig` or `enc`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// EC curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC or RSA private exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<SecretString>,
    /// RSA first prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<SecretString>,
    /// RSA second prime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<SecretString>,
    /// RSA first CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<SecretString>,
    /// RSA second CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<SecretString>,
    /// RSA CRT coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<SecretString>,
    /// Symmetric key value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<SecretString>,
    /// Certificate chain, standard base64 DER, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

/// A validated key of any supported type.
#[derive(Debug)]
pub enum Key {
    /// RSA public key.
    RsaPublic(RsaPublicKey),
    /// RSA private key.
    RsaPrivate(RsaPrivateKey),
    /// P-256 public key.
    EcPublic(EcPublicKey),
    /// P-256 private key.
    EcPrivate(EcPrivateKey),
    /// Symmetric key.
    Oct(OctKey),
}

impl Jwk {
    /// Parses a JWK from JSON, refusing duplicate members.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        crate::json::from_slice(bytes, Part::JwkMember("(object)"))
    }

    /// Serializes to JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JWK always serializes")
    }

    /// Whether private members are present.
    pub fn has_private(&self) -> bool {
        self.d.is_some() || self.k.is_some()
    }

    /// Validates and converts to a typed key (private if private members are present).
    pub fn to_key(&self) -> Result<Key> {
        match self.kty.as_str() {
            "RSA" if self.d.is_some() => Ok(Key::RsaPrivate(self.to_rsa_private()?)),
            "RSA" => Ok(Key::RsaPublic(self.to_rsa_public()?)),
            "EC" if self.d.is_some() => Ok(Key::EcPrivate(self.to_ec_private()?)),
            "EC" => Ok(Key::EcPublic(self.to_ec_public()?)),
            "oct" => Ok(Key::Oct(self.to_oct()?)),
            other => Err(Error::UnsupportedKeyType(truncate(other))),
        }
    }

    fn expect_kty(&self, kty: &'static str) -> Result<()> {
        if self.kty == kty {
            Ok(())
        } else if matches!(self.kty.as_str(), "RSA" | "EC" | "oct") {
            Err(Error::WrongKeyType { alg: "this operation".into(), expected: kty, found: kty_name(&self.kty) })
        } else {
            Err(Error::UnsupportedKeyType(truncate(&self.kty)))
        }
    }

    /// The RSA public key (private members, if any, are ignored).
    pub fn to_rsa_public(&self) -> Result<RsaPublicKey> {
        self.expect_kty("RSA")?;
        let n = member(&self.n, "n")?;
        let e = member(&self.e, "e")?;
        RsaPublicKey::from_components(&n, &e, self.kid.clone())
    }

    /// The RSA private key; all of `d`, `p`, `q`, `dp`, `dq`, `qi` are required.
    pub fn to_rsa_private(&self) -> Result<RsaPrivateKey> {
        self.expect_kty("RSA")?;
        let n = member(&self.n, "n")?;
        let e = member(&self.e, "e")?;
        let d = secret(&self.d, "d")?;
        let p = secret(&self.p, "p")?;
        let q = secret(&self.q, "q")?;
        let dp = secret(&self.dp, "dp")?;
        let dq = secret(&self.dq, "dq")?;
        let qi = secret(&self.qi, "qi")?;
        RsaPrivateKey::from_components(&n, &e, &d, &p, &q, &dp, &dq, &qi, self.kid.clone())
    }

    /// The P-256 public key. A `d` member, if present, is ignored (and is not copied).
    pub fn to_ec_public(&self) -> Result<EcPublicKey> {
        self.expect_kty("EC")?;
        self.expect_p256()?;
        let x = member(&self.x, "x")?;
        let y = member(&self.y, "y")?;
        EcPublicKey::from_coordinates(&x, &y, self.kid.clone())
    }

    /// The P-256 private key.
    pub fn to_ec_private(&self) -> Result<EcPrivateKey> {
        let public = self.to_ec_public()?;
        let d = secret(&self.d, "d")?;
        EcPrivateKey::from_scalar(&d, Some(&public), self.kid.clone())
    }

    /// The symmetric key.
    pub fn to_oct(&self) -> Result<OctKey> {
        self.expect_kty("oct")?;
        let k = secret(&self.k, "k")?;
        OctKey::new(k.to_vec(), self.kid.clone())
    }

    fn expect_p256(&self) -> Result<()> {
        match self.crv.as_deref() {
            Some("P-256") => Ok(()),
            Some(other) => Err(Error::UnsupportedCurve(truncate(other))),
            None => Err(Error::MissingJwkMember("crv")),
        }
    }
}

pub(crate) fn kty_name(kty: &str) -> &'static str {
    match kty {
        "RSA" => "RSA",
        "EC" => "EC",
        "oct" => "oct",
        _ => "unknown",
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

fn member(v: &Option<String>, name: &'static str) -> Result<Vec<u8>> {
    let s = v.as_deref().ok_or(Error::MissingJwkMember(name))?;
    crate::b64::decode(s, Part::JwkMember(name))
}

fn secret(v: &Option<SecretString>, name: &'static str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let s = v.as_ref().ok_or(Error::MissingJwkMember(name))?;
    crate::b64::decode_secret(s.expose(), Part::JwkMember(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let jwk = Jwk { kty: "oct".into(), k: Some(SecretString::new("c2VjcmV0".into())), ..Default::default() };
        let shown = format!("{jwk:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn unknown_kty_and_curve() {
        let j = Jwk::from_json(br#"{"kty":"OKP","crv":"Ed25519","x":"AA"}"#).unwrap();
        assert_eq!(j.to_key().unwrap_err(), Error::UnsupportedKeyType("OKP".into()));
        let j = Jwk::from_json(br#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#).unwrap();
        assert_eq!(j.to_key().unwrap_err(), Error::UnsupportedCurve("P-384".into()));
    }
}
