//! `DecryptingWriter`: ciphertext stream in (any piece sizes), plaintext `Write` out.

use std::fmt;
use std::io::{self, Write};

use crate::header::Header;
use crate::{Decryptor, Error, FileKey, HEADER_LEN, TAG_LEN};

/// Accepts the encrypted stream in pieces of any size and writes the plaintext
/// to `W`, one segment at a time, each only after its tag verified.
///
/// A full segment is held back until at least one more byte arrives, because
/// only the end of the stream says which segment is final; [`finish`](Self::finish)
/// opens the held segment as the final one. So **the plaintext written to `W`
/// is complete and authentic only once `finish` returned `Ok`**: before that it
/// is an authentic prefix. Write to a temporary file and rename it on success,
/// or discard the output on error.
///
/// Memory: at most `segment + TAG_LEN` bytes of ciphertext and `segment` bytes
/// of plaintext, grown as data arrives (a forged header can make it allocate up
/// to twice [`MAX_SEGMENT`](crate::MAX_SEGMENT) before its first segment fails).
///
/// Errors: `write` reports errors of this crate as an `io::Error` carrying an
/// [`Error`] (see [`Error::from_io`]); errors of `W` pass through unchanged.
/// After any error the writer is poisoned: later writes fail again and
/// `finish` returns the error.
pub struct DecryptingWriter<W: Write> {
    inner: W,
    state: State,
}

enum State {
    /// Collecting the header; the key is needed once it is complete.
    Header {
        key: FileKey,
        buf: [u8; HEADER_LEN],
        len: usize,
    },
    /// `pending` holds up to one whole segment of ciphertext; `plain` is scratch
    /// for its plaintext (opening out of place keeps the ciphertext for a second
    /// try that tells [`Error::TrailingData`] and [`Error::Truncated`] from tampering).
    Body {
        dec: Decryptor,
        pending: Vec<u8>,
        plain: Vec<u8>,
    },
    Failed(Error),
}

impl<W: Write> DecryptingWriter<W> {
    /// Decrypts a stream encrypted under `key` into `inner`. The header is
    /// checked as soon as its bytes arrive.
    pub fn new(inner: W, key: &FileKey) -> Self {
        DecryptingWriter { inner, state: State::Header { key: key.duplicate(), buf: [0; HEADER_LEN], len: 0 } }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Ends the stream: opens the held-back segment as the final one, writes
    /// it, flushes `W` and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the stream ended before its final segment (at a
    /// segment boundary, or inside the header or a tag); [`Error::Tampered`] if
    /// the last segment fails (which is also what a cut inside a segment looks
    /// like); [`Error::TrailingData`] if the final segment came before the end;
    /// any earlier error of `write`; [`Error::Io`] if `W` fails.
    pub fn finish(mut self) -> Result<W, Error> {
        match std::mem::replace(&mut self.state, State::Failed(Error::Finished)) {
            State::Failed(e) => Err(e),
            State::Header { .. } => Err(Error::Truncated),
            State::Body { mut dec, pending, mut plain } => {
                if pending.len() < TAG_LEN {
                    return Err(Error::Truncated);
                }
                plain.resize(pending.len() - TAG_LEN, 0);
                if let Err(e) = dec.open_segment_into(&pending, &mut plain, true) {
                    // A whole segment that opens as non-final: the final segment(s) were dropped.
                    if pending.len() == dec.segment_size() + TAG_LEN
                        && dec.open_segment_into(&pending, &mut plain, false).is_ok()
                    {
                        plain.fill(0);
                        return Err(Error::Truncated);
                    }
                    return Err(e);
                }
                dec.finish()?;
                self.inner.write_all(&plain)?;
                self.inner.flush()?;
                Ok(self.inner)
            }
        }
    }

    fn write_header(&mut self, data: &[u8]) -> Result<usize, Error> {
        let State::Header { key, buf, len } = &mut self.state else { unreachable!() };
        let n = data.len().min(HEADER_LEN - *len);
        buf[*len..*len + n].copy_from_slice(&data[..n]);
        *len += n;
        Header::check_prefix(&buf[..*len])?;
        if *len == HEADER_LEN {
            let dec = Decryptor::new(key, &buf[..])?;
            self.state = State::Body { dec, pending: Vec::new(), plain: Vec::new() };
        }
        Ok(n)
    }

    fn write_body(&mut self, data: &[u8]) -> Result<usize, Error> {
        let State::Body { dec, pending, plain } = &mut self.state else { unreachable!() };
        let full = dec.segment_size() + TAG_LEN;
        if pending.len() == full {
            // More data follows, so the held segment is not the final one.
            plain.resize(dec.segment_size(), 0);
            if let Err(e) = dec.open_segment_into(pending, plain, false) {
                if dec.open_segment_into(pending, plain, true).is_ok() {
                    plain.fill(0);
                    return Err(Error::TrailingData);
                }
                return Err(e);
            }
            self.inner.write_all(plain)?;
            pending.clear();
        }
        let n = data.len().min(full - pending.len());
        // Grow geometrically but never past one segment.
        if pending.capacity() < pending.len() + n {
            let want = (pending.len() + n).max(pending.capacity() * 2).min(full);
            pending.reserve_exact(want - pending.len());
        }
        pending.extend_from_slice(&data[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for DecryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let r = match &self.state {
            State::Failed(e) => return Err(e.duplicate().into()),
            State::Header { .. } => self.write_header(data),
            State::Body { .. } => self.write_body(data),
        };
        r.map_err(|e| {
            // The caller gets the original (an error of `W` passes through unchanged), the state a copy.
            self.state = State::Failed(e.duplicate());
            e.into()
        })
    }

    /// Flushes `W`. Held-back ciphertext stays held back: it cannot be released
    /// before it is known whether it is the final segment.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> fmt::Debug for DecryptingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Header { len, .. } => format!("Header({len} bytes)"),
            State::Body { dec, pending, .. } => format!("Body({dec:?}, {} bytes pending)", pending.len()),
            State::Failed(e) => format!("Failed({e})"),
        };
        f.debug_struct("DecryptingWriter").field("state", &state).finish_non_exhaustive()
    }
}
