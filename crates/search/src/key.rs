//! The per-space search key and the blinded tokens computed under it.

use std::fmt;

use primitives::HmacSha256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroize;

use crate::Error;

/// HKDF salt of [`SearchKey::derive`]; the `v1` names this whole token format
/// (derivation, domain separation, text analysis).
pub const SEARCH_KEY_SALT: &[u8] = b"custos-search-v1";

/// Length of a [`SearchKey`] in bytes.
pub const SEARCH_KEY_LEN: usize = 32;

/// Length of a [`Token`] in bytes (a truncated HMAC-SHA256).
pub const TOKEN_LEN: usize = 16;

/// Domain separation of the HMAC inputs: a stem token is
/// `HMAC(key, "s\0" ‖ stem)`, a prefix token `HMAC(key, "p\0" ‖ prefix)`, so a
/// stem can never produce the same token as a prefix with the same letters.
pub(crate) const STEM_TAG: &[u8] = b"s\0";
pub(crate) const PREFIX_TAG: &[u8] = b"p\0";

/// The secret key under which a space's search tokens are computed.
///
/// Derived from the space's content key (see [`SearchKey::derive`]), so every
/// member who can read the space can search it, the core (which never holds
/// content keys) cannot compute tokens, and a content-key rotation gives a new,
/// unrelated search key. The bytes are zeroized on drop and never printed:
/// `Debug` shows only the content key's URI.
pub struct SearchKey {
    bytes: [u8; SEARCH_KEY_LEN],
    key_uri: String,
}

impl SearchKey {
    /// `HKDF-SHA256(ikm = space_key, salt = "custos-search-v1", info = key_uri)`,
    /// 32 bytes.
    ///
    /// `space_key` is the space's content key as released by the enterprise's
    /// KMS and `key_uri` that key's URI (which names its version): the same key
    /// bytes under two URIs give unrelated search keys, and so do two spaces.
    pub fn derive(space_key: &[u8; 32], key_uri: &str) -> SearchKey {
        let mut bytes = [0u8; SEARCH_KEY_LEN];
        // HKDF-SHA256 can expand to 255 * 32 bytes; 32 never fails.
        primitives::hkdf_sha256(SEARCH_KEY_SALT, space_key, key_uri.as_bytes(), &mut bytes)
            .expect("HKDF-SHA256 expands to 32 bytes");
        SearchKey { bytes, key_uri: key_uri.to_owned() }
    }

    /// The URI of the content key this search key was derived from: what the
    /// indexing service records next to the tokens it stores, so that it knows
    /// which messages still need re-indexing after a rotation.
    pub fn key_uri(&self) -> &str {
        &self.key_uri
    }

    /// An HMAC key to compute many tokens with (one key schedule per batch).
    pub(crate) fn hmac_key(&self) -> HmacSha256 {
        HmacSha256::new(&self.bytes)
    }

    #[cfg(test)]
    pub(crate) fn bytes_for_test(&self) -> &[u8; SEARCH_KEY_LEN] {
        &self.bytes
    }
}

impl Drop for SearchKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for SearchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchKey").field("key_uri", &self.key_uri).field("bytes", &"<redacted>").finish()
    }
}

/// A blinded search token: `HMAC-SHA256(search key, tag ‖ text)` truncated to
/// 16 bytes.
///
/// Tokens are what the core stores and matches; they are not secret from it
/// (it sees every one), so equality is ordinary, not constant-time, and `Debug`
/// prints them. On the wire a token is its unpadded base64url form (22
/// characters); [`Token::from_base64url`] accepts only that canonical form, so
/// two strings are equal exactly when the tokens are.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// The token from its 16 bytes.
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Token {
        Token(bytes)
    }

    /// The token's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// Unpadded base64url (RFC 4648 §5), 22 characters.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses [`Token::to_base64url`]'s form: unpadded, canonical base64url of
    /// exactly 16 bytes.
    pub fn from_base64url(s: &str) -> Result<Token, Error> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| Error::InvalidBase64)?;
        let bytes: [u8; TOKEN_LEN] = bytes.as_slice().try_into().map_err(|_| Error::InvalidTokenLength(bytes.len()))?;
        Ok(Token(bytes))
    }

    /// `HMAC-SHA256(key, tag ‖ text)[..16]`.
    pub(crate) fn compute(key: &HmacSha256, tag: &[u8], text: &str) -> Token {
        let mac = key.mac(&[tag, text.as_bytes()]);
        let mut bytes = [0u8; TOKEN_LEN];
        bytes.copy_from_slice(&mac[..TOKEN_LEN]);
        Token(bytes)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.to_base64url())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64url())
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64url())
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Token, D::Error> {
        struct TokenVisitor;
        impl Visitor<'_> for TokenVisitor {
            type Value = Token;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a search token as unpadded base64url")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Token, E> {
                Token::from_base64url(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TokenVisitor)
    }
}
