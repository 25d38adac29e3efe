//! One decrypted event as `custos read` prints it: a JSON object
//! (`--json`, also the events of a compliance export's `messages.json`) or
//! one line of text.

use client::{Content, Message};
use serde_json::{json, Value};

use super::text::safe;

/// The event as JSON: `space`, `seq`, `id`, `sender`, `kind`, `stored_at`,
/// and `text`, `user`, `error`, `parent`, `target`, `key` where they apply.
pub(crate) fn message_json(m: &Message) -> Value {
    let (kind, text) = match &m.content {
        Content::Text(t) => ("message", Some(t.clone())),
        Content::Edit(t) => ("edit", Some(t.clone())),
        Content::Deleted => ("delete", None),
        Content::Reaction(e) => ("reaction", Some(e.clone())),
        Content::Title(t) => ("title", Some(t.clone())),
        Content::MemberAdded { .. } => ("member_added", None),
        Content::MemberRemoved { .. } => ("member_removed", None),
        Content::FileReady => ("file_ready", None),
        Content::Unreadable(_) => ("unreadable", None),
    };
    let mut v = json!({"space": m.space_id, "seq": m.seq, "id": m.id, "sender": m.sender, "kind": kind, "stored_at": m.stored_at});
    if let Some(t) = text {
        v["text"] = json!(t);
    }
    match &m.content {
        Content::MemberAdded { user } | Content::MemberRemoved { user } => v["user"] = json!(user),
        Content::Unreadable(why) => v["error"] = json!(why),
        _ => {}
    }
    for (k, val) in [("parent", &m.parent), ("target", &m.target)] {
        if let Some(x) = val {
            v[k] = json!(x);
        }
    }
    if let Some(x) = &m.key_uri {
        v["key"] = json!(x);
    }
    v
}

/// The event as one line of text: `#seq hh:mm:ss sender: what`.
pub(crate) fn message_line(m: &Message) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.stored_at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::macros::format_description!("[hour]:[minute]:[second]")).ok())
        .unwrap_or_default();
    let target = m.target.as_ref().map(|t| t.as_str()).unwrap_or("");
    let what = match &m.content {
        Content::Text(t) if m.parent.is_some() => format!("(reply) {t}"),
        Content::Text(t) => t.clone(),
        Content::Edit(t) => format!("(edited {target}) {t}"),
        Content::Deleted => format!("(deleted {target})"),
        Content::Reaction(e) => format!("(reacted {e} to {target})"),
        Content::Title(t) => format!("(renamed the space to {t:?})"),
        Content::MemberAdded { user } => format!("(added {user})"),
        Content::MemberRemoved { user } => format!("(removed {user})"),
        Content::FileReady => format!("(shared file {target})"),
        Content::Unreadable(why) => format!("[cannot read: {why}]"),
    };
    format!("#{:<4} {when} {}: {}", m.seq, safe(&m.sender), safe(&what))
}
