//! The per-file key.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of a [`FileKey`] in bytes.
pub const KEY_LEN: usize = 32;

/// A 256-bit AES key for one file.
///
/// Generate a fresh one for every file ([`FileKey::generate`]); the format
/// stays safe if a key is reused by accident (see the crate docs), but a fresh
/// key is what the security argument assumes. The bytes are zeroized on drop
/// and `Debug` prints `FileKey(..)`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct FileKey {
    bytes: [u8; KEY_LEN],
}

impl FileKey {
    /// A fresh random key from the operating system's CSPRNG (through [`primitives`]: aws-lc natively, the browser's `crypto.getRandomValues` in wasm).
    ///
    /// # Panics
    ///
    /// If the system random number generator fails, which aws-lc treats as fatal anyway.
    pub fn generate() -> FileKey {
        let mut bytes = [0u8; KEY_LEN];
        primitives::fill_random(&mut bytes).expect("system random number generator failed");
        FileKey { bytes }
    }

    /// A key from its 32 raw bytes (as unsealed from file metadata).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] unless `b` is exactly 32 bytes long.
    pub fn from_bytes(b: &[u8]) -> Result<FileKey, Error> {
        let bytes: [u8; KEY_LEN] = b.try_into().map_err(|_| Error::BadKey)?;
        Ok(FileKey { bytes })
    }

    /// The raw key bytes, to seal into file metadata.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A second copy, for adapters that need the key later than their constructor.
    pub(crate) fn duplicate(&self) -> FileKey {
        FileKey { bytes: self.bytes }
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_debug() {
        assert!(matches!(FileKey::from_bytes(&[1; 31]), Err(Error::BadKey)));
        assert!(matches!(FileKey::from_bytes(&[1; 33]), Err(Error::BadKey)));
        assert!(matches!(FileKey::from_bytes(&[]), Err(Error::BadKey)));
        let k = FileKey::from_bytes(&[0xab; 32]).unwrap();
        assert_eq!(k.as_bytes(), &[0xab; 32]);
        assert_eq!(format!("{k:?}"), "FileKey(..)");
        assert_eq!(format!("{:#?}", k), "FileKey(..)");
        assert_ne!(FileKey::generate().as_bytes(), FileKey::generate().as_bytes());
    }
}
