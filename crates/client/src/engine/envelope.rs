//! The sealed envelope: what travels inside a ciphertext (compact JWE,
//! `dir` + `A256GCM`, `kid` = the key's `kms://` URI), and the checks a
//! receiver makes when opening one.
//!
//! Every sealed item carries, inside the encryption, the space's KMS resource,
//! the sender and the send time, so a receiver can check what the core claims
//! (sender, space) against what the sender said; a core that re-attributes a
//! message or moves it to another space is caught. Plaintexts are padded to
//! size buckets so ciphertext lengths say little about content.

use jose::jwe::{DecryptKey, EncryptKey};
use jose::{ContentEnc, HeaderParams, Jwe, JwePolicy, OctKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::key::ContentKey;
use crate::error::{Error, Result};
use crate::types::Content;

/// Padded plaintext sizes; larger plaintexts round up to a multiple of the last.
pub const BUCKETS: &[usize] = &[256, 1024, 4096, 16384];
/// Largest text a message may have: padded it must stay within the 32 KiB
/// bucket, whose sealed form fits the core's 64 KiB (checked again on the
/// sealed length, since JSON escaping can grow the text).
pub const MAX_TEXT: usize = 32 * 1024 - 1024;
/// Longest sealed item the core takes (its default `max_ciphertext_bytes`).
pub const MAX_SEALED: usize = 64 * 1024;
/// How far a sender's clock may run ahead of the core's.
pub const MAX_AHEAD_MS: i64 = 5 * 60 * 1000;
/// How long a message may wait on the sender's side before the core stores it.
pub const MAX_BEHIND_MS: i64 = 24 * 60 * 60 * 1000;

/// The sealed part of an event, a file's metadata or a space's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Format version (1).
    pub v: u8,
    /// The space's KMS resource URI.
    pub space: String,
    /// The sender's user id.
    pub sender: String,
    /// The sender's clock, ms since the epoch.
    pub ts: i64,
    /// For events: what the event is (absent in space and file metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventBinding>,
    /// The content.
    pub body: Body,
}

/// What an event is, sealed with its content so the core cannot present it
/// as another: its kind, the sender's event id (also the core's
/// `client_event_id`, so a re-post is a visible replay), thread parent and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBinding {
    /// `message`, `edit`, `reaction`, `title`.
    pub kind: String,
    /// The sender's event id.
    pub id: String,
    /// Thread parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The event acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Content kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// Message or edit text.
    Text {
        /// The text.
        text: String,
    },
    /// A reaction.
    Reaction {
        /// The emoji or short word.
        emoji: String,
    },
    /// A space's metadata: its title (binding to the resource is `Envelope::space`).
    Space {
        /// The title.
        title: String,
    },
    /// A file's metadata.
    File {
        /// File name.
        name: String,
        /// Plaintext size in bytes.
        size: u64,
        /// The file key, base64url (inside the ciphertext only).
        key: String,
        /// Plaintext segment size of the stream.
        segment: u32,
    },
    /// A file's preview: a thumbnail (base64 of the image) or a text excerpt.
    Preview {
        /// The file it previews (a preview cannot be moved to another file).
        file: String,
        /// `image/png`, or `text/plain` for an excerpt.
        media_type: String,
        /// The image (standard base64) or the excerpt itself.
        data: String,
    },
}

impl Drop for Body {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            Body::Text { text } => text.zeroize(),
            Body::Reaction { emoji } => emoji.zeroize(),
            Body::Space { title } => title.zeroize(),
            Body::File { name, key, .. } => {
                name.zeroize();
                key.zeroize();
            }
            Body::Preview { data, .. } => data.zeroize(),
        }
    }
}

/// Pads `plain` to its bucket: `plain || 0x80 || 0x00…`.
pub fn pad(plain: &[u8]) -> Zeroizing<Vec<u8>> {
    let need = plain.len() + 1;
    let last = *BUCKETS.last().expect("buckets");
    let size = BUCKETS.iter().copied().find(|&b| b >= need).unwrap_or_else(|| need.div_ceil(last) * last);
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    out.extend_from_slice(plain);
    out.push(0x80);
    out.resize(size, 0);
    out
}

/// Removes the padding of [`pad`].
pub fn unpad(padded: &[u8]) -> Result<&[u8]> {
    let end = padded.iter().rposition(|&b| b != 0).ok_or_else(|| Error::Tampered("bad padding".into()))?;
    if padded[end] != 0x80 {
        return Err(Error::Tampered("bad padding".into()));
    }
    Ok(&padded[..end])
}

/// Seals an envelope under `key` (`kid` = `key_uri`).
pub fn seal(key: &OctKey, key_uri: &str, env: &Envelope) -> Result<String> {
    let json = Zeroizing::new(serde_json::to_vec(env).map_err(|e| Error::Invalid(format!("encoding: {e}")))?);
    let padded = pad(&json);
    Ok(jose::jwe::encrypt(EncryptKey::Dir(key), ContentEnc::A256Gcm, &HeaderParams::kid(key_uri), &padded)?)
}

/// Refuses a text too long for one message (before any key is fetched).
pub fn check_text(body: &Body) -> Result<()> {
    if let Body::Text { text } = body {
        if text.len() > MAX_TEXT {
            return Err(Error::Invalid(format!(
                "the text is {} bytes; at most {MAX_TEXT} fit in one message",
                text.len()
            )));
        }
    }
    Ok(())
}

/// Seals an event's content as `sender` at `ts` (the sender's clock, ms)
/// under the space's current `key`, with what the event is (`binding`)
/// sealed beside it; refuses texts and sealed items over the limits.
pub fn seal_event(key: &ContentKey, sender: &str, ts: i64, binding: EventBinding, body: Body) -> Result<String> {
    check_text(&body)?;
    let resource =
        key.resource.as_ref().ok_or_else(|| Error::Invalid("the space's key is not bound to its resource".into()))?;
    let env = Envelope { v: 1, space: resource.to_string(), sender: sender.to_owned(), ts, event: Some(binding), body };
    let sealed = seal(&key.key, &key.uri.to_string(), &env)?;
    if sealed.len() > MAX_SEALED {
        return Err(Error::Invalid(format!(
            "the message is too long: {} bytes sealed, at most {MAX_SEALED}",
            sealed.len()
        )));
    }
    Ok(sealed)
}

/// The `kid` (key URI) of a sealed item, checked to be `dir` + `A256GCM`.
pub fn key_uri_of(compact: &str) -> Result<String> {
    let jwe = Jwe::parse(compact, &JwePolicy::DIR)?;
    jwe.header().kid.clone().ok_or_else(|| Error::Tampered("ciphertext names no key".into()))
}

/// Opens a sealed item and checks it against what the core claims: the key
/// named inside equals `claimed_key_uri`, the space and sender (if given) match, and the
/// sender's time is plausible next to `stored_at` (the core's, ms). No clock
/// is read: the core's `stored_at` is the time the sender's is checked against.
pub fn open(
    key: &OctKey,
    compact: &str,
    claimed_key_uri: &str,
    space: &str,
    sender: Option<&str>,
    stored_at: Option<i64>,
) -> Result<Envelope> {
    let jwe = Jwe::parse(compact, &JwePolicy::DIR)?;
    if jwe.header().kid.as_deref() != Some(claimed_key_uri) {
        return Err(Error::Tampered("the ciphertext names another key than the core claims".into()));
    }
    let padded = jwe.decrypt(DecryptKey::Dir(key))?;
    let env: Envelope = serde_json::from_slice(unpad(&padded)?)
        .map_err(|_| Error::Tampered("the decrypted content is not a Custos envelope".into()))?;
    if env.v != 1 {
        return Err(Error::Tampered(format!("unknown content version {}", env.v)));
    }
    if env.space != space {
        return Err(Error::Tampered("the content belongs to another space".into()));
    }
    if let Some(sender) = sender {
        if env.sender != sender {
            return Err(Error::Tampered(format!(
                "the core says {sender} sent this; the sealed content says {}",
                env.sender
            )));
        }
    }
    if let Some(at) = stored_at {
        if env.ts > at + MAX_AHEAD_MS || env.ts < at - MAX_BEHIND_MS {
            return Err(Error::Tampered("the send time inside does not match when the core stored it".into()));
        }
    }
    Ok(env)
}

/// Seals a space's metadata (its title) as `sender` at `ts`, under `key`
/// bound (or being bound, at the resource's creation) to `resource`.
pub fn seal_space_title(
    key: &ContentKey,
    resource: &kms_protocol::KmsUri,
    sender: &str,
    ts: i64,
    title: &str,
) -> Result<String> {
    if key.resource.as_ref().is_some_and(|r| r != resource) {
        return Err(Error::Invalid("the key is bound to another resource than the space's".into()));
    }
    if title.is_empty() || title.len() > 1024 {
        return Err(Error::Invalid("a space's title is 1 to 1024 bytes".into()));
    }
    let env = Envelope {
        v: 1,
        space: resource.to_string(),
        sender: sender.to_owned(),
        ts,
        event: None,
        body: Body::Space { title: title.to_owned() },
    };
    seal(&key.key, &key.uri.to_string(), &env)
}

/// Opens a space's sealed metadata (its title) with `key`, the key it
/// names, against the resource the core claims for the space. Fails closed:
/// a key bound to another resource, or metadata naming another resource or
/// not being space metadata, is `Tampered`.
pub fn open_space_title(key: &ContentKey, sealed: &str, claimed: &kms_protocol::KmsUri) -> Result<String> {
    if key.resource.as_ref() != Some(claimed) {
        return Err(Error::Tampered("the space's metadata key is bound to another resource than the core claims".into()));
    }
    // Whoever last retitled the space sealed this; the resource binding is what matters.
    let env = open(&key.key, sealed, &key.uri.to_string(), &claimed.to_string(), None, None)?;
    let Body::Space { title } = &env.body else {
        return Err(Error::Tampered("the space's metadata is not space metadata".into()));
    };
    Ok(title.clone())
}

/// Checks that the core presents a sealed event as the event its sender
/// sealed: the same kind, sender's event id (the core's `client_event_id`),
/// thread parent and target. Returns the sealed binding.
pub fn check_event<'a>(
    env: &'a Envelope,
    kind: &str,
    client_event_id: Option<&str>,
    parent: Option<&str>,
    target: Option<&str>,
) -> Result<&'a EventBinding> {
    let Some(b) = &env.event else {
        return Err(Error::Tampered("the content does not say what event it is".into()));
    };
    if b.kind != kind
        || b.parent.as_deref() != parent
        || b.target.as_deref() != target
        || Some(b.id.as_str()) != client_event_id
    {
        return Err(Error::Tampered("the core presents this content as another event than the sender sent".into()));
    }
    Ok(b)
}

/// What a sealed event of `kind` says, if its body is what that kind carries.
pub fn event_content(kind: &str, body: &Body) -> Result<Content> {
    Ok(match (kind, body) {
        ("message", Body::Text { text }) => Content::Text(text.clone()),
        ("edit", Body::Text { text }) => Content::Edit(text.clone()),
        ("reaction", Body::Reaction { emoji }) => Content::Reaction(emoji.clone()),
        ("title", Body::Space { title }) => Content::Title(title.clone()),
        (kind, _) => return Err(Error::Tampered(format!("a {kind} event carries other content"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> i64 {
        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }

    fn env(sender: &str, ts: i64) -> Envelope {
        Envelope {
            v: 1,
            space: "kms://kms.a.test/resources/r1".into(),
            sender: sender.into(),
            ts,
            event: None,
            body: Body::Text { text: "hi".into() },
        }
    }

    #[test]
    fn padding_hides_length_within_a_bucket_and_round_trips() {
        for n in [0usize, 1, 254, 255, 256, 1000, 5000, 16383, 16384, 40000] {
            let plain = vec![7u8; n];
            let p = pad(&plain);
            assert!(p.len() > n);
            assert!(
                BUCKETS.contains(&p.len()) || p.len().is_multiple_of(*BUCKETS.last().unwrap()),
                "{n} -> {}",
                p.len()
            );
            assert_eq!(unpad(&p).unwrap(), &plain[..]);
        }
        assert_eq!(pad(b"a").len(), pad(&[1u8; 200]).len());
        assert!(unpad(&[0, 0, 0]).is_err());
        assert!(unpad(&[1, 2, 0]).is_err());
    }

    #[test]
    fn open_checks_what_the_core_claims() {
        let key = OctKey::generate(32, None).unwrap();
        let uri = "kms://kms.a.test/keys/k1";
        let space = "kms://kms.a.test/resources/r1";
        let now = now_ms();
        let c = seal(&key, uri, &env("alice@a.test", now)).unwrap();
        let e = open(&key, &c, uri, space, Some("alice@a.test"), Some(now)).unwrap();
        assert_eq!(e.body, Body::Text { text: "hi".into() });
        // Another sender, another space, another key URI, a far-off time.
        assert!(matches!(open(&key, &c, uri, space, Some("mallory@a.test"), Some(now)), Err(Error::Tampered(_))));
        assert!(matches!(
            open(&key, &c, uri, "kms://kms.a.test/resources/r2", Some("alice@a.test"), Some(now)),
            Err(Error::Tampered(_))
        ));
        assert!(matches!(
            open(&key, &c, "kms://kms.a.test/keys/k2", space, Some("alice@a.test"), Some(now)),
            Err(Error::Tampered(_))
        ));
        assert!(matches!(
            open(&key, &c, uri, space, Some("alice@a.test"), Some(now - MAX_AHEAD_MS - 1000)),
            Err(Error::Tampered(_))
        ));
        assert!(matches!(
            open(&key, &c, uri, space, Some("alice@a.test"), Some(now + MAX_BEHIND_MS + 1000)),
            Err(Error::Tampered(_))
        ));
        // Wrong key.
        let other = OctKey::generate(32, None).unwrap();
        assert!(matches!(open(&other, &c, uri, space, Some("alice@a.test"), Some(now)), Err(Error::Tampered(_))));
        // Equal-length ciphertexts for short messages of different length.
        let short =
            seal(&key, uri, &Envelope { body: Body::Text { text: "x".into() }, ..env("alice@a.test", now) }).unwrap();
        let longer =
            seal(&key, uri, &Envelope { body: Body::Text { text: "x".repeat(100) }, ..env("alice@a.test", now) })
                .unwrap();
        assert_eq!(short.len(), longer.len());
    }
}
