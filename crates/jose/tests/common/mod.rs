//! Fixtures shared by the integration tests.
//!
//! The PEM files under `tests/fixtures/` were generated once with OpenSSL 3.0
//! (`openssl genrsa -traditional 2048`, `openssl ecparam -name prime256v1 -genkey -noout`,
//! then `openssl pkey` for the PKCS#8 / SPKI forms). They are test keys only.
#![allow(dead_code)]

use jose::{EcPrivateKey, EcPublicKey, Jwk, OctKey, RsaPrivateKey, RsaPublicKey};

/// RSA-2048, PKCS#1 (`RSA PRIVATE KEY`).
pub const RSA_PKCS1_PEM: &str = include_str!("../fixtures/rsa2048_pkcs1.pem");
/// The same key, PKCS#8 (`PRIVATE KEY`).
pub const RSA_PKCS8_PEM: &str = include_str!("../fixtures/rsa2048_pkcs8.pem");
/// Its public half, SPKI (`PUBLIC KEY`).
pub const RSA_SPKI_PEM: &str = include_str!("../fixtures/rsa2048_spki.pem");
/// A second, unrelated RSA-2048 key (PKCS#8).
pub const RSA_OTHER_PKCS8_PEM: &str = include_str!("../fixtures/rsa2048_other_pkcs8.pem");

/// P-256 key A, SEC1 (`EC PRIVATE KEY`).
pub const EC_A_SEC1_PEM: &str = include_str!("../fixtures/p256_a_sec1.pem");
/// Key A, PKCS#8.
pub const EC_A_PKCS8_PEM: &str = include_str!("../fixtures/p256_a_pkcs8.pem");
/// Key A public, SPKI.
pub const EC_A_SPKI_PEM: &str = include_str!("../fixtures/p256_a_spki.pem");
/// P-256 key B, SEC1.
pub const EC_B_SEC1_PEM: &str = include_str!("../fixtures/p256_b_sec1.pem");
/// Key B public, SPKI.
pub const EC_B_SPKI_PEM: &str = include_str!("../fixtures/p256_b_spki.pem");

/// `openssl pkeyutl -derive -inkey p256_a_sec1.pem -peerkey p256_b_spki.pem | xxd -p`
pub const ECDH_AB_Z_HEX: &str = "0ef0cd7e5ba292be3f23f1288056af08ae07c9f9ea5c415f83735de58b389eaa";
/// `openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexkey:<Z> HKDF` (no salt, no info).
pub const ECDH_AB_HKDF_HEX: &str = "064d9a9a07d7080aa350697d759a4f89a7e59ae0e57b354016cdfa4d48610f4f";

// ------------------------------------------------------------ RFC 7515 Appendix A

/// RFC 7515 A.2.1: the example RSA key (2048 bits), as a private JWK.
pub const RFC7515_A2_JWK: &str = r#"{"kty":"RSA",
 "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
 "e":"AQAB",
 "d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
 "p":"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
 "q":"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
 "dp":"BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
 "dq":"h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
 "qi":"IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U"}"#;

/// RFC 7515 A.2.2 / A.3.2: the JWS payload, base64url (the JSON has CRLFs).
pub const RFC7515_PAYLOAD_B64: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
/// The decoded payload.
pub const RFC7515_PAYLOAD: &[u8] =
    b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

/// RFC 7515 A.2.2: the published RS256 JWS.
pub const RFC7515_A2_JWS: &str = concat!(
    "eyJhbGciOiJSUzI1NiJ9.",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7",
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4",
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K",
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv",
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB",
    "p0igcN_IoypGlUPQGe77Rw"
);

/// RFC 7515 A.3.1: the example P-256 key, as a private JWK.
pub const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256",
 "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
 "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
 "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;

/// RFC 7515 A.3.2: the published ES256 JWS.
pub const RFC7515_A3_JWS: &str = concat!(
    "eyJhbGciOiJFUzI1NiJ9.",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.",
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
);

// ------------------------------------------------------------ key helpers

pub fn rsa() -> RsaPrivateKey {
    RsaPrivateKey::from_pem(RSA_PKCS8_PEM, Some("rsa-1".into())).expect("fixture RSA key")
}
pub fn rsa_other() -> RsaPrivateKey {
    RsaPrivateKey::from_pem(RSA_OTHER_PKCS8_PEM, Some("rsa-2".into())).expect("fixture RSA key 2")
}
pub fn rsa_public() -> RsaPublicKey {
    RsaPublicKey::from_pem(RSA_SPKI_PEM, Some("rsa-1".into())).expect("fixture RSA public key")
}
pub fn ec_a() -> EcPrivateKey {
    EcPrivateKey::from_pem(EC_A_SEC1_PEM, Some("ec-a".into())).expect("fixture EC key A")
}
pub fn ec_b() -> EcPrivateKey {
    EcPrivateKey::from_pem(EC_B_SEC1_PEM, Some("ec-b".into())).expect("fixture EC key B")
}
pub fn ec_b_public() -> EcPublicKey {
    EcPublicKey::from_pem(EC_B_SPKI_PEM, Some("ec-b".into())).expect("fixture EC public key B")
}
/// A fixed 256-bit oct key (bytes 0..32).
pub fn oct() -> OctKey {
    OctKey::new((0u8..32).collect(), Some("oct-1".into())).expect("fixture oct key")
}
pub fn jwk(json: &str) -> Jwk {
    Jwk::from_json(json.as_bytes()).expect("fixture JWK parses")
}

// ------------------------------------------------------------ encoding helpers

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    jose::b64::encode(bytes)
}
pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("test base64")
}
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits a compact serialization into owned segments.
pub fn segments(compact: &str) -> Vec<String> {
    compact.split('.').map(str::to_owned).collect()
}
/// Joins segments with `.`.
pub fn join<S: AsRef<str>>(parts: &[S]) -> String {
    parts.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(".")
}
/// Replaces segment `i` of a compact serialization.
pub fn with_segment(compact: &str, i: usize, value: &str) -> String {
    let mut parts = segments(compact);
    parts[i] = value.to_owned();
    join(&parts)
}
/// Changes the first base64url character of segment `i` to a different one.
/// The first character of a 4-character group carries no padding bits, so the
/// result is still canonical base64url and decodes to different bytes.
pub fn flip_first_char(compact: &str, i: usize) -> String {
    let mut parts = segments(compact);
    let seg = &mut parts[i];
    let c = seg.remove(0);
    seg.insert(0, if c == 'A' { 'B' } else { 'A' });
    join(&parts)
}
