//! Unpadded base64url (RFC 7515 §2), strict: no padding, no whitespace, canonical trailing bits.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::{Error, Part};

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, rejecting padding and non-canonical input.
pub fn decode(s: &str, part: Part) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| Error::Base64(part))
}

/// Like [`decode`], for secrets: the buffer zeroizes when dropped.
pub fn decode_secret(s: &str, part: Part) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    decode(s, part).map(zeroize::Zeroizing::new)
}
