//! `messages.html`: one self-contained page (no scripts, nothing loaded
//! from elsewhere); everything from others escaped.

use std::collections::HashMap;
use std::fmt::Write as _;

use client::{Content, Message};

use super::export::{FileEntry, Header};
use super::times::ms_rfc3339;
use crate::output::text::is_unsafe_char;

/// Text from others as HTML: escaped, line breaks kept, control and
/// bidirectional formatting characters shown as visible escapes.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>"),
            c if is_unsafe_char(c) => {
                let _ = write!(out, "<span class=\"esc\">\\u{{{:x}}}</span>", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// An id for `id="…"`/`href="#…"`: only `[A-Za-z0-9-]` survives.
fn anchor(id: &str) -> String {
    let clean: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    format!("e-{clean}")
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}\
table.meta td{padding:.1em .8em .1em 0;vertical-align:top}table.meta td:first-child{color:#666}\
ol.events{list-style:none;padding:0}ol.events li{border-top:1px solid #ddd;padding:.5em 0}\
.head{color:#555;font-size:.9em}.sender{font-weight:600;color:#222}.kind{font-style:italic}\
.text{white-space:normal;margin-top:.2em;overflow-wrap:anywhere}.unreadable{color:#a00}.deleted{text-decoration:line-through}\
.esc{background:#fee;color:#a00;font-family:monospace}.note{color:#666;font-size:.9em}";

pub(super) fn render_html(h: &Header, msgs: &[Message], files: &[FileEntry]) -> String {
    let seq_of: HashMap<&str, i64> = msgs.iter().map(|m| (m.id.as_str(), m.seq)).collect();
    let mut later: HashMap<&str, Vec<&Message>> = HashMap::new();
    for m in msgs {
        if matches!(m.content, Content::Edit(_) | Content::Deleted | Content::Reaction(_)) {
            if let Some(t) = &m.target {
                later.entry(t.as_str()).or_default().push(m);
            }
        }
    }
    let link = |id: &str| match seq_of.get(id) {
        Some(seq) => format!("<a href=\"#{}\">#{seq}</a>", anchor(id)),
        None => format!("{} (outside the export)", html(id)),
    };
    let mut o = String::new();
    let title = html(&h.space.title);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>Compliance export: {title}</title>\n<style>{STYLE}</style></head>\n<body>\n\
         <h1>{title}</h1>\n<table class=\"meta\">\n"
    );
    let members: Vec<String> = h.space.members.iter().map(|m| format!("{} ({})", m.user, m.role)).collect();
    let rows = [
        ("Space", h.space.id.to_string()),
        ("KMS resource", h.space.resource.to_string()),
        ("Members", members.join(", ")),
        ("Former members", h.space.former_members.join(", ")),
        ("From", h.from.clone().unwrap_or_else(|| "the beginning".into())),
        ("To", h.to.clone().unwrap_or_else(|| "the export".into())),
        ("Officer", h.officer.clone()),
        ("On behalf of", h.subject.clone()),
        ("Case", h.case.clone().unwrap_or_else(|| "none".into())),
        ("Generated", h.generated_at.clone()),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><td>{k}</td><td>{}</td></tr>", html(&v));
    }
    o.push_str("</table>\n<h2>Events</h2>\n<ol class=\"events\">\n");
    for m in msgs {
        let (kind, body, class) = match &m.content {
            Content::Text(t) => {
                let kind = match &m.parent {
                    Some(p) => format!("reply in the thread of {}", link(p)),
                    None => "message".into(),
                };
                (kind, html(t), "text")
            }
            Content::Edit(t) => {
                (format!("edit of {}", m.target.as_deref().map(&link).unwrap_or_default()), html(t), "text")
            }
            Content::Deleted => {
                (format!("deleted {}", m.target.as_deref().map(&link).unwrap_or_default()), String::new(), "text")
            }
            Content::Reaction(e) => {
                (format!("reaction to {}", m.target.as_deref().map(&link).unwrap_or_default()), html(e), "text")
            }
            Content::Title(t) => ("renamed the space".into(), html(t), "text"),
            Content::MemberAdded { user } => (format!("added {}", html(user)), String::new(), "text"),
            Content::MemberRemoved { user } => (format!("removed {}", html(user)), String::new(), "text"),
            Content::FileReady => (
                format!("shared file {}", html(m.target.as_deref().unwrap_or(""))),
                files
                    .iter()
                    .find(|f| Some(f.id.as_str()) == m.target.as_deref())
                    .and_then(|f| f.info.as_ref().ok())
                    .map(|i| format!("{} ({} bytes)", html(&i.name), i.size))
                    .unwrap_or_default(),
                "text",
            ),
            Content::Unreadable(why) => {
                ("unreadable".into(), format!("[cannot read: {}]", html(why)), "text unreadable")
            }
        };
        let mut notes = String::new();
        if matches!(m.content, Content::Text(_)) {
            for l in later.get(m.id.as_str()).into_iter().flatten() {
                let what = match &l.content {
                    Content::Edit(_) => "edited",
                    Content::Deleted => "deleted",
                    _ => "reacted to",
                };
                let _ = write!(
                    notes,
                    "<div class=\"note\">{what} by {} at {} (<a href=\"#{}\">#{}</a>)</div>",
                    html(&l.sender),
                    html(&ms_rfc3339(l.stored_at)),
                    anchor(&l.id),
                    l.seq
                );
            }
        }
        let _ = writeln!(
            o,
            "<li id=\"{}\"><div class=\"head\">#{} <time>{}</time> <span class=\"sender\">{}</span> <span class=\"kind\">{kind}</span></div><div class=\"{class}\">{body}</div>{notes}</li>",
            anchor(&m.id),
            m.seq,
            html(&ms_rfc3339(m.stored_at)),
            html(&m.sender),
        );
    }
    o.push_str("</ol>\n<h2>Files</h2>\n");
    if files.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str("<ul>\n");
        for f in files {
            let what = match &f.info {
                Ok(i) => format!("{} ({} bytes, from {})", html(&i.name), i.size, html(&i.uploader)),
                Err(e) => format!("<span class=\"unreadable\">[cannot read: {}]</span>", html(e)),
            };
            let saved = match (&f.path, &f.download_error) {
                (Some(p), _) => format!(" saved as {}", html(p)),
                (None, Some(e)) => format!(" <span class=\"unreadable\">not downloaded: {}</span>", html(e)),
                _ => String::new(),
            };
            let _ = writeln!(o, "<li>{}: {what}{saved}</li>", html(&f.id));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_from_others() {
        let s = html("<script>alert('x')</script> & \"q\" \u{202E}evil\n2nd");
        assert!(!s.contains('<') || s.contains("<br>") || s.contains("<span"));
        assert!(!s.contains("<script"));
        assert!(s.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"));
        assert!(s.contains("\\u{202e}") && !s.contains('\u{202E}'));
        assert!(s.contains("<br>2nd"));
        assert_eq!(anchor("a\"><script>"), "e-ascript");
    }
}
