//! node-jose's `ECDH-HKDF` derivation, used by the KMS secure channel.

use crate::error::{Error, Result};
use crate::keys::{EcPrivateKey, EcPublicKey, OctKey};

/// ECDH on P-256, then HKDF-SHA-256 (RFC 5869) with an empty salt (equal to
/// 32 zero bytes, which node-jose uses) and empty info, to a 256-bit key.
pub fn ecdh_hkdf(local: &EcPrivateKey, remote: &EcPublicKey, kid: Option<String>) -> Result<OctKey> {
    let z = local.ecdh(remote)?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; 32]);
    primitives::hkdf_sha256(&[], &z[..], &[], &mut out).map_err(|_| Error::Crypto("HKDF"))?;
    OctKey::new(std::mem::take(&mut *out), kid)
}
