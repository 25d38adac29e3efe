//! Sealing and opening segments: the STREAM construction over AES-256-GCM.

use std::fmt;

use primitives::{Aes256Gcm, NONCE_LEN};

use crate::header::{Header, NONCE_PREFIX_LEN};
use crate::{Error, FileKey, TAG_LEN};

/// Most segments one stream may have (indices are 32-bit).
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// The nonce of segment `index`: prefix ‖ index (u32, big-endian) ‖ final flag.
pub(crate) fn segment_nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
    n[NONCE_LEN - 1] = u8::from(last);
    n
}

fn aead_key(key: &FileKey) -> Aes256Gcm {
    Aes256Gcm::new(key.as_bytes()).expect("a FileKey is 32 bytes")
}

/// Where a stream is: the index of the next segment, or done.
#[derive(Clone, Copy, Debug)]
enum Position {
    Next(u32),
    Done,
}

/// Index checks shared by both directions: returns the index of the segment
/// about to be processed.
fn next_index(pos: Position, last: bool, after_done: Error) -> Result<u32, Error> {
    match pos {
        Position::Done => Err(after_done),
        // A non-final segment at the largest index would leave no index for the final one.
        Position::Next(u32::MAX) if !last => Err(Error::TooManySegments),
        Position::Next(i) => Ok(i),
    }
}

fn advance(index: u32, last: bool) -> Position {
    if last {
        Position::Done
    } else {
        Position::Next(index + 1)
    }
}

/// Encrypts one stream, a segment at a time.
///
/// Create it with [`Encryptor::new`], send the returned header first, then seal
/// segments in order: every segment but the last holds exactly
/// [`segment_size`](Self::segment_size) plaintext bytes, the last one (flagged
/// `last`) holds 0 to `segment_size` bytes. Not `Clone`: two copies would reuse nonces.
pub struct Encryptor {
    key: Aes256Gcm,
    header: Header,
    pos: Position,
}

impl Encryptor {
    /// A new stream under `key` with plaintext segments of `segment` bytes
    /// ([`DEFAULT_SEGMENT`](crate::DEFAULT_SEGMENT) unless there is a reason)
    /// and a fresh random nonce prefix. Returns the header bytes to write first.
    ///
    /// # Errors
    ///
    /// [`Error::BadSegmentSize`] unless `segment` is in
    /// [`MIN_SEGMENT`](crate::MIN_SEGMENT)`..=`[`MAX_SEGMENT`](crate::MAX_SEGMENT).
    ///
    /// # Panics
    ///
    /// If the system random number generator fails.
    pub fn new(key: &FileKey, segment: usize) -> Result<(Encryptor, Vec<u8>), Error> {
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        crate::header::check_segment_size(segment)?;
        primitives::fill_random(&mut prefix).expect("system random number generator failed");
        let header = Header::new(segment, prefix)?;
        let bytes = header.bytes.to_vec();
        Ok((Encryptor { key: aead_key(key), header, pos: Position::Next(0) }, bytes))
    }

    /// Plaintext bytes per (non-final) segment.
    pub fn segment_size(&self) -> usize {
        self.header.segment
    }

    /// The header bytes of this stream (the same as returned by [`Encryptor::new`]).
    pub fn header(&self) -> &[u8] {
        &self.header.bytes
    }

    /// Seals one segment in place: `buf` holds exactly `segment_size()`
    /// plaintext bytes (0..=`segment_size()` when `last`) and on success holds
    /// the ciphertext followed by the 16-byte tag.
    ///
    /// Allocation-free when `buf` has room for [`TAG_LEN`] more bytes (reuse one
    /// buffer with capacity `segment_size() + TAG_LEN`); otherwise it reserves them.
    ///
    /// # Errors
    ///
    /// [`Error::SegmentLength`] for a wrong length, [`Error::Finished`] after
    /// the final segment, [`Error::TooManySegments`] past [`MAX_SEGMENTS`].
    /// `buf` is unchanged on error.
    pub fn seal_segment(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), Error> {
        let tag = self.seal_segment_detached(buf, last)?;
        buf.reserve(TAG_LEN);
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Like [`seal_segment`](Self::seal_segment) for a slice: encrypts
    /// `plaintext` in place and returns the tag, which must follow the
    /// ciphertext in the stream.
    ///
    /// # Errors
    ///
    /// As for [`seal_segment`](Self::seal_segment).
    pub fn seal_segment_detached(&mut self, plaintext: &mut [u8], last: bool) -> Result<[u8; TAG_LEN], Error> {
        let index = next_index(self.pos, last, Error::Finished)?;
        let len = plaintext.len();
        if len > self.header.segment || (!last && len != self.header.segment) {
            return Err(Error::SegmentLength { segment: u64::from(index), len });
        }
        let nonce = segment_nonce(&self.header.nonce_prefix, index, last);
        let tag = self
            .key
            .seal_in_place_detached(&nonce, &self.header.bytes[..], plaintext)
            // Only fails for messages over GCM's 64 GiB limit, far above MAX_SEGMENT.
            .map_err(|_| Error::SegmentLength { segment: u64::from(index), len })?;
        self.pos = advance(index, last);
        Ok(tag)
    }

    /// Whether the final segment has been sealed.
    pub fn is_finished(&self) -> bool {
        matches!(self.pos, Position::Done)
    }

    #[cfg(test)]
    pub(crate) fn skip_to(&mut self, index: u32) {
        self.pos = Position::Next(index);
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor").field("segment", &self.header.segment).field("pos", &self.pos).finish()
    }
}

/// Decrypts one stream, a segment at a time.
///
/// Create it from the header ([`Decryptor::new`]), then open segments in
/// order: each non-final one is exactly `segment_size() + TAG_LEN` bytes of
/// ciphertext, the final one `TAG_LEN..=segment_size() + TAG_LEN`. The caller
/// must know which segment is last (the end of the stream); passing `last`
/// wrongly makes that segment fail. Call [`finish`](Self::finish) at the end:
/// it is what detects a stream cut at a segment boundary.
pub struct Decryptor {
    key: Aes256Gcm,
    header: Header,
    pos: Position,
}

impl Decryptor {
    /// Parses and checks `header` (exactly [`HEADER_LEN`](crate::HEADER_LEN) bytes).
    ///
    /// The header is authenticated with the first segment, not here: a modified
    /// header that still parses makes segment 0 fail with [`Error::Tampered`].
    ///
    /// # Errors
    ///
    /// [`Error::BadHeader`], [`Error::UnsupportedVersion`] or [`Error::BadSegmentSize`].
    pub fn new(key: &FileKey, header: &[u8]) -> Result<Decryptor, Error> {
        let header = Header::parse(header)?;
        Ok(Decryptor { key: aead_key(key), header, pos: Position::Next(0) })
    }

    /// Plaintext bytes per (non-final) segment, as read from the header.
    pub fn segment_size(&self) -> usize {
        self.header.segment
    }

    /// Opens one segment in place: `buf` holds the ciphertext and tag, and on
    /// success holds the plaintext (truncated by `TAG_LEN`). Never allocates.
    ///
    /// # Errors
    ///
    /// [`Error::Tampered`] if authentication fails, after which `buf` is zeroed
    /// and empty (no unauthenticated plaintext is left in it) and the position is
    /// unchanged. [`Error::TrailingData`] after the final segment,
    /// [`Error::Truncated`] for a final segment shorter than a tag,
    /// [`Error::SegmentLength`] for other impossible lengths,
    /// [`Error::TooManySegments`] past [`MAX_SEGMENTS`].
    pub fn open_segment(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), Error> {
        let index = self.check(buf.len(), last)?;
        let ct_len = buf.len() - TAG_LEN;
        let (ct, tag) = buf.split_at_mut(ct_len);
        let nonce = segment_nonce(&self.header.nonce_prefix, index, last);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().expect("split at TAG_LEN");
        match self.key.open_in_place_detached(&nonce, &self.header.bytes[..], ct, &tag) {
            Ok(_) => {
                buf.truncate(ct_len);
                self.pos = advance(index, last);
                Ok(())
            }
            Err(_) => {
                buf.fill(0);
                buf.clear();
                Err(Error::Tampered { segment: u64::from(index) })
            }
        }
    }

    /// Opens the next segment out of place: `ct_and_tag` stays intact (so a
    /// caller can try the other `last` value), `out` receives the plaintext and
    /// must be `ct_and_tag.len() - TAG_LEN` long. On failure `out` is zeroed.
    pub(crate) fn open_segment_into(&mut self, ct_and_tag: &[u8], out: &mut [u8], last: bool) -> Result<(), Error> {
        let index = self.check(ct_and_tag.len(), last)?;
        let (ct, tag) = ct_and_tag.split_at(ct_and_tag.len() - TAG_LEN);
        let nonce = segment_nonce(&self.header.nonce_prefix, index, last);
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
        match self.key.open_detached_into(&nonce, &self.header.bytes[..], ct, tag, out) {
            Ok(()) => {
                self.pos = advance(index, last);
                Ok(())
            }
            Err(_) => {
                out.fill(0);
                Err(Error::Tampered { segment: u64::from(index) })
            }
        }
    }

    fn check(&self, len: usize, last: bool) -> Result<u32, Error> {
        let index = next_index(self.pos, last, Error::TrailingData)?;
        let full = self.header.segment + TAG_LEN;
        if last && len < TAG_LEN {
            return Err(Error::Truncated);
        }
        if len > full || (!last && len != full) {
            return Err(Error::SegmentLength { segment: u64::from(index), len });
        }
        Ok(index)
    }

    /// Index of the next segment to open (the number opened so far), or `None`
    /// once the final segment has been opened.
    pub fn next_segment(&self) -> Option<u64> {
        match self.pos {
            Position::Next(i) => Some(u64::from(i)),
            Position::Done => None,
        }
    }

    /// Ends the stream.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] unless the final segment was opened.
    pub fn finish(self) -> Result<(), Error> {
        match self.pos {
            Position::Done => Ok(()),
            Position::Next(_) => Err(Error::Truncated),
        }
    }

    #[cfg(test)]
    pub(crate) fn skip_to(&mut self, index: u32) {
        self.pos = Position::Next(index);
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor").field("segment", &self.header.segment).field("pos", &self.pos).finish()
    }
}

/// Exact length of the stream for `plaintext_len` bytes with segments of
/// `segment` bytes, as written by [`EncryptingReader`](crate::EncryptingReader)
/// (or by an [`Encryptor`] fed full segments and a non-empty final one unless
/// the file is empty): header + plaintext + one tag per segment, with
/// `max(1, ceil(plaintext_len / segment))` segments. Saturates at `u64::MAX`.
///
/// # Panics
///
/// If `segment` is 0.
pub fn ciphertext_len(plaintext_len: u64, segment: usize) -> u64 {
    assert!(segment > 0, "segment size must be positive");
    let segments = plaintext_len.div_ceil(segment as u64).max(1);
    (crate::HEADER_LEN as u64).saturating_add(plaintext_len).saturating_add(segments.saturating_mul(TAG_LEN as u64))
}

/// The plaintext length of a stream of `ciphertext_len` bytes with segments of
/// `segment` bytes, or `None` if no valid stream has that length. The inverse
/// of [`ciphertext_len`], and also right for streams that end with an empty
/// final segment after full ones. Only the length is checked, nothing is authenticated.
///
/// # Panics
///
/// If `segment` is 0.
pub fn plaintext_len(ciphertext_len: u64, segment: usize) -> Option<u64> {
    assert!(segment > 0, "segment size must be positive");
    let body = ciphertext_len.checked_sub(crate::HEADER_LEN as u64)?;
    let seg = segment as u64;
    let full = seg + TAG_LEN as u64;
    let (k, r) = (body / full, body % full);
    let len = match r {
        0 if k > 0 => k * seg,
        r if r >= TAG_LEN as u64 => k * seg + (r - TAG_LEN as u64),
        _ => return None,
    };
    (k + u64::from(r != 0) <= MAX_SEGMENTS).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_layout() {
        let n = segment_nonce(&[1, 2, 3, 4, 5, 6, 7], 0x0a0b0c0d, true);
        assert_eq!(n, [1, 2, 3, 4, 5, 6, 7, 0x0a, 0x0b, 0x0c, 0x0d, 1]);
        assert_eq!(segment_nonce(&[0; 7], 1, false), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn index_limit() {
        let key = FileKey::generate();
        let (mut enc, header) = Encryptor::new(&key, 4096).unwrap();
        let mut dec = Decryptor::new(&key, &header).unwrap();
        enc.skip_to(u32::MAX - 1);
        dec.skip_to(u32::MAX - 1);
        let mut a = vec![7u8; 4096];
        enc.seal_segment(&mut a, false).unwrap();
        let mut b = vec![8u8; 4096];
        assert!(matches!(enc.seal_segment(&mut b, false), Err(Error::TooManySegments)));
        assert_eq!(b, vec![8u8; 4096], "unchanged on error");
        enc.seal_segment(&mut b, true).unwrap();
        assert!(matches!(enc.seal_segment(&mut vec![], true), Err(Error::Finished)));

        // The final segment at the position of the one before it fails.
        let mut b2 = b.clone();
        assert!(
            matches!(dec.open_segment(&mut b2, false), Err(Error::Tampered { segment }) if segment == u64::from(u32::MAX - 1))
        );
        assert!(b2.is_empty());
        dec.open_segment(&mut a, false).unwrap();
        assert_eq!(a, vec![7u8; 4096]);
        let mut b3 = b.clone();
        b3.truncate(4096 + TAG_LEN);
        assert!(matches!(dec.open_segment(&mut b3, false), Err(Error::TooManySegments)));
        dec.open_segment(&mut b, true).unwrap();
        assert_eq!(b, vec![8u8; 4096]);
        dec.finish().unwrap();
    }

    #[test]
    fn lengths() {
        assert_eq!(ciphertext_len(0, 4096), 32);
        assert_eq!(ciphertext_len(1, 4096), 33);
        assert_eq!(ciphertext_len(4096, 4096), 16 + 4096 + 16);
        assert_eq!(ciphertext_len(4097, 4096), 16 + 4097 + 32);
        assert_eq!(ciphertext_len(u64::MAX, 4096), u64::MAX);
        for seg in [4096usize, 5000, 65536] {
            for n in (0..5 * seg as u64).step_by(97).chain([seg as u64 - 1, seg as u64, seg as u64 + 1]) {
                assert_eq!(plaintext_len(ciphertext_len(n, seg), seg), Some(n), "{n} {seg}");
            }
            // An empty final segment after k full ones.
            assert_eq!(plaintext_len(16 + 2 * (seg as u64 + 16) + 16, seg), Some(2 * seg as u64));
            for bad in [0u64, 15, 16, 31, 16 + seg as u64 + 16 + 1, 16 + seg as u64 + 16 + 15] {
                assert_eq!(plaintext_len(bad, seg), None, "{bad}");
            }
        }
        let max = MAX_SEGMENTS * 4096;
        assert_eq!(plaintext_len(ciphertext_len(max, 4096), 4096), Some(max));
        assert_eq!(plaintext_len(ciphertext_len(max + 1, 4096), 4096), None);
    }
}
