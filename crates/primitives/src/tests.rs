//! Known answers for the backend this build uses, and (natively) for the
//! RustCrypto backend beside it, plus cross-checks: what one backend seals,
//! signs or derives, the other opens, verifies or derives alike.

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
    v.try_into().unwrap()
}

// RFC 6979 A.2.5: the P-256 key and its deterministic signature of "sample" with SHA-256.
const RFC6979_D: &str = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";
const RFC6979_UX: &str = "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6";
const RFC6979_UY: &str = "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299";
const RFC6979_R: &str = "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716";
const RFC6979_S: &str = "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8";
/// The order of P-256.
const P256_N: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";

fn rfc6979_point() -> [u8; 65] {
    let mut p = vec![4u8];
    p.extend(hex(RFC6979_UX));
    p.extend(hex(RFC6979_UY));
    arr(&p)
}

/// `n - s` for 32-byte big-endian values: the other valid `s` of a signature.
fn negate_s(s: &[u8]) -> Vec<u8> {
    let n = hex(P256_N);
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut v = n[i] as i16 - s[i] as i16 - borrow;
        borrow = i16::from(v < 0);
        if v < 0 {
            v += 256;
        }
        out[i] = v as u8;
    }
    out
}

/// The same known-answer tests, for one backend module.
macro_rules! known_answers {
    ($name:ident, $b:path) => {
        mod $name {
            use super::*;
            use $b as b;

            #[test]
            fn random_bytes_differ() {
                let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
                b::fill_random(&mut x).unwrap();
                b::fill_random(&mut y).unwrap();
                assert_ne!(x, [0u8; 32]);
                assert_ne!(x, y);
            }

            #[test]
            fn sha256_abc() {
                assert_eq!(b::sha256(b"abc").to_vec(), hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
            }

            #[test]
            fn hkdf_rfc5869_case_1() {
                let mut okm = [0u8; 42];
                b::hkdf_sha256(&hex("000102030405060708090a0b0c"), &[0x0b; 22], &hex("f0f1f2f3f4f5f6f7f8f9"), &mut okm)
                    .unwrap();
                assert_eq!(
                    okm.to_vec(),
                    hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
                );
                // More than 255 blocks is refused, not truncated.
                assert!(b::hkdf_sha256(b"", b"k", b"", &mut vec![0u8; 255 * 32 + 1]).is_err());
            }

            #[test]
            fn hmac_rfc4231_case_2_in_parts() {
                let k = b::HmacSha256::new(b"Jefe");
                let want = hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
                assert_eq!(k.mac(&[b"what do ya want for nothing?"]).to_vec(), want);
                assert_eq!(k.mac(&[b"what do ya ", b"want for nothing?"]).to_vec(), want);
                assert_ne!(k.mac(&[b"what do ya want for nothing!"]).to_vec(), want);
            }

            #[test]
            fn aes_gcm_test_case_16() {
                // The GCM specification's test case 16: 256-bit key, 60 bytes, AAD.
                let key = b::Aes256Gcm::new(&hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")).unwrap();
                let iv: [u8; 12] = arr(&hex("cafebabefacedbaddecaf888"));
                let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
                let pt = hex(
                    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
                     1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                );
                let ct = hex(
                    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
                     8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                );
                let tag: [u8; 16] = arr(&hex("76fc6ece0f4e1768cddf8853bb2d551b"));
                let mut buf = pt.clone();
                assert_eq!(key.seal_in_place_detached(&iv, &aad, &mut buf).unwrap(), tag);
                assert_eq!(buf, ct);
                let mut out = vec![0u8; ct.len()];
                key.open_detached_into(&iv, &aad, &ct, &tag, &mut out).unwrap();
                assert_eq!(out, pt);
                assert!(key.open_detached_into(&iv, b"", &ct, &tag, &mut out).is_err());
                key.open_in_place_detached(&iv, &aad, &mut buf, &tag).unwrap();
                assert_eq!(buf, pt);
                // A flipped bit anywhere fails: ciphertext, AAD, tag.
                let mut bad = ct.clone();
                bad[0] ^= 1;
                assert!(key.open_in_place_detached(&iv, &aad, &mut bad, &tag).is_err());
                assert!(key.open_in_place_detached(&iv, b"other", &mut ct.clone(), &tag).is_err());
                let mut t2 = tag;
                t2[15] ^= 0x80;
                assert!(key.open_in_place_detached(&iv, &aad, &mut ct.clone(), &t2).is_err());
                assert!(b::Aes256Gcm::new(&[0u8; 16]).is_err(), "AES-128 keys are refused");
            }

            #[test]
            fn p256_rfc6979_key_and_signature() {
                let d: [u8; 32] = arr(&hex(RFC6979_D));
                let point = rfc6979_point();
                assert_eq!(b::p256::public_from_scalar(&d).unwrap(), point);
                assert!(b::p256::check_point(&point));
                let sig = [hex(RFC6979_R), hex(RFC6979_S)].concat();
                b::p256::verify(&point, b"sample", &sig).unwrap();
                assert!(b::p256::verify(&point, b"samplf", &sig).is_err());
                // Our own signatures verify (aws-lc's are randomized, RustCrypto's deterministic).
                let mine = b::p256::sign(&d, &point, b"sample").unwrap();
                b::p256::verify(&point, b"sample", &mine).unwrap();
                // A scalar and a point that do not belong together are refused.
                let other = b::p256::generate().unwrap().1;
                assert!(b::p256::sign(&d, &other, b"x").is_err());
                assert!(b::p256::to_pkcs8_der(&d, &other).is_err());
            }

            #[test]
            fn p256_refuses_bad_points_and_scalars() {
                let mut off = rfc6979_point();
                off[64] ^= 1;
                assert!(!b::p256::check_point(&off), "a point off the curve");
                let mut compressed = rfc6979_point();
                compressed[0] = 2;
                assert!(!b::p256::check_point(&compressed));
                let mut zero = [0u8; 65];
                zero[0] = 4;
                assert!(!b::p256::check_point(&zero));
                assert!(b::p256::public_from_scalar(&[0u8; 32]).is_err(), "zero scalar");
                assert!(b::p256::public_from_scalar(&hex(P256_N)).is_err(), "scalar = n");
                assert!(b::p256::scalar_from_der(b"\x30\x03\x02\x01\x00").is_err());
            }

            #[test]
            fn p256_pkcs8_round_trip_and_ecdh() {
                let (d1, p1) = b::p256::generate().unwrap();
                let (d2, p2) = b::p256::generate().unwrap();
                let der = b::p256::to_pkcs8_der(&d1, &p1).unwrap();
                assert_eq!(*b::p256::scalar_from_der(&der).unwrap(), *d1);
                assert_eq!(*b::p256::ecdh(&d1, &p2).unwrap(), *b::p256::ecdh(&d2, &p1).unwrap());
            }
        }
    };
}

known_answers!(this_backend, crate::backend);
#[cfg(not(target_arch = "wasm32"))]
known_answers!(rustcrypto_backend, crate::rustcrypto);

#[test]
fn backend_is_the_targets() {
    let want = if cfg!(target_arch = "wasm32") { "RustCrypto" } else { "aws-lc-rs" };
    assert_eq!(crate::BACKEND, want);
}

/// aws-lc-rs against RustCrypto, natively.
#[cfg(not(target_arch = "wasm32"))]
mod cross {
    use super::*;
    use crate::backend as aws;
    use crate::rsa::Padding;
    use crate::rustcrypto as rc;

    #[test]
    fn aes_gcm_both_ways() {
        let key = [7u8; 32];
        let iv = [9u8; 12];
        let (a, r) = (aws::Aes256Gcm::new(&key).unwrap(), rc::Aes256Gcm::new(&key).unwrap());
        let pt = b"segment of a file, or a JWE's content".to_vec();
        let mut buf = pt.clone();
        let tag = r.seal_in_place_detached(&iv, b"hdr", &mut buf).unwrap();
        a.open_in_place_detached(&iv, b"hdr", &mut buf, &tag).unwrap();
        assert_eq!(buf, pt);
        let tag = a.seal_in_place_detached(&iv, b"", &mut buf).unwrap();
        r.open_in_place_detached(&iv, b"", &mut buf, &tag).unwrap();
        assert_eq!(buf, pt);
    }

    #[test]
    fn p256_signatures_and_keys_both_ways() {
        let (d, p) = aws::p256::generate().unwrap();
        assert_eq!(rc::p256::public_from_scalar(&*d).unwrap(), p);
        let sig = aws::p256::sign(&d, &p, b"m").unwrap();
        rc::p256::verify(&p, b"m", &sig).unwrap();
        let sig = rc::p256::sign(&d, &p, b"m").unwrap();
        aws::p256::verify(&p, b"m", &sig).unwrap();
        // The other `s` of a signature: both backends answer alike.
        let mut high = sig.to_vec();
        let s = negate_s(&sig[32..]);
        high[32..].copy_from_slice(&s);
        assert_eq!(aws::p256::verify(&p, b"m", &high).is_ok(), rc::p256::verify(&p, b"m", &high).is_ok());
        // PKCS#8 of one parses in the other.
        assert_eq!(*rc::p256::scalar_from_der(&aws::p256::to_pkcs8_der(&d, &p).unwrap()).unwrap(), *d);
        assert_eq!(*aws::p256::scalar_from_der(&rc::p256::to_pkcs8_der(&d, &p).unwrap()).unwrap(), *d);
        let (d2, p2) = rc::p256::generate().unwrap();
        assert_eq!(*aws::p256::ecdh(&d, &p2).unwrap(), *rc::p256::ecdh(&d2, &p).unwrap());
        let mut off = p;
        off[40] ^= 4;
        assert_eq!(aws::p256::check_point(&off), rc::p256::check_point(&off));
    }

    #[test]
    fn rsa_public_operations_against_an_aws_lc_private_key() {
        let sk = aws::rsa::PrivateKey::generate(2048).unwrap();
        let (n, e) = sk.public_components();
        let (a, r) = (aws::rsa::PublicKey::from_components(&n, &e).unwrap(), rc::rsa::PublicKey::from_components(&n, &e).unwrap());
        assert_eq!(a.bits(), r.bits());
        assert_eq!(a.spki_der(), r.spki_der(), "the same SubjectPublicKeyInfo bytes");
        assert_eq!(rc::rsa::PublicKey::parse_der(&a.spki_der()).unwrap(), (n.clone(), e.clone()));
        assert_eq!(aws::rsa::PublicKey::parse_der(&r.spki_der()).unwrap(), (n.clone(), e.clone()));

        // RSA-OAEP from the browser's side opens at the KMS's.
        let ct = r.encrypt_oaep_sha1(b"a content key").unwrap();
        assert_eq!(&sk.decrypt_oaep_sha1(&ct).unwrap()[..], b"a content key");
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert!(sk.decrypt_oaep_sha1(&bad).is_none());

        // The KMS's signatures verify in the browser; tampered ones do not.
        for padding in [Padding::Pkcs1Sha256, Padding::PssSha256] {
            let sig = sk.sign(padding, b"answer").unwrap();
            r.verify(padding, b"answer", &sig).unwrap();
            a.verify(padding, b"answer", &sig).unwrap();
            assert!(r.verify(padding, b"answeR", &sig).is_err());
            let other = if padding == Padding::Pkcs1Sha256 { Padding::PssSha256 } else { Padding::Pkcs1Sha256 };
            assert!(r.verify(other, b"answer", &sig).is_err(), "{padding:?} is not {other:?}");
        }
    }

    #[test]
    fn rsa_private_keys_do_not_exist_in_the_browser() {
        assert!(matches!(rc::rsa::PrivateKey::generate(2048), Err(crate::Error::Unsupported(_))));
        let sk = aws::rsa::PrivateKey::generate(2048).unwrap();
        assert!(matches!(rc::rsa::PrivateKey::from_pkcs8_der(sk.pkcs8_der()), Err(crate::Error::Unsupported(_))));
    }
}
