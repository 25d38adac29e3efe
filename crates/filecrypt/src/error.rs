//! The crate's error type and its mapping to and from `std::io::Error`.

use std::io;

/// Everything that can go wrong while encrypting or decrypting a stream.
///
/// Messages never contain key material or plaintext.
///
/// # Errors inside `std::io::Error`
///
/// The adapters ([`EncryptingReader`](crate::EncryptingReader),
/// [`DecryptingWriter`](crate::DecryptingWriter)) implement `Read` / `Write`, so
/// they report through `std::io::Error`. An I/O error of the wrapped reader or
/// writer passes through unchanged; every other error is an `io::Error` whose
/// inner error is this type (kind [`io::ErrorKind::InvalidData`] for a bad
/// stream, [`io::ErrorKind::UnexpectedEof`] for [`Error::Truncated`],
/// [`io::ErrorKind::InvalidInput`] for misuse). Get it back with
/// [`Error::from_io`] (or `e.get_ref()` / `e.into_inner()` and
/// `downcast_ref::<filecrypt::Error>()`):
///
/// ```
/// # use std::io::Write;
/// let mut w = filecrypt::DecryptingWriter::new(Vec::new(), &filecrypt::FileKey::generate());
/// let e = w.write_all(b"definitely not a filecrypt header").unwrap_err();
/// assert!(matches!(filecrypt::Error::from_io(&e), Some(filecrypt::Error::BadHeader)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file key was not exactly 32 bytes long.
    #[error("a file key must be exactly 32 bytes")]
    BadKey,
    /// The stream does not start with a filecrypt header (wrong magic or length).
    #[error("not a filecrypt stream: bad header")]
    BadHeader,
    /// The header names a format version this crate does not know.
    #[error("unsupported filecrypt format version")]
    UnsupportedVersion,
    /// A segment size outside [`MIN_SEGMENT`](crate::MIN_SEGMENT)..=[`MAX_SEGMENT`](crate::MAX_SEGMENT),
    /// requested by a caller or read from a header.
    #[error("segment size out of range (4 KiB ..= 16 MiB)")]
    BadSegmentSize,
    /// Segment number `segment` (0-based) failed authentication: the data was
    /// modified, moved, taken from another stream, or the key or header is wrong.
    /// Nothing of that segment was released.
    #[error("segment {segment} failed authentication (modified, reordered, wrong key or header)")]
    Tampered {
        /// 0-based index of the segment that failed.
        segment: u64,
    },
    /// The stream ended before its final segment (cut at a segment boundary or
    /// inside the header or a tag). Everything released so far was authentic, but
    /// it is not the whole file.
    #[error("stream truncated: the final segment is missing")]
    Truncated,
    /// Data follows the final segment.
    #[error("data follows the final segment")]
    TrailingData,
    /// The stream would need more than [`MAX_SEGMENTS`](crate::MAX_SEGMENTS) segments.
    #[error("too many segments for one stream")]
    TooManySegments,
    /// A segment buffer had a length impossible at its position: a non-final
    /// segment must be exactly one segment (plus the tag when opening), a final
    /// one at most that. This is a caller bug with the low-level API.
    #[error("segment {segment} has an invalid length ({len} bytes)")]
    SegmentLength {
        /// 0-based index of the segment.
        segment: u64,
        /// The length that was passed.
        len: usize,
    },
    /// [`Encryptor::seal_segment`](crate::Encryptor::seal_segment) was called
    /// after the final segment had been sealed.
    #[error("the stream was already finished with its final segment")]
    Finished,
    /// An I/O error of the wrapped reader or writer.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The filecrypt error carried inside an `io::Error` returned by one of the
    /// adapters, or `None` if it is a plain I/O error of the wrapped reader/writer.
    pub fn from_io(e: &io::Error) -> Option<&Error> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
    }

    /// A copy of this error, for adapters that must report it again later.
    /// `io::Error` is not `Clone`; its kind and message are kept.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::BadKey => Error::BadKey,
            Error::BadHeader => Error::BadHeader,
            Error::UnsupportedVersion => Error::UnsupportedVersion,
            Error::BadSegmentSize => Error::BadSegmentSize,
            Error::Tampered { segment } => Error::Tampered { segment: *segment },
            Error::Truncated => Error::Truncated,
            Error::TrailingData => Error::TrailingData,
            Error::TooManySegments => Error::TooManySegments,
            Error::SegmentLength { segment, len } => Error::SegmentLength { segment: *segment, len: *len },
            Error::Finished => Error::Finished,
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }

    fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::Truncated => io::ErrorKind::UnexpectedEof,
            Error::BadKey | Error::SegmentLength { .. } | Error::Finished => io::ErrorKind::InvalidInput,
            Error::Io(e) => e.kind(),
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl From<Error> for io::Error {
    /// `Error::Io` gives back the wrapped error; anything else becomes an
    /// `io::Error` carrying the filecrypt error (see [`Error::from_io`]).
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}
