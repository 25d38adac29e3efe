//! Protected headers: algorithm names, the strict header parser, and what we emit.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Part, Result};

/// JWE key management algorithms this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// Direct use of a shared symmetric key.
    Dir,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
}

/// JWE content encryption algorithms this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEnc {
    /// AES-256-GCM.
    A256Gcm,
}

/// JWS algorithms this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// RSASSA-PSS with SHA-256 (salt 32 bytes).
    PS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl KeyAlg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Dir => "dir",
            KeyAlg::RsaOaep => "RSA-OAEP",
        }
    }
    /// Parses a JOSE name; names of algorithms we never implement are `UnsupportedAlgorithm`.
    pub fn from_name(s: &str) -> Result<Self> {
        match s {
            "dir" => Ok(KeyAlg::Dir),
            "RSA-OAEP" => Ok(KeyAlg::RsaOaep),
            other => Err(Error::UnsupportedAlgorithm(short(other))),
        }
    }
}

impl ContentEnc {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        "A256GCM"
    }
    /// Parses a JOSE name.
    pub fn from_name(s: &str) -> Result<Self> {
        match s {
            "A256GCM" => Ok(ContentEnc::A256Gcm),
            other => Err(Error::UnsupportedEncryption(short(other))),
        }
    }
}

impl SigAlg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::PS256 => "PS256",
            SigAlg::RS256 => "RS256",
            SigAlg::ES256 => "ES256",
        }
    }
    /// Parses a JOSE name.
    pub fn from_name(s: &str) -> Result<Self> {
        match s {
            "PS256" => Ok(SigAlg::PS256),
            "RS256" => Ok(SigAlg::RS256),
            "ES256" => Ok(SigAlg::ES256),
            other => Err(Error::UnsupportedAlgorithm(short(other))),
        }
    }
}

pub(crate) fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Optional header parameters a producer may set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderParams {
    /// Key id.
    pub kid: Option<String>,
    /// Media type of the whole object (we use it to separate signing contexts).
    pub typ: Option<String>,
    /// Media type of the payload.
    pub cty: Option<String>,
}

impl HeaderParams {
    /// Just a key id.
    pub fn kid(kid: impl Into<String>) -> Self {
        Self { kid: Some(kid.into()), ..Self::default() }
    }
    /// Sets `typ`.
    pub fn with_typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }
}

#[derive(Serialize)]
pub(crate) struct OutHeader<'a> {
    pub alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cty: Option<&'a str>,
}

impl OutHeader<'_> {
    pub fn encode(&self) -> String {
        crate::b64::encode(serde_json::to_vec(self).expect("header serializes"))
    }
}

/// A protected header as read, before algorithm checks.
#[derive(Deserialize)]
pub(crate) struct RawHeader {
    pub alg: Option<String>,
    // A `Value` so that `"enc": null` still counts as present (a JWS must not carry one).
    #[serde(default, deserialize_with = "present")]
    pub enc: Option<Value>,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub cty: Option<String>,
    // `crit` is read from `other` so that `"crit": null` counts as present
    // (a typed `Option<Value>` field would turn it into `None`).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Deserializes a member that is present (even as `null`) to `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl RawHeader {
    /// Decodes and checks the parameters every JOSE object shares.
    pub fn parse(b64: &str) -> Result<Self> {
        if b64.is_empty() {
            return Err(Error::EmptyPart(Part::Header));
        }
        let bytes = crate::b64::decode(b64, Part::Header)?;
        let h: RawHeader = crate::json::from_slice(&bytes, Part::Header)?;
        // We understand no extension, so any `crit` is fatal (RFC 7515 §4.1.11).
        if let Some(crit) = h.other.get("crit") {
            let first = match crit {
                Value::Array(names) if !names.is_empty() => match &names[0] {
                    Value::String(s) => short(s),
                    _ => "(non-string)".into(),
                },
                _ => "(malformed crit)".into(),
            };
            return Err(Error::UnsupportedCritical(first));
        }
        // Compression before encryption leaks length information; never supported.
        if h.other.contains_key("zip") {
            return Err(Error::UnsupportedHeader("zip"));
        }
        // Unencoded payloads (RFC 7797) are not supported.
        if h.other.contains_key("b64") {
            return Err(Error::UnsupportedHeader("b64"));
        }
        Ok(h)
    }

    pub fn alg(&self) -> Result<&str> {
        self.alg.as_deref().ok_or(Error::MissingHeader("alg"))
    }
}
