//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{self, Read, Write};

use filecrypt::{DecryptingWriter, Decryptor, EncryptingReader, Error, FileKey, HEADER_LEN, TAG_LEN};

/// Deterministic, non-periodic test data (xorshift), cheap to regenerate.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// The filecrypt error inside an adapter's `io::Error`, or `Error::Io` for a plain one.
pub fn unwrap_io(e: io::Error) -> Error {
    if Error::from_io(&e).is_some() {
        *e.into_inner().unwrap().downcast::<Error>().unwrap()
    } else {
        Error::Io(e)
    }
}

/// Encrypts with the reader adapter, reading everything.
pub fn encrypt(key: &FileKey, segment: usize, plain: &[u8]) -> Vec<u8> {
    let mut ct = Vec::new();
    EncryptingReader::new(plain, key, segment).unwrap().read_to_end(&mut ct).unwrap();
    ct
}

/// Decrypts with the writer adapter in pieces of `piece` bytes. Returns the
/// result and, separately, whatever plaintext was released to the inner writer
/// (also on error), so tests can check that only authentic segments came out.
pub fn decrypt_writer(key: &FileKey, ct: &[u8], piece: usize) -> (Result<(), Error>, Vec<u8>) {
    let mut released = Vec::new();
    let mut w = DecryptingWriter::new(&mut released, key);
    let mut r = Ok(());
    for p in ct.chunks(piece.max(1)) {
        if let Err(e) = w.write_all(p) {
            r = Err(unwrap_io(e));
            break;
        }
    }
    let r = match r {
        Ok(()) => w.finish().map(|_| ()),
        Err(e) => {
            // A poisoned writer keeps failing with the same error.
            let again = w.finish().unwrap_err();
            assert_eq!(format!("{again:?}"), format!("{e:?}"));
            Err(e)
        }
    };
    (r, released)
}

/// Splits a stream into header and segments by length (every segment but the
/// last is `segment + TAG_LEN` bytes).
pub fn split(ct: &[u8], segment: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (h, body) = ct.split_at(HEADER_LEN);
    let mut segs: Vec<Vec<u8>> = body.chunks(segment + TAG_LEN).map(|c| c.to_vec()).collect();
    if segs.is_empty() {
        segs.push(Vec::new());
    }
    (h.to_vec(), segs)
}

pub fn join(header: &[u8], segs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = header.to_vec();
    for s in segs {
        v.extend_from_slice(s);
    }
    v
}

/// Decrypts with the low-level API, the last segment flagged as last.
pub fn decrypt_segments(key: &FileKey, header: &[u8], segs: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let mut dec = Decryptor::new(key, header)?;
    let mut out = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let mut buf = s.clone();
        dec.open_segment(&mut buf, i + 1 == segs.len())?;
        out.extend_from_slice(&buf);
    }
    dec.finish()?;
    Ok(out)
}
