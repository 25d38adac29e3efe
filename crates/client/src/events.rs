//! Decrypting one core event as a member's client does: the one pipeline
//! shared by [`crate::Session`] and [`crate::compliance::ComplianceReader`].

use std::collections::HashMap;
use std::sync::Mutex;

use kms_protocol::KmsUri;

use crate::core_api::CoreEvent;
use crate::engine::envelope;
use crate::error::{Error, Result};
use crate::kms::KmsClient;
use crate::types::{Content, EventId, Message, SpaceId, UserId};

/// First sequence number seen per (space, sender, sender's event id): a
/// later event with the same triple is a replay by the core.
pub(crate) type Seen = Mutex<HashMap<(String, String, String), i64>>;

/// What an event says, for events that carry no ciphertext; `None` for those that do.
pub(crate) fn plain_content(e: &CoreEvent) -> Option<Content> {
    match e.kind.as_str() {
        "delete" => Some(Content::Deleted),
        "member_added" => Some(Content::MemberAdded { user: UserId::from(e.subject.clone().unwrap_or_default()) }),
        "member_removed" => Some(Content::MemberRemoved { user: UserId::from(e.subject.clone().unwrap_or_default()) }),
        "file_ready" => Some(Content::FileReady),
        _ => None,
    }
}

/// Opens a sealed event of the space whose KMS resource is `resource`: its
/// key must be bound to that resource; sender, space, time, kind, parent and
/// target must be what the sender sealed; a replay is refused.
pub(crate) async fn open_sealed(kms: &KmsClient, seen: &Seen, resource: &KmsUri, e: &CoreEvent) -> Result<Content> {
    let sealed = e.ciphertext.as_deref().ok_or_else(|| Error::Tampered("the event has no ciphertext".into()))?;
    let key_uri = e.key_uri.as_deref().ok_or_else(|| Error::Tampered("the event names no key".into()))?;
    let key = kms.key(key_uri).await?;
    if key.resource.as_ref() != Some(resource) {
        return Err(Error::Tampered("the event's key is bound to another resource than its space".into()));
    }
    let env = envelope::open(&key.key, sealed, key_uri, &resource.to_string(), Some(&e.sender), Some(e.create_date))?;
    let b =
        envelope::check_event(&env, &e.kind, e.client_event_id.as_deref(), e.parent.as_deref(), e.target.as_deref())?;
    {
        let mut seen = seen.lock().expect("not poisoned");
        let first = *seen.entry((e.space_id.clone(), e.sender.clone(), b.id.clone())).or_insert(e.seq);
        if first != e.seq {
            return Err(Error::Tampered(format!("a replay of event #{first}")));
        }
    }
    envelope::event_content(&e.kind, &env.body)
}

/// The message an event is, with its content or why it is unreadable.
pub(crate) fn message(e: &CoreEvent, content: Result<Content>) -> Message {
    Message {
        space_id: SpaceId::from(&e.space_id),
        seq: e.seq,
        id: EventId::from(&e.id),
        sender: UserId::from(&e.sender),
        stored_at: e.create_date,
        parent: e.parent.as_ref().map(EventId::from),
        target: e.target.as_ref().map(EventId::from),
        key_uri: e.key_uri.clone(),
        content: content.unwrap_or_else(|err| Content::Unreadable(err.to_string())),
    }
}
