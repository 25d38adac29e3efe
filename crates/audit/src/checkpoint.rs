//! Checkpoints: the KMS static key's signature over the log's length and last hash.
//!
//! A checkpoint is a compact JWS, `PS256`, `typ` [`CHECKPOINT_TYP`], whose
//! payload is a [`CheckpointBody`] in JSON. Two kinds share that body:
//!
//! - a **stored checkpoint** (`index` set): made by [`crate::AuditLog::checkpoint`]
//!   (by hand or by policy) and kept in the database; indexes run 1, 2, 3…
//!   without gaps, counts never decrease, times strictly increase;
//! - an **export seal** (`export` set): made by [`crate::AuditLog::export_jsonl`]
//!   as the last line of an export, never stored. It says which entries and
//!   which stored checkpoints the export holds, so that removing any line,
//!   at the start, in the middle or at the end, is caught.

use jose::jws::VerifyKey;
use jose::{HeaderParams, Jws, JwsPolicy, RsaPrivateKey, RsaPublicKey, SigAlg};
use serde::{Deserialize, Serialize};

use crate::canon::{self, Value};

/// The JWS `typ` of checkpoints and seals (the KMS's `SigningContext::AuditCheckpoint`).
pub const CHECKPOINT_TYP: &str = "kms-audit-checkpoint";

/// Longest checkpoint JWS accepted (16 KiB: a header, a small payload and an RSA signature).
pub const MAX_CHECKPOINT_LEN: usize = 16 * 1024;

const POLICY: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256], max_len: MAX_CHECKPOINT_LEN };

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    /// Entries covered: seq 1 to `count`.
    pub count: u64,
    /// Hash of entry `count` ([`crate::GENESIS_HASH`] when `count` is 0).
    pub last_hash: String,
    /// When it was signed, in ms since the Unix epoch; later than every earlier checkpoint.
    pub time: u64,
    /// The KMS node that signed it.
    pub node: String,
    /// A stored checkpoint's position: 1, 2, 3… (absent in a seal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// An export seal's contents (absent in a stored checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportRange>,
}

/// What an export holds, as its seal states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRange {
    /// First entry in the export (entries `from_seq` to the seal's `count`).
    pub from_seq: u64,
    /// First stored checkpoint in the export (those from `first_checkpoint`
    /// to `last_checkpoint`; none when `first_checkpoint` is `last_checkpoint + 1`).
    pub first_checkpoint: u64,
    /// Last stored checkpoint in the export.
    pub last_checkpoint: u64,
}

/// Signs checkpoint bodies with the KMS static key. The KMS implements it as
/// `server_key.sign(SigningContext::AuditCheckpoint, body)`.
pub trait CheckpointSigner: Send + Sync {
    /// A compact JWS, `PS256`, `typ` [`CHECKPOINT_TYP`], payload the body's JSON.
    fn sign(&self, body: &CheckpointBody) -> Result<String, SignError>;

    /// The public key, if known: then every checkpoint is verified right after
    /// signing, so that a misconfigured signer is noticed at once.
    fn public_key(&self) -> Option<&RsaPublicKey> {
        None
    }
}

/// A signer's failure.
pub type SignError = Box<dyn std::error::Error + Send + Sync>;

/// A [`CheckpointSigner`] over an RSA private key, for tools and tests (the
/// KMS signs through its `ServerKey`, which produces the same JWS).
pub struct RsaCheckpointSigner {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for RsaCheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaCheckpointSigner").field("kid", &self.key.kid()).finish_non_exhaustive()
    }
}

impl RsaCheckpointSigner {
    /// Signs with `key` (its `kid`, if any, goes in the header).
    pub fn new(key: RsaPrivateKey) -> Self {
        Self { key }
    }
}

impl CheckpointSigner for RsaCheckpointSigner {
    fn sign(&self, body: &CheckpointBody) -> Result<String, SignError> {
        let params =
            HeaderParams { kid: self.key.kid().map(str::to_owned), ..HeaderParams::default() }.with_typ(CHECKPOINT_TYP);
        let json = serde_json::to_vec(body)?;
        Ok(jose::jws::sign(SigAlg::PS256, jose::jws::SignKey::Rsa(&self.key), &params, &json)?)
    }

    fn public_key(&self) -> Option<&RsaPublicKey> {
        Some(self.key.public_key())
    }
}

/// Why a checkpoint JWS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a compact PS256 JWS (or too long).
    #[error("not a PS256 compact JWS: {0}")]
    Jws(jose::Error),
    /// Signed in another context.
    #[error("JWS typ is {found:?}, not \"kms-audit-checkpoint\"")]
    WrongType {
        /// The `typ` found.
        found: Option<String>,
    },
    /// No given key verifies it.
    #[error("signature does not verify with the given key(s)")]
    BadSignature,
    /// The payload is not a checkpoint body.
    #[error("payload is not a checkpoint body: {0}")]
    Payload(String),
}

/// Verifies a checkpoint or seal JWS and returns its body.
///
/// Requires `PS256` and `typ` [`CHECKPOINT_TYP`]. When the header has a `kid`,
/// only keys with that `kid` (or none) are tried; otherwise every key.
pub fn verify_checkpoint(jws: &str, keys: &[RsaPublicKey]) -> Result<CheckpointBody, CheckpointError> {
    let parsed = Jws::parse(jws, &POLICY).map_err(CheckpointError::Jws)?;
    if parsed.header().typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err(CheckpointError::WrongType { found: parsed.header().typ.clone() });
    }
    let kid = parsed.header().kid.as_deref();
    let payload = keys
        .iter()
        .filter(|k| match (kid, k.kid()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        })
        .find_map(|k| parsed.verify(VerifyKey::Rsa(k)).ok())
        .ok_or(CheckpointError::BadSignature)?;
    let body: CheckpointBody = serde_json::from_slice(payload).map_err(|e| CheckpointError::Payload(e.to_string()))?;
    if body.index.is_some() == body.export.is_some() {
        return Err(CheckpointError::Payload("exactly one of index and export must be present".into()));
    }
    if !canon::is_hash_hex(&body.last_hash) {
        return Err(CheckpointError::Payload("last_hash is not 64 lowercase hex digits".into()));
    }
    Ok(body)
}

/// Reads a JWS's payload without verifying it (to check a signer's output).
pub(crate) fn unverified_body(jws: &str) -> Result<CheckpointBody, String> {
    let parsed = Jws::parse(jws, &POLICY).map_err(|e| e.to_string())?;
    if parsed.header().typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err(format!("typ is {:?}, not {CHECKPOINT_TYP:?}", parsed.header().typ));
    }
    let payload = jws.split('.').nth(1).ok_or("no payload")?;
    let bytes = jose::b64::decode(payload, jose::Part::Payload).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// A signed checkpoint (or export seal): its body and the JWS over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// What is signed.
    pub body: CheckpointBody,
    /// The compact JWS.
    pub jws: String,
}

impl Checkpoint {
    /// Verifies the JWS with `key` and that it signs exactly `body`.
    pub fn verify(&self, key: &RsaPublicKey) -> Result<(), CheckpointError> {
        let body = verify_checkpoint(&self.jws, std::slice::from_ref(key))?;
        if body != self.body {
            return Err(CheckpointError::Payload("the JWS signs another body".into()));
        }
        Ok(())
    }

    /// Whether `body` is what the JWS payload says (without checking the signature).
    pub(crate) fn row_matches_jws(&self) -> bool {
        unverified_body(&self.jws).is_ok_and(|signed| signed == self.body)
    }

    /// Whether this is an export seal rather than a stored checkpoint.
    pub fn is_seal(&self) -> bool {
        self.body.export.is_some()
    }

    /// The JSON line (canonical, without the trailing newline):
    /// `{"count":…,"index":…,"jws":"…","last_hash":"…","node":"…","time":…,"type":"checkpoint"}`,
    /// or for a seal `"export":{…}` instead of `"index"` and `"type":"seal"`.
    pub fn to_jsonl(&self) -> String {
        line_value(&self.body, &self.jws).render()
    }
}

pub(crate) fn line_value<'a>(body: &'a CheckpointBody, jws: &'a str) -> Value<'a> {
    let mut m = vec![
        ("count", Value::UInt(body.count)),
        ("last_hash", Value::Str(&body.last_hash)),
        ("time", Value::UInt(body.time)),
        ("node", Value::Str(&body.node)),
        ("jws", Value::Str(jws)),
    ];
    if let Some(i) = body.index {
        m.push(("index", Value::UInt(i)));
    }
    if let Some(x) = &body.export {
        m.push((
            "export",
            Value::Obj(vec![
                ("from_seq", Value::UInt(x.from_seq)),
                ("first_checkpoint", Value::UInt(x.first_checkpoint)),
                ("last_checkpoint", Value::UInt(x.last_checkpoint)),
            ]),
        ));
    }
    m.push(("type", Value::Str(if body.export.is_some() { "seal" } else { "checkpoint" })));
    Value::Obj(m)
}
