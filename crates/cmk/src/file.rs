//! The file backend: one passphrase-sealed JSON file per CMK.
//!
//! A CMK file is the KMS's original `cmk.json` format, plus two optional,
//! informational members that older readers ignore (`created`, `origin`):
//!
//! ```json
//! { "version": 1, "id": "<id>", "kdf": "pbkdf2-hmac-sha256", "iterations": 600000,
//!   "salt": "<16 bytes, base64url>", "wrapped": "<nonce ‖ AES-256-GCM(key) ‖ tag, base64url>",
//!   "created": 1790000000000, "origin": "generated" }
//! ```
//!
//! The wrapping key is PBKDF2-HMAC-SHA256(passphrase, salt, iterations); the AAD
//! is `cmk:<id>`, so a file renamed to another id does not open.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::{check_id, created_from_id, new_id, now_unix_ms};
use crate::soft::{self, SoftwareKey};
use crate::{CmkBackend, CmkError, CmkInfo, MasterKey, OaepHash, Origin, RsaPublicKey, IMPORT_KEY_BITS, KEY_LEN};

/// PBKDF2 iterations for new files (OWASP 2023 guidance for HMAC-SHA256; what the KMS uses).
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;
/// Fewest PBKDF2 iterations accepted, reading or writing (as the KMS's reader).
pub const MIN_KDF_ITERATIONS: u32 = 100_000;
/// Most PBKDF2 iterations accepted, so that a doctored file cannot stall the KMS.
const MAX_KDF_ITERATIONS: u32 = 10_000_000;
/// Shortest passphrase accepted for a [`FileBackend`], in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

const KDF: &str = "pbkdf2-hmac-sha256";
const CMK_SUFFIX: &str = ".cmk.json";
const IMPORT_KEY_FILE: &str = "byok-import.key.json";
const IMPORT_KEY_KIND: &str = "rsa-oaep-import-key";

/// The sealed CMK file, field for field the KMS's `CmkFile`, plus optional metadata.
#[derive(Serialize, Deserialize)]
struct CmkFile {
    version: u32,
    id: String,
    kdf: String,
    iterations: u32,
    salt: String,
    wrapped: String,
    /// Unix ms. Informational (not authenticated); absent in the KMS's own files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<u64>,
    /// `generated` or `imported`. Informational (not authenticated); absent means generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
}

/// The BYOK import key pair, its private half sealed like a CMK.
#[derive(Serialize, Deserialize)]
struct ImportKeyFile {
    version: u32,
    kind: String,
    kdf: String,
    iterations: u32,
    salt: String,
    /// SubjectPublicKeyInfo DER, base64url.
    public: String,
    /// PKCS#8 DER sealed with the AAD `cmk-import-key:<thumbprint of public>`.
    wrapped: String,
    created: u64,
}

/// The unsealed import key pair.
struct ImportKey {
    public: RsaPublicKey,
    /// PKCS#8 DER of the private key.
    pkcs8: Zeroizing<Vec<u8>>,
}

/// CMKs in a directory, each in `<id>.cmk.json`, sealed under one passphrase.
///
/// Opening a CMK costs one PBKDF2 derivation (about a quarter of a second at
/// 600,000 iterations): open once, keep the handle. Handles opened through this
/// value are shredded when [`CmkBackend::destroy`] removes their CMK.
pub struct FileBackend {
    dir: PathBuf,
    passphrase: Zeroizing<Vec<u8>>,
    iterations: u32,
    /// Handles handed out, so that `destroy` can shred them.
    live: Mutex<HashMap<String, Vec<Weak<SoftwareKey>>>>,
    /// The import public key, once loaded or generated (also serializes generation).
    import_public: Mutex<Option<RsaPublicKey>>,
}

impl FileBackend {
    /// The backend over `dir` (created with mode 0700 if absent). The passphrase
    /// must be at least [`MIN_PASSPHRASE_CHARS`] characters; if the directory
    /// already holds CMK files, it must open the oldest one (checked now, so a
    /// wrong passphrase fails at start-up, not at the first unwrap).
    pub fn open(dir: impl Into<PathBuf>, passphrase: &[u8]) -> Result<Self, CmkError> {
        let chars = std::str::from_utf8(passphrase).map_or(passphrase.len(), |s| s.chars().count());
        if chars < MIN_PASSPHRASE_CHARS {
            return Err(CmkError::PassphraseTooShort(MIN_PASSPHRASE_CHARS));
        }
        let dir = dir.into();
        create_private_dir(&dir)?;
        let backend = Self {
            dir,
            passphrase: Zeroizing::new(passphrase.to_vec()),
            iterations: DEFAULT_KDF_ITERATIONS,
            live: Mutex::new(HashMap::new()),
            import_public: Mutex::new(None),
        };
        if let Some(first) = backend.list()?.first() {
            backend.load(&first.id)?;
        }
        Ok(backend)
    }

    /// Sets the PBKDF2 iterations for files written from now on
    /// ([`MIN_KDF_ITERATIONS`] to 10,000,000; default [`DEFAULT_KDF_ITERATIONS`]).
    pub fn with_kdf_iterations(mut self, iterations: u32) -> Result<Self, CmkError> {
        if !(MIN_KDF_ITERATIONS..=MAX_KDF_ITERATIONS).contains(&iterations) {
            return Err(CmkError::Config("PBKDF2 iterations must be 100,000 to 10,000,000"));
        }
        self.iterations = iterations;
        Ok(self)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens exactly one CMK file in the KMS's original format (its `cmk.json`).
    /// The key wraps and unwraps byte-compatibly with the KMS's
    /// `SecretKey::wrap` / `unwrap`. No minimum passphrase length is enforced
    /// here: the file decides.
    pub fn open_legacy(path: &Path, passphrase: &[u8]) -> Result<SoftwareKey, CmkError> {
        let bytes = fs::read(path).map_err(|e| CmkError::io("read", path, e))?;
        let file = parse_cmk_file(path, &bytes)?;
        let key = unseal_cmk(path, &file, passphrase)?;
        Ok(SoftwareKey::new(file.id, key))
    }

    /// Copies a CMK file of the KMS's original format into this directory as
    /// `<id>.cmk.json`, byte for byte, after checking that this backend's
    /// passphrase opens it. Returns the CMK. Adopting the same file twice is fine.
    pub fn adopt_legacy(&self, path: &Path) -> Result<Arc<dyn MasterKey>, CmkError> {
        let bytes = fs::read(path).map_err(|e| CmkError::io("read", path, e))?;
        let file = parse_cmk_file(path, &bytes)?;
        let key = unseal_cmk(path, &file, &self.passphrase)?;
        let dest = self.cmk_path(&file.id);
        // Several nodes may adopt the same file at once: one copies it, the others find the copy.
        match secretfile::create_or_read(&dest, &bytes).map_err(|e| CmkError::io("write", &dest, e))? {
            secretfile::Outcome::Created => {}
            secretfile::Outcome::Existing(existing) if *existing == bytes => {}
            secretfile::Outcome::Existing(_) => {
                return Err(CmkError::format(&dest, "a different file for this CMK id is already there"))
            }
        }
        Ok(self.register(SoftwareKey::new(file.id, key)))
    }

    fn cmk_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{CMK_SUFFIX}"))
    }

    /// Reads and unseals `<id>.cmk.json`.
    fn load(&self, id: &str) -> Result<SoftwareKey, CmkError> {
        check_id(id)?;
        let path = self.cmk_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CmkError::NotFound(id.to_owned())),
            Err(e) => return Err(CmkError::io("read", &path, e)),
        };
        let file = parse_cmk_file(&path, &bytes)?;
        if file.id != id {
            return Err(CmkError::format(&path, "the id inside does not match the file name"));
        }
        let key = unseal_cmk(&path, &file, &self.passphrase)?;
        Ok(SoftwareKey::new(file.id, key))
    }

    fn register(&self, key: SoftwareKey) -> Arc<dyn MasterKey> {
        let key = Arc::new(key);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, v| {
            v.retain(|w| w.strong_count() > 0);
            !v.is_empty()
        });
        live.entry(key.id().to_owned()).or_default().push(Arc::downgrade(&key));
        key
    }

    /// Seals `key` under a new id and writes it; returns the open CMK.
    fn store_new(&self, key: Zeroizing<[u8; KEY_LEN]>, origin: Origin) -> Result<Arc<dyn MasterKey>, CmkError> {
        let id = new_id();
        let (salt, wrapped) = seal_with_passphrase(&self.passphrase, self.iterations, &cmk_aad(&id), &key[..])?;
        let file = CmkFile {
            version: 1,
            id: id.clone(),
            kdf: KDF.into(),
            iterations: self.iterations,
            salt,
            wrapped,
            created: Some(now_unix_ms()),
            origin: Some(origin.as_str().into()),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|_| CmkError::Crypto("serializing a CMK file"))?;
        let path = self.cmk_path(&id);
        // Never over an existing file: ids are unique, and a file under an id is that CMK.
        secretfile::create_new(&path, &bytes).map_err(|e| CmkError::io("write", &path, e))?;
        Ok(self.register(SoftwareKey::new(id, key)))
    }

    fn import_key_path(&self) -> PathBuf {
        self.dir.join(IMPORT_KEY_FILE)
    }

    /// Reads and unseals the import key pair (PKCS#8 DER).
    fn load_import_key(&self) -> Result<Option<ImportKey>, CmkError> {
        let path = self.import_key_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CmkError::io("read", &path, e)),
        };
        let f: ImportKeyFile =
            serde_json::from_slice(&bytes).map_err(|_| CmkError::format(&path, "not a BYOK import key file"))?;
        if f.version != 1 || f.kind != IMPORT_KEY_KIND {
            return Err(CmkError::format(&path, "unsupported version or kind"));
        }
        check_kdf(&path, &f.kdf, f.iterations)?;
        let spki = decode(&path, &f.public, "public key is not base64url")?;
        let public =
            RsaPublicKey::from_der(&spki, None).map_err(|_| CmkError::format(&path, "public key is not an RSA key"))?;
        let public = public.clone().with_kid(public.thumbprint());
        let salt = decode(&path, &f.salt, "salt is not base64url")?;
        let wrapped = decode(&path, &f.wrapped, "wrapped key is not base64url")?;
        let pkcs8 = unseal_with_passphrase(&self.passphrase, &salt, f.iterations, &import_aad(&public), &wrapped)
            .map_err(|_| CmkError::Passphrase { path: path.clone() })?;
        let private = jose::RsaPrivateKey::from_pkcs8_der(&pkcs8, None)
            .map_err(|_| CmkError::format(&path, "private key is not an RSA key"))?;
        if private.public_key() != &public {
            return Err(CmkError::format(&path, "private and public halves do not match"));
        }
        Ok(Some(ImportKey { public, pkcs8 }))
    }

    /// Generates and writes the import key pair, unless another process just did.
    fn create_import_key(&self) -> Result<RsaPublicKey, CmkError> {
        let private = jose::RsaPrivateKey::generate(IMPORT_KEY_BITS, None)
            .map_err(|_| CmkError::Crypto("RSA-3072 key generation"))?;
        let public = private.public_key().clone();
        let public = public.clone().with_kid(public.thumbprint());
        let (salt, wrapped) =
            seal_with_passphrase(&self.passphrase, self.iterations, &import_aad(&public), &private.to_pkcs8_der())?;
        let file = ImportKeyFile {
            version: 1,
            kind: IMPORT_KEY_KIND.into(),
            kdf: KDF.into(),
            iterations: self.iterations,
            salt,
            public: jose::b64::encode(public.to_spki_der()),
            wrapped,
            created: now_unix_ms(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|_| CmkError::Crypto("serializing the import key"))?;
        let path = self.import_key_path();
        match secretfile::create_new(&path, &bytes) {
            Ok(()) => Ok(public),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self
                .load_import_key()?
                .map(|k| k.public)
                .ok_or_else(|| CmkError::format(&path, "vanished while being created")),
            Err(e) => Err(CmkError::io("write", &path, e)),
        }
    }
}

impl CmkBackend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn list(&self) -> Result<Vec<CmkInfo>, CmkError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| CmkError::io("list", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CmkError::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(id) = name.strip_suffix(CMK_SUFFIX) else { continue };
            if name.starts_with('.') {
                continue; // a temporary file
            }
            let path = entry.path();
            check_id(id).map_err(|_| CmkError::format(&path, "the file name is not <id>.cmk.json"))?;
            let bytes = fs::read(&path).map_err(|e| CmkError::io("read", &path, e))?;
            let file = parse_cmk_file(&path, &bytes)?;
            if file.id != id {
                return Err(CmkError::format(&path, "the id inside does not match the file name"));
            }
            let origin = match file.origin.as_deref() {
                None | Some("generated") => Origin::Generated,
                Some("imported") => Origin::Imported,
                Some(_) => return Err(CmkError::format(&path, "unknown origin")),
            };
            let created = match file.created.or_else(|| created_from_id(id)) {
                Some(c) => c,
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            };
            out.push(CmkInfo { id: file.id, created_unix_ms: created, origin });
        }
        out.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        Ok(out)
    }

    fn open(&self, id: &str) -> Result<Arc<dyn MasterKey>, CmkError> {
        let key = self.load(id)?;
        Ok(self.register(key))
    }

    fn generate(&self) -> Result<Arc<dyn MasterKey>, CmkError> {
        self.store_new(SoftwareKey::random_bytes()?, Origin::Generated)
    }

    /// Overwrites the file with random bytes, fsyncs it, deletes it, fsyncs the
    /// directory, and shreds the handles this backend handed out. Copies in
    /// backups, snapshots or on copy-on-write storage are out of its reach.
    fn destroy(&self, id: &str) -> Result<(), CmkError> {
        check_id(id)?;
        let path = self.cmk_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CmkError::NotFound(id.to_owned())),
            Err(e) => return Err(CmkError::io("read", &path, e)),
        };
        let file = parse_cmk_file(&path, &bytes)?;
        if file.id != id {
            return Err(CmkError::format(&path, "the id inside does not match the file name"));
        }
        // Shred live handles first: from here on the CMK is gone for this process.
        if let Some(handles) = self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            handles.iter().filter_map(Weak::upgrade).for_each(|k| k.shred());
        }
        overwrite(&path, bytes.len()).map_err(|e| CmkError::io("overwrite", &path, e))?;
        fs::remove_file(&path).map_err(|e| CmkError::io("delete", &path, e))?;
        secretfile::sync_dir(&self.dir).map_err(|e| CmkError::io("fsync", &self.dir, e))?;
        Ok(())
    }

    /// The import key pair is generated on the first call (RSA-3072, a second
    /// or so) and kept in `byok-import.key.json`, its private half sealed under
    /// the passphrase.
    fn import_public_key(&self) -> Result<RsaPublicKey, CmkError> {
        let mut cached = self.import_public.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let public = match self.load_import_key()? {
            Some(k) => k.public,
            None => self.create_import_key()?,
        };
        *cached = Some(public.clone());
        Ok(public)
    }

    fn import_wrapped(&self, wrapped: &[u8], hash: OaepHash) -> Result<Arc<dyn MasterKey>, CmkError> {
        let import = self.load_import_key()?.ok_or(CmkError::Import(hash))?;
        let key = rsa_oaep_decrypt(&import.pkcs8, wrapped, hash)?;
        self.store_new(key, Origin::Imported)
    }
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("dir", &self.dir)
            .field("iterations", &self.iterations)
            .field("passphrase", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// RSA-OAEP decryption of a 32-byte CMK with the import key (PKCS#8 DER).
fn rsa_oaep_decrypt(pkcs8: &[u8], wrapped: &[u8], hash: OaepHash) -> Result<Zeroizing<[u8; KEY_LEN]>, CmkError> {
    use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256};
    let key = PrivateDecryptingKey::from_pkcs8(pkcs8)
        .ok()
        .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
        .ok_or(CmkError::Crypto("loading the import key"))?;
    let alg = match hash {
        OaepHash::Sha1 => &OAEP_SHA1_MGF1SHA1,
        OaepHash::Sha256 => &OAEP_SHA256_MGF1SHA256,
    };
    let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let plain = key.decrypt(alg, wrapped, &mut out[..], None).map_err(|_| CmkError::Import(hash))?;
    let bytes: &[u8; KEY_LEN] = (&*plain).try_into().map_err(|_| CmkError::Import(hash))?;
    Ok(Zeroizing::new(*bytes))
}

fn cmk_aad(id: &str) -> String {
    format!("cmk:{id}")
}

fn import_aad(public: &RsaPublicKey) -> String {
    format!("cmk-import-key:{}", public.thumbprint())
}

fn decode(path: &Path, s: &str, what: &'static str) -> Result<Vec<u8>, CmkError> {
    jose::b64::decode(s, jose::Part::Payload).map_err(|_| CmkError::format(path, what))
}

fn check_kdf(path: &Path, kdf: &str, iterations: u32) -> Result<(), CmkError> {
    if kdf != KDF || !(MIN_KDF_ITERATIONS..=MAX_KDF_ITERATIONS).contains(&iterations) {
        return Err(CmkError::format(path, "unsupported KDF or iteration count"));
    }
    Ok(())
}

fn parse_cmk_file(path: &Path, bytes: &[u8]) -> Result<CmkFile, CmkError> {
    let f: CmkFile = serde_json::from_slice(bytes).map_err(|_| CmkError::format(path, "not a Custos CMK file"))?;
    if f.version != 1 {
        return Err(CmkError::format(path, "unsupported version"));
    }
    check_kdf(path, &f.kdf, f.iterations)?;
    check_id(&f.id).map_err(|_| CmkError::format(path, "invalid CMK id"))?;
    Ok(f)
}

fn unseal_cmk(path: &Path, f: &CmkFile, passphrase: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, CmkError> {
    let salt = decode(path, &f.salt, "salt is not base64url")?;
    let wrapped = decode(path, &f.wrapped, "wrapped key is not base64url")?;
    let plain = unseal_with_passphrase(passphrase, &salt, f.iterations, &cmk_aad(&f.id), &wrapped)
        .map_err(|_| CmkError::Passphrase { path: path.to_owned() })?;
    let bytes: &[u8; KEY_LEN] =
        (&plain[..]).try_into().map_err(|_| CmkError::format(path, "the sealed key is not 32 bytes"))?;
    Ok(Zeroizing::new(*bytes))
}

fn passphrase_key(passphrase: &[u8], salt: &[u8], iterations: u32) -> Result<LessSafeKey, CmkError> {
    let iterations = NonZeroU32::new(iterations).ok_or(CmkError::Config("PBKDF2 iterations must not be 0"))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::pbkdf2::derive(aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, passphrase, &mut out[..]);
    let unbound = UnboundKey::new(&AES_256_GCM, &out[..]).map_err(|_| CmkError::Crypto("AES-256-GCM key"))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals `secret` under a key derived from the passphrase and a fresh salt:
/// `(salt, nonce ‖ ciphertext ‖ tag)`, both base64url.
fn seal_with_passphrase(
    passphrase: &[u8],
    iterations: u32,
    aad: &str,
    secret: &[u8],
) -> Result<(String, String), CmkError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CmkError::Random)?;
    let key = passphrase_key(passphrase, &salt, iterations)?;
    let wrapped = soft::seal(&key, aad, secret)?;
    Ok((jose::b64::encode(salt), jose::b64::encode(wrapped)))
}

fn unseal_with_passphrase(
    passphrase: &[u8],
    salt: &[u8],
    iterations: u32,
    aad: &str,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CmkError> {
    soft::open(&passphrase_key(passphrase, salt, iterations)?, aad, wrapped)
}

// ---------------------------------------------------------------- durable files

fn create_private_dir(dir: &Path) -> Result<(), CmkError> {
    secretfile::create_dir_all(dir).map_err(|e| CmkError::io("create directory", dir, e))
}

/// Overwrites a file's `len` bytes in place with random bytes and fsyncs it.
fn overwrite(path: &Path, len: usize) -> io::Result<()> {
    let mut noise = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut noise).map_err(|_| io::Error::other("random generation failed"))?;
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&noise)?;
    f.sync_all()
}
