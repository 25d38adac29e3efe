//! Cross-check of the format against an independent AES-GCM implementation
//! (RustCrypto `aes-gcm`), following only the layout in the crate docs:
//!
//! header = "CSFE" ‖ 0x01 ‖ S (u32 BE) ‖ P (7 bytes); segment i = AES-256-GCM(K,
//! nonce = P ‖ i (u32 BE) ‖ final flag, aad = header, plaintext) ‖ 16-byte tag.

mod common;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use common::{data, decrypt_writer, encrypt};
use filecrypt::{Decryptor, FileKey};

fn nonce(prefix: &[u8], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Parses and decrypts a stream from the documented layout alone.
fn reference_decrypt(key: &[u8; 32], stream: &[u8]) -> Result<Vec<u8>, String> {
    let header = &stream[..16];
    if &header[..4] != b"CSFE" || header[4] != 1 {
        return Err("bad header".into());
    }
    let s = u32::from_be_bytes(header[5..9].try_into().unwrap()) as usize;
    let prefix = &header[9..16];
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let body = &stream[16..];
    let mut out = Vec::new();
    let mut chunks: Vec<&[u8]> = body.chunks(s + 16).collect();
    if chunks.is_empty() {
        return Err("no final segment".into());
    }
    let n = chunks.len();
    for (i, c) in chunks.drain(..).enumerate() {
        let last = i + 1 == n;
        let nn = nonce(prefix, i as u32, last);
        let pt = cipher
            .decrypt(&Nonce::from(nn), Payload { msg: c, aad: header })
            .map_err(|_| format!("segment {i} failed"))?;
        out.extend_from_slice(&pt);
    }
    Ok(out)
}

/// Encrypts from the documented layout alone, with a chosen nonce prefix.
fn reference_encrypt(key: &[u8; 32], s: usize, prefix: [u8; 7], plain: &[u8]) -> Vec<u8> {
    let mut header = b"CSFE\x01".to_vec();
    header.extend_from_slice(&(s as u32).to_be_bytes());
    header.extend_from_slice(&prefix);
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let mut out = header.clone();
    let chunks: Vec<&[u8]> = if plain.is_empty() { vec![&[][..]] } else { plain.chunks(s).collect() };
    for (i, c) in chunks.iter().enumerate() {
        let nn = nonce(&prefix, i as u32, i + 1 == chunks.len());
        out.extend(cipher.encrypt(&Nonce::from(nn), Payload { msg: c, aad: &header }).unwrap());
    }
    out
}

#[test]
fn our_streams_decrypt_with_aes_gcm() {
    for (s, len) in [(4096usize, 0usize), (4096, 1), (4096, 4096), (4096, 3 * 4096 + 5), (65536, 200_000)] {
        let key = FileKey::generate();
        let plain = data(len, len as u64);
        let ct = encrypt(&key, s, &plain);
        assert_eq!(u32::from_be_bytes(ct[5..9].try_into().unwrap()) as usize, s);
        assert_eq!(reference_decrypt(key.as_bytes(), &ct).unwrap(), plain, "s {s} len {len}");
    }
}

#[test]
fn the_final_flag_and_index_are_where_the_docs_say() {
    let key = FileKey::generate();
    let plain = data(2 * 4096 + 10, 5);
    let ct = encrypt(&key, 4096, &plain);
    let header = &ct[..16];
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
    let seg1 = &ct[16 + 4112..16 + 2 * 4112];
    let fin = &ct[16 + 2 * 4112..];
    let open = |msg: &[u8], i: u32, last: bool, aad: &[u8]| {
        cipher.decrypt(&Nonce::from(nonce(&header[9..16], i, last)), Payload { msg, aad })
    };
    assert_eq!(open(seg1, 1, false, header).unwrap(), &plain[4096..8192]);
    assert!(open(seg1, 1, true, header).is_err());
    assert!(open(seg1, 0, false, header).is_err());
    assert_eq!(open(fin, 2, true, header).unwrap(), &plain[8192..]);
    assert!(open(fin, 2, false, header).is_err());
    assert!(open(fin, 2, true, &[]).is_err(), "the header is the AAD");
}

#[test]
fn aes_gcm_streams_decrypt_with_us() {
    for (s, len) in [(4096usize, 0usize), (4096, 4095), (4096, 8192), (5000, 12_345), (65536, 300_000)] {
        let key = FileKey::generate();
        let plain = data(len, 11);
        let ct = reference_encrypt(key.as_bytes(), s, [9, 8, 7, 6, 5, 4, 3], &plain);
        assert_eq!(ct.len() as u64, filecrypt::ciphertext_len(len as u64, s));
        let (r, out) = decrypt_writer(&key, &ct, 777);
        r.unwrap();
        assert_eq!(out, plain, "s {s} len {len}");
        // And segment by segment.
        let mut dec = Decryptor::new(&key, &ct[..16]).unwrap();
        let chunks: Vec<&[u8]> = ct[16..].chunks(s + 16).collect();
        let mut got = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut b = c.to_vec();
            dec.open_segment(&mut b, i + 1 == chunks.len()).unwrap();
            got.extend_from_slice(&b);
        }
        dec.finish().unwrap();
        assert_eq!(got, plain);
    }
}

/// A fixed vector, so that a change of format shows up as a changed constant.
#[test]
fn known_answer() {
    let key = FileKey::from_bytes(&[0x42; 32]).unwrap();
    let ct = reference_encrypt(key.as_bytes(), 4096, [1, 2, 3, 4, 5, 6, 7], b"custos");
    let hex: String = ct.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(&hex[..32], "43534645010000100001020304050607");
    assert_eq!(ct.len(), 16 + 6 + 16);
    let (r, out) = decrypt_writer(&key, &ct, 1);
    r.unwrap();
    assert_eq!(out, b"custos");
    assert_eq!(hex, KNOWN);
}

/// Also computed with Python's `cryptography` (OpenSSL) AESGCM, a third implementation:
/// `h + AESGCM(b"\x42" * 32).encrypt(bytes([1, 2, 3, 4, 5, 6, 7]) + (0).to_bytes(4, "big") + b"\x01", b"custos", h)`.
const KNOWN: &str = "4353464501000010000102030405060760e8daeb322661978e2debf5cb299c74f2750a37882e";
