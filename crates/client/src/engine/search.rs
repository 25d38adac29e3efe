//! Blinded search tokens: a content key's search key, and the tokens of a
//! text or a query under it (crate `search`). The core sees only these.

use jose::OctKey;
use search::{index_tokens, Query, SearchKey};

use crate::error::{Error, Result};

/// The search key derived from a content key (`key_uri` names it).
pub fn search_key(key: &OctKey, key_uri: &str) -> Result<SearchKey> {
    let bytes: &[u8; 32] =
        key.expose().try_into().map_err(|_| Error::Tampered("a content key is not 256 bits".into()))?;
    Ok(SearchKey::derive(bytes, key_uri))
}

/// The blinded tokens that index `text`, base64url.
pub fn text_tokens(key: &SearchKey, text: &str) -> Vec<String> {
    index_tokens(key, text).iter().map(|t| t.to_base64url()).collect()
}

/// The blinded tokens of a query, base64url.
pub fn query_tokens(key: &SearchKey, q: &Query) -> Vec<String> {
    q.tokens(key).iter().map(|t| t.to_base64url()).collect()
}
