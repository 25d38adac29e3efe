//! The KMS's customer master key (CMK): where it lives, how it wraps, how it
//! rotates, and how an organization brings its own.
//!
//! The CMK wraps everything the KMS keeps at rest under it (KEKs, session-ticket
//! keys, the static key). A [`MasterKey`] wraps and unwraps byte strings with
//! AES-256-GCM, a fresh random 96-bit nonce and an AAD string naming what is
//! wrapped; a wrapped blob is `nonce (12) ‖ ciphertext ‖ tag (16)`. This layout is
//! the same in every backend and is byte-compatible with the KMS's original
//! `SecretKey::wrap` / `unwrap` (crate `kms`, `crypto.rs`), so a blob made by one
//! backend opens in another holding the same key bytes.
//!
//! A [`CmkBackend`] manages several CMKs, each with a stable id that callers
//! store beside every blob the CMK wraps: [`list`](CmkBackend::list),
//! [`open`](CmkBackend::open), [`generate`](CmkBackend::generate) (rotation: a
//! new CMK, then re-wrap under it, then destroy the old one),
//! [`destroy`](CmkBackend::destroy) (crypto-shredding) and bring-your-own-key
//! ([`import_public_key`](CmkBackend::import_public_key),
//! [`import_wrapped`](CmkBackend::import_wrapped)). CMK ids are UUIDv7 strings
//! (their creation time is in them); ids of CMKs from older files are UUIDv4.
//!
//! # The two backends
//!
//! **[`FileBackend`]** (`kind() == "file"`): a directory with one
//! passphrase-sealed JSON file per CMK, `<id>.cmk.json`, in the format the KMS
//! already uses for its `cmk.json` (PBKDF2-HMAC-SHA256, 600,000 iterations by
//! default, AES-256-GCM with the AAD `cmk:<id>`). [`FileBackend::open_legacy`]
//! opens such an existing single file. Files are written with mode 0600, to a
//! temporary file that is fsynced, linked into place without replacing anything,
//! then the directory is fsynced.
//!
//! *Threat model.* Whoever has both a CMK file (or a backup of it) and the
//! passphrase has the CMK. The passphrase usually reaches the KMS through an
//! environment variable, so anyone who can read the KMS process's environment or
//! memory (root, a debugger, a core dump) has it too; while the KMS runs, the
//! key bytes are in its memory (zeroized when the last handle drops). An attacker
//! with the files alone must guess the passphrase against PBKDF2 (at least 12
//! characters are required; choose a long random one).
//!
//! **[`Pkcs11Backend`]** (`kind() == "pkcs11"`): CMKs are AES-256 secret-key
//! objects generated inside a PKCS#11 token (`CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false, only `CKA_ENCRYPT` /
//! `CKA_DECRYPT`, allowed mechanism `CKM_AES_GCM`), named `CKA_LABEL` =
//! `<prefix><id>` and `CKA_ID` = `<id>`. Wrap and unwrap run `CKM_AES_GCM` inside
//! the token (random 12-byte IV from aws-lc-rs, the AAD, 128-bit tag).
//!
//! *Threat model.* The key bytes never leave the HSM: not to the KMS, not to a
//! backup of the KMS's disk. Whoever holds the user PIN and can reach the
//! token (in practice: runs code on the KMS host while it is logged in) can
//! *use* the CMK to unwrap blobs for as long as that lasts, but cannot copy it.
//! The PIN is passed in by the caller (the KMS reads it from an environment
//! variable); treat it like the file backend's passphrase. Test it with
//! softhsm2, which is a software token: its "HSM" is files under its token
//! directory, encrypted under the PIN, so it protects nothing in production.
//!
//! # Destroying a CMK
//!
//! [`CmkBackend::destroy`] makes everything wrapped under that CMK unreadable,
//! for good, *as far as this backend can reach*: the file backend overwrites
//! the file in place, fsyncs, deletes it and fsyncs the directory (on
//! copy-on-write or flash storage the overwrite may not reach the old blocks);
//! the PKCS#11 backend calls `C_DestroyObject`. Handles to that CMK already open
//! in this process stop working too ([`CmkError::Destroyed`]). Copies outside
//! its reach survive: backups or snapshots of the CMK directory (which, with the
//! passphrase, still open), and HSM backups or cluster replicas of the token.
//! Crypto-shredding is complete only once those are gone too.
//!
//! # Bring your own key
//!
//! Each backend has one RSA-3072 *import key* pair, generated on first use and
//! kept (the file backend: sealed under the passphrase in
//! `byok-import.key.json` beside the CMKs; the PKCS#11 backend: in the token,
//! private half non-extractable). The organization fetches its public half with
//! [`CmkBackend::import_public_key`], wraps its own 32-byte CMK to it with
//! RSA-OAEP (SHA-1 as in JOSE `RSA-OAEP`, or SHA-256, named by [`OaepHash`]),
//! and hands the result to [`CmkBackend::import_wrapped`]. The PKCS#11 backend
//! unwraps it with `C_UnwrapKey` straight into the token as a non-extractable
//! AES key; softhsm2 2.6 supports only SHA-1 there and answers
//! [`CmkError::Unsupported`] for SHA-256. Both backends refuse a key that is
//! not exactly 32 bytes (the PKCS#11 backend checks inside the token: see
//! [`Pkcs11Backend`]'s `import_wrapped`).
//!
//! # softhsm2 for a development run
//!
//! ```sh
//! apt-get install -y softhsm2                      # scripts/test does this
//! mkdir -p ~/.softhsm/tokens
//! printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
//!     ~/.softhsm/tokens > ~/.softhsm/softhsm2.conf
//! export SOFTHSM2_CONF=~/.softhsm/softhsm2.conf
//! softhsm2-util --init-token --free --label custos-kms --so-pin 'so-secret-1234' --pin 'user-secret-1234'
//! ```
//!
//! then `Pkcs11Backend::open(Pkcs11Config::new("custos-kms", pin))` with the PIN
//! read from an environment variable; the module defaults to `libsofthsm2.so`
//! under `/usr/lib/softhsm/` or `/usr/lib/x86_64-linux-gnu/softhsm/`.
//!
//! # Example
//!
//! ```no_run
//! use cmk::{CmkBackend, FileBackend};
//! # fn main() -> Result<(), cmk::CmkError> {
//! let passphrase = std::env::var("CUSTOS_KMS_CMK_PASSPHRASE").unwrap_or_default();
//! let backend = FileBackend::open("/var/lib/custos/cmk", passphrase.as_bytes())?;
//! let cmk = backend.generate()?;
//! let blob = cmk.wrap("kek:42", b"a KEK")?;
//! assert_eq!(&cmk.unwrap("kek:42", &blob)?[..], b"a KEK");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

mod error;
mod file;
mod ids;
mod pkcs11;
mod soft;

pub use error::CmkError;
pub use file::{FileBackend, DEFAULT_KDF_ITERATIONS, MIN_KDF_ITERATIONS, MIN_PASSPHRASE_CHARS};
pub use jose::RsaPublicKey;
pub use pkcs11::{default_module_path, HsmKey, Pkcs11Backend, Pkcs11Config, DEFAULT_LABEL_PREFIX};
pub use soft::SoftwareKey;

/// Bytes a wrapped blob adds to its plaintext: the nonce and the tag.
pub const WRAP_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of the AES-GCM nonce at the front of every wrapped blob.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag at the end of every wrapped blob.
pub const TAG_LEN: usize = 16;
/// Length of a CMK in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// Size of the RSA import key each backend generates for BYOK, in bits.
pub const IMPORT_KEY_BITS: usize = 3072;

/// One customer master key: wraps and unwraps with AES-256-GCM, output
/// `nonce ‖ ciphertext ‖ tag`, the AAD binding each blob to what it is.
pub trait MasterKey: Send + Sync + std::fmt::Debug {
    /// The CMK's stable id, to be stored beside everything it wraps.
    fn id(&self) -> &str;

    /// Wraps `plain` under this CMK, bound to `aad`.
    fn wrap(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CmkError>;

    /// Opens what [`MasterKey::wrap`] made with the same `aad`. A wrong key,
    /// wrong AAD, or tampered or truncated blob gives [`CmkError::Unwrap`]; a
    /// CMK destroyed since it was opened gives [`CmkError::Destroyed`].
    fn unwrap(&self, aad: &str, wrapped: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, CmkError>;
}

/// Where a CMK came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Generated by the backend (in the HSM, for PKCS#11).
    Generated,
    /// Imported by [`CmkBackend::import_wrapped`] (bring your own key).
    Imported,
}

impl Origin {
    /// `"generated"` or `"imported"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Imported => "imported",
        }
    }
}

/// What [`CmkBackend::list`] tells about one CMK (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmkInfo {
    /// The CMK's id.
    pub id: String,
    /// When it was created or imported, in Unix milliseconds (from the UUIDv7 id;
    /// for files of the KMS's original format, from the file's modification time).
    pub created_unix_ms: u64,
    /// Generated here, or imported.
    pub origin: Origin,
}

/// The hash of an RSA-OAEP wrapping (used both for OAEP's label hash and MGF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OaepHash {
    /// SHA-1 with MGF1-SHA-1: JOSE `RSA-OAEP`, and what most HSM BYOK tooling does.
    Sha1,
    /// SHA-256 with MGF1-SHA-256: JOSE `RSA-OAEP-256`.
    Sha256,
}

impl OaepHash {
    /// `"RSA-OAEP"` or `"RSA-OAEP-256"` (the JOSE names).
    pub fn jose_name(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "RSA-OAEP",
            OaepHash::Sha256 => "RSA-OAEP-256",
        }
    }
}

impl std::fmt::Display for OaepHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.jose_name())
    }
}

/// A store of CMKs: listing, opening, rotation, destruction and BYOK.
///
/// Every method is synchronous and may block (file I/O, PBKDF2, HSM calls):
/// call it from a blocking thread in async code.
pub trait CmkBackend: Send + Sync + std::fmt::Debug {
    /// `"file"` or `"pkcs11"`.
    fn kind(&self) -> &'static str;

    /// Every CMK, oldest first.
    fn list(&self) -> Result<Vec<CmkInfo>, CmkError>;

    /// The CMK with this id; [`CmkError::NotFound`] if there is none (any more).
    fn open(&self, id: &str) -> Result<Arc<dyn MasterKey>, CmkError>;

    /// A new random CMK, stored durably before it is returned (rotation).
    fn generate(&self) -> Result<Arc<dyn MasterKey>, CmkError>;

    /// Removes the CMK irreversibly (crypto-shredding), as far as this backend
    /// reaches: see the crate docs for backups. Handles already open fail from
    /// now on with [`CmkError::Destroyed`].
    fn destroy(&self, id: &str) -> Result<(), CmkError>;

    /// BYOK: the RSA-3072 public key to which an organization wraps its own CMK
    /// (`to_pem()`, `to_spki_der()` or `to_jwk()` to hand it out; its `kid` is
    /// its RFC 7638 thumbprint). Generated on first call, the same afterwards.
    fn import_public_key(&self) -> Result<RsaPublicKey, CmkError>;

    /// BYOK: imports the organization's 32-byte CMK, RSA-OAEP-wrapped (with
    /// `hash`) to [`CmkBackend::import_public_key`], as a new CMK of origin
    /// [`Origin::Imported`]. Any failure to decrypt to exactly 32 bytes is
    /// [`CmkError::Import`], without saying which check failed.
    fn import_wrapped(&self, wrapped: &[u8], hash: OaepHash) -> Result<Arc<dyn MasterKey>, CmkError>;
}
