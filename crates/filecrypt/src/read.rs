//! `EncryptingReader`: plaintext `Read` in, ciphertext stream out.

use std::fmt;
use std::io::{self, Read};

use crate::{Encryptor, Error, FileKey, HEADER_LEN, TAG_LEN};

/// Reads plaintext from `R` and yields the encrypted stream, header first.
///
/// Whether a segment is the last is decided by reading one byte ahead, so the
/// plaintext length need not be known: this works for pipes and sockets. The
/// output is the canonical stream, exactly
/// [`ciphertext_len`](crate::ciphertext_len)`(plaintext_len, segment)` bytes.
///
/// Memory: one buffer of `segment + TAG_LEN` bytes, allocated in `new`.
///
/// Errors: I/O errors of `R` pass through unchanged and the reader can be
/// called again afterwards (a `WouldBlock` or `Interrupted` loses nothing).
/// Errors of this crate (only [`Error::TooManySegments`] can occur) come as an
/// `io::Error` carrying an [`Error`]; see [`Error::from_io`].
pub struct EncryptingReader<R: Read> {
    inner: R,
    enc: Encryptor,
    header: [u8; HEADER_LEN],
    header_pos: usize,
    /// While filling: plaintext in `buf[..filled]` (up to `segment + 1` bytes,
    /// the extra byte being the look-ahead). While draining: the sealed segment
    /// in `buf[..sealed]`, of which `buf[pos..sealed]` is still to be returned.
    buf: Vec<u8>,
    filled: usize,
    sealed: usize,
    pos: usize,
    /// The look-ahead byte taken from the previous fill, which starts the next segment.
    carry: Option<u8>,
    eof: bool,
}

impl<R: Read> EncryptingReader<R> {
    /// Encrypts the plaintext read from `inner` under `key` with plaintext
    /// segments of `segment` bytes (usually [`DEFAULT_SEGMENT`](crate::DEFAULT_SEGMENT)).
    ///
    /// # Errors
    ///
    /// [`Error::BadSegmentSize`] for a segment size out of range.
    pub fn new(inner: R, key: &FileKey, segment: usize) -> Result<Self, Error> {
        let (enc, header) = Encryptor::new(key, segment)?;
        Ok(EncryptingReader {
            inner,
            header: header.try_into().expect("header is HEADER_LEN bytes"),
            header_pos: 0,
            // TAG_LEN >= 1, so this also has room for the look-ahead byte.
            buf: vec![0; segment + TAG_LEN],
            enc,
            filled: 0,
            sealed: 0,
            pos: 0,
            carry: None,
            eof: false,
        })
    }

    /// The header of the stream (also the first bytes read).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader; any plaintext already taken from it is lost.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Fills the buffer with the next segment's plaintext plus one look-ahead
    /// byte (or up to end of input), then seals it. Progress survives errors of
    /// `inner` in `self.filled`.
    fn next_segment(&mut self) -> io::Result<()> {
        let seg = self.enc.segment_size();
        if self.filled == 0 {
            if let Some(b) = self.carry.take() {
                self.buf[0] = b;
                self.filled = 1;
            }
        }
        while self.filled <= seg && !self.eof {
            match self.inner.read(&mut self.buf[self.filled..=seg]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (len, last) = if self.filled > seg {
            self.carry = Some(self.buf[seg]);
            (seg, false)
        } else {
            (self.filled, true)
        };
        let tag = match self.enc.seal_segment_detached(&mut self.buf[..len], last) {
            Ok(tag) => tag,
            Err(e) => {
                // Nothing was sealed; put the look-ahead byte back so the state stays consistent.
                if !last {
                    self.carry = None;
                }
                return Err(e.into());
            }
        };
        self.buf[len..len + TAG_LEN].copy_from_slice(&tag);
        self.filled = 0;
        self.sealed = len + TAG_LEN;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for EncryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.header_pos < HEADER_LEN {
            let n = out.len().min(HEADER_LEN - self.header_pos);
            out[..n].copy_from_slice(&self.header[self.header_pos..self.header_pos + n]);
            self.header_pos += n;
            return Ok(n);
        }
        if self.pos == self.sealed {
            if self.enc.is_finished() {
                return Ok(0);
            }
            self.next_segment()?;
        }
        let n = out.len().min(self.sealed - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> fmt::Debug for EncryptingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptingReader").field("enc", &self.enc).finish_non_exhaustive()
    }
}
