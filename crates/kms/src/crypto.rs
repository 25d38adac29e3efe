//! Keys at rest: the CMK (in a backend of crate `cmk`: passphrase-sealed
//! files or a PKCS#11 HSM), KEKs wrapped under it, content keys wrapped under
//! the org's active KEK.
//!
//! Every wrap is AES-256-GCM with a fresh 96-bit nonce and an AAD naming what
//! is wrapped (`key:<id>`, `kek:<id>`, …), so a wrapped blob cannot be moved
//! to another row and still open.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use cmk::{CmkBackend, CmkError, FileBackend, MasterKey, SoftwareKey};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// Errors handling keys at rest. None carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A wrapped blob did not open: wrong key, wrong AAD, or tampered.
    #[error("unwrap failed: wrong key or tampered data")]
    Unwrap,
    /// The CMK file is unreadable or malformed.
    #[error("CMK file {0}")]
    CmkFile(String),
    /// The passphrase does not open the CMK file.
    #[error("the CMK passphrase is wrong (or the CMK file was altered)")]
    Passphrase,
    /// Random generation failed.
    #[error("random generation failed")]
    Random,
    /// The CMK backend failed (CMK files, HSM, BYOK import).
    #[error("CMK backend: {0}")]
    Cmk(#[source] CmkError),
    /// A blob names a CMK this node cannot use: destroyed, not in this node's
    /// backend, or unknown to the store's CMK registry.
    #[error("the CMK `{0}` is not available (destroyed, or not in this KMS's CMK backend)")]
    CmkUnavailable(String),
    /// A file sealed under the CMK could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS's answer.
        #[source]
        source: std::io::Error,
    },
}

impl From<CmkError> for CryptoError {
    fn from(e: CmkError) -> Self {
        match e {
            CmkError::Unwrap => CryptoError::Unwrap,
            CmkError::Destroyed(id) | CmkError::NotFound(id) => CryptoError::CmkUnavailable(id),
            CmkError::Random => CryptoError::Random,
            other => CryptoError::Cmk(other),
        }
    }
}

/// A 256-bit symmetric key that zeroizes on drop and never prints.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| CryptoError::Random)?;
        Ok(Self(k))
    }

    /// From exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        if b.len() != 32 {
            return Err(CryptoError::Unwrap);
        }
        k.copy_from_slice(b);
        Ok(Self(k))
    }

    /// The bytes. Handle with care.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0[..]).expect("32-byte AES key"))
    }

    /// Wraps `plain` with `aad`: nonce ‖ ciphertext ‖ tag.
    pub fn wrap(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plain);
        let tag = self
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Random)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(buf)
    }

    /// Opens what [`SecretKey::wrap`] made with the same `aad`.
    pub fn unwrap(&self, aad: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if wrapped.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Unwrap);
        }
        let nonce: [u8; NONCE_LEN] = wrapped[..NONCE_LEN].try_into().expect("length checked");
        let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
        let n = self
            .aead()
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Unwrap)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Wraps another 256-bit key.
    pub fn wrap_key(&self, aad: &str, key: &SecretKey) -> Result<Vec<u8>, CryptoError> {
        self.wrap(aad, &key.0[..])
    }

    /// Unwraps another 256-bit key.
    pub fn unwrap_key(&self, aad: &str, wrapped: &[u8]) -> Result<SecretKey, CryptoError> {
        SecretKey::from_slice(&self.unwrap(aad, wrapped)?)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// The name of the file backend's directory beside a `cmk.json` of the
/// original layout (`<data_dir>/cmk/`).
pub const CMK_DIR: &str = "cmk";

/// A customer master key, and the backend its siblings live in.
///
/// `key` is the CMK this value was made with; which CMK is *active* is the
/// store's to say (see [`crate::masterkeys`]). `backend`, when present, opens
/// the others, generates new ones (rotation), destroys them and imports
/// customers' own (BYOK). A `Cmk` without a backend (engine tests, benchmarks)
/// wraps and unwraps but cannot rotate. Clones share the key; it zeroizes
/// when the last one drops and never prints.
#[derive(Clone)]
pub struct Cmk {
    key: Arc<dyn MasterKey>,
    backend: Option<Arc<dyn CmkBackend>>,
}

impl fmt::Debug for Cmk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmk")
            .field("id", &self.key.id())
            .field("backend", &self.backend.as_ref().map(|b| b.kind()))
            .finish_non_exhaustive()
    }
}

impl Cmk {
    /// A CMK with no backend (no rotation).
    pub fn from_key(key: Arc<dyn MasterKey>) -> Self {
        Self { key, backend: None }
    }

    /// A CMK of `backend`.
    pub fn with_backend(backend: Arc<dyn CmkBackend>, key: Arc<dyn MasterKey>) -> Self {
        Self { key, backend: Some(backend) }
    }

    /// Its id (stored beside everything it wraps).
    pub fn id(&self) -> &str {
        self.key.id()
    }

    /// The key.
    pub fn key(&self) -> &Arc<dyn MasterKey> {
        &self.key
    }

    /// The backend holding this CMK and its siblings, if any.
    pub fn backend(&self) -> Option<&Arc<dyn CmkBackend>> {
        self.backend.as_ref()
    }

    /// Wraps `plain` under this CMK, bound to `aad`.
    pub fn wrap(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(self.key.wrap(aad, plain)?)
    }

    /// Opens what [`Cmk::wrap`] made with the same `aad`.
    pub fn unwrap(&self, aad: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        Ok(self.key.unwrap(aad, wrapped)?)
    }

    /// Opens the CMK at `path` with `passphrase` (for tools that read what a
    /// KMS sealed, such as `custos kms audit-export`):
    ///
    /// - a directory: the file backend over it, and its newest CMK (one is
    ///   generated if it holds none);
    /// - a file: a CMK file of the original layout (`cmk.json`), with the file
    ///   backend of the [`CMK_DIR`] directory beside it, if there is one (the
    ///   KMS adopts `cmk.json` into it on start);
    /// - nothing: a new CMK file of the original layout is created there.
    ///
    /// Returns the CMK and whether it was created now.
    pub fn open_or_create(path: &Path, passphrase: &[u8]) -> Result<(Self, bool), CryptoError> {
        if path.is_dir() {
            let backend = FileBackend::open(path, passphrase)?;
            let newest = backend.list()?.pop();
            let (key, created) = match newest {
                Some(info) => (backend.open(&info.id)?, false),
                None => (backend.generate()?, true),
            };
            return Ok((Self::with_backend(Arc::new(backend), key), created));
        }
        match std::fs::metadata(path) {
            Ok(_) => {
                let key = FileBackend::open_legacy(path, passphrase).map_err(|e| match e {
                    CmkError::Passphrase { .. } => CryptoError::Passphrase,
                    other => other.into(),
                })?;
                let mut cmk = Self::from_key(Arc::new(key));
                let dir = path.parent().map(|p| p.join(CMK_DIR));
                if let Some(dir) = dir.filter(|d| d.is_dir()) {
                    // Best effort: without it, only what this file's CMK sealed opens.
                    match FileBackend::open(&dir, passphrase) {
                        Ok(b) => cmk.backend = Some(Arc::new(b)),
                        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "the CMK directory does not open"),
                    }
                }
                Ok((cmk, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new CMK in the original layout (same format): made by the file
                // backend in a directory of its own (unique: others may be doing
                // this at once), then published at `path` unless another process
                // got there first, whose CMK is then the one opened.
                let file_err = |e: std::io::Error| CryptoError::CmkFile(format!("{}: {e}", path.display()));
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let dir = path.with_file_name(format!(".{name}.{}.new", uuid::Uuid::new_v4().simple()));
                let made = (|| {
                    let backend = FileBackend::open(&dir, passphrase)?;
                    let key = backend.generate()?;
                    let bytes = std::fs::read(dir.join(format!("{}.cmk.json", key.id()))).map_err(file_err)?;
                    Ok::<_, CryptoError>((key, secretfile::create_new(path, &bytes)))
                })();
                // The copy in `dir` is the same sealed bytes as the published file, or unused.
                let _ = std::fs::remove_dir_all(&dir);
                match made? {
                    (key, Ok(())) => Ok((Self::from_key(key), true)),
                    (_, Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let (cmk, _) = Self::open_or_create(path, passphrase)?;
                        Ok((cmk, false))
                    }
                    (_, Err(e)) => Err(file_err(e)),
                }
            }
            Err(e) => Err(CryptoError::CmkFile(format!("{}: {e}", path.display()))),
        }
    }

    /// A random CMK held in memory only, with no backend (engine tests, benchmarks).
    pub fn ephemeral() -> Result<Self, CryptoError> {
        let key = SecretKey::generate()?;
        Ok(Self::from_key(Arc::new(SoftwareKey::from_bytes(uuid::Uuid::new_v4().to_string(), key.expose())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_binds_aad() {
        let k = SecretKey::generate().unwrap();
        let w = k.wrap("key:a", b"secret").unwrap();
        assert_eq!(&k.unwrap("key:a", &w).unwrap()[..], b"secret");
        assert!(matches!(k.unwrap("key:b", &w), Err(CryptoError::Unwrap)));
        assert!(matches!(SecretKey::generate().unwrap().unwrap("key:a", &w), Err(CryptoError::Unwrap)));
        assert!(matches!(k.unwrap("key:a", &w[..10]), Err(CryptoError::Unwrap)));
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.expose())));
    }

    #[test]
    fn cmk_file_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmk.json");
        let (cmk, created) = Cmk::open_or_create(&path, b"correct horse battery").unwrap();
        assert!(created);
        let (again, created) = Cmk::open_or_create(&path, b"correct horse battery").unwrap();
        assert!(!created);
        assert_eq!(again.id(), cmk.id());
        let blob = cmk.wrap("kek:1", b"a KEK").unwrap();
        assert_eq!(&again.unwrap("kek:1", &blob).unwrap()[..], b"a KEK");
        assert!(!format!("{cmk:?}").contains("key:"), "Debug shows the id only");
        assert!(matches!(Cmk::open_or_create(&path, b"wrong horse battery"), Err(CryptoError::Passphrase)));
        std::fs::write(&path, b"{}").unwrap();
        assert!(Cmk::open_or_create(&path, b"correct horse battery").is_err());
        assert!(Cmk::open_or_create(&dir.path().join("other.json"), b"short").is_err());
        let text = std::fs::read_to_string(dir.path().join("cmk.json")).unwrap();
        assert_eq!(text, "{}");
    }

    #[test]
    fn processes_creating_one_cmk_file_at_once_share_it() {
        // Each used to make its own and rename it over the others': all but the
        // last then held a CMK no file kept.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmk.json");
        let barrier = std::sync::Barrier::new(3);
        let made: Vec<(Cmk, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Cmk::open_or_create(&path, b"correct horse battery").unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(made.iter().filter(|(_, created)| *created).count(), 1, "one creates it");
        let (on_disk, _) = Cmk::open_or_create(&path, b"correct horse battery").unwrap();
        for (cmk, _) in &made {
            assert_eq!(cmk.id(), on_disk.id(), "every process holds the CMK of the file");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["cmk.json"], "no working directories left behind");
    }

    #[test]
    fn the_original_cmk_file_opens_in_the_file_backend() {
        // A cmk.json of the original layout, adopted into a CMK directory,
        // opens to the same key there (blobs made before still open).
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("cmk.json");
        let (cmk, _) = Cmk::open_or_create(&legacy, b"correct horse battery").unwrap();
        let blob = cmk.wrap("static-key", b"sealed").unwrap();
        let backend = FileBackend::open(dir.path().join(CMK_DIR), b"correct horse battery").unwrap();
        let adopted = backend.adopt_legacy(&legacy).unwrap();
        assert_eq!(adopted.id(), cmk.id());
        assert_eq!(&adopted.unwrap("static-key", &blob).unwrap()[..], b"sealed");
        // The compatibility opener finds the directory beside the file, and opens a directory too.
        let (again, created) = Cmk::open_or_create(&legacy, b"correct horse battery").unwrap();
        assert!(!created);
        assert_eq!(again.backend().map(|b| b.kind()), Some("file"));
        let (in_dir, created) = Cmk::open_or_create(&dir.path().join(CMK_DIR), b"correct horse battery").unwrap();
        assert!(!created);
        assert_eq!(in_dir.id(), cmk.id());
    }
}
