//! A CMK held in process memory: what the file backend opens to.

use std::fmt;
use std::sync::RwLock;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::{CmkError, MasterKey, KEY_LEN, NONCE_LEN, TAG_LEN};

/// A CMK whose 32 bytes are in this process's memory (zeroized on drop and on
/// destruction; `Debug` shows the id only).
///
/// [`FileBackend`](crate::FileBackend) opens to these. [`SoftwareKey::from_bytes`]
/// makes one from raw bytes, for migrations and tests; the wrap format is that
/// of every other [`MasterKey`].
pub struct SoftwareKey {
    id: String,
    /// `None` once destroyed.
    key: RwLock<Option<Zeroizing<[u8; KEY_LEN]>>>,
}

impl SoftwareKey {
    /// A CMK from exactly 32 bytes, under `id` (which must be a valid CMK id).
    pub fn from_bytes(id: impl Into<String>, key: &[u8]) -> Result<Self, CmkError> {
        let id = id.into();
        crate::ids::check_id(&id)?;
        let bytes: &[u8; KEY_LEN] =
            key.try_into().map_err(|_| CmkError::KeyLength { expected: KEY_LEN, got: key.len() })?;
        Ok(Self::new(id, Zeroizing::new(*bytes)))
    }

    pub(crate) fn new(id: String, key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self { id, key: RwLock::new(Some(key)) }
    }

    /// A fresh random key (not stored anywhere).
    pub(crate) fn random_bytes() -> Result<Zeroizing<[u8; KEY_LEN]>, CmkError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| CmkError::Random)?;
        Ok(k)
    }

    /// Zeroizes the key: every later wrap or unwrap fails with [`CmkError::Destroyed`].
    pub(crate) fn shred(&self) {
        // A poisoned lock still holds the key: shred it all the same.
        let mut guard = self.key.write().unwrap_or_else(|e| e.into_inner());
        *guard = None; // Zeroizing wipes the bytes on drop.
    }

    fn aead(&self) -> Result<LessSafeKey, CmkError> {
        let guard = self.key.read().unwrap_or_else(|e| e.into_inner());
        let key = guard.as_ref().ok_or_else(|| CmkError::Destroyed(self.id.clone()))?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key[..]).map_err(|_| CmkError::Crypto("AES-256-GCM key"))?;
        Ok(LessSafeKey::new(unbound))
    }
}

/// AES-256-GCM seal: `nonce ‖ ciphertext ‖ tag`.
pub(crate) fn seal(key: &LessSafeKey, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CmkError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CmkError::Random)?;
    let mut buf = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf[NONCE_LEN..],
        )
        .map_err(|_| CmkError::Crypto("AES-256-GCM seal"))?;
    buf.extend_from_slice(tag.as_ref());
    Ok(buf)
}

/// Opens what [`seal`] made.
pub(crate) fn open(key: &LessSafeKey, aad: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CmkError> {
    let (nonce, rest) = split_nonce(wrapped)?;
    let mut buf = Zeroizing::new(rest.to_vec());
    let n = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf[..])
        .map_err(|_| CmkError::Unwrap)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// Splits `nonce ‖ rest`, refusing blobs too short to hold a nonce and a tag.
pub(crate) fn split_nonce(wrapped: &[u8]) -> Result<([u8; NONCE_LEN], &[u8]), CmkError> {
    if wrapped.len() < NONCE_LEN + TAG_LEN {
        return Err(CmkError::Unwrap);
    }
    let (nonce, rest) = wrapped.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CmkError::Unwrap)?;
    Ok((nonce, rest))
}

impl MasterKey for SoftwareKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CmkError> {
        seal(&self.aead()?, aad, plain)
    }

    fn unwrap(&self, aad: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CmkError> {
        open(&self.aead()?, aad, wrapped)
    }
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destroyed = self.key.read().map(|k| k.is_none()).unwrap_or(false);
        f.debug_struct("SoftwareKey").field("id", &self.id).field("destroyed", &destroyed).finish_non_exhaustive()
    }
}
