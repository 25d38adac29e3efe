//! The JavaScript face of [`crate::api`] (wasm-bindgen). Thin on purpose:
//! every decision is in `api` and below; here only types are converted.

use wasm_bindgen::prelude::*;

use crate::api;

fn err(e: String) -> JsError {
    JsError::new(&e)
}

/// Which cryptographic backend this build uses.
#[wasm_bindgen]
pub fn backend() -> String {
    api::backend().to_string()
}

/// Bytes of a file's stream header (what precedes the first segment).
#[wasm_bindgen(js_name = fileHeaderLen)]
pub fn file_header_len() -> usize {
    filecrypt::HEADER_LEN
}

/// A content key released by the org's KMS, kept in wasm memory.
#[wasm_bindgen]
pub struct Key(api::Key);

#[wasm_bindgen]
impl Key {
    /// From the KMS's key object (JSON).
    #[wasm_bindgen(js_name = fromKms)]
    pub fn from_kms(key_object: &str) -> Result<Key, JsError> {
        api::Key::from_kms_json(key_object).map(Key).map_err(err)
    }

    /// The newest key of `resource` from the KMS's answer (JSON).
    #[wasm_bindgen(js_name = newestFromKms)]
    pub fn newest_from_kms(answer: &str, resource: &str) -> Result<Key, JsError> {
        api::Key::newest_from_kms(answer, resource).map(Key).map_err(err)
    }

    /// Its `kms://` URI.
    #[wasm_bindgen(getter)]
    pub fn uri(&self) -> String {
        self.0.uri()
    }

    /// The resource it is bound to.
    #[wasm_bindgen(getter)]
    pub fn resource(&self) -> Option<String> {
        self.0.resource()
    }
}

/// The key URI a sealed item names.
#[wasm_bindgen(js_name = sealedKeyUri)]
pub fn sealed_key_uri(sealed: &str) -> Result<String, JsError> {
    api::sealed_key_uri(sealed).map_err(err)
}

/// Seals a new space's title.
#[wasm_bindgen(js_name = sealSpaceTitle)]
pub fn seal_space_title(key: &Key, space_resource: &str, sender: &str, now_ms: f64, title: &str) -> Result<String, JsError> {
    api::seal_space_title(&key.0, space_resource, sender, now_ms as i64, title).map_err(err)
}

/// A space's title, checked against the resource the core claims.
#[wasm_bindgen(js_name = openSpaceTitle)]
pub fn open_space_title(key: &Key, sealed: &str, space_resource: &str) -> Result<String, JsError> {
    api::open_space_title(&key.0, sealed, space_resource).map_err(err)
}

/// The replay guard and event opener of one session.
#[wasm_bindgen]
pub struct Timeline(api::Timeline);

#[wasm_bindgen]
impl Timeline {
    /// A fresh timeline.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Timeline {
        Timeline(api::Timeline::new())
    }

    /// The key URI an event (JSON) names, or undefined.
    #[wasm_bindgen(js_name = keyUriOf)]
    pub fn key_uri_of(event: &str) -> Result<Option<String>, JsError> {
        api::Timeline::key_uri_of(event).map_err(err)
    }

    /// Opens an event (JSON) of the space whose resource is `spaceResource`
    /// with the key it names (the key object is borrowed, not consumed).
    pub fn open(&mut self, key: &Key, space_resource: &str, event: &str) -> Result<String, JsError> {
        self.0.open(Some(&key.0), None, space_resource, event).map_err(err)
    }

    /// Opens an event without its key: one that carries no ciphertext, or
    /// one whose key the KMS refused (`refusal` says why, shown as the reason).
    #[wasm_bindgen(js_name = openWithoutKey)]
    pub fn open_without_key(
        &mut self,
        refusal: Option<String>,
        space_resource: &str,
        event: &str,
    ) -> Result<String, JsError> {
        self.0.open(None, refusal.as_deref(), space_resource, event).map_err(err)
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// Seals an event to send.
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen(js_name = sealEvent)]
pub fn seal_event(
    key: &Key,
    sender: &str,
    now_ms: f64,
    kind: &str,
    id: &str,
    parent: Option<String>,
    target: Option<String>,
    text: &str,
) -> Result<String, JsError> {
    api::seal_event(&key.0, sender, now_ms as i64, kind, id, parent.as_deref(), target.as_deref(), text).map_err(err)
}

/// The blinded tokens that index `text`.
#[wasm_bindgen(js_name = textTokens)]
pub fn text_tokens(key: &Key, text: &str) -> Result<Vec<String>, JsError> {
    api::text_tokens(&key.0, text).map_err(err)
}

/// The blinded tokens of a query.
#[wasm_bindgen(js_name = queryTokens)]
pub fn query_tokens(key: &Key, query: &str) -> Result<Vec<String>, JsError> {
    api::query_tokens(&key.0, query).map_err(err)
}

/// Streaming file encryption.
#[wasm_bindgen]
pub struct FileEncryptor(api::FileEncryptor);

#[wasm_bindgen]
impl FileEncryptor {
    /// A fresh key and stream.
    #[wasm_bindgen(constructor)]
    pub fn new(segment: usize) -> Result<FileEncryptor, JsError> {
        api::FileEncryptor::new(segment).map(FileEncryptor).map_err(err)
    }

    /// The stream header.
    pub fn header(&self) -> Vec<u8> {
        self.0.header()
    }

    /// The file key, base64url (to seal into the metadata).
    #[wasm_bindgen(js_name = keyB64)]
    pub fn key_b64(&self) -> String {
        self.0.key_b64()
    }

    /// Seals the next segment.
    pub fn seal(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, JsError> {
        self.0.seal(plaintext, last).map_err(err)
    }
}

/// Streaming file decryption.
#[wasm_bindgen]
pub struct FileDecryptor(Option<api::FileDecryptor>);

#[wasm_bindgen]
impl FileDecryptor {
    /// From the file key and the stream header.
    #[wasm_bindgen(constructor)]
    pub fn new(key_b64: &str, header: &[u8]) -> Result<FileDecryptor, JsError> {
        api::FileDecryptor::new(key_b64, header).map(|d| FileDecryptor(Some(d))).map_err(err)
    }

    fn inner(&mut self) -> Result<&mut api::FileDecryptor, JsError> {
        self.0.as_mut().ok_or_else(|| JsError::new("the stream is finished"))
    }

    /// Ciphertext bytes of each non-final segment.
    #[wasm_bindgen(js_name = sealedSegmentLen)]
    pub fn sealed_segment_len(&mut self) -> Result<usize, JsError> {
        Ok(self.inner()?.sealed_segment_len())
    }

    /// Opens the next segment.
    pub fn open(&mut self, sealed: &[u8], last: bool) -> Result<Vec<u8>, JsError> {
        self.inner()?.open(sealed, last).map_err(err)
    }

    /// Checks that the stream ended with its final segment.
    pub fn finish(&mut self) -> Result<(), JsError> {
        self.0.take().ok_or_else(|| JsError::new("the stream is finished"))?.finish().map_err(err)
    }
}

/// The secure channel to the org's KMS (its key pinned from the org's configuration).
#[wasm_bindgen]
pub struct KmsChannel(api::KmsChannel);

#[wasm_bindgen]
impl KmsChannel {
    /// For the KMS at `domain` whose static public key is `pinnedJwk` (JSON).
    #[wasm_bindgen(constructor)]
    pub fn new(domain: &str, pinned_jwk: &str) -> Result<KmsChannel, JsError> {
        api::KmsChannel::new(domain, pinned_jwk).map(KmsChannel).map_err(err)
    }

    /// The handshake to send (a compact JWE), with the user's KMS token.
    #[wasm_bindgen(js_name = beginHandshake)]
    pub fn begin_handshake(&mut self, token: &str, client_id: &str) -> Result<String, JsError> {
        self.0.begin_handshake(token, client_id).map_err(err)
    }

    /// Reads the KMS's signed answer; returns the session's URI.
    #[wasm_bindgen(js_name = finishHandshake)]
    pub fn finish_handshake(&mut self, answer: &str, now_ms: f64) -> Result<String, JsError> {
        self.0.finish_handshake(answer, now_ms as i64).map_err(err)
    }

    /// The open session's URI.
    #[wasm_bindgen(getter, js_name = sessionUri)]
    pub fn session_uri(&self) -> Option<String> {
        self.0.session_uri()
    }

    /// Seals a request with the user's KMS token: `{"requestId", "message"}` (JSON).
    pub fn wrap(&self, method: &str, uri: &str, body: &str, token: &str, now_ms: f64) -> Result<String, JsError> {
        self.0.wrap(method, uri, body, token, now_ms as i64).map_err(err)
    }

    /// Opens the answer to `requestId` (JSON); a genuine reset throws `reset: …`.
    pub fn unwrap(&mut self, answer: &str, request_id: &str, now_ms: f64) -> Result<String, JsError> {
        self.0.unwrap(answer, request_id, now_ms as i64).map_err(err)
    }

    /// Checks a reset the KMS pushed for `sessionUri`; returns its reason.
    #[wasm_bindgen(js_name = pushedReset)]
    pub fn pushed_reset(&mut self, compact: &str, session_uri: &str, now_ms: f64) -> Result<String, JsError> {
        self.0.pushed_reset(compact, session_uri, now_ms as i64).map_err(err)
    }
}
