//! `eml/NNNNNN-<event id>.eml`: one RFC 5322 message per chat event
//! (CRLF line ends, RFC 2047 headers, base64 bodies; never a header
//! injection from what others wrote).

use base64::Engine as _;
use client::{Content, Message};
use time::OffsetDateTime;

use super::export::{plain_id, Header};
use crate::output::text::is_unsafe_char;

/// An unstructured header value: as is when plain printable ASCII, else
/// RFC 2047 encoded words (UTF-8, base64), folded; never a line break.
fn header_text(name: &str, value: &str) -> String {
    let plain = value.len() <= 900 && !value.contains("=?") && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if plain {
        return format!("{name}: {value}\r\n");
    }
    format!("{name}: {}\r\n", encoded_words(value))
}

/// `value` as RFC 2047 encoded words (UTF-8, base64), folded between words.
fn encoded_words(value: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        // 30 bytes: 40 base64 characters, so that every line stays within 78 even after a long header name.
        if chunk.len() + c.len_utf8() > 30 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(chunk);
    }
    let encoded: Vec<String> = words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w.as_bytes())))
        .collect();
    encoded.join("\r\n ")
}

/// A mailbox for a user id: the id itself when it is a plain address, else
/// an encoded display name and a placeholder address.
fn mailbox(user: &str) -> String {
    let ok_local = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    let ok_domain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
    match user.rsplit_once('@') {
        Some((l, d)) if ok_local(l) && ok_domain(d) && !l.starts_with('.') && !l.ends_with('.') => format!("<{user}>"),
        // A display name with specials (quotes, angle brackets) would change
        // the header's structure: always encoded.
        _ => format!("{} <unknown@invalid.invalid>", encoded_words(user)),
    }
}

fn message_id(event: &str, space: &str) -> Option<String> {
    Some(format!("<{}@{}.custos.invalid>", plain_id(event)?, plain_id(space)?))
}

/// One chat event as an RFC 5322 message (CRLF line ends, body base64).
pub(super) fn render_eml(h: &Header, m: &Message) -> Option<String> {
    let (kind, body, subject) = match &m.content {
        Content::Text(t) if m.parent.is_some() => ("reply", t.clone(), t.clone()),
        Content::Text(t) => ("message", t.clone(), t.clone()),
        Content::Edit(t) => ("edit", t.clone(), format!("Edit: {t}")),
        Content::Deleted => ("delete", String::new(), "Deleted message".into()),
        Content::Reaction(e) => ("reaction", e.clone(), format!("Reaction: {e}")),
        Content::Unreadable(why) => ("unreadable", format!("[cannot read: {why}]"), "Unreadable event".into()),
        _ => return None,
    };
    let subject: String =
        subject.lines().next().unwrap_or("").chars().filter(|c| !is_unsafe_char(*c)).take(78).collect();
    let date = OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.stored_at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok())?;
    let mut o = String::new();
    o.push_str(&format!("From: {}\r\n", mailbox(&m.sender)));
    o.push_str(&format!("Date: {date}\r\n"));
    if let Some(id) = message_id(&m.id, &h.space.id) {
        o.push_str(&format!("Message-ID: {id}\r\n"));
    }
    let related = m.parent.as_deref().or(m.target.as_deref());
    if let Some(r) = related.and_then(|r| message_id(r, &h.space.id)) {
        o.push_str(&format!("In-Reply-To: {r}\r\nReferences: {r}\r\n"));
    }
    o.push_str(&header_text("Subject", &subject));
    o.push_str(&header_text("X-Custos-Space", &h.space.id));
    o.push_str(&header_text("X-Custos-Space-Title", &h.space.title));
    o.push_str(&format!("X-Custos-Kind: {kind}\r\nX-Custos-Seq: {}\r\n", m.seq));
    o.push_str(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    for line in b64.as_bytes().chunks(76) {
        o.push_str(std::str::from_utf8(line).unwrap_or(""));
        o.push_str("\r\n");
    }
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_never_break_lines_and_encode_non_ascii() {
        let h = header_text("Subject", "hi\r\nBcc: victim@example.com");
        assert_eq!(h.matches("\r\n").count(), 1, "{h:?}");
        assert!(h.starts_with("Subject: =?UTF-8?B?"));
        let h = header_text("Subject", &"é".repeat(100));
        for (i, line) in h.trim_end_matches("\r\n").split("\r\n").enumerate() {
            assert!(line.len() <= 78, "{line}");
            assert!(i == 0 || line.starts_with(' '));
        }
        assert_eq!(header_text("Subject", "plain words"), "Subject: plain words\r\n");
        assert!(header_text("Subject", "looks =?UTF-8?B?encoded?=").contains("=?UTF-8?B?"));
        assert_eq!(mailbox("alice@acme.test"), "<alice@acme.test>");
        let m = mailbox("eve\"<x>@acme.test");
        assert!(m.ends_with("<unknown@invalid.invalid>") && !m.contains('"'), "{m}");
        assert_eq!(message_id("../x", "s"), None);
    }
}
