//! # filecrypt: streaming file encryption for Custos clients
//!
//! Files are encrypted on the client under a fresh random 256-bit [`FileKey`]
//! per file, as a sequence of AES-256-GCM segments in the STREAM construction
//! of Hoang, Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption
//! and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015). A stream is encrypted
//! and decrypted one segment at a time, so no file is ever held in memory
//! whole, and every segment is authenticated before any of its plaintext is
//! released. Truncation, reordering, duplication, dropping, splicing from
//! another stream and appending are all detected.
//!
//! Three ways to use it:
//!
//! - [`EncryptingReader`] (plaintext `Read` in, ciphertext `Read` out) and
//!   [`DecryptingWriter`] (ciphertext `Write` in, plaintext `Write` out) for
//!   blocking I/O; they accept streams of unknown length and pieces of any size.
//! - [`Encryptor`] / [`Decryptor`] for callers that do their own (async) I/O:
//!   one call per segment, in place in the caller's buffer, without allocating
//!   when the buffer has capacity `segment_size + TAG_LEN`.
//! - [`ciphertext_len`] / [`plaintext_len`] to size uploads and downloads.
//!
//! ```
//! use std::io::{Read, Write};
//! use filecrypt::{DecryptingWriter, EncryptingReader, FileKey, DEFAULT_SEGMENT};
//!
//! let key = FileKey::generate();
//! let file = vec![42u8; 200_000];
//! let mut ciphertext = Vec::new();
//! EncryptingReader::new(&file[..], &key, DEFAULT_SEGMENT)?.read_to_end(&mut ciphertext)?;
//! assert_eq!(ciphertext.len() as u64, filecrypt::ciphertext_len(200_000, DEFAULT_SEGMENT));
//!
//! let mut w = DecryptingWriter::new(Vec::new(), &key);
//! w.write_all(&ciphertext)?;
//! assert_eq!(w.finish()?, file); // only now is the output known to be complete
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Format, version 1
//!
//! ```text
//! stream  = header ‖ segment_0 ‖ segment_1 ‖ … ‖ segment_{n-1}          (n ≥ 1)
//!
//! header  (16 bytes)
//!   offset  size  field
//!        0     4  magic, ASCII "CSFE" (43 53 46 45)
//!        4     1  version = 0x01
//!        5     4  S, plaintext segment size, unsigned big-endian, 4096 ≤ S ≤ 16777216
//!        9     7  P, nonce prefix, random per stream
//!
//! segment_i = C_i ‖ T_i,   (C_i, T_i) = AES-256-GCM-Encrypt(K, N_i, A, M_i)
//!   K    the 32-byte file key
//!   N_i  (12 bytes) = P (7) ‖ i as u32 big-endian (4) ‖ f_i (1)
//!        f_i = 0x01 for the final segment (i = n-1), 0x00 for all others
//!   A    (AAD) = the 16 header bytes, verbatim, for every segment
//!   M_i  plaintext: exactly S bytes for i < n-1; 0..=S bytes for the final one
//!   T_i  the 16-byte GCM tag
//! ```
//!
//! The file is `M_0 ‖ … ‖ M_{n-1}`; at most 2^32 segments ([`MAX_SEGMENTS`]).
//! Encoders in this crate write the canonical form with
//! `n = max(1, ceil(len / S))`: the final segment is full when `S` divides the
//! length, and empty only for an empty file, so the stream is exactly
//! `16 + len + 16·n` bytes ([`ciphertext_len`]). A decoder also accepts an
//! empty final segment after full ones (a writer that learns of the end late
//! may produce it with [`Encryptor`]); nothing else is ambiguous, since every
//! non-final segment is exactly `S + 16` bytes and the final one is what
//! remains. A reader rejects other magic ([`Error::BadHeader`]), other versions
//! ([`Error::UnsupportedVersion`]) and `S` out of range ([`Error::BadSegmentSize`])
//! before decrypting anything.
//!
//! ## Why this is secure
//!
//! Assume AES-GCM is a secure nonce-based AEAD (it is, for distinct nonces,
//! with the usual bounds) and `K` is random and used for one file.
//!
//! - **Confidentiality and integrity of each segment**: every segment is a
//!   GCM encryption under a nonce that never repeats for `K`, because the index
//!   `i` strictly increases and is at most 2^32 − 1 (more segments are refused,
//!   [`Error::TooManySegments`]), and the final flag is set on only one segment.
//! - **Position binding**: `i` is in the nonce, so a segment moved to another
//!   position (swap, duplicate, drop one in the middle) is opened under a
//!   different nonce than it was sealed with and fails authentication, exactly
//!   like a forgery (probability about `(S/16 + 1) / 2^128` per attempt).
//! - **End binding**: the decoder accepts the end of a stream only right after a
//!   segment that authenticated with `f = 1`. Dropping the final segment(s)
//!   leaves a segment sealed with `f = 0` at the end, which fails as final
//!   ([`Error::Truncated`] when cut at a boundary); a non-final segment
//!   presented as final fails; anything after the final segment is refused
//!   ([`Error::TrailingData`]), because no valid segment `n` exists. This is
//!   STREAM's nOAE argument, with GCM as the underlying AEAD.
//! - **Header binding**: the whole header is the AAD of every segment, so a
//!   changed segment size, version or nonce prefix makes segment 0 fail; the
//!   segment size in particular cannot be altered to shift boundaries.
//! - **Cross-stream splicing**: segments or headers from another file fail,
//!   because that file has another key, and even under the same key another
//!   random prefix `P` (so another nonce and AAD).
//! - **Accidental key reuse**: if a key is ever reused, nonces stay distinct
//!   unless two streams draw the same 56-bit `P`, about `q²/2^57` for `q`
//!   streams under one key. The design does not rely on this; fresh keys do.
//! - **Release of plaintext**: [`Decryptor::open_segment`] and
//!   [`DecryptingWriter`] release a segment only after its tag verified (a
//!   failed segment's buffer is zeroed). A stream is complete only when
//!   [`Decryptor::finish`] / [`DecryptingWriter::finish`] succeed; before that a
//!   caller has an authentic *prefix*, which it must not treat as the file.
//!
//! Limits and non-goals: AES-GCM is not key-committing, so one ciphertext can
//! be crafted to decrypt validly under two keys chosen by the attacker; that
//! matters only if different recipients could be given different file keys for
//! the same blob (the key travels in metadata sealed by the sender, so the
//! sender could do this, and no one else). The exact length of the file is
//! visible: it follows from the stream length. A single key encrypts at most
//! 2^32 · 16 MiB = 2^56 bytes, where GCM's confidentiality bound (about
//! `σ²/2^128` for σ blocks) is about 2^-24; real files are far smaller. Tag checks are constant-time inside aws-lc; the header is public.
//!
//! ## Errors and I/O
//!
//! See [`Error`] for how errors travel inside `std::io::Error` through the adapters.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod header;
mod key;
mod read;
mod segment;
mod write;

pub use error::Error;
pub use header::{header_len, HEADER_LEN, MAGIC, MAX_SEGMENT, MIN_SEGMENT, NONCE_PREFIX_LEN, VERSION};
pub use key::{FileKey, KEY_LEN};
pub use read::EncryptingReader;
pub use segment::{ciphertext_len, plaintext_len, Decryptor, Encryptor, MAX_SEGMENTS};
pub use write::DecryptingWriter;

/// Default plaintext segment size (64 KiB).
pub const DEFAULT_SEGMENT: usize = 64 * 1024;

/// Length of an AES-GCM tag, appended to every segment.
pub const TAG_LEN: usize = 16;
