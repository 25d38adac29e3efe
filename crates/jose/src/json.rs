//! Strict JSON: duplicate object members anywhere in a document are an error.
//!
//! `serde_json` keeps the last of two equal members, which lets two parsers of
//! one message disagree about it. We refuse such documents before decoding them.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::error::{redact_json_error, Error, Part};

/// Deepest nesting accepted (serde_json's own limit is 128).
const MAX_DEPTH: usize = 32;

/// Parses `bytes` as `T` after checking that no object repeats a member name.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], part: Part) -> Result<T, Error> {
    check_duplicates(bytes, part)?;
    serde_json::from_slice(bytes).map_err(|e| Error::Json { part, detail: redact_json_error(&e) })
}

/// Checks a whole document for duplicate member names, without building it.
pub fn check_duplicates(bytes: &[u8], part: Part) -> Result<(), Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut dup = None;
    let res = de::Deserializer::deserialize_any(&mut de, Walker { depth: 0, dup: &mut dup }).and_then(|()| de.end());
    if let Some(name) = dup {
        return Err(Error::DuplicateMember { part, name });
    }
    res.map_err(|e| Error::Json { part, detail: redact_json_error(&e) })
}

struct Walker<'a> {
    depth: usize,
    dup: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        while seq.next_element_seed(Walker { depth: self.depth + 1, dup: &mut *self.dup })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(key.clone().into_owned()) {
                *self.dup = Some(key.chars().take(32).collect());
                return Err(de::Error::custom("duplicate member"));
            }
            map.next_value_seed(Walker { depth: self.depth + 1, dup: &mut *self.dup })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_duplicates() {
        let e = check_duplicates(br#"{"a":{"b":1,"b":2}}"#, Part::Payload).unwrap_err();
        assert_eq!(e, Error::DuplicateMember { part: Part::Payload, name: "b".into() });
        // Escaped spellings of the same name are the same name.
        let e = check_duplicates(br#"{"alg":1,"\u0061lg":2}"#, Part::Header).unwrap_err();
        assert!(matches!(e, Error::DuplicateMember { .. }));
        check_duplicates(br#"{"a":[{"b":1},{"b":2}],"b":3}"#, Part::Payload).unwrap();
    }

    #[test]
    fn rejects_trailing_data_and_depth() {
        assert!(check_duplicates(b"{} {}", Part::Payload).is_err());
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(check_duplicates(deep.as_bytes(), Part::Payload).is_err());
    }
}
