//! Compact JWE (RFC 7516) with `dir` or `RSA-OAEP` and `A256GCM`.
//!
//! The additional authenticated data is the protected header exactly as it
//! appears in the input (RFC 7516 §5.1 step 14), never a re-encoding.

use primitives::Aes256Gcm;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::{Error, Part, Result};
use crate::header::{ContentEnc, HeaderParams, KeyAlg, OutHeader, RawHeader};
use crate::keys::{OctKey, RsaPrivateKey, RsaPublicKey};

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const CEK_LEN: usize = 32;

/// What a caller accepts when reading a JWE.
#[derive(Debug, Clone, Copy)]
pub struct JwePolicy<'a> {
    /// Key management algorithms allowed.
    pub algs: &'a [KeyAlg],
    /// Content encryptions allowed.
    pub encs: &'a [ContentEnc],
    /// Longest compact input accepted, in bytes.
    pub max_len: usize,
}

impl JwePolicy<'static> {
    /// `dir` + `A256GCM` only.
    pub const DIR: JwePolicy<'static> =
        JwePolicy { algs: &[KeyAlg::Dir], encs: &[ContentEnc::A256Gcm], max_len: crate::DEFAULT_MAX_LEN };
    /// `RSA-OAEP` + `A256GCM` only.
    pub const RSA_OAEP: JwePolicy<'static> =
        JwePolicy { algs: &[KeyAlg::RsaOaep], encs: &[ContentEnc::A256Gcm], max_len: crate::DEFAULT_MAX_LEN };
}

/// The checked protected header of a JWE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JweHeader {
    /// Key management algorithm.
    pub alg: KeyAlg,
    /// Content encryption.
    pub enc: ContentEnc,
    /// Key id.
    pub kid: Option<String>,
    /// Type.
    pub typ: Option<String>,
    /// Content type.
    pub cty: Option<String>,
}

/// A parsed, not yet decrypted, compact JWE.
#[derive(Debug, Clone)]
pub struct Jwe {
    header: JweHeader,
    aad: String,
    encrypted_key: Vec<u8>,
    iv: [u8; IV_LEN],
    ciphertext: Vec<u8>,
    tag: [u8; TAG_LEN],
}

/// The key to decrypt with; must match the header's `alg`.
#[derive(Debug, Clone, Copy)]
pub enum DecryptKey<'a> {
    /// For `dir`.
    Dir(&'a OctKey),
    /// For `RSA-OAEP`.
    RsaOaep(&'a RsaPrivateKey),
}

/// The key to encrypt to.
#[derive(Debug, Clone, Copy)]
pub enum EncryptKey<'a> {
    /// `dir`: the shared key is the content key.
    Dir(&'a OctKey),
    /// `RSA-OAEP`: a fresh content key, wrapped to this public key.
    RsaOaep(&'a RsaPublicKey),
}

pub(crate) fn check_len(input: &str, max: usize) -> Result<()> {
    if input.is_empty() {
        return Err(Error::Empty);
    }
    if input.len() > max {
        return Err(Error::TooLarge { len: input.len(), max });
    }
    Ok(())
}

impl Jwe {
    /// Parses a compact JWE and checks its header against `policy`. Decrypts nothing.
    pub fn parse(input: &str, policy: &JwePolicy<'_>) -> Result<Self> {
        check_len(input, policy.max_len)?;
        let parts: Vec<&str> = input.split('.').collect();
        if parts.len() != 5 {
            return Err(Error::SegmentCount { kind: "JWE", expected: 5, found: parts.len() });
        }
        let raw = RawHeader::parse(parts[0])?;
        let alg = KeyAlg::from_name(raw.alg()?)?;
        if !policy.algs.contains(&alg) {
            return Err(Error::AlgorithmNotAllowed(alg.name().into()));
        }
        let enc = match &raw.enc {
            Some(serde_json::Value::String(e)) => ContentEnc::from_name(e)?,
            Some(_) => return Err(Error::Json { part: Part::Header, detail: "`enc` must be a string".into() }),
            None => return Err(Error::MissingHeader("enc")),
        };
        if !policy.encs.contains(&enc) {
            return Err(Error::EncryptionNotAllowed(enc.name().into()));
        }
        let encrypted_key = b64::decode(parts[1], Part::EncryptedKey)?;
        match alg {
            KeyAlg::Dir if !encrypted_key.is_empty() => return Err(Error::DirWithEncryptedKey),
            KeyAlg::RsaOaep if encrypted_key.is_empty() => return Err(Error::EmptyPart(Part::EncryptedKey)),
            _ => {}
        }
        let iv = b64::decode(parts[2], Part::Iv)?;
        let iv: [u8; IV_LEN] = iv.as_slice().try_into().map_err(|_| Error::Length {
            part: Part::Iv,
            expected: IV_LEN,
            found: iv.len(),
        })?;
        let ciphertext = b64::decode(parts[3], Part::Ciphertext)?;
        let tag = b64::decode(parts[4], Part::Tag)?;
        let tag: [u8; TAG_LEN] = tag.as_slice().try_into().map_err(|_| Error::Length {
            part: Part::Tag,
            expected: TAG_LEN,
            found: tag.len(),
        })?;
        Ok(Self {
            header: JweHeader { alg, enc, kid: raw.kid, typ: raw.typ, cty: raw.cty },
            aad: parts[0].to_string(),
            encrypted_key,
            iv,
            ciphertext,
            tag,
        })
    }

    /// The checked protected header (use its `kid` to pick the key).
    pub fn header(&self) -> &JweHeader {
        &self.header
    }

    /// Decrypts. Every failure after parsing is the single `DecryptionFailed`,
    /// so that RSA-OAEP padding errors are indistinguishable from tag errors.
    pub fn decrypt(&self, key: DecryptKey<'_>) -> Result<Zeroizing<Vec<u8>>> {
        let cek: Zeroizing<Vec<u8>> = match (self.header.alg, key) {
            (KeyAlg::Dir, DecryptKey::Dir(k)) => {
                if k.expose().len() != CEK_LEN {
                    return Err(Error::KeySize {
                        kind: "oct",
                        bits: k.expose().len() * 8,
                        allowed: "A256GCM needs a 256-bit key",
                    });
                }
                Zeroizing::new(k.expose().to_vec())
            }
            (KeyAlg::RsaOaep, DecryptKey::RsaOaep(k)) => match k.decrypt_oaep(&self.encrypted_key) {
                Some(cek) if cek.len() == CEK_LEN => cek,
                // A random key makes the failure surface only at the tag check.
                _ => OctKey::generate(CEK_LEN, None).map(|k| Zeroizing::new(k.expose().to_vec()))?,
            },
            (alg, key) => {
                let found = match key {
                    DecryptKey::Dir(_) => "oct",
                    DecryptKey::RsaOaep(_) => "RSA private",
                };
                let expected = match alg {
                    KeyAlg::Dir => "oct",
                    KeyAlg::RsaOaep => "RSA private",
                };
                return Err(Error::WrongKeyType { alg: alg.name().into(), expected, found });
            }
        };
        let key = Aes256Gcm::new(&cek).map_err(|_| Error::Crypto("AES key"))?;
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        if key.open_in_place_detached(&self.iv, self.aad.as_bytes(), &mut buf, &self.tag).is_err() {
            buf.fill(0);
            return Err(Error::DecryptionFailed);
        }
        Ok(buf)
    }
}

/// Encrypts `plaintext` to a compact JWE.
pub fn encrypt(key: EncryptKey<'_>, enc: ContentEnc, params: &HeaderParams, plaintext: &[u8]) -> Result<String> {
    let ContentEnc::A256Gcm = enc;
    let (alg, cek, encrypted_key) = match key {
        EncryptKey::Dir(k) => {
            if k.expose().len() != CEK_LEN {
                return Err(Error::KeySize {
                    kind: "oct",
                    bits: k.expose().len() * 8,
                    allowed: "A256GCM needs a 256-bit key",
                });
            }
            (KeyAlg::Dir, Zeroizing::new(k.expose().to_vec()), Vec::new())
        }
        EncryptKey::RsaOaep(pk) => {
            let cek = OctKey::generate(CEK_LEN, None)?;
            let ek = pk.encrypt_oaep(cek.expose())?;
            (KeyAlg::RsaOaep, Zeroizing::new(cek.expose().to_vec()), ek)
        }
    };
    let header = OutHeader {
        alg: alg.name(),
        enc: Some(enc.name()),
        kid: params.kid.as_deref(),
        typ: params.typ.as_deref(),
        cty: params.cty.as_deref(),
    }
    .encode();
    let mut iv = [0u8; IV_LEN];
    primitives::fill_random(&mut iv).map_err(|_| Error::Crypto("random"))?;
    let key = Aes256Gcm::new(&cek).map_err(|_| Error::Crypto("AES key"))?;
    let mut buf = plaintext.to_vec();
    let tag = key.seal_in_place_detached(&iv, header.as_bytes(), &mut buf).map_err(|_| Error::Crypto("AES-GCM seal"))?;
    let mut out = String::with_capacity(header.len() + (encrypted_key.len() + buf.len()) * 4 / 3 + 48);
    out.push_str(&header);
    out.push('.');
    out.push_str(&b64::encode(&encrypted_key));
    out.push('.');
    out.push_str(&b64::encode(iv));
    out.push('.');
    out.push_str(&b64::encode(&buf));
    out.push('.');
    out.push_str(&b64::encode(tag.as_ref()));
    Ok(out)
}
