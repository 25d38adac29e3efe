//! The stream header: magic, version, segment size and nonce prefix.

use crate::Error;

/// The four bytes every filecrypt stream starts with: ASCII `CSFE`.
pub const MAGIC: [u8; 4] = *b"CSFE";
/// The format version this crate writes and the only one it reads.
pub const VERSION: u8 = 1;
/// Length of the version-1 header in bytes.
pub const HEADER_LEN: usize = 16;
/// Length of the random nonce prefix in the header.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Smallest allowed plaintext segment size (4 KiB).
pub const MIN_SEGMENT: usize = 4 * 1024;
/// Largest allowed plaintext segment size (16 MiB).
pub const MAX_SEGMENT: usize = 16 * 1024 * 1024;

/// Length of the version-1 header in bytes (same as [`HEADER_LEN`]).
pub const fn header_len() -> usize {
    HEADER_LEN
}

/// A parsed (or freshly made) header. `bytes` is exactly what is on the wire and
/// is the AAD of every segment.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) bytes: [u8; HEADER_LEN],
    pub(crate) segment: usize,
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

pub(crate) fn check_segment_size(segment: usize) -> Result<(), Error> {
    if (MIN_SEGMENT..=MAX_SEGMENT).contains(&segment) {
        Ok(())
    } else {
        Err(Error::BadSegmentSize)
    }
}

impl Header {
    pub(crate) fn new(segment: usize, nonce_prefix: [u8; NONCE_PREFIX_LEN]) -> Result<Header, Error> {
        check_segment_size(segment)?;
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4] = VERSION;
        // MAX_SEGMENT < 2^32, checked above.
        bytes[5..9].copy_from_slice(&(segment as u32).to_be_bytes());
        bytes[9..16].copy_from_slice(&nonce_prefix);
        Ok(Header { bytes, segment, nonce_prefix })
    }

    /// Checks the bytes of a header that has only partly arrived, so that a
    /// stream that is not ours is rejected at once rather than after 16 bytes.
    pub(crate) fn check_prefix(partial: &[u8]) -> Result<(), Error> {
        let m = partial.len().min(MAGIC.len());
        if partial[..m] != MAGIC[..m] {
            return Err(Error::BadHeader);
        }
        match partial.get(4) {
            Some(&v) if v != VERSION => Err(Error::UnsupportedVersion),
            _ => Ok(()),
        }
    }

    /// Parses a complete header. Magic first, then version (a later version may
    /// have another header length), then the exact length and the segment size.
    pub(crate) fn parse(b: &[u8]) -> Result<Header, Error> {
        if b.len() < 5 {
            return Err(Error::BadHeader);
        }
        Header::check_prefix(b)?;
        let bytes: [u8; HEADER_LEN] = b.try_into().map_err(|_| Error::BadHeader)?;
        let segment = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
        check_segment_size(segment)?;
        let nonce_prefix = bytes[9..16].try_into().expect("7 bytes");
        Ok(Header { bytes, segment, nonce_prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let h = Header::new(65536, [1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!(h.bytes, [b'C', b'S', b'F', b'E', 1, 0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
        let p = Header::parse(&h.bytes).unwrap();
        assert_eq!((p.segment, p.nonce_prefix), (65536, [1, 2, 3, 4, 5, 6, 7]));
    }

    #[test]
    fn rejects() {
        let good = Header::new(4096, [0; 7]).unwrap().bytes;
        assert!(matches!(Header::parse(&good[..15]), Err(Error::BadHeader)));
        assert!(matches!(Header::parse(&[good.as_slice(), &[0]].concat()), Err(Error::BadHeader)));
        assert!(matches!(Header::parse(&good[..4]), Err(Error::BadHeader)));
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(Header::parse(&b), Err(Error::BadHeader)));
        for v in [0u8, 2, 0xff] {
            let mut b = good;
            b[4] = v;
            assert!(matches!(Header::parse(&b), Err(Error::UnsupportedVersion)));
            assert!(matches!(Header::check_prefix(&b[..5]), Err(Error::UnsupportedVersion)));
        }
        for s in [0u32, 1, 4095, 16 * 1024 * 1024 + 1, u32::MAX] {
            let mut b = good;
            b[5..9].copy_from_slice(&s.to_be_bytes());
            assert!(matches!(Header::parse(&b), Err(Error::BadSegmentSize)), "{s}");
        }
        for s in [4096u32, 4097, 16 * 1024 * 1024] {
            let mut b = good;
            b[5..9].copy_from_slice(&s.to_be_bytes());
            assert_eq!(Header::parse(&b).unwrap().segment, s as usize);
        }
        assert!(Header::check_prefix(b"CS").is_ok());
        assert!(matches!(Header::check_prefix(b"CX"), Err(Error::BadHeader)));
        assert!(Header::new(4095, [0; 7]).is_err());
        assert!(Header::new(MAX_SEGMENT + 1, [0; 7]).is_err());
    }
}
