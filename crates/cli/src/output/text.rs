//! Text from others (message text, titles, user ids, file names) made safe
//! to show: control characters and the format characters that reorder or
//! hide text never reach a terminal or a file name as they are.

/// Control characters and the format characters that reorder or hide text.
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Text from others, safe to print on a terminal: control and formatting
/// characters (escape sequences, bidi overrides) shown as `\u{…}` escapes.
pub(crate) fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' {
            out.push_str("\n    ");
        } else if is_unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A file name from someone else, made safe to use in a directory: no path
/// separators, no leading dot (no `.bashrc`), no control or bidirectional
/// formatting characters.
pub(crate) fn sanitize(name: &str) -> String {
    let n: String =
        name.chars().filter(|c| !is_unsafe_char(*c)).map(|c| if c == '/' || c == '\\' { '_' } else { c }).collect();
    let n = n.trim_start_matches('.').trim().to_string();
    if n.is_empty() {
        "download".into()
    } else {
        n
    }
}
