//! The canonical JSON encoding of log lines, and the hash over it.
//!
//! Lines are RFC 8785 (JCS) serializations restricted to what the log uses:
//! objects whose member names are ASCII (so JCS's UTF-16 key order is plain
//! byte order), strings, integers within ±(2^53 − 1), booleans and arrays.
//! No floats, no `null` (an absent optional member is omitted, never `null`).
//! For such values JCS is simply: members sorted by name, no whitespace,
//! integers in plain decimal, strings escaped minimally (`\"`, `\\`, `\b`,
//! `\f`, `\n`, `\r`, `\t`, other characters below U+0020 as `\u00xx` with
//! lowercase hex, everything else as literal UTF-8).

use aws_lc_rs::digest;

/// Largest integer magnitude JCS (I-JSON) represents exactly: 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A JSON value of the canonical subset.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    UInt(u64),
    Int(i64),
    Bool(bool),
    Arr(Vec<Value<'a>>),
    /// Members in any order; names are ASCII. Rendering sorts them.
    Obj(Vec<(&'a str, Value<'a>)>),
}

impl Value<'_> {
    /// The canonical text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Str(s) => write_str(s, out),
            Value::UInt(n) => out.push_str(&n.to_string()),
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Obj(members) => {
                let mut sorted: Vec<&(&str, Value<'_>)> = members.iter().collect();
                sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push('{');
                for (i, (name, value)) in sorted.into_iter().enumerate() {
                    debug_assert!(name.is_ascii());
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(name, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Whether `s` is exactly 64 lowercase hex digits (a SHA-256 as the log writes it).
pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_sorted_and_compact() {
        let v = Value::Obj(vec![
            ("b", Value::UInt(2)),
            ("a", Value::Arr(vec![Value::Str("x"), Value::Bool(true), Value::Int(-3)])),
            ("_", Value::Obj(vec![])),
        ]);
        assert_eq!(v.render(), r#"{"_":{},"a":["x",true,-3],"b":2}"#);
    }

    #[test]
    fn strings_escape_minimally_like_jcs() {
        let s = "q\"b\\s\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é€😀/";
        assert_eq!(Value::Str(s).render(), "\"q\\\"b\\\\s\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é€😀/\"");
        // serde_json escapes the same way: both are JCS for these inputs.
        assert_eq!(Value::Str(s).render(), serde_json::to_string(s).unwrap());
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(is_hash_hex(&sha256_hex(b"")));
        assert!(!is_hash_hex(&sha256_hex(b"").to_uppercase()));
    }
}
