//! CMK ids: UUIDv7 for new CMKs (sortable, creation time inside), anything
//! file-name- and label-safe accepted.

use crate::CmkError;

/// Longest id accepted.
const MAX_ID_LEN: usize = 64;

/// A new id: a UUIDv7 string.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Accepts 1 to 64 characters of `A-Z a-z 0-9 - _`, so that an id is safe in a
/// file name and a token label (no `/`, no `..`).
pub(crate) fn check_id(id: &str) -> Result<(), CmkError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CmkError::InvalidId(id.chars().take(MAX_ID_LEN).collect()))
    }
}

/// The creation time inside a UUIDv7 id, in Unix milliseconds.
pub(crate) fn created_from_id(id: &str) -> Option<u64> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    Some(secs.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000)))
}

/// Now, in Unix milliseconds.
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_id();
        check_id(&id).unwrap();
        let created = created_from_id(&id).unwrap();
        assert!(created.abs_diff(now_unix_ms()) < 10_000);
        assert_eq!(created_from_id(&uuid::Uuid::new_v4().to_string()), None);
        for bad in ["", "../x", "a/b", "a.b", "é", &"a".repeat(65)] {
            assert!(matches!(check_id(bad), Err(CmkError::InvalidId(_))), "{bad}");
        }
    }
}
