//! The browser's backend: RustCrypto. Compiled natively too, in tests, so
//! that it answers the same known-answer tests as aws-lc-rs and each
//! backend checks the other's output.

use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::KeyInit as _;
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result, NONCE_LEN, TAG_LEN};

pub const NAME: &str = "RustCrypto";

/// Fills `buf` from the platform's CSPRNG (`crypto.getRandomValues` in a browser).
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    OsRng.try_fill_bytes(buf).map_err(|_| Error::Failed("random"))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HKDF-SHA-256 (RFC 5869) of `ikm` into `out` (at most 255 × 32 bytes).
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, out).map_err(|_| Error::Failed("HKDF"))
}

/// An AES-256-GCM key, its schedule computed once.
pub struct Aes256Gcm(aes_gcm::Aes256Gcm);

impl Aes256Gcm {
    /// From 32 key bytes.
    pub fn new(key: &[u8]) -> Result<Self> {
        aes_gcm::Aes256Gcm::new_from_slice(key).map(Self).map_err(|_| Error::Failed("AES-256 key"))
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place_detached(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        self.0
            .encrypt_in_place_detached(nonce.into(), aad, buf)
            .map(Into::into)
            .map_err(|_| Error::Failed("AES-GCM seal"))
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
        self.0.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()).map_err(|_| Error::Failed("AES-GCM open"))
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
        if out.len() != ct.len() {
            return Err(Error::Failed("AES-GCM open"));
        }
        out.copy_from_slice(ct);
        self.open_in_place_detached(nonce, aad, out, tag)
    }
}

/// An HMAC-SHA-256 key, its schedule computed once.
pub struct HmacSha256(hmac::Hmac<Sha256>);

impl HmacSha256 {
    /// From key bytes of any length.
    pub fn new(key: &[u8]) -> Self {
        Self(<hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    /// The MAC of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut m = self.0.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

pub mod rsa {
    use der::{Decode as _, Encode as _};
    use rand_core::OsRng;
    use rsa::traits::PublicKeyParts as _;
    use rsa::BigUint;
    use sha2::{Digest as _, Sha256};
    use zeroize::Zeroizing;

    use crate::rsa::Padding;
    use crate::{Error, Result};

    /// rsaEncryption.
    const OID_RSA: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

    /// An RSA public key.
    #[derive(Clone)]
    pub struct PublicKey {
        n: Vec<u8>,
        e: Vec<u8>,
        key: rsa::RsaPublicKey,
    }

    impl PublicKey {
        /// From big-endian modulus and exponent without leading zeros.
        pub fn from_components(n: &[u8], e: &[u8]) -> Result<Self> {
            let key = rsa::RsaPublicKey::new_with_max_size(
                BigUint::from_bytes_be(n),
                BigUint::from_bytes_be(e),
                crate::rsa::GENERATE_BITS[3],
            )
            .map_err(|_| Error::Failed("RSA public key"))?;
            Ok(Self { n: n.to_vec(), e: e.to_vec(), key })
        }

        /// The modulus and exponent of a SubjectPublicKeyInfo or PKCS#1 RSAPublicKey.
        pub fn parse_der(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
            let bad = |_| Error::Failed("RSA public key");
            let pkcs1_der = match spki::SubjectPublicKeyInfoRef::from_der(der) {
                Ok(spki) if spki.algorithm.oid == OID_RSA => spki.subject_public_key.raw_bytes().to_vec(),
                Ok(_) => return Err(Error::Failed("RSA public key")),
                Err(_) => der.to_vec(),
            };
            let pk = pkcs1::RsaPublicKey::from_der(&pkcs1_der).map_err(bad)?;
            let strip = |b: &[u8]| b[b.iter().position(|&x| x != 0).unwrap_or(b.len())..].to_vec();
            Ok((strip(pk.modulus.as_bytes()), strip(pk.public_exponent.as_bytes())))
        }

        /// SubjectPublicKeyInfo DER (rsaEncryption with NULL parameters).
        pub fn spki_der(&self) -> Vec<u8> {
            let pkcs1 = pkcs1::RsaPublicKey {
                modulus: der::asn1::UintRef::new(&self.n).expect("modulus encodes"),
                public_exponent: der::asn1::UintRef::new(&self.e).expect("exponent encodes"),
            }
            .to_der()
            .expect("PKCS#1 encodes");
            spki::SubjectPublicKeyInfoRef {
                algorithm: spki::AlgorithmIdentifier { oid: OID_RSA, parameters: Some(der::asn1::AnyRef::NULL) },
                subject_public_key: der::asn1::BitStringRef::from_bytes(&pkcs1).expect("bit string"),
            }
            .to_der()
            .expect("SPKI encodes")
        }

        /// Modulus size in bits.
        pub fn bits(&self) -> usize {
            self.key.n().bits()
        }

        /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (JOSE `RSA-OAEP`).
        pub fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
            self.key
                .encrypt(&mut OsRng, rsa::Oaep::new::<sha1::Sha1>(), plaintext)
                .map_err(|_| Error::Failed("RSA-OAEP encrypt"))
        }

        /// Verifies a signature over `msg` (hashed here with SHA-256).
        pub fn verify(&self, padding: Padding, msg: &[u8], sig: &[u8]) -> Result<()> {
            let hashed = Sha256::digest(msg);
            let r = match padding {
                Padding::Pkcs1Sha256 => self.key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &hashed, sig),
                Padding::PssSha256 => self.key.verify(rsa::Pss::new::<Sha256>(), &hashed, sig),
            };
            r.map_err(|_| Error::Failed("RSA signature"))
        }
    }

    /// No RSA private keys in the browser: a type with no values, whose
    /// constructors all fail. (A client only encrypts to and verifies the
    /// KMS's key; RustCrypto's RSA private operations are not constant-time.)
    pub enum PrivateKey {}

    const UNSUPPORTED: Error = Error::Unsupported("an RSA private key");

    impl PrivateKey {
        /// Always [`Error::Unsupported`].
        pub fn generate(_bits: usize) -> Result<Self> {
            Err(UNSUPPORTED)
        }

        /// Always [`Error::Unsupported`].
        pub fn from_pkcs8_der(_der: &[u8]) -> Result<Self> {
            Err(UNSUPPORTED)
        }

        /// Always [`Error::Unsupported`].
        pub fn from_pkcs1_der(_der: &[u8]) -> Result<Self> {
            Err(UNSUPPORTED)
        }

        /// Always [`Error::Unsupported`].
        #[allow(clippy::too_many_arguments)]
        pub fn from_components(
            _n: &[u8],
            _e: &[u8],
            _d: &[u8],
            _p: &[u8],
            _q: &[u8],
            _dp: &[u8],
            _dq: &[u8],
            _qi: &[u8],
        ) -> Result<Self> {
            Err(UNSUPPORTED)
        }

        /// Never called: no value exists.
        pub fn pkcs8_der(&self) -> &[u8] {
            match *self {}
        }

        /// Never called: no value exists.
        pub fn modulus_len(&self) -> usize {
            match *self {}
        }

        /// Never called: no value exists.
        pub fn public_components(&self) -> (Vec<u8>, Vec<u8>) {
            match *self {}
        }

        /// Never called: no value exists.
        pub fn sign(&self, _padding: Padding, _msg: &[u8]) -> Result<Vec<u8>> {
            match *self {}
        }

        /// Never called: no value exists.
        pub fn decrypt_oaep_sha1(&self, _ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
            match *self {}
        }
    }
}

pub mod p256 {
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
    use rand_core::OsRng;
    use zeroize::Zeroizing;

    use crate::{Error, Result};

    fn point_of(sk: &p256::SecretKey) -> [u8; 65] {
        sk.public_key().to_encoded_point(false).as_bytes().try_into().expect("an uncompressed point is 65 bytes")
    }

    fn secret(d: &[u8]) -> Result<p256::SecretKey> {
        if d.len() != 32 {
            return Err(Error::Failed("P-256 private key"));
        }
        p256::SecretKey::from_slice(d).map_err(|_| Error::Failed("P-256 private key"))
    }

    /// `d`'s key, if `point` is its public point.
    fn matching(d: &[u8; 32], point: &[u8; 65]) -> Result<p256::SecretKey> {
        let sk = secret(d)?;
        if &point_of(&sk) != point {
            return Err(Error::Failed("P-256 key"));
        }
        Ok(sk)
    }

    /// Whether `point` is an uncompressed point on the curve (not the identity).
    pub fn check_point(point: &[u8; 65]) -> bool {
        point[0] == 4 && p256::PublicKey::from_sec1_bytes(point).is_ok()
    }

    /// A fresh key: the scalar and its public point.
    pub fn generate() -> Result<(Zeroizing<[u8; 32]>, [u8; 65])> {
        let sk = p256::SecretKey::random(&mut OsRng);
        Ok((Zeroizing::new(sk.to_bytes().into()), point_of(&sk)))
    }

    /// The public point of a 32-byte scalar (which must be in 1..n).
    pub fn public_from_scalar(d: &[u8]) -> Result<[u8; 65]> {
        Ok(point_of(&secret(d)?))
    }

    /// The scalar of a PKCS#8 or SEC1 (RFC 5915) private key.
    pub fn scalar_from_der(der: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let sk = p256::SecretKey::from_pkcs8_der(der)
            .or_else(|_| p256::SecretKey::from_sec1_der(der))
            .map_err(|_| Error::Failed("P-256 private key"))?;
        Ok(Zeroizing::new(sk.to_bytes().into()))
    }

    /// PKCS#8 v1 DER of the key. Handle with care.
    pub fn to_pkcs8_der(d: &[u8; 32], point: &[u8; 65]) -> Result<Zeroizing<Vec<u8>>> {
        let doc = matching(d, point)?.to_pkcs8_der().map_err(|_| Error::Failed("PKCS#8"))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// Raw ECDH: the x coordinate of `d · peer`.
    pub fn ecdh(d: &[u8; 32], peer: &[u8; 65]) -> Result<Zeroizing<[u8; 32]>> {
        let sk = secret(d)?;
        let pk = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| Error::Failed("ECDH"))?;
        let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
        Ok(Zeroizing::new((*shared.raw_secret_bytes()).into()))
    }

    /// ECDSA-SHA-256 over `msg`, as the fixed 64-byte `r ‖ s` JOSE uses.
    pub fn sign(d: &[u8; 32], point: &[u8; 65], msg: &[u8]) -> Result<[u8; 64]> {
        let key = p256::ecdsa::SigningKey::from(matching(d, point)?);
        let sig: p256::ecdsa::Signature = key.sign(msg);
        Ok(sig.to_bytes().into())
    }

    /// Verifies a fixed 64-byte ECDSA-SHA-256 signature over `msg`.
    pub fn verify(point: &[u8; 65], msg: &[u8], sig: &[u8]) -> Result<()> {
        let bad = |_| Error::Failed("ECDSA signature");
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad)?;
        let sig = p256::ecdsa::Signature::from_slice(sig).map_err(bad)?;
        key.verify(msg, &sig).map_err(bad)
    }
}
