//! KMS connect-out: a KMS behind a firewall dials the core and proves who it
//! is by signing a structure it builds itself, in the `kms-connect` context,
//! with the core's fresh challenge inside; never bytes the core chose alone.

use jose::jws::VerifyKey;
use jose::{Jws, JwsPolicy, RsaPublicKey, SigAlg};
use serde::{Deserialize, Serialize};

use crate::channel::{ServerKey, SigningContext};
use crate::error::ProtocolError;

/// How far a connect proof's `iat` may be from the core's clock.
pub const CONNECT_MAX_SKEW_SECS: i64 = 300;

/// What the KMS signs when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectClaims {
    /// Always `kms-connect`.
    pub typ: String,
    /// The KMS (`kms://<domain>`).
    pub kms: String,
    /// The core's challenge, verbatim.
    pub challenge: String,
    /// When (Unix seconds).
    pub iat: i64,
}

/// KMS side: the proof answering `challenge`.
pub fn sign_connect(server: &ServerKey, challenge: &str, now: i64) -> Result<String, ProtocolError> {
    if challenge.is_empty() || challenge.len() > 256 {
        return Err(ProtocolError::InvalidField { field: "challenge", reason: "must be 1 to 256 characters" });
    }
    let claims = ConnectClaims {
        typ: SigningContext::Connect.typ().into(),
        kms: format!("kms://{}", server.domain()),
        challenge: challenge.into(),
        iat: now,
    };
    server.sign(SigningContext::Connect, &claims)
}

/// Core side: checks a proof against the KMS key the core was configured with.
pub fn verify_connect(
    key: &RsaPublicKey,
    proof: &str,
    kms_uri: &str,
    challenge: &str,
    now: i64,
) -> Result<(), ProtocolError> {
    const POLICY: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256, SigAlg::RS256], max_len: 8192 };
    let jws = Jws::parse(proof, &POLICY)?;
    let payload = jws.verify(VerifyKey::Rsa(key))?;
    if jws.header().typ.as_deref() != Some(SigningContext::Connect.typ()) {
        return Err(ProtocolError::WrongContext {
            expected: SigningContext::Connect.typ(),
            found: jws.header().typ.clone(),
        });
    }
    let c: ConnectClaims = jose::json::from_slice(payload, jose::Part::Payload)?;
    if c.typ != SigningContext::Connect.typ() {
        return Err(ProtocolError::WrongContext { expected: SigningContext::Connect.typ(), found: Some(c.typ) });
    }
    if c.kms != kms_uri {
        return Err(ProtocolError::InvalidField { field: "kms", reason: "names another KMS" });
    }
    if c.challenge != challenge {
        return Err(ProtocolError::InvalidField { field: "challenge", reason: "is not this connection's challenge" });
    }
    if (now - c.iat).abs() > CONNECT_MAX_SKEW_SECS {
        return Err(ProtocolError::InvalidField { field: "iat", reason: "is not fresh" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(domain: &str) -> ServerKey {
        ServerKey::new(jose::RsaPrivateKey::generate(2048, Some("k".into())).unwrap(), domain).unwrap()
    }

    #[test]
    fn proofs_bind_kms_challenge_and_time() {
        let s = server("kms.acme.example");
        let key = s.public_key().clone();
        let p = sign_connect(&s, "nonce-1", 1000).unwrap();
        verify_connect(&key, &p, "kms://kms.acme.example", "nonce-1", 1010).unwrap();
        assert!(verify_connect(&key, &p, "kms://kms.acme.example", "nonce-2", 1010).is_err(), "another challenge");
        assert!(verify_connect(&key, &p, "kms://kms.globex.example", "nonce-1", 1010).is_err(), "another KMS");
        assert!(verify_connect(&key, &p, "kms://kms.acme.example", "nonce-1", 5000).is_err(), "stale");
        let other = server("kms.acme.example");
        assert!(
            verify_connect(other.public_key(), &p, "kms://kms.acme.example", "nonce-1", 1010).is_err(),
            "another key"
        );
        // A signature in another context (say, a reset) is not a connect proof.
        let reset = s.reset(Some("nonce-1"), "x").unwrap();
        assert!(matches!(
            verify_connect(&key, &reset, "kms://kms.acme.example", "nonce-1", 1010),
            Err(ProtocolError::WrongContext { .. })
        ));
        assert!(sign_connect(&s, "", 1).is_err());
    }
}
