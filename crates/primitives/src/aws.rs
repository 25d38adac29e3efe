//! The native backend: aws-lc-rs.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::{digest, hkdf, hmac};

use crate::{Error, Result, NONCE_LEN, TAG_LEN};

pub const NAME: &str = "aws-lc-rs";

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(buf).map_err(|_| Error::Failed("random"))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA-256 (RFC 5869) of `ikm` into `out` (at most 255 × 32 bytes).
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info];
    prk.expand(&info, Len(out.len())).and_then(|okm| okm.fill(out)).map_err(|_| Error::Failed("HKDF"))
}

/// An AES-256-GCM key, its schedule computed once.
pub struct Aes256Gcm(LessSafeKey);

impl Aes256Gcm {
    /// From 32 key bytes.
    pub fn new(key: &[u8]) -> Result<Self> {
        Ok(Self(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Failed("AES-256 key"))?)))
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place_detached(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Failed("AES-GCM seal"))?;
        Ok(tag.as_ref().try_into().expect("AES-GCM tags are 16 bytes"))
    }

    /// Decrypts `buf` in place if `tag` authenticates it; on failure `buf`'s
    /// content is unspecified (callers wipe it).
    pub fn open_in_place_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<()> {
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &tag[..], buf)
            .map(|_| ())
            .map_err(|_| Error::Failed("AES-GCM open"))
    }

    /// Decrypts `ct` into `out` (of `ct`'s length) if `tag` authenticates it,
    /// leaving `ct` intact; on failure `out`'s content is unspecified.
    pub fn open_detached_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<()> {
        self.0
            .open_separate_gather(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), ct, tag, out)
            .map_err(|_| Error::Failed("AES-GCM open"))
    }
}

/// An HMAC-SHA-256 key, its schedule computed once.
pub struct HmacSha256(hmac::Key);

impl HmacSha256 {
    /// From key bytes of any length.
    pub fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The MAC of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign().as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
    }
}

pub mod rsa {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa;
    use aws_lc_rs::signature::{self, KeyPair as _};
    use zeroize::Zeroizing;

    use crate::rsa::Padding;
    use crate::{Error, Result};

    /// An RSA public key.
    #[derive(Clone)]
    pub struct PublicKey {
        n: Vec<u8>,
        e: Vec<u8>,
        enc: rsa::PublicEncryptingKey,
    }

    impl PublicKey {
        /// From big-endian modulus and exponent without leading zeros.
        pub fn from_components(n: &[u8], e: &[u8]) -> Result<Self> {
            // `PublicEncryptingKey::from_der` takes SubjectPublicKeyInfo only (not
            // PKCS#1), so build the key from its components directly.
            let enc: rsa::PublicEncryptingKey =
                rsa::PublicKeyComponents { n, e }.try_into().map_err(|_| Error::Failed("RSA public key"))?;
            Ok(Self { n: n.to_vec(), e: e.to_vec(), enc })
        }

        /// The modulus and exponent of a SubjectPublicKeyInfo or PKCS#1 RSAPublicKey.
        pub fn parse_der(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
            let pk = rsa::PublicKey::from_der(der).map_err(|_| Error::Failed("RSA public key"))?;
            Ok((
                pk.modulus().big_endian_without_leading_zero().to_vec(),
                pk.exponent().big_endian_without_leading_zero().to_vec(),
            ))
        }

        /// SubjectPublicKeyInfo DER.
        pub fn spki_der(&self) -> Vec<u8> {
            self.enc.as_der().expect("SPKI of a valid key").as_ref().to_vec()
        }

        /// Modulus size in bits.
        pub fn bits(&self) -> usize {
            self.enc.key_size_bits()
        }

        /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (JOSE `RSA-OAEP`).
        pub fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
            let key = rsa::OaepPublicEncryptingKey::new(self.enc.clone()).map_err(|_| Error::Failed("RSA-OAEP key"))?;
            let mut out = vec![0u8; key.ciphertext_size()];
            let n = key
                .encrypt(&rsa::OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
                .map_err(|_| Error::Failed("RSA-OAEP encrypt"))?
                .len();
            out.truncate(n);
            Ok(out)
        }

        /// Verifies a signature over `msg` (hashed here with SHA-256).
        pub fn verify(&self, padding: Padding, msg: &[u8], sig: &[u8]) -> Result<()> {
            let params = match padding {
                Padding::Pkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Padding::PssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
            };
            signature::RsaPublicKeyComponents { n: &self.n, e: &self.e }
                .verify(params, msg, sig)
                .map_err(|_| Error::Failed("RSA signature"))
        }
    }

    /// An RSA private key. Its PKCS#8 form zeroizes on drop.
    pub struct PrivateKey {
        pkcs8: Zeroizing<Vec<u8>>,
        signer: rsa::KeyPair,
        decrypter: rsa::OaepPrivateDecryptingKey,
    }

    impl PrivateKey {
        /// A fresh key of one of [`GENERATE_BITS`](crate::rsa::GENERATE_BITS).
        pub fn generate(bits: usize) -> Result<Self> {
            let size = match bits {
                2048 => rsa::KeySize::Rsa2048,
                3072 => rsa::KeySize::Rsa3072,
                4096 => rsa::KeySize::Rsa4096,
                8192 => rsa::KeySize::Rsa8192,
                _ => return Err(Error::Failed("RSA key generation of that size")),
            };
            let kp = rsa::KeyPair::generate(size).map_err(|_| Error::Failed("RSA key generation"))?;
            let der = kp.as_der().map_err(|_| Error::Failed("RSA PKCS#8"))?;
            Self::from_pkcs8_der(der.as_ref())
        }

        /// From PKCS#8 DER.
        pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
            let signer = rsa::KeyPair::from_pkcs8(der).map_err(|_| Error::Failed("RSA private key"))?;
            let decrypter = rsa::PrivateDecryptingKey::from_pkcs8(der)
                .ok()
                .and_then(|k| rsa::OaepPrivateDecryptingKey::new(k).ok())
                .ok_or(Error::Failed("RSA private key"))?;
            Ok(Self { pkcs8: Zeroizing::new(der.to_vec()), signer, decrypter })
        }

        /// From PKCS#1 RSAPrivateKey DER.
        pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
            let kp = rsa::KeyPair::from_der(der).map_err(|_| Error::Failed("RSA private key"))?;
            let p8 = kp.as_der().map_err(|_| Error::Failed("RSA PKCS#8"))?;
            Self::from_pkcs8_der(p8.as_ref())
        }

        /// From all components (big-endian), which AWS-LC checks for consistency.
        #[allow(clippy::too_many_arguments)]
        pub fn from_components(
            n: &[u8],
            e: &[u8],
            d: &[u8],
            p: &[u8],
            q: &[u8],
            dp: &[u8],
            dq: &[u8],
            qi: &[u8],
        ) -> Result<Self> {
            let comps = rsa::KeyPairComponents {
                public_key: rsa::PublicKeyComponents { n, e },
                d,
                p,
                q,
                dP: dp,
                dQ: dq,
                qInv: qi,
            };
            let kp = rsa::KeyPair::from_components(&comps).map_err(|_| Error::Failed("RSA private key"))?;
            let p8 = kp.as_der().map_err(|_| Error::Failed("RSA PKCS#8"))?;
            Self::from_pkcs8_der(p8.as_ref())
        }

        /// PKCS#8 DER. Handle with care.
        pub fn pkcs8_der(&self) -> &[u8] {
            &self.pkcs8
        }

        /// Modulus size in bytes.
        pub fn modulus_len(&self) -> usize {
            self.signer.public_modulus_len()
        }

        /// The public modulus and exponent, big-endian without leading zeros.
        pub fn public_components(&self) -> (Vec<u8>, Vec<u8>) {
            let pk = self.signer.public_key();
            (
                pk.modulus().big_endian_without_leading_zero().to_vec(),
                pk.exponent().big_endian_without_leading_zero().to_vec(),
            )
        }

        /// Signs `msg` (hashed here with SHA-256).
        pub fn sign(&self, padding: Padding, msg: &[u8]) -> Result<Vec<u8>> {
            let enc: &'static dyn signature::RsaEncoding = match padding {
                Padding::Pkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                Padding::PssSha256 => &signature::RSA_PSS_SHA256,
            };
            let mut sig = vec![0u8; self.signer.public_modulus_len()];
            self.signer.sign(enc, &SystemRandom::new(), msg, &mut sig).map_err(|_| Error::Failed("RSA sign"))?;
            Ok(sig)
        }

        /// RSAES-OAEP-SHA-1 decryption; `None` on any failure (callers must not reveal why).
        pub fn decrypt_oaep_sha1(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
            let mut out = Zeroizing::new(vec![0u8; self.decrypter.min_output_size()]);
            let n = self.decrypter.decrypt(&rsa::OAEP_SHA1_MGF1SHA1, ciphertext, &mut out, None).ok()?.len();
            out.truncate(n);
            Some(out)
        }
    }
}

pub mod p256 {
    use aws_lc_rs::agreement;
    use aws_lc_rs::encoding::{AsBigEndian as _, EcPrivateKeyBin};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair};
    use zeroize::Zeroizing;

    use crate::{Error, Result};

    /// Whether `point` is an uncompressed point on the curve (not the identity).
    pub fn check_point(point: &[u8; 65]) -> bool {
        point[0] == 4
            && agreement::ParsedPublicKey::try_from(&agreement::UnparsedPublicKey::new(
                &agreement::ECDH_P256,
                &point[..],
            ))
            .is_ok()
    }

    fn from_agreement_key(sk: &agreement::PrivateKey) -> Result<(Zeroizing<[u8; 32]>, [u8; 65])> {
        let bin: EcPrivateKeyBin<'_> = sk.as_be_bytes().map_err(|_| Error::Failed("P-256 export"))?;
        let mut d = Zeroizing::new([0u8; 32]);
        d.copy_from_slice(bin.as_ref());
        let pk = sk.compute_public_key().map_err(|_| Error::Failed("P-256 public key"))?;
        let point: [u8; 65] = pk.as_ref().try_into().map_err(|_| Error::Failed("P-256 public key"))?;
        Ok((d, point))
    }

    /// A fresh key: the scalar and its public point.
    pub fn generate() -> Result<(Zeroizing<[u8; 32]>, [u8; 65])> {
        let sk = agreement::PrivateKey::generate(&agreement::ECDH_P256).map_err(|_| Error::Failed("P-256 keygen"))?;
        from_agreement_key(&sk)
    }

    /// The public point of a 32-byte scalar (which must be in 1..n).
    pub fn public_from_scalar(d: &[u8]) -> Result<[u8; 65]> {
        let sk = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, d)
            .map_err(|_| Error::Failed("P-256 private key"))?;
        Ok(from_agreement_key(&sk)?.1)
    }

    /// The scalar of a PKCS#8 or SEC1 (RFC 5915) private key.
    pub fn scalar_from_der(der: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let kp = EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| Error::Failed("P-256 private key"))?;
        let bin: EcPrivateKeyBin<'_> = kp.private_key().as_be_bytes().map_err(|_| Error::Failed("P-256 export"))?;
        let mut d = Zeroizing::new([0u8; 32]);
        d.copy_from_slice(bin.as_ref());
        Ok(d)
    }

    fn ecdsa(d: &[u8; 32], point: &[u8; 65]) -> Result<EcdsaKeyPair> {
        EcdsaKeyPair::from_private_key_and_public_key(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, d, point)
            .map_err(|_| Error::Failed("P-256 key"))
    }

    /// PKCS#8 v1 DER of the key. Handle with care.
    pub fn to_pkcs8_der(d: &[u8; 32], point: &[u8; 65]) -> Result<Zeroizing<Vec<u8>>> {
        let der = ecdsa(d, point)?.to_pkcs8v1().map_err(|_| Error::Failed("PKCS#8"))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    /// Raw ECDH: the x coordinate of `d · peer`.
    pub fn ecdh(d: &[u8; 32], peer: &[u8; 65]) -> Result<Zeroizing<[u8; 32]>> {
        let sk = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, d)
            .map_err(|_| Error::Failed("P-256 private key"))?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &peer[..]);
        agreement::agree(&sk, peer, Error::Failed("ECDH"), |z| {
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(z);
            Ok(out)
        })
    }

    /// ECDSA-SHA-256 over `msg`, as the fixed 64-byte `r ‖ s` JOSE uses.
    pub fn sign(d: &[u8; 32], point: &[u8; 65], msg: &[u8]) -> Result<[u8; 64]> {
        let sig = ecdsa(d, point)?.sign(&SystemRandom::new(), msg).map_err(|_| Error::Failed("ECDSA sign"))?;
        sig.as_ref().try_into().map_err(|_| Error::Failed("ECDSA sign"))
    }

    /// Verifies a fixed 64-byte ECDSA-SHA-256 signature over `msg`.
    pub fn verify(point: &[u8; 65], msg: &[u8], sig: &[u8]) -> Result<()> {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point[..])
            .verify(msg, sig)
            .map_err(|_| Error::Failed("ECDSA signature"))
    }
}
