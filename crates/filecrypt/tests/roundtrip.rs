//! Round trips through every API, for the sizes around segment boundaries and
//! for random sizes, segment sizes and I/O piece sizes.

mod common;

use std::io::{self, Read, Write};

use common::{data, decrypt_segments, decrypt_writer, encrypt, split};
use filecrypt::{
    ciphertext_len, plaintext_len, DecryptingWriter, Decryptor, EncryptingReader, Encryptor, Error, FileKey,
    DEFAULT_SEGMENT, HEADER_LEN, MAX_SEGMENT, MIN_SEGMENT, TAG_LEN,
};
use proptest::prelude::*;

/// A reader that hands out at most `max` bytes per call and, when `flaky`,
/// fails every third call with `Interrupted` and every fifth with `WouldBlock`.
struct Trickle<'a> {
    data: &'a [u8],
    max: usize,
    flaky: bool,
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.flaky && self.calls.is_multiple_of(3) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.flaky && self.calls.is_multiple_of(5) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.max).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads the reader out in pieces of `piece` bytes, retrying after `WouldBlock`.
fn read_all(mut r: impl Read, piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; piece];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Encrypts with the low-level API, one segment at a time, `last` from the length.
fn encrypt_segments(key: &FileKey, segment: usize, plain: &[u8]) -> Vec<u8> {
    let (mut enc, mut out) = Encryptor::new(key, segment).unwrap();
    let mut buf = Vec::with_capacity(segment + TAG_LEN);
    let mut rest = plain;
    loop {
        let n = rest.len().min(segment);
        let last = n == rest.len();
        buf.clear();
        buf.extend_from_slice(&rest[..n]);
        enc.seal_segment(&mut buf, last).unwrap();
        out.extend_from_slice(&buf);
        rest = &rest[n..];
        if last {
            assert!(enc.is_finished());
            return out;
        }
    }
}

fn check_round_trip(segment: usize, len: usize, read_piece: usize, write_piece: usize, inner_max: usize) {
    let key = FileKey::generate();
    let plain = data(len, len as u64 ^ segment as u64);
    let r =
        EncryptingReader::new(Trickle { data: &plain, max: inner_max, flaky: true, calls: 0 }, &key, segment).unwrap();
    let ct = read_all(r, read_piece);
    assert_eq!(ct.len() as u64, ciphertext_len(len as u64, segment), "len {len} seg {segment}");
    assert_eq!(plaintext_len(ct.len() as u64, segment), Some(len as u64));
    if len >= 16 {
        assert_ne!(&ct[HEADER_LEN..HEADER_LEN + 16], &plain[..16], "encrypted");
    }

    // Writer adapter.
    let (r, out) = decrypt_writer(&key, &ct, write_piece);
    r.unwrap();
    assert!(out == plain, "writer round trip, len {len} seg {segment}");

    // Low-level API, on both the adapter's output and the low-level encryptor's.
    let (h, segs) = split(&ct, segment);
    assert_eq!(segs.len(), len.div_ceil(segment).max(1));
    assert!(decrypt_segments(&key, &h, &segs).unwrap() == plain);
    let ct2 = encrypt_segments(&key, segment, &plain);
    assert_eq!(ct2.len(), ct.len());
    assert_ne!(ct2[HEADER_LEN..], ct[HEADER_LEN..], "fresh nonce prefix per stream");
    let (r, out) = decrypt_writer(&key, &ct2, write_piece);
    r.unwrap();
    assert!(out == plain);
}

#[test]
fn boundary_sizes() {
    for segment in [MIN_SEGMENT, 4097, 10_000, DEFAULT_SEGMENT] {
        for len in [0, 1, segment - 1, segment, segment + 1, 2 * segment, 3 * segment + 7] {
            for (read_piece, write_piece, inner_max) in [(1 << 20, 1 << 20, 1 << 20), (1000, 999, 4095), (7, 13, 1)] {
                if (read_piece < 100 || inner_max < 100) && len > 3 * MIN_SEGMENT {
                    continue; // byte-at-a-time over 200 KB in a debug build proves nothing more
                }
                check_round_trip(segment, len, read_piece, write_piece, inner_max);
            }
        }
    }
}

#[test]
fn largest_segment() {
    let key = FileKey::generate();
    let plain = data(MAX_SEGMENT + 1, 3);
    let ct = encrypt(&key, MAX_SEGMENT, &plain);
    assert_eq!(ct.len(), HEADER_LEN + MAX_SEGMENT + 1 + 2 * TAG_LEN);
    let (r, out) = decrypt_writer(&key, &ct, 1 << 20);
    r.unwrap();
    assert!(out == plain);
}

#[test]
fn bad_segment_sizes_refused() {
    let key = FileKey::generate();
    for s in [0, 1, MIN_SEGMENT - 1, MAX_SEGMENT + 1, usize::MAX] {
        assert!(matches!(Encryptor::new(&key, s), Err(Error::BadSegmentSize)));
        assert!(matches!(EncryptingReader::new(&b""[..], &key, s), Err(Error::BadSegmentSize)));
    }
}

/// The empty file is one empty final segment: header + one tag.
#[test]
fn empty_file() {
    let key = FileKey::generate();
    let ct = encrypt(&key, DEFAULT_SEGMENT, b"");
    assert_eq!(ct.len(), HEADER_LEN + TAG_LEN);
    let (r, out) = decrypt_writer(&key, &ct, 5);
    r.unwrap();
    assert!(out.is_empty());
    let mut dec = Decryptor::new(&key, &ct[..HEADER_LEN]).unwrap();
    let mut buf = ct[HEADER_LEN..].to_vec();
    dec.open_segment(&mut buf, true).unwrap();
    assert!(buf.is_empty());
    dec.finish().unwrap();
}

/// A writer that learns of the end late may seal an empty final segment after
/// full ones; decoders accept it and `plaintext_len` accounts for it.
#[test]
fn empty_final_segment_after_full_ones() {
    let key = FileKey::generate();
    let plain = data(2 * MIN_SEGMENT, 9);
    let (mut enc, mut ct) = Encryptor::new(&key, MIN_SEGMENT).unwrap();
    for chunk in plain.chunks(MIN_SEGMENT) {
        let mut buf = chunk.to_vec();
        enc.seal_segment(&mut buf, false).unwrap();
        ct.extend_from_slice(&buf);
    }
    let mut buf = Vec::new();
    enc.seal_segment(&mut buf, true).unwrap();
    assert_eq!(buf.len(), TAG_LEN);
    ct.extend_from_slice(&buf);
    assert_eq!(plaintext_len(ct.len() as u64, MIN_SEGMENT), Some(plain.len() as u64));
    let (r, out) = decrypt_writer(&key, &ct, 333);
    r.unwrap();
    assert!(out == plain);
}

/// The encryptor refuses wrong lengths and sealing after the end, and leaves the buffer alone.
#[test]
fn encryptor_misuse() {
    let key = FileKey::generate();
    let (mut enc, header) = Encryptor::new(&key, MIN_SEGMENT).unwrap();
    assert_eq!(enc.header(), &header[..]);
    assert_eq!(enc.segment_size(), MIN_SEGMENT);
    for (len, last) in [(MIN_SEGMENT - 1, false), (MIN_SEGMENT + 1, false), (0, false), (MIN_SEGMENT + 1, true)] {
        let mut buf = vec![1u8; len];
        assert!(
            matches!(enc.seal_segment(&mut buf, last), Err(Error::SegmentLength { segment: 0, len: l }) if l == len)
        );
        assert_eq!(buf, vec![1u8; len]);
    }
    let mut buf = vec![1u8; 10];
    enc.seal_segment(&mut buf, true).unwrap();
    assert!(matches!(enc.seal_segment(&mut vec![0; 10], true), Err(Error::Finished)));
    assert!(matches!(enc.seal_segment(&mut vec![0; MIN_SEGMENT], false), Err(Error::Finished)));
}

#[test]
fn decryptor_misuse() {
    let key = FileKey::generate();
    let ct = encrypt(&key, MIN_SEGMENT, &data(MIN_SEGMENT + 100, 1));
    let (h, segs) = split(&ct, MIN_SEGMENT);
    let mut dec = Decryptor::new(&key, &h).unwrap();
    assert_eq!(dec.segment_size(), MIN_SEGMENT);
    assert!(matches!(dec.open_segment(&mut vec![0; 100], false), Err(Error::SegmentLength { segment: 0, len: 100 })));
    assert!(matches!(
        dec.open_segment(&mut vec![0; MIN_SEGMENT + TAG_LEN + 1], true),
        Err(Error::SegmentLength { segment: 0, .. })
    ));
    assert!(matches!(dec.open_segment(&mut vec![0; TAG_LEN - 1], true), Err(Error::Truncated)));
    assert_eq!(dec.next_segment(), Some(0));
    let mut s0 = segs[0].clone();
    dec.open_segment(&mut s0, false).unwrap();
    let mut s1 = segs[1].clone();
    dec.open_segment(&mut s1, true).unwrap();
    assert_eq!(dec.next_segment(), None);
    assert!(matches!(dec.open_segment(&mut segs[1].clone(), true), Err(Error::TrailingData)));
    dec.finish().unwrap();
}

#[test]
fn writer_reports_header_errors_early() {
    let key = FileKey::generate();
    let mut w = DecryptingWriter::new(Vec::new(), &key);
    let e = w.write(b"CSXE").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(Error::from_io(&e), Some(Error::BadHeader)));
    assert!(matches!(w.finish(), Err(Error::BadHeader)));

    let mut w = DecryptingWriter::new(Vec::new(), &key);
    let e = w.write_all(b"CSFE\x02").unwrap_err();
    assert!(matches!(Error::from_io(&e), Some(Error::UnsupportedVersion)));

    let mut w = DecryptingWriter::new(Vec::new(), &key);
    w.write_all(b"CSF").unwrap();
    let e = w.finish().unwrap_err();
    assert!(matches!(e, Error::Truncated));
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::UnexpectedEof);
}

/// An error of the inner writer passes through unchanged, and poisons the adapter.
#[test]
fn inner_write_errors_pass_through() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let key = FileKey::generate();
    let ct = encrypt(&key, MIN_SEGMENT, &data(3 * MIN_SEGMENT, 2));
    let mut w = DecryptingWriter::new(Broken, &key);
    let e = w.write_all(&ct).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    assert!(Error::from_io(&e).is_none());
    assert!(w.write(b"x").is_err());
    assert!(matches!(w.finish(), Err(Error::Io(e)) if e.kind() == io::ErrorKind::StorageFull));
}

/// Errors of the inner reader pass through unchanged and lose nothing.
#[test]
fn inner_read_errors_pass_through() {
    let key = FileKey::generate();
    let plain = data(5 * MIN_SEGMENT + 3, 4);
    let r =
        EncryptingReader::new(Trickle { data: &plain, max: 1000, flaky: true, calls: 0 }, &key, MIN_SEGMENT).unwrap();
    let mut r = r;
    let mut ct = Vec::new();
    let mut buf = [0u8; 5000];
    let mut would_block = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ct.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                assert!(Error::from_io(&e).is_none());
                would_block += 1;
            }
        }
    }
    assert!(would_block > 0);
    let (res, out) = decrypt_writer(&key, &ct, 4096);
    res.unwrap();
    assert!(out == plain);
    assert_eq!(r.read(&mut buf).unwrap(), 0, "stays at EOF");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_round_trips(
        segment in prop_oneof![Just(MIN_SEGMENT), MIN_SEGMENT..3 * MIN_SEGMENT, Just(DEFAULT_SEGMENT)],
        segs_f in 0.0f64..4.5,
        read_piece in prop_oneof![1usize..64, 64usize..70_000],
        write_piece in prop_oneof![1usize..64, 64usize..70_000],
        inner_max in prop_oneof![1usize..64, 64usize..70_000],
    ) {
        let len = (segs_f * segment as f64) as usize;
        // Keep tiny pieces to small inputs so a debug build stays quick.
        let small = |p: usize| if len > 3 * MIN_SEGMENT { p.max(512) } else { p };
        check_round_trip(segment, len, small(read_piece), small(write_piece), small(inner_max));
    }
}
