//! The browser's engine API as plain Rust: what `bindings` exports, and what
//! the native conformance tests call.
//!
//! Errors are strings for a person: they name what failed and never quote
//! key material or plaintext.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use client::engine::envelope::{self, Body, EventBinding};
use client::engine::events::{self, ReplayGuard};
use client::{Content, ContentKey, CoreEvent, Message};
use kms_protocol::message::KeyObject;
use kms_protocol::KmsUri;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Longest JSON this API parses (an event page entry, a key object).
pub const MAX_JSON: usize = 256 * 1024;

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
    if text.len() > MAX_JSON {
        return Err(format!("the {what} is {} bytes; at most {MAX_JSON}", text.len()));
    }
    // serde_json's message names a position and an expected shape, never the input's values.
    serde_json::from_str(text).map_err(|e| format!("the {what} is not valid: {e}"))
}

/// `s` as a `kms://` URI; `what` names it in the error.
fn kms_uri(what: &str, s: &str) -> Result<KmsUri, String> {
    s.parse().map_err(|_| format!("{what} is not a kms:// URI"))
}

/// A content key as the KMS released it, held in wasm memory (zeroized on drop).
#[derive(Debug)]
pub struct Key(ContentKey);

impl Key {
    /// From the KMS's key object (the `key` of a retrieve answer, as JSON).
    pub fn from_kms_json(key_object: &str) -> Result<Key, String> {
        let obj: KeyObject = parse("key object", key_object)?;
        ContentKey::from_object(&obj).map(Key).map_err(|e| e.to_string())
    }

    /// The newest key of `resource` from the KMS's answer (JSON) to
    /// `retrieve <resource>/keys` with `count` 1: it must be bound there.
    pub fn newest_from_kms(answer: &str, resource: &str) -> Result<Key, String> {
        let resp: kms_protocol::Response = parse("KMS answer", answer)?;
        let resource = kms_uri("the resource", resource)?;
        ContentKey::newest_of(&resp.keys.unwrap_or_default(), &resource).map(Key).map_err(|e| e.to_string())
    }

    /// Its `kms://` URI.
    pub fn uri(&self) -> String {
        self.0.uri.to_string()
    }

    /// The resource it is bound to, if bound.
    pub fn resource(&self) -> Option<String> {
        self.0.resource.as_ref().map(|r| r.to_string())
    }
}

/// One session's view of the timelines: the replay guard every opened event
/// passes through, shared by all spaces (as the native `Session`'s is).
#[derive(Default)]
pub struct Timeline {
    guard: ReplayGuard,
}

impl Timeline {
    /// A fresh guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key URI a core event (JSON) names, or `None` for events without
    /// ciphertext: what to fetch from the KMS before [`Timeline::open`].
    pub fn key_uri_of(event: &str) -> Result<Option<String>, String> {
        let e: CoreEvent = parse("event", event)?;
        Ok(if events::plain_content(&e).is_some() { None } else { e.key_uri })
    }

    /// Opens a core event (JSON, as the core's API sends it) of the space
    /// whose KMS resource is `space_resource`, with the key it names (`None`
    /// when the KMS refused it: `refusal` says why). Returns the message as
    /// JSON; an event that fails a check is a message whose content is
    /// `{"type": "unreadable", "reason": …}`, never an error.
    pub fn open(
        &mut self,
        key: Option<&Key>,
        refusal: Option<&str>,
        space_resource: &str,
        event: &str,
    ) -> Result<String, String> {
        let e: CoreEvent = parse("event", event)?;
        let resource = kms_uri("the space's resource", space_resource)?;
        let content = match (events::plain_content(&e), key) {
            (Some(c), _) => Ok(c),
            (None, Some(k)) => events::open_sealed(&k.0, &mut self.guard, &resource, &e),
            (None, None) => Err(client::Error::Kms {
                status: 403,
                reason: refusal.unwrap_or("the KMS did not release the event's key").to_string(),
            }),
        };
        Ok(message_json(&events::message(&e, content)).to_string())
    }
}

/// The key URI a sealed item (a space's title, an event) names.
pub fn sealed_key_uri(sealed: &str) -> Result<String, String> {
    envelope::key_uri_of(sealed).map_err(|e| e.to_string())
}

/// Seals a new space's title under `key` (fresh from the KMS, bound to
/// `space_resource` as the resource is created), as `sender` at `now_ms`.
pub fn seal_space_title(key: &Key, space_resource: &str, sender: &str, now_ms: i64, title: &str) -> Result<String, String> {
    let resource = kms_uri("the space's resource", space_resource)?;
    envelope::seal_space_title(&key.0, &resource, sender, now_ms, title).map_err(|e| e.to_string())
}

/// A space's title, opened with the key its sealed metadata names and
/// checked against the resource the core claims for the space.
pub fn open_space_title(key: &Key, sealed: &str, space_resource: &str) -> Result<String, String> {
    let resource = kms_uri("the space's resource", space_resource)?;
    envelope::open_space_title(&key.0, sealed, &resource).map_err(|e| e.to_string())
}

/// A message as the app shows it.
pub fn message_json(m: &Message) -> Value {
    let content = match &m.content {
        Content::Text(t) => json!({"type": "text", "text": t}),
        Content::Edit(t) => json!({"type": "edit", "text": t}),
        Content::Deleted => json!({"type": "deleted"}),
        Content::Reaction(r) => json!({"type": "reaction", "emoji": r}),
        Content::Title(t) => json!({"type": "title", "title": t}),
        Content::MemberAdded { user } => json!({"type": "member_added", "user": user.as_str()}),
        Content::MemberRemoved { user } => json!({"type": "member_removed", "user": user.as_str()}),
        Content::FileReady => json!({"type": "file_ready"}),
        Content::Unreadable(why) => json!({"type": "unreadable", "reason": why}),
    };
    json!({
        "spaceId": m.space_id.as_str(),
        "seq": m.seq,
        "id": m.id.as_str(),
        "sender": m.sender.as_str(),
        "storedAt": m.stored_at,
        "parent": m.parent.as_ref().map(|p| p.as_str()),
        "target": m.target.as_ref().map(|t| t.as_str()),
        "content": content,
    })
}

/// What a person sends: the sealed ciphertext of an event (`message`,
/// `edit` or `reaction`), sealed as `sender` at `now_ms` (the browser's
/// clock) with its binding: `id` is the client event id the app also sends
/// as `client_event_id`.
#[allow(clippy::too_many_arguments)]
pub fn seal_event(
    key: &Key,
    sender: &str,
    now_ms: i64,
    kind: &str,
    id: &str,
    parent: Option<&str>,
    target: Option<&str>,
    text: &str,
) -> Result<String, String> {
    let body = match kind {
        "message" | "edit" => Body::Text { text: text.to_owned() },
        "reaction" => Body::Reaction { emoji: text.to_owned() },
        other => return Err(format!("cannot seal a {} event", other.chars().take(20).collect::<String>())),
    };
    let binding = EventBinding {
        kind: kind.to_owned(),
        id: id.to_owned(),
        parent: parent.map(str::to_owned),
        target: target.map(str::to_owned),
    };
    envelope::seal_event(&key.0, sender, now_ms, binding, body).map_err(|e| e.to_string())
}

/// The blinded search tokens that index `text` (base64url), sent with a message.
pub fn text_tokens(key: &Key, text: &str) -> Result<Vec<String>, String> {
    let sk = client::engine::search::search_key(&key.0.key, &key.uri()).map_err(|e| e.to_string())?;
    Ok(client::engine::search::text_tokens(&sk, text))
}

/// The blinded tokens of a query under one space's key (base64url).
pub fn query_tokens(key: &Key, query: &str) -> Result<Vec<String>, String> {
    let sk = client::engine::search::search_key(&key.0.key, &key.uri()).map_err(|e| e.to_string())?;
    Ok(client::engine::search::query_tokens(&sk, &search::Query::parse(query)))
}

fn file_key(key_b64: &str) -> Result<filecrypt::FileKey, String> {
    let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(key_b64).map_err(|_| "the file key is not base64url".to_string())?);
    filecrypt::FileKey::from_bytes(&raw).map_err(|e| e.to_string())
}

/// Encrypts a file a segment at a time (bounded memory: the app reads the
/// file in `segment`-sized slices and uploads what each call returns).
pub struct FileEncryptor {
    enc: filecrypt::Encryptor,
    key: filecrypt::FileKey,
    header: Vec<u8>,
}

impl FileEncryptor {
    /// A fresh file key and stream of `segment` plaintext bytes per segment.
    pub fn new(segment: usize) -> Result<FileEncryptor, String> {
        let key = filecrypt::FileKey::generate();
        let (enc, header) = filecrypt::Encryptor::new(&key, segment).map_err(|e| e.to_string())?;
        Ok(FileEncryptor { enc, key, header })
    }

    /// The stream header: the first bytes of the ciphertext.
    pub fn header(&self) -> Vec<u8> {
        self.header.clone()
    }

    /// The file key (base64url), to seal into the file's metadata only.
    pub fn key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    /// Seals the next segment (exactly `segment` bytes unless `last`).
    pub fn seal(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, String> {
        let mut buf = plaintext.to_vec();
        self.enc.seal_segment(&mut buf, last).map_err(|e| e.to_string())?;
        Ok(buf)
    }
}

/// Decrypts a downloaded file a segment at a time.
pub struct FileDecryptor {
    dec: filecrypt::Decryptor,
}

impl FileDecryptor {
    /// From the file key (base64url, from the opened metadata) and the stream header.
    pub fn new(key_b64: &str, header: &[u8]) -> Result<FileDecryptor, String> {
        let dec = filecrypt::Decryptor::new(&file_key(key_b64)?, header).map_err(|e| e.to_string())?;
        Ok(FileDecryptor { dec })
    }

    /// Ciphertext bytes of each non-final segment.
    pub fn sealed_segment_len(&self) -> usize {
        self.dec.segment_size() + filecrypt::TAG_LEN
    }

    /// Opens the next segment (`last` for the final one).
    pub fn open(&mut self, sealed: &[u8], last: bool) -> Result<Vec<u8>, String> {
        let mut buf = sealed.to_vec();
        self.dec.open_segment(&mut buf, last).map_err(|e| e.to_string())?;
        Ok(buf)
    }

    /// Checks that the stream ended with its final segment (a cut stream fails here).
    pub fn finish(self) -> Result<(), String> {
        self.dec.finish().map_err(|e| e.to_string())
    }
}

/// Which cryptographic backend this build uses (`RustCrypto` in the browser).
pub fn backend() -> &'static str {
    primitives::BACKEND
}

fn date_of(now_ms: i64) -> Result<kms_protocol::date::Date, String> {
    kms_protocol::date::Date::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .map_err(|_| "the clock reading is out of range".to_string())
}

/// The secure channel to the org's KMS, its key pinned from the org's
/// configuration (never from the core): the ECDHE handshake, requests and
/// answers under the session key, and the KMS's signed 499 resets. The
/// caller moves the bytes (a `fetch` to the KMS or through the core's relay)
/// and passes its clock in.
pub struct KmsChannel {
    pin: client::KmsPin,
    client_id: String,
    pending: Option<kms_protocol::channel::PendingHandshake>,
    session: Option<kms_protocol::channel::Session>,
}

impl KmsChannel {
    /// For the KMS at `domain` whose static public key is `pinned_jwk` (JSON, with `kid`).
    pub fn new(domain: &str, pinned_jwk: &str) -> Result<KmsChannel, String> {
        if pinned_jwk.len() > MAX_JSON {
            return Err(format!("the pinned KMS key is over {MAX_JSON} bytes"));
        }
        let pin = client::KmsPin::from_jwk_json(domain, pinned_jwk).map_err(|e| e.to_string())?;
        Ok(KmsChannel { pin, client_id: String::new(), pending: None, session: None })
    }

    /// Starts a handshake with the user's KMS access token: the compact JWE
    /// to send as the body of `POST /kms/messages`. Drops any session.
    pub fn begin_handshake(&mut self, token: &str, client_id: &str) -> Result<String, String> {
        let client = kms_protocol::message::ClientInfo {
            client_id: client_id.to_owned(),
            credential: kms_protocol::message::Credential::bearer(token),
        };
        let pending =
            kms_protocol::channel::begin_handshake(&self.pin.info(), client).map_err(|e| e.to_string())?;
        let wrapped = pending.wrapped.clone();
        self.client_id = client_id.to_owned();
        self.session = None;
        self.pending = Some(pending);
        Ok(wrapped)
    }

    /// Reads the KMS's signed answer to the handshake; returns the session's URI.
    pub fn finish_handshake(&mut self, answer: &str, now_ms: i64) -> Result<String, String> {
        let pending = self.pending.take().ok_or("no handshake is under way")?;
        let session = pending.finish_at(&self.pin.info(), answer, date_of(now_ms)?).map_err(|e| e.to_string())?;
        let uri = session.uri().to_string();
        self.session = Some(session);
        Ok(uri)
    }

    /// The open session's URI, if any.
    pub fn session_uri(&self) -> Option<String> {
        self.session.as_ref().map(|s| s.uri().to_string())
    }

    /// Seals a request (`method`, `uri` and the operation's members as a
    /// JSON object) for the session, with the user's current KMS access
    /// `token` as its credential (each request carries one):
    /// `{"requestId", "message"}` as JSON.
    pub fn wrap(&self, method: &str, uri: &str, body: &str, token: &str, now_ms: i64) -> Result<String, String> {
        let session = self.session.as_ref().ok_or("no KMS session: hand-shake first")?;
        let method: kms_protocol::Method =
            serde_json::from_value(Value::String(method.to_owned())).map_err(|_| "unknown KMS method".to_string())?;
        let client = kms_protocol::message::ClientInfo {
            client_id: self.client_id.clone(),
            credential: kms_protocol::message::Credential::bearer(token),
        };
        let mut req = kms_protocol::message::Request::new(method, uri, Some(client));
        req.body = parse("request body", body)?;
        let message = session.wrap_at(&req, date_of(now_ms)?).map_err(|e| e.to_string())?;
        Ok(json!({"requestId": req.request_id, "message": message}).to_string())
    }

    /// Opens the KMS's answer to `request_id` (JSON). A genuine, fresh reset
    /// for it drops the session and is an error starting `reset:`.
    pub fn unwrap(&mut self, answer: &str, request_id: &str, now_ms: i64) -> Result<String, String> {
        let session = self.session.as_ref().ok_or("no KMS session: hand-shake first")?;
        match session.unwrap_at(&self.pin.info(), answer, request_id, date_of(now_ms)?) {
            Ok(resp) => serde_json::to_string(&resp).map_err(|_| "the answer does not serialize".to_string()),
            Err(kms_protocol::ProtocolError::Reset(reason)) => {
                self.session = None;
                Err(format!("reset: {reason}"))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Checks a reset the KMS pushed for the session at `session_uri` (the
    /// open one, or one the app remembers): `Ok(reason)` when genuine, fresh
    /// and for that session, which is then dropped; an error otherwise.
    pub fn pushed_reset(&mut self, compact: &str, session_uri: &str, now_ms: i64) -> Result<String, String> {
        let session = kms_uri("the session", session_uri)?;
        let reason = kms_protocol::channel::verify_pushed_reset_at(&self.pin.info(), compact, &session, date_of(now_ms)?)
            .map_err(|e| e.to_string())?;
        if self.session.as_ref().is_some_and(|s| s.uri() == &session) {
            self.session = None;
        }
        Ok(reason)
    }
}
