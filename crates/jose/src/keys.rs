//! Typed keys: RSA (2048–8192 bits), EC P-256 and oct.
//!
//! Private keys hold their material in buffers that zeroize on drop, and their
//! `Debug` shows only public facts. Constructors validate: a value of one of
//! these types is always a usable key.

use std::fmt;

use der::{Decode, Encode};
use primitives::rsa::{self, Padding};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::b64;
use crate::error::{Error, Result};
use crate::jwk::{Jwk, SecretString};

/// Smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const RSA_MAX_BITS: usize = 8192;
const RSA_SIZES: &str = "RSA keys must be 2048 to 8192 bits";

/// PEM label of a SubjectPublicKeyInfo.
const PEM_PUBLIC: &str = "PUBLIC KEY";
/// PEM label of a PKCS#8 private key.
const PEM_PRIVATE: &str = "PRIVATE KEY";

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

fn pem_decode(pem: &str) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let (label, der) = der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| Error::Pem(e.to_string()))?;
    Ok((label.to_string(), Zeroizing::new(der)))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding of DER cannot fail")
}

/// RFC 7638 thumbprint: SHA-256 over the canonical required members, base64url.
fn thumbprint(canonical_json: &str) -> String {
    b64::encode(primitives::sha256(canonical_json.as_bytes()))
}

// ---------------------------------------------------------------- oct

/// A symmetric key. Zeroized on drop; compared in constant time; never printed.
#[derive(Clone)]
pub struct OctKey {
    k: Zeroizing<Vec<u8>>,
    kid: Option<String>,
}

impl OctKey {
    /// Wraps key bytes (1 to 64 bytes).
    pub fn new(k: Vec<u8>, kid: Option<String>) -> Result<Self> {
        let k = Zeroizing::new(k);
        if k.is_empty() || k.len() > 64 {
            return Err(Error::KeySize { kind: "oct", bits: k.len() * 8, allowed: "oct keys must be 8 to 512 bits" });
        }
        Ok(Self { k, kid })
    }

    /// A fresh random key of `len` bytes.
    pub fn generate(len: usize, kid: Option<String>) -> Result<Self> {
        let mut k = Zeroizing::new(vec![0u8; len]);
        primitives::fill_random(&mut k).map_err(|_| Error::Crypto("random"))?;
        Self::new(std::mem::take(&mut *k), kid)
    }

    /// The key bytes. Handle with care.
    pub fn expose(&self) -> &[u8] {
        &self.k
    }

    /// Key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Sets the key id.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The JWK, including `k`.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "oct".into(),
            kid: self.kid.clone(),
            k: Some(SecretString::new(b64::encode(&*self.k))),
            ..Default::default()
        }
    }
}

impl PartialEq for OctKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.k.as_slice().ct_eq(other.k.as_slice())) && self.kid == other.kid
    }
}
impl Eq for OctKey {}

impl fmt::Debug for OctKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OctKey").field("bits", &(self.k.len() * 8)).field("kid", &self.kid).finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------- RSA

/// An RSA public key (2048 to 8192 bits).
#[derive(Clone)]
pub struct RsaPublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
    kid: Option<String>,
    key: rsa::PublicKey,
}

impl RsaPublicKey {
    /// From big-endian modulus and exponent.
    pub fn from_components(n: &[u8], e: &[u8], kid: Option<String>) -> Result<Self> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        // An empty (or all-zero) modulus is 0 bits, not an underflow.
        let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(Error::KeySize { kind: "RSA", bits, allowed: RSA_SIZES });
        }
        // A product of two odd primes is odd; AWS-LC does not check this for public keys.
        if n[n.len() - 1] & 1 == 0 {
            return Err(Error::InvalidKey("RSA"));
        }
        // Exponent: odd, at least 3, at most 33 bits (what AWS-LC accepts).
        if e.is_empty() || e.len() > 5 || e[e.len() - 1] & 1 == 0 || (e.len() == 1 && e[0] < 3) {
            return Err(Error::InvalidKey("RSA public exponent"));
        }
        let key = rsa::PublicKey::from_components(n, e).map_err(|_| Error::InvalidKey("RSA"))?;
        Ok(Self { n: n.to_vec(), e: e.to_vec(), kid, key })
    }

    /// From DER: SubjectPublicKeyInfo or PKCS#1 RSAPublicKey.
    pub fn from_der(der: &[u8], kid: Option<String>) -> Result<Self> {
        let (n, e) = rsa::PublicKey::parse_der(der).map_err(|_| Error::InvalidKey("RSA"))?;
        Self::from_components(&n, &e, kid)
    }

    /// From PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<Self> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            PEM_PUBLIC | "RSA PUBLIC KEY" => Self::from_der(&der, kid),
            other => Err(Error::Pem(format!(
                "expected an RSA public key, found `{}`",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.key.spki_der()
    }

    /// PEM (`PUBLIC KEY`).
    pub fn to_pem(&self) -> String {
        pem_encode(PEM_PUBLIC, &self.to_spki_der())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.bits()
    }

    /// Key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Sets the key id.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> String {
        thumbprint(&format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64::encode(&self.e), b64::encode(&self.n)))
    }

    /// The public JWK.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            kid: self.kid.clone(),
            n: Some(b64::encode(&self.n)),
            e: Some(b64::encode(&self.e)),
            ..Default::default()
        }
    }

    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (JOSE `RSA-OAEP`).
    pub(crate) fn encrypt_oaep(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.key.encrypt_oaep_sha1(plaintext).map_err(|_| Error::Crypto("RSA-OAEP encrypt"))
    }

    pub(crate) fn verify(&self, padding: Padding, msg: &[u8], sig: &[u8]) -> Result<()> {
        self.key.verify(padding, msg, sig).map_err(|_| Error::BadSignature)
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.e == other.e
    }
}
impl Eq for RsaPublicKey {}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPublicKey").field("bits", &self.bits()).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// An RSA private key (2048 to 8192 bits). Its PKCS#8 form zeroizes on drop.
///
/// Native only: in the browser (wasm32) every constructor fails with
/// [`Error::Unsupported`], as the client never holds one.
pub struct RsaPrivateKey {
    key: rsa::PrivateKey,
    public: RsaPublicKey,
}

fn unsupported_or(e: primitives::Error, otherwise: Error) -> Error {
    match e {
        primitives::Error::Unsupported(what) => Error::Unsupported(what),
        primitives::Error::Failed(_) => otherwise,
    }
}

impl RsaPrivateKey {
    /// A fresh key of 2048, 3072, 4096 or 8192 bits.
    pub fn generate(bits: usize, kid: Option<String>) -> Result<Self> {
        if !rsa::GENERATE_BITS.contains(&bits) {
            return Err(Error::KeySize { kind: "RSA", bits, allowed: "generate 2048, 3072, 4096 or 8192 bits" });
        }
        let key = rsa::PrivateKey::generate(bits).map_err(|e| unsupported_or(e, Error::Crypto("RSA keygen")))?;
        Self::from_key(key, kid)
    }

    fn from_key(key: rsa::PrivateKey, kid: Option<String>) -> Result<Self> {
        let bits = key.modulus_len() * 8;
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(Error::KeySize { kind: "RSA", bits, allowed: RSA_SIZES });
        }
        let (n, e) = key.public_components();
        let public = RsaPublicKey::from_components(&n, &e, kid)?;
        Ok(Self { key, public })
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8], kid: Option<String>) -> Result<Self> {
        let key = rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| unsupported_or(e, Error::InvalidKey("RSA")))?;
        Self::from_key(key, kid)
    }

    /// From PKCS#1 RSAPrivateKey DER.
    pub fn from_pkcs1_der(der: &[u8], kid: Option<String>) -> Result<Self> {
        let key = rsa::PrivateKey::from_pkcs1_der(der).map_err(|e| unsupported_or(e, Error::InvalidKey("RSA")))?;
        Self::from_key(key, kid)
    }

    /// From PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<Self> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            PEM_PRIVATE => Self::from_pkcs8_der(&der, kid),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&der, kid),
            other => Err(Error::Pem(format!(
                "expected an RSA private key, found `{}`",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// From JWK components (big-endian). All CRT members are required and checked.
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
        kid: Option<String>,
    ) -> Result<Self> {
        // Check the size first so that the error names it.
        RsaPublicKey::from_components(n, e, None)?;
        let key = rsa::PrivateKey::from_components(strip_leading_zeros(n), strip_leading_zeros(e), d, p, q, dp, dq, qi)
            .map_err(|e| unsupported_or(e, Error::InvalidKey("RSA")))?;
        Self::from_key(key, kid)
    }

    /// PKCS#8 DER. Handle with care.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.pkcs8_der().to_vec())
    }

    /// PEM (`PRIVATE KEY`, PKCS#8), zeroized on drop. Handle with care.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode(PEM_PRIVATE, self.key.pkcs8_der()))
    }

    /// The public half.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// Key id.
    pub fn kid(&self) -> Option<&str> {
        self.public.kid()
    }

    /// The private JWK, with all CRT members. Handle with care.
    pub fn to_jwk(&self) -> Jwk {
        let mut jwk = self.public.to_jwk();
        let pki = pkcs8::PrivateKeyInfo::from_der(self.key.pkcs8_der()).expect("own PKCS#8 parses");
        let k = pkcs1::RsaPrivateKey::from_der(pki.private_key).expect("own PKCS#1 parses");
        let s = |u: der::asn1::UintRef<'_>| Some(SecretString::new(b64::encode(u.as_bytes())));
        jwk.d = s(k.private_exponent);
        jwk.p = s(k.prime1);
        jwk.q = s(k.prime2);
        jwk.dp = s(k.exponent1);
        jwk.dq = s(k.exponent2);
        jwk.qi = s(k.coefficient);
        jwk
    }

    pub(crate) fn sign(&self, padding: Padding, msg: &[u8]) -> Result<Vec<u8>> {
        self.key.sign(padding, msg).map_err(|_| Error::Crypto("RSA sign"))
    }

    /// RSA-OAEP decryption; `None` on any failure (callers must not reveal why).
    pub(crate) fn decrypt_oaep(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.key.decrypt_oaep_sha1(ciphertext)
    }
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPrivateKey")
            .field("bits", &self.public.bits())
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------- EC P-256

/// A P-256 public key: a validated point on the curve.
#[derive(Clone, PartialEq, Eq)]
pub struct EcPublicKey {
    point: [u8; 65],
    kid: Option<String>,
}

/// id-ecPublicKey.
const OID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1 / secp256r1.
const OID_P256: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

impl EcPublicKey {
    /// From the JWK `x` and `y` coordinates (32 bytes each).
    pub fn from_coordinates(x: &[u8], y: &[u8], kid: Option<String>) -> Result<Self> {
        if x.len() != 32 || y.len() != 32 {
            return Err(Error::InvalidKey("P-256 (coordinates must be 32 bytes)"));
        }
        let mut point = [0u8; 65];
        point[0] = 4;
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        Self::from_sec1(&point, kid)
    }

    /// From an uncompressed SEC1 point (65 bytes, leading 0x04).
    pub fn from_sec1(bytes: &[u8], kid: Option<String>) -> Result<Self> {
        let point: [u8; 65] = bytes.try_into().map_err(|_| Error::InvalidKey("P-256 (point must be 65 bytes)"))?;
        if point[0] != 4 {
            return Err(Error::InvalidKey("P-256 (point must be uncompressed)"));
        }
        if !primitives::p256::check_point(&point) {
            return Err(Error::InvalidKey("P-256 (point not on the curve)"));
        }
        Ok(Self { point, kid })
    }

    /// From SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8], kid: Option<String>) -> Result<Self> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|_| Error::InvalidKey("P-256 SPKI"))?;
        let params = spki.algorithm.parameters_oid().ok();
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY || params != Some(OID_P256) {
            return Err(Error::InvalidKey("P-256 SPKI (not an id-ecPublicKey on P-256)"));
        }
        let bits = spki.subject_public_key.as_bytes().ok_or(Error::InvalidKey("P-256 SPKI"))?;
        Self::from_sec1(bits, kid)
    }

    /// From PEM (`PUBLIC KEY`).
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<Self> {
        let (label, der) = pem_decode(pem)?;
        if label != PEM_PUBLIC {
            return Err(Error::Pem(format!(
                "expected an EC public key, found `{}`",
                label.chars().take(32).collect::<String>()
            )));
        }
        Self::from_spki_der(&der, kid)
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let spki = spki::SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifier {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some(der::asn1::AnyRef::from(&OID_P256)),
            },
            subject_public_key: der::asn1::BitStringRef::from_bytes(&self.point).expect("65-byte bit string"),
        };
        spki.to_der().expect("SPKI encodes")
    }

    /// PEM (`PUBLIC KEY`).
    pub fn to_pem(&self) -> String {
        pem_encode(PEM_PUBLIC, &self.to_spki_der())
    }

    /// The uncompressed SEC1 point.
    pub fn sec1(&self) -> &[u8; 65] {
        &self.point
    }

    /// Key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Sets the key id.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The public JWK.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "EC".into(),
            kid: self.kid.clone(),
            crv: Some("P-256".into()),
            x: Some(b64::encode(&self.point[1..33])),
            y: Some(b64::encode(&self.point[33..])),
            ..Default::default()
        }
    }

    /// RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> String {
        let j = self.to_jwk();
        thumbprint(&format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j.x.unwrap_or_default(),
            j.y.unwrap_or_default()
        ))
    }

    pub(crate) fn verify_es256(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        primitives::p256::verify(&self.point, msg, sig).map_err(|_| Error::BadSignature)
    }
}

impl fmt::Debug for EcPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcPublicKey").field("crv", &"P-256").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// A P-256 private key. The scalar zeroizes on drop.
#[derive(Clone)]
pub struct EcPrivateKey {
    d: Zeroizing<[u8; 32]>,
    public: EcPublicKey,
}

impl EcPrivateKey {
    /// A fresh random key.
    pub fn generate(kid: Option<String>) -> Result<Self> {
        let (d, point) = primitives::p256::generate().map_err(|_| Error::Crypto("P-256 keygen"))?;
        Ok(Self { d, public: EcPublicKey::from_sec1(&point, kid)? })
    }

    /// From the 32-byte scalar; if `expected` is given, the derived public key must equal it.
    pub fn from_scalar(d: &[u8], expected: Option<&EcPublicKey>, kid: Option<String>) -> Result<Self> {
        if d.len() != 32 {
            return Err(Error::InvalidKey("P-256 (private scalar must be 32 bytes)"));
        }
        let point = primitives::p256::public_from_scalar(d).map_err(|_| Error::InvalidKey("P-256"))?;
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar.copy_from_slice(d);
        let key = Self { d: scalar, public: EcPublicKey::from_sec1(&point, kid)? };
        if let Some(exp) = expected {
            if exp.point != key.public.point {
                return Err(Error::InvalidKey("P-256 (d does not match x, y)"));
            }
        }
        Ok(key)
    }

    /// From DER: PKCS#8 or SEC1 (RFC 5915).
    pub fn from_der(der: &[u8], kid: Option<String>) -> Result<Self> {
        let d = primitives::p256::scalar_from_der(der).map_err(|_| Error::InvalidKey("P-256"))?;
        Self::from_scalar(&d[..], None, kid)
    }

    /// From PEM (`PRIVATE KEY` or `EC PRIVATE KEY`).
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<Self> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            PEM_PRIVATE | "EC PRIVATE KEY" => Self::from_der(&der, kid),
            other => Err(Error::Pem(format!(
                "expected an EC private key, found `{}`",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// PKCS#8 DER. Handle with care.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        primitives::p256::to_pkcs8_der(&self.d, &self.public.point).expect("valid key encodes")
    }

    /// PEM (`PRIVATE KEY`, PKCS#8), zeroized on drop. Handle with care.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode(PEM_PRIVATE, &self.to_pkcs8_der()))
    }

    /// The public half.
    pub fn public_key(&self) -> &EcPublicKey {
        &self.public
    }

    /// Key id.
    pub fn kid(&self) -> Option<&str> {
        self.public.kid()
    }

    /// The private JWK. Handle with care.
    pub fn to_jwk(&self) -> Jwk {
        let mut jwk = self.public.to_jwk();
        // By reference: a by-value copy of the scalar would escape zeroization.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let d = b64::encode(&*self.d);
        jwk.d = Some(SecretString::new(d));
        jwk
    }

    /// Raw ECDH: the x coordinate of `d · peer` (32 bytes, zeroized on drop).
    pub fn ecdh(&self, peer: &EcPublicKey) -> Result<Zeroizing<[u8; 32]>> {
        primitives::p256::ecdh(&self.d, &peer.point).map_err(|_| Error::Crypto("ECDH"))
    }

    pub(crate) fn sign_es256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let sig = primitives::p256::sign(&self.d, &self.public.point, msg).map_err(|_| Error::Crypto("ECDSA sign"))?;
        Ok(sig.to_vec())
    }
}

impl fmt::Debug for EcPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcPrivateKey").field("crv", &"P-256").field("kid", &self.public.kid).finish_non_exhaustive()
    }
}
