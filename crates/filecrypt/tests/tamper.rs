//! Every kind of tampering must be detected, with the right error, and no
//! plaintext of a failed segment may be released.

mod common;

use common::{data, decrypt_segments, decrypt_writer, encrypt, join, split};
use filecrypt::{Decryptor, Encryptor, Error, FileKey, HEADER_LEN, MIN_SEGMENT, TAG_LEN};

const SEG: usize = MIN_SEGMENT;
/// Three full segments and a short final one.
const LEN: usize = 3 * SEG + 1000;
/// Piece sizes for the writer adapter.
const PIECES: [usize; 5] = [1, 16, 1000, SEG + TAG_LEN, 1 << 20];

struct Fixture {
    key: FileKey,
    plain: Vec<u8>,
    ct: Vec<u8>,
}

fn fixture(len: usize) -> Fixture {
    let key = FileKey::generate();
    let plain = data(len, 77);
    let ct = encrypt(&key, SEG, &plain);
    Fixture { key, plain, ct }
}

/// Decrypts `ct` with the writer in every piece size; the error must satisfy
/// `want`, and what was released must be an authentic prefix of whole segments
/// ending before the first failing segment.
fn expect_writer(f: &Fixture, key: &FileKey, ct: &[u8], want: impl Fn(&Error) -> bool) -> Error {
    let mut first = None;
    for piece in PIECES {
        let (r, released) = decrypt_writer(key, ct, piece);
        let e = r.expect_err("tampered stream accepted");
        assert!(want(&e), "unexpected error {e:?} (piece {piece})");
        assert_eq!(released.len() % SEG, 0, "released a partial segment");
        assert!(released[..] == f.plain[..released.len()], "released non-authentic data");
        if let Error::Tampered { segment } = e {
            assert!(released.len() as u64 <= segment * SEG as u64, "released the failed segment");
        }
        first.get_or_insert(e);
    }
    first.unwrap()
}

fn is_tampered(at: u64) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Tampered { segment } if *segment == at)
}

#[test]
fn intact_stream_is_accepted() {
    let f = fixture(LEN);
    for piece in PIECES {
        let (r, out) = decrypt_writer(&f.key, &f.ct, piece);
        r.unwrap();
        assert!(out == f.plain);
    }
    let (h, segs) = split(&f.ct, SEG);
    assert_eq!(segs.len(), 4);
    assert!(decrypt_segments(&f.key, &h, &segs).unwrap() == f.plain);
}

#[test]
fn header_bit_flips() {
    let f = fixture(LEN);
    for byte in 0..HEADER_LEN {
        for bit in 0..8 {
            let mut ct = f.ct.clone();
            ct[byte] ^= 1 << bit;
            let e = expect_writer(&f, &f.key, &ct, |e| match byte {
                0..=3 => matches!(e, Error::BadHeader),
                4 => matches!(e, Error::UnsupportedVersion),
                // The segment size: out of range, or in range and then segment 0 fails.
                5..=8 => matches!(e, Error::BadSegmentSize | Error::Tampered { segment: 0 }),
                _ => matches!(e, Error::Tampered { segment: 0 }),
            });
            // The low-level API agrees about the header.
            match Decryptor::new(&f.key, &ct[..HEADER_LEN]) {
                Ok(mut dec) => {
                    assert!(matches!(e, Error::Tampered { segment: 0 }));
                    let mut s0 = ct[HEADER_LEN..HEADER_LEN + SEG + TAG_LEN].to_vec();
                    assert!(dec.open_segment(&mut s0, false).is_err());
                }
                Err(he) => assert_eq!(format!("{he:?}"), format!("{e:?}")),
            }
        }
    }
}

/// A one-segment file does not depend on the segment size for its boundaries,
/// so only the header being the AAD catches a changed size there.
#[test]
fn header_rewrite_on_a_one_segment_file() {
    let f = fixture(100);
    for (at, value) in [(5..9, (2 * SEG as u32).to_be_bytes()), (5..9, (SEG as u32 + 1).to_be_bytes())] {
        let mut ct = f.ct.clone();
        ct[at].copy_from_slice(&value);
        expect_writer(&f, &f.key, &ct, is_tampered(0));
    }
}

#[test]
fn segment_and_tag_bit_flips() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    for (i, s) in segs.iter().enumerate() {
        let n = s.len();
        // Ciphertext start, middle, end; every tag byte.
        let positions = [0, 1, (n - TAG_LEN) / 2, n - TAG_LEN - 1].into_iter().chain(n - TAG_LEN..n);
        for pos in positions {
            for bit in [0, 7] {
                let mut segs2 = segs.clone();
                segs2[i][pos] ^= 1 << bit;
                let ct = join(&h, &segs2);
                expect_writer(&f, &f.key, &ct, is_tampered(i as u64));
                let e = decrypt_segments(&f.key, &h, &segs2).unwrap_err();
                assert!(is_tampered(i as u64)(&e), "{e:?}");
            }
        }
    }
}

#[test]
fn truncation_at_every_byte() {
    let f = fixture(2 * SEG + 100);
    let boundaries: Vec<usize> = (0..3).map(|k| HEADER_LEN + k * (SEG + TAG_LEN)).collect();
    for cut in 0..f.ct.len() {
        let ct = &f.ct[..cut];
        let seg_of_cut = (cut.saturating_sub(HEADER_LEN) / (SEG + TAG_LEN)) as u64;
        let in_tag_or_header = cut < HEADER_LEN || (cut - HEADER_LEN) % (SEG + TAG_LEN) < TAG_LEN;
        for piece in [1 << 20, 1000] {
            let (r, released) = decrypt_writer(&f.key, ct, piece);
            let e = r.expect_err("truncated stream accepted");
            if boundaries.contains(&cut) || in_tag_or_header {
                assert!(matches!(e, Error::Truncated), "cut {cut}: {e:?}");
            } else {
                // Cut inside a segment: indistinguishable from a modified final segment.
                assert!(matches!(e, Error::Tampered { segment } if segment == seg_of_cut), "cut {cut}: {e:?}");
            }
            assert!(released[..] == f.plain[..released.len()]);
            assert_eq!(released.len() % SEG, 0);
        }
    }
}

#[test]
fn truncation_at_boundaries_low_level() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    for keep in 0..segs.len() {
        // The caller believes the stream ended after `keep` segments.
        let mut dec = Decryptor::new(&f.key, &h).unwrap();
        for (i, s) in segs[..keep].iter().enumerate() {
            let mut b = s.clone();
            if i + 1 == keep {
                let mut b2 = b.clone();
                assert!(
                    matches!(dec.open_segment(&mut b2, true), Err(Error::Tampered { segment }) if segment == i as u64)
                );
                assert!(b2.is_empty(), "failed segment not released");
            }
            dec.open_segment(&mut b, false).unwrap();
        }
        assert!(matches!(dec.finish(), Err(Error::Truncated)));
    }
}

#[test]
fn swapped_segments() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    for i in 0..segs.len() {
        for j in i + 1..segs.len() {
            let mut s = segs.clone();
            s.swap(i, j);
            expect_writer(&f, &f.key, &join(&h, &s), is_tampered(i as u64));
            let e = decrypt_segments(&f.key, &h, &s).unwrap_err();
            if j + 1 < segs.len() {
                assert!(is_tampered(i as u64)(&e), "{e:?}");
            } else {
                // The short final segment in a non-final position has an impossible length.
                assert!(matches!(e, Error::SegmentLength { segment, .. } if segment == i as u64), "{e:?}");
            }
        }
    }
}

#[test]
fn duplicated_segments() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    for i in 0..segs.len() {
        let mut s = segs.clone();
        s.insert(i, segs[i].clone());
        let want: Box<dyn Fn(&Error) -> bool> = if i + 1 == segs.len() {
            // A copy of the final segment after it is data after the final segment...
            Box::new(|e| matches!(e, Error::Tampered { .. } | Error::TrailingData))
        } else {
            Box::new(is_tampered(i as u64 + 1))
        };
        expect_writer(&f, &f.key, &join(&h, &s), &want);
        assert!(decrypt_segments(&f.key, &h, &s).is_err());
    }
}

#[test]
fn dropped_segments() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    for i in 0..segs.len() {
        let mut s = segs.clone();
        s.remove(i);
        if i + 1 == segs.len() {
            expect_writer(&f, &f.key, &join(&h, &s), |e| matches!(e, Error::Truncated));
            assert!(matches!(decrypt_segments(&f.key, &h, &s), Err(Error::Tampered { segment: 2 })));
        } else {
            expect_writer(&f, &f.key, &join(&h, &s), is_tampered(i as u64));
            assert!(decrypt_segments(&f.key, &h, &s).is_err());
        }
    }
    // Everything but the header.
    expect_writer(&f, &f.key, &h, |e| matches!(e, Error::Truncated));
    expect_writer(&f, &f.key, &[], |e| matches!(e, Error::Truncated));
}

#[test]
fn non_final_segment_as_last() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    let mut dec = Decryptor::new(&f.key, &h).unwrap();
    let mut s0 = segs[0].clone();
    assert!(matches!(dec.open_segment(&mut s0, true), Err(Error::Tampered { segment: 0 })));
    // And the final one as non-final: build a stream whose final segment is full.
    let g = fixture(2 * SEG);
    let (h, segs) = split(&g.ct, SEG);
    let mut dec = Decryptor::new(&g.key, &h).unwrap();
    dec.open_segment(&mut segs[0].clone(), false).unwrap();
    let mut s1 = segs[1].clone();
    assert!(matches!(dec.open_segment(&mut s1, false), Err(Error::Tampered { segment: 1 })));
    assert!(s1.is_empty());
    let mut s1 = segs[1].clone();
    dec.open_segment(&mut s1, true).unwrap();
    assert!(s1[..] == g.plain[SEG..]);
    dec.finish().unwrap();
}

#[test]
fn trailing_data() {
    // Final segment full: anything after it is recognised as trailing data.
    let f = fixture(3 * SEG);
    for extra in [&b"x"[..], &[0u8; 16], &[0u8; SEG + TAG_LEN], &f.ct[HEADER_LEN..]] {
        let ct = [&f.ct[..], extra].concat();
        expect_writer(&f, &f.key, &ct, |e| matches!(e, Error::TrailingData));
    }
    // Final segment short: the appended bytes shift what looks like its end, so it fails.
    let f = fixture(LEN);
    for extra in [&b"x"[..], &[0u8; 16], &[0u8; 5000]] {
        let ct = [&f.ct[..], extra].concat();
        expect_writer(&f, &f.key, &ct, is_tampered(3));
    }
    // Low level: nothing is opened after the final segment, not even a valid-looking one.
    let (h, segs) = split(&f.ct, SEG);
    let mut dec = Decryptor::new(&f.key, &h).unwrap();
    for (i, s) in segs.iter().enumerate() {
        dec.open_segment(&mut s.clone(), i + 1 == segs.len()).unwrap();
    }
    for extra in [vec![0; 100], segs[0].clone(), segs[3].clone()] {
        for last in [false, true] {
            assert!(matches!(dec.open_segment(&mut extra.clone(), last), Err(Error::TrailingData)));
        }
    }
    dec.finish().unwrap();
}

#[test]
fn wrong_key() {
    let f = fixture(LEN);
    let other = FileKey::generate();
    expect_writer(&f, &other, &f.ct, is_tampered(0));
    let (h, segs) = split(&f.ct, SEG);
    assert!(matches!(decrypt_segments(&other, &h, &segs), Err(Error::Tampered { segment: 0 })));
}

#[test]
fn header_or_segment_from_another_file() {
    let f = fixture(LEN);
    // Same key, same length, same plaintext: only the random nonce prefix differs.
    let g_ct = encrypt(&f.key, SEG, &f.plain);
    let (h, segs) = split(&f.ct, SEG);
    let (gh, gsegs) = split(&g_ct, SEG);
    assert_ne!(h, gh);
    expect_writer(&f, &f.key, &join(&gh, &segs), is_tampered(0));
    for i in 0..segs.len() {
        let mut s = segs.clone();
        s[i] = gsegs[i].clone();
        expect_writer(&f, &f.key, &join(&h, &s), is_tampered(i as u64));
    }
    // Another file's header with another segment size.
    let (_, other_header) = Encryptor::new(&f.key, 2 * SEG).unwrap();
    expect_writer(&f, &f.key, &join(&other_header, &segs), is_tampered(0));
}

#[test]
fn failed_open_leaves_no_plaintext() {
    let f = fixture(LEN);
    let (h, segs) = split(&f.ct, SEG);
    let mut dec = Decryptor::new(&f.key, &h).unwrap();
    let mut b = segs[0].clone();
    let n = b.len();
    b[n - 1] ^= 1; // tag only: a decrypt-then-verify implementation would leave plaintext behind
    assert!(dec.open_segment(&mut b, false).is_err());
    assert!(b.is_empty());
    // SAFETY: the first `n` bytes of the allocation were initialised (with the
    // segment) before the call, and `u8` has no invalid values.
    unsafe { b.set_len(n) };
    assert!(b.iter().all(|&x| x == 0), "unauthenticated plaintext left in the buffer");
    // The decryptor did not advance: the real segment 0 still opens.
    let mut b = segs[0].clone();
    dec.open_segment(&mut b, false).unwrap();
    assert!(b[..] == f.plain[..SEG]);
}
