//! Errors. None carries key material, a passphrase or a PIN.

use std::path::PathBuf;

use crate::OaepHash;

/// What went wrong with a CMK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmkError {
    /// A wrapped blob did not open: wrong CMK, wrong AAD, tampered or truncated.
    #[error("unwrap failed: wrong CMK, wrong AAD, or tampered or truncated data")]
    Unwrap,
    /// No CMK with this id (never was, or destroyed).
    #[error("no CMK with id `{0}`")]
    NotFound(String),
    /// The CMK was destroyed after this handle to it was opened.
    #[error("CMK `{0}` has been destroyed")]
    Destroyed(String),
    /// An id that cannot be a CMK id (shown escaped and cut to 64 characters).
    #[error("invalid CMK id {0:?}: expected 1 to 64 characters of A-Z, a-z, 0-9, `-`, `_`")]
    InvalidId(String),
    /// Key bytes of the wrong length (a CMK is 32 bytes).
    #[error("a CMK is {expected} bytes, got {got}")]
    KeyLength {
        /// Always 32.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The passphrase is shorter than [`crate::MIN_PASSPHRASE_CHARS`].
    #[error("the CMK passphrase must be at least {0} characters")]
    PassphraseTooShort(usize),
    /// The passphrase does not open a sealed file.
    #[error("the passphrase does not open {} (wrong passphrase, or the file was altered)", path.display())]
    Passphrase {
        /// The file.
        path: PathBuf,
    },
    /// A file in the CMK directory is not what it should be.
    #[error("{} is not a valid Custos CMK file: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// File-system trouble.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"read"`, `"write"`, …).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS's answer.
        #[source]
        source: std::io::Error,
    },
    /// BYOK: the blob does not decrypt to a 32-byte key under the import key
    /// with this OAEP hash (deliberately not saying which check failed).
    #[error("BYOK import failed: the blob is not a 32-byte key wrapped to this backend's import key with {0}")]
    Import(OaepHash),
    /// The backend (or its token) cannot do this.
    #[error("{what} is not supported by the {backend} backend")]
    Unsupported {
        /// `"file"` or `"pkcs11"`.
        backend: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid CMK backend configuration: {0}")]
    Config(&'static str),
    /// No PKCS#11 module path was given and none was found in the usual places.
    #[error("no PKCS#11 module configured and none found at {searched} (install softhsm2, or set the module path)")]
    ModuleNotFound {
        /// The places looked at.
        searched: String,
    },
    /// The PKCS#11 module did not load or initialize.
    #[error("loading PKCS#11 module {}: {source}", path.display())]
    ModuleLoad {
        /// The module.
        path: PathBuf,
        /// Why.
        #[source]
        source: cryptoki::error::Error,
    },
    /// No initialized token with this label.
    #[error("no initialized PKCS#11 token labelled `{0}`")]
    TokenNotFound(String),
    /// The token refused the user PIN (or is locked).
    #[error("PKCS#11 login to token `{token}` refused: {source}")]
    Login {
        /// The token's label.
        token: String,
        /// The token's answer.
        #[source]
        source: cryptoki::error::Error,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {op} failed: {source}")]
    Pkcs11 {
        /// What was being done.
        op: &'static str,
        /// The token's answer.
        #[source]
        source: cryptoki::error::Error,
    },
    /// Several token objects carry a label that should be unique.
    #[error("the token holds {count} objects labelled `{label}`, expected at most one")]
    Ambiguous {
        /// The label.
        label: String,
        /// How many.
        count: usize,
    },
    /// The token holds something this backend did not expect.
    #[error("the PKCS#11 token is in an unexpected state: {0}")]
    Token(&'static str),
    /// The system random generator failed.
    #[error("random generation failed")]
    Random,
    /// A cryptographic operation failed for a reason other than bad input.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

impl CmkError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CmkError::Io { op, path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: &'static str) -> Self {
        CmkError::Format { path: path.into(), reason }
    }
}
