//! The signing key: RSA-2048, generated on first start, kept as a PKCS#8 PEM
//! file readable by its owner only, and reused on every later start so that
//! tokens issued before a restart stay valid.

use std::path::{Path, PathBuf};

use jose::jws::{SignKey, VerifyKey};
use jose::{HeaderParams, Jws, JwsPolicy, RsaPrivateKey, SigAlg};
use serde_json::{json, Value};

/// The key file's name inside `data_dir`.
pub const KEY_FILE: &str = "idp-signing-key.pem";

/// Longest token we parse (ours are well under 2 KiB).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why the signing key cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The key file exists but holds no usable RSA private key.
    #[error("{} does not hold a usable RSA private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

/// The IdP's RSA signing key and its public JWK.
pub(crate) struct SigningKey {
    key: RsaPrivateKey,
    kid: String,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub(crate) fn new(key: RsaPrivateKey) -> Self {
        // The RFC 7638 thumbprint: stable across restarts, and a new key gets a new kid.
        let kid = key.public_key().thumbprint();
        let mut jwk = serde_json::to_value(key.public_key().to_jwk()).expect("a public JWK serializes");
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!("RS256");
        jwk["use"] = json!("sig");
        Self { key, kid, jwk }
    }

    /// Loads `<data_dir>/idp-signing-key.pem`, or generates and stores it.
    /// Returns whether it was generated.
    pub(crate) fn load_or_generate(data_dir: &Path) -> Result<(Self, bool), KeyError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(pem) => return Ok((Self::from_file(&path, &pem)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeyError::Io { action: "reading", path, source }),
        }
        create_dir_private(data_dir)?;
        let key = RsaPrivateKey::generate(2048, None).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let pem = key.to_pem();
        // Published whole or not at all, never over another file: if another
        // process created one meanwhile, theirs wins and is the one we use.
        match secretfile::create_or_read(&path, pem.as_bytes()).map_err(io("creating", &path))? {
            secretfile::Outcome::Created => Ok((Self::new(key), true)),
            secretfile::Outcome::Existing(theirs) => {
                let pem = std::str::from_utf8(&theirs)
                    .map_err(|_| KeyError::BadKey { path: path.clone(), reason: "not UTF-8".into() })?;
                Ok((Self::from_file(&path, pem)?, false))
            }
        }
    }

    fn from_file(path: &Path, pem: &str) -> Result<Self, KeyError> {
        warn_if_readable_by_others(path);
        let key = RsaPrivateKey::from_pem(pem, None)
            .map_err(|e| KeyError::BadKey { path: path.to_owned(), reason: e.to_string() })?;
        Ok(Self::new(key))
    }

    /// The key id (its RFC 7638 thumbprint).
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK, with `kid`, `alg` RS256 and `use` sig.
    pub(crate) fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims` as a compact RS256 JWS with header `typ`.
    pub(crate) fn sign(&self, typ: &str, claims: &Value) -> Result<String, KeyError> {
        let params = HeaderParams::kid(&self.kid).with_typ(typ);
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        jose::jws::sign(SigAlg::RS256, SignKey::Rsa(&self.key), &params, &payload)
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }

    /// Verifies a JWS we signed with header `typ` (compared case-insensitively)
    /// and returns its claims. `None` for anything else.
    pub(crate) fn verify(&self, typ: &str, token: &str) -> Option<serde_json::Map<String, Value>> {
        let policy = JwsPolicy { algs: &[SigAlg::RS256], max_len: MAX_TOKEN_LEN };
        let jws = Jws::parse(token, &policy).ok()?;
        let header = jws.header();
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(typ))
            || header.kid.as_deref() != Some(&self.kid)
        {
            return None;
        }
        let payload = jws.verify(VerifyKey::Rsa(self.key.public_key())).ok()?;
        serde_json::from_slice(payload).ok()
    }
}

fn create_dir_private(dir: &Path) -> Result<(), KeyError> {
    secretfile::create_dir_all(dir).map_err(|source| KeyError::Io { action: "creating", path: dir.to_owned(), source })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the IdP signing key file is readable by other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Maps an I/O error on `path` during `action`.
fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KeyError + 'a {
    move |source| KeyError::Io { action, path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_starting_at_once_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("idp");
        let barrier = std::sync::Barrier::new(3);
        let made: Vec<(String, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let (k, generated) = SigningKey::load_or_generate(&data).unwrap();
                        (k.kid().to_owned(), generated)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(made.iter().filter(|(_, g)| *g).count(), 1, "one generates the key");
        let (again, generated) = SigningKey::load_or_generate(&data).unwrap();
        assert!(!generated);
        assert!(made.iter().all(|(kid, _)| kid == again.kid()), "every process signs with the key on disk");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!((mode(&data), mode(&data.join(KEY_FILE))), (0o700, 0o600));
        }
        let names: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [KEY_FILE]);
    }
}
