//! The text to index from an uploaded file.

/// At most this many bytes of text are taken from one file (the first ones, cut
/// at a character boundary). [`index_tokens`](crate::index_tokens) reads only
/// the first [`MAX_TERMS`](crate::MAX_TERMS) distinct words of it anyway.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// The text to index from a file the client is uploading, or `None` when there
/// is none this crate can read.
///
/// - A declared textual type — `text/*`, `application/json`, `application/xml`,
///   `…+json`, `…+xml`, `application/javascript`, `application/yaml`,
///   `application/toml`, `application/sql` — is decoded as UTF-8, invalid bytes
///   becoming U+FFFD. A `charset` parameter other than UTF-8 or US-ASCII gives
///   `None` (other encodings are not decoded), and so does a UTF-16 byte order
///   mark. Markup (HTML, XML) is indexed as it is, tags included.
/// - No type, or `application/octet-stream`: the bytes are taken if they are
///   valid UTF-8 that looks like text: no NUL, and at most 1% control
///   characters other than tab, line feed, carriage return and form feed.
/// - Any other type gives `None`: images, audio, video, archives, and also PDF
///   and office documents, whose text extraction is out of scope for now.
///
/// A UTF-8 byte order mark is skipped. The result is cut to its first
/// [`MAX_TEXT_BYTES`] bytes at a character boundary; text that is empty or all
/// whitespace gives `None`.
pub fn extract_text(bytes: &[u8], media_type: Option<&str>) -> Option<String> {
    let kind = match media_type {
        None => Kind::Sniff,
        Some(mt) => classify(mt)?,
    };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return None;
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    let bytes = &bytes[..cut_point(bytes)];
    let mut text = match kind {
        Kind::Text => String::from_utf8_lossy(bytes).into_owned(),
        Kind::Sniff => {
            let text = std::str::from_utf8(bytes).ok()?;
            if !looks_like_text(text) {
                return None;
            }
            text.to_owned()
        }
    };
    // Lossy decoding can grow the text (one invalid byte becomes 3).
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

enum Kind {
    /// Declared textual: decode, replacing invalid UTF-8.
    Text,
    /// Unknown: take only valid UTF-8 that looks like text.
    Sniff,
}

/// `None` for a type that is not read; `Some(kind)` otherwise.
fn classify(media_type: &str) -> Option<Kind> {
    let mut parts = media_type.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    for param in parts {
        if let Some((name, value)) = param.split_once('=') {
            if name.trim().eq_ignore_ascii_case("charset") {
                let value = value.trim().trim_matches('"').to_ascii_lowercase();
                if !matches!(value.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
                    return None;
                }
            }
        }
    }
    if essence.is_empty() || essence == "application/octet-stream" {
        return Some(Kind::Sniff);
    }
    let textual = essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/ecmascript"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/sql"
        );
    textual.then_some(Kind::Text)
}

/// The length of the longest prefix of `bytes` of at most [`MAX_TEXT_BYTES`]
/// bytes that does not end inside a UTF-8 sequence.
fn cut_point(bytes: &[u8]) -> usize {
    if bytes.len() <= MAX_TEXT_BYTES {
        return bytes.len();
    }
    let mut end = MAX_TEXT_BYTES;
    // A UTF-8 sequence has at most 3 continuation bytes (10xxxxxx); back up to
    // the lead byte of the one that is cut, if any.
    for _ in 0..3 {
        if bytes[end] & 0xC0 != 0x80 {
            break;
        }
        end -= 1;
    }
    end
}

fn looks_like_text(text: &str) -> bool {
    let mut chars = 0usize;
    let mut controls = 0usize;
    for c in text.chars() {
        if c == '\0' {
            return false;
        }
        chars += 1;
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0C') {
            controls += 1;
        }
    }
    controls * 100 <= chars
}
