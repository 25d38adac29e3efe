//! Opening one core event as a member's client does, given its key: the
//! checks every client makes (native [`crate::Session`], compliance reader,
//! browser), with no I/O. Fetching the key is the caller's business.

use std::collections::HashMap;

use kms_protocol::KmsUri;

use super::envelope;
use super::key::ContentKey;
use crate::error::{Error, Result};
use crate::types::{Content, EventId, Message, SpaceId, UserId};
use crate::wire::CoreEvent;

/// Remembers the first sequence number seen per (space, sender, sender's
/// event id): a later event with the same triple is a replay by the core.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    first: HashMap<(String, String, String), i64>,
}

impl ReplayGuard {
    /// An empty guard (one per session, shared by all its spaces).
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (a compliance reader starting a new export).
    pub fn clear(&mut self) {
        self.first.clear();
    }

    /// Records event `seq` as (space, sender, id); refuses it if another
    /// sequence number came first with the same triple. Idempotent for the
    /// same event seen twice (a page read again, a live event also in history).
    pub fn check(&mut self, space_id: &str, sender: &str, id: &str, seq: i64) -> Result<()> {
        let first = *self.first.entry((space_id.to_owned(), sender.to_owned(), id.to_owned())).or_insert(seq);
        if first != seq {
            return Err(Error::Tampered(format!("a replay of event #{first}")));
        }
        Ok(())
    }
}

/// What an event says, for events that carry no ciphertext; `None` for those that do.
pub fn plain_content(e: &CoreEvent) -> Option<Content> {
    match e.kind.as_str() {
        "delete" => Some(Content::Deleted),
        "member_added" => Some(Content::MemberAdded { user: UserId::from(e.subject.clone().unwrap_or_default()) }),
        "member_removed" => Some(Content::MemberRemoved { user: UserId::from(e.subject.clone().unwrap_or_default()) }),
        "file_ready" => Some(Content::FileReady),
        _ => None,
    }
}

/// The key URI a sealed event names (what to fetch from the KMS before
/// [`open_sealed`]).
pub fn sealed_key_uri(e: &CoreEvent) -> Result<&str> {
    e.key_uri.as_deref().ok_or_else(|| Error::Tampered("the event names no key".into()))
}

/// Opens a sealed event of the space whose KMS resource is `resource` with
/// `key` (the key the event names, as the KMS released it): the key must be
/// bound to that resource; sender, space, time, kind, parent and target must
/// be what the sender sealed; a replay is refused.
pub fn open_sealed(key: &ContentKey, guard: &mut ReplayGuard, resource: &KmsUri, e: &CoreEvent) -> Result<Content> {
    let sealed = e.ciphertext.as_deref().ok_or_else(|| Error::Tampered("the event has no ciphertext".into()))?;
    let key_uri = sealed_key_uri(e)?;
    if key.uri.to_string() != key_uri {
        return Err(Error::Tampered("the key given is not the key the event names".into()));
    }
    if key.resource.as_ref() != Some(resource) {
        return Err(Error::Tampered("the event's key is bound to another resource than its space".into()));
    }
    let env = envelope::open(&key.key, sealed, key_uri, &resource.to_string(), Some(&e.sender), Some(e.create_date))?;
    let b =
        envelope::check_event(&env, &e.kind, e.client_event_id.as_deref(), e.parent.as_deref(), e.target.as_deref())?;
    guard.check(&e.space_id, &e.sender, &b.id, e.seq)?;
    envelope::event_content(&e.kind, &env.body)
}

/// The message an event is, with its content or why it is unreadable.
pub fn message(e: &CoreEvent, content: Result<Content>) -> Message {
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
