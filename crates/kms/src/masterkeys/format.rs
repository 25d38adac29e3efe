//! The byte formats that name a CMK: the envelope of a wrapped `kms_meta`
//! value and the header of the sealed static key file; and shredding a file.

use std::path::Path;

use cmk::MasterKey;

use crate::crypto::CryptoError;

/// The AAD of the sealed static key.
pub const STATIC_KEY_AAD: &str = "static-key";

const ENVELOPE: &[u8] = b"custos-cmk1:";
const SEALED_HEADER: &[u8] = b"custos-sealed-static-key/1 cmk=";

/// A stored value naming the CMK its blob is wrapped under: `custos-cmk1:<id>:<blob>`.
pub fn envelope(cmk_id: &str, blob: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENVELOPE.len() + cmk_id.len() + 1 + blob.len());
    v.extend_from_slice(ENVELOPE);
    v.extend_from_slice(cmk_id.as_bytes());
    v.push(b':');
    v.extend_from_slice(blob);
    v
}

/// The CMK id and blob of an [`envelope`]; `None` for a value of the original layout.
pub fn split_envelope(value: &[u8]) -> Option<(&str, &[u8])> {
    let rest = value.strip_prefix(ENVELOPE)?;
    let end = rest.iter().take(65).position(|b| *b == b':')?;
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    let ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| (id, &rest[end + 1..]))
}

/// The static key (PKCS#8 DER) sealed under `cmk`, with a header line naming it.
pub fn seal_static_key(cmk: &dyn MasterKey, pkcs8: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let blob = cmk.wrap(STATIC_KEY_AAD, pkcs8)?;
    let mut v = Vec::with_capacity(SEALED_HEADER.len() + cmk.id().len() + 1 + blob.len());
    v.extend_from_slice(SEALED_HEADER);
    v.extend_from_slice(cmk.id().as_bytes());
    v.push(b'\n');
    v.extend_from_slice(&blob);
    Ok(v)
}

/// The CMK id and blob of a sealed static key file; `None` for a file of the
/// original layout (a bare blob under the CMK of the original `cmk.json`).
pub fn sealed_static_key_cmk(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let rest = bytes.strip_prefix(SEALED_HEADER)?;
    let end = rest.iter().take(65).position(|b| *b == b'\n')?;
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    Some((id, &rest[end + 1..]))
}

/// Overwrites a file with random bytes, fsyncs, deletes it, fsyncs its
/// directory (the file backend's `destroy`, for a file outside its directory;
/// also the retired static key).
pub(crate) fn shred_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut noise = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut noise).map_err(|_| std::io::Error::other("random generation failed"))?;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&noise)?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_headers() {
        let v = envelope("0190-abc_D", b"\x00blob:with:colons");
        assert_eq!(split_envelope(&v), Some(("0190-abc_D", &b"\x00blob:with:colons"[..])));
        assert_eq!(split_envelope(b"\x13\x37 a bare blob of the original layout"), None);
        assert_eq!(split_envelope(b"custos-cmk1:bad/id:x"), None);
        assert_eq!(split_envelope(b"custos-cmk1:no-separator"), None);
        let long = [ENVELOPE, &[b'a'; 80][..], b":x"].concat();
        assert_eq!(split_envelope(&long), None, "ids are at most 64 characters");

        let key = cmk::SoftwareKey::from_bytes("c1", &[7u8; 32]).unwrap();
        let sealed = seal_static_key(&key, b"pkcs8").unwrap();
        let (id, blob) = sealed_static_key_cmk(&sealed).unwrap();
        assert_eq!(id, "c1");
        assert_eq!(&key.unwrap(STATIC_KEY_AAD, blob).unwrap()[..], b"pkcs8");
        assert_eq!(sealed_static_key_cmk(b"\x01\x02 bare"), None);
    }
}
