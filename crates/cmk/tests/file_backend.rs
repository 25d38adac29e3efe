//! The file backend: round trips, AAD binding, passphrases, the KMS's original
//! `cmk.json` format, rotation and destruction, BYOK.

use std::path::Path;
use std::sync::Arc;

use cmk::{CmkBackend, CmkError, FileBackend, MasterKey, OaepHash, Origin, SoftwareKey, MIN_KDF_ITERATIONS};
use rsa::pkcs8::DecodePublicKey;

const PASS: &[u8] = b"correct horse battery staple";

fn backend(dir: &Path) -> FileBackend {
    FileBackend::open(dir, PASS).unwrap().with_kdf_iterations(MIN_KDF_ITERATIONS).unwrap()
}

/// Every way a blob can be wrong gives `Unwrap`, never a panic.
fn assert_aad_binding(key: &dyn MasterKey, other: &dyn MasterKey) {
    let blob = key.wrap("kek:1", b"a key-encryption key").unwrap();
    assert_eq!(blob.len(), 12 + 20 + 16);
    assert_eq!(&key.unwrap("kek:1", &blob).unwrap()[..], b"a key-encryption key");
    assert!(matches!(key.unwrap("kek:2", &blob), Err(CmkError::Unwrap)));
    assert!(matches!(key.unwrap("", &blob), Err(CmkError::Unwrap)));
    assert!(matches!(other.unwrap("kek:1", &blob), Err(CmkError::Unwrap)));
    for i in 0..blob.len() {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        assert!(matches!(key.unwrap("kek:1", &t), Err(CmkError::Unwrap)), "flipped byte {i}");
    }
    for n in 0..blob.len() {
        assert!(matches!(key.unwrap("kek:1", &blob[..n]), Err(CmkError::Unwrap)), "truncated to {n}");
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(key.unwrap("kek:1", &longer), Err(CmkError::Unwrap)));
    // Empty plaintexts work; nonces are fresh.
    let empty = key.wrap("x", b"").unwrap();
    assert_eq!(empty.len(), 28);
    assert!(key.unwrap("x", &empty).unwrap().is_empty());
    assert_ne!(key.wrap("x", b"same").unwrap(), key.wrap("x", b"same").unwrap());
}

#[test]
fn round_trip_and_aad_binding() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    assert_eq!(b.kind(), "file");
    let k1 = b.generate().unwrap();
    let k2 = b.generate().unwrap();
    assert_aad_binding(k1.as_ref(), k2.as_ref());
    // A reopened handle (new PBKDF2 derivation) opens what the first made.
    let blob = k1.wrap("ticket:7", b"ticket key").unwrap();
    let again = backend(dir.path()).open(k1.id()).unwrap();
    assert_eq!(&again.unwrap("ticket:7", &blob).unwrap()[..], b"ticket key");
    // Software keys made from bytes behave the same.
    let s1 = SoftwareKey::from_bytes("a", &[7u8; 32]).unwrap();
    let s2 = SoftwareKey::from_bytes("b", &[8u8; 32]).unwrap();
    assert_aad_binding(&s1, &s2);
    assert!(matches!(SoftwareKey::from_bytes("a", &[7u8; 31]), Err(CmkError::KeyLength { expected: 32, got: 31 })));
    assert!(matches!(SoftwareKey::from_bytes("../a", &[7u8; 32]), Err(CmkError::InvalidId(_))));
}

#[test]
fn passphrases() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(FileBackend::open(dir.path(), b"short"), Err(CmkError::PassphraseTooShort(12))));
    // Twelve characters, not twelve bytes: eleven two-byte characters are too short.
    assert!(matches!(FileBackend::open(dir.path(), "ééééééééééé".as_bytes()), Err(CmkError::PassphraseTooShort(12))));
    assert!(matches!(backend(dir.path()).with_kdf_iterations(99_999), Err(CmkError::Config(_))));
    let b = backend(dir.path());
    let k = b.generate().unwrap();
    // A wrong passphrase fails at open, naming the file, and on every CMK.
    match FileBackend::open(dir.path(), b"wrong horse battery staple") {
        Err(CmkError::Passphrase { path }) => assert!(path.ends_with(format!("{}.cmk.json", k.id()))),
        other => panic!("expected Passphrase, got {other:?}"),
    }
    // An empty directory accepts any (long enough) passphrase.
    let empty = tempfile::tempdir().unwrap();
    FileBackend::open(empty.path(), b"wrong horse battery staple").unwrap();
}

#[test]
fn files_are_private_durable_and_do_not_hold_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cmk");
    let b = backend(&dir);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let k = b.generate().unwrap();
    let path = dir.join(format!("{}.cmk.json", k.id()));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec![format!("{}.cmk.json", k.id())], "no temporary files left");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["id"], k.id());
    assert_eq!(json["kdf"], "pbkdf2-hmac-sha256");
    assert_eq!(json["iterations"], MIN_KDF_ITERATIONS);
    assert_eq!(json["origin"], "generated");
    // Debug output names ids, never keys or the passphrase.
    let debug = format!("{b:?} {k:?}");
    assert!(debug.contains(k.id()) && debug.contains("redacted"));
    assert!(!debug.contains("horse"));
    // A file copied under another id does not open, nor list.
    let other = dir.join("00000000-0000-4000-8000-000000000000.cmk.json");
    std::fs::copy(&path, &other).unwrap();
    assert!(matches!(b.open("00000000-0000-4000-8000-000000000000"), Err(CmkError::Format { .. })));
    assert!(matches!(b.list(), Err(CmkError::Format { .. })));
    std::fs::remove_file(&other).unwrap();
    // A tampered sealed key reads as a wrong passphrase (it cannot tell which).
    let mut doc = json.clone();
    let wrapped = doc["wrapped"].as_str().unwrap().to_owned();
    let flipped = if wrapped.ends_with('A') { "B" } else { "A" };
    doc["wrapped"] = serde_json::Value::String(format!("{}{flipped}", &wrapped[..wrapped.len() - 1]));
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(matches!(b.open(k.id()), Err(CmkError::Passphrase { .. } | CmkError::Format { .. })));
    std::fs::write(&path, b"not json").unwrap();
    assert!(matches!(b.open(k.id()), Err(CmkError::Format { .. })));
}

#[test]
fn ids_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    for bad in ["", "../x", "x/y", "x.y", "a b"] {
        assert!(matches!(b.open(bad), Err(CmkError::InvalidId(_))), "{bad:?}");
        assert!(matches!(b.destroy(bad), Err(CmkError::InvalidId(_))), "{bad:?}");
    }
    assert!(matches!(b.open("0190a000-0000-7000-8000-000000000000"), Err(CmkError::NotFound(_))));
}

#[test]
fn rotation_and_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    assert!(b.list().unwrap().is_empty());
    let old = b.generate().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let new = b.generate().unwrap();
    let listed = b.list().unwrap();
    assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![old.id(), new.id()]);
    assert!(listed.iter().all(|i| i.origin == Origin::Generated));
    assert!(listed[0].created_unix_ms <= listed[1].created_unix_ms);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(listed[1].created_unix_ms.abs_diff(now) < 60_000);

    // Re-wrap under the new CMK, then shred the old one.
    let blob = old.wrap("kek:9", b"kek bytes").unwrap();
    let old_again = b.open(old.id()).unwrap();
    let rewrapped = new.wrap("kek:9", &old.unwrap("kek:9", &blob).unwrap()).unwrap();
    let old_path = dir.path().join(format!("{}.cmk.json", old.id()));
    b.destroy(old.id()).unwrap();
    assert!(!old_path.exists());
    match b.open(old.id()) {
        Err(CmkError::NotFound(id)) => assert_eq!(id, old.id()),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(b.destroy(old.id()), Err(CmkError::NotFound(_))));
    // Handles open in this process are shredded too.
    assert!(matches!(old.unwrap("kek:9", &blob), Err(CmkError::Destroyed(_))));
    assert!(matches!(old_again.unwrap("kek:9", &blob), Err(CmkError::Destroyed(_))));
    assert!(matches!(old.wrap("kek:9", b"x"), Err(CmkError::Destroyed(_))));
    assert!(format!("{old:?}").contains("destroyed: true"));
    // A fresh backend cannot open it either; the new CMK is unaffected.
    let b2 = backend(dir.path());
    assert_eq!(b2.list().unwrap().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![new.id()]);
    assert!(matches!(b2.open(old.id()), Err(CmkError::NotFound(_))));
    assert_eq!(&b2.open(new.id()).unwrap().unwrap("kek:9", &rewrapped).unwrap()[..], b"kek bytes");
}

#[test]
fn concurrent_use() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(backend(dir.path()));
    let k = b.generate().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let k = k.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let aad = format!("key:{t}:{i}");
                    let blob = k.wrap(&aad, aad.as_bytes()).unwrap();
                    assert_eq!(&k.unwrap(&aad, &blob).unwrap()[..], aad.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ---------------------------------------------------------------- the KMS's own format

/// A copy of crates/kms/src/crypto.rs (`SecretKey`, `Cmk::create`, `CmkFile`),
/// reduced to what writes and reads the file and wraps, to test against.
mod kms_format {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
    use serde::{Deserialize, Serialize};

    pub struct SecretKey(pub [u8; 32]);

    impl SecretKey {
        fn aead(&self) -> LessSafeKey {
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0[..]).expect("32-byte AES key"))
        }
        pub fn wrap(&self, aad: &str, plain: &[u8]) -> Vec<u8> {
            let mut nonce = [0u8; NONCE_LEN];
            aws_lc_rs::rand::fill(&mut nonce).unwrap();
            let mut buf = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
            buf.extend_from_slice(&nonce);
            buf.extend_from_slice(plain);
            let tag = self
                .aead()
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad.as_bytes()),
                    &mut buf[NONCE_LEN..],
                )
                .unwrap();
            buf.extend_from_slice(tag.as_ref());
            buf
        }
        pub fn unwrap(&self, aad: &str, wrapped: &[u8]) -> Option<Vec<u8>> {
            if wrapped.len() < NONCE_LEN + 16 {
                return None;
            }
            let nonce: [u8; NONCE_LEN] = wrapped[..NONCE_LEN].try_into().unwrap();
            let mut buf = wrapped[NONCE_LEN..].to_vec();
            let n = self
                .aead()
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
                .ok()?
                .len();
            buf.truncate(n);
            Some(buf)
        }
    }

    #[derive(Serialize, Deserialize)]
    pub struct CmkFile {
        version: u32,
        id: String,
        kdf: String,
        iterations: u32,
        salt: String,
        wrapped: String,
    }

    fn passphrase_key(passphrase: &[u8], salt: &[u8], iterations: u32) -> SecretKey {
        let mut out = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).unwrap(),
            salt,
            passphrase,
            &mut out[..],
        );
        SecretKey(out)
    }

    /// `Cmk::create`: the id, the key, and the file's bytes.
    pub fn create(passphrase: &[u8], iterations: u32) -> (String, SecretKey, Vec<u8>) {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).unwrap();
        let key = SecretKey(key);
        let id = uuid::Uuid::new_v4().to_string();
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).unwrap();
        let wrapping = passphrase_key(passphrase, &salt, iterations);
        let file = CmkFile {
            version: 1,
            kdf: "pbkdf2-hmac-sha256".into(),
            iterations,
            salt: jose::b64::encode(salt),
            wrapped: jose::b64::encode(wrapping.wrap(&format!("cmk:{id}"), &key.0)),
            id: id.clone(),
        };
        (id, key, serde_json::to_vec_pretty(&file).unwrap())
    }

    /// `Cmk::open`.
    pub fn open(bytes: &[u8], passphrase: &[u8]) -> Option<(String, SecretKey)> {
        let f: CmkFile = serde_json::from_slice(bytes).ok()?;
        if f.version != 1 || f.kdf != "pbkdf2-hmac-sha256" || f.iterations < 100_000 {
            return None;
        }
        let salt = jose::b64::decode(&f.salt, jose::Part::Payload).ok()?;
        let wrapped = jose::b64::decode(&f.wrapped, jose::Part::Payload).ok()?;
        let key = passphrase_key(passphrase, &salt, f.iterations).unwrap(&format!("cmk:{}", f.id), &wrapped)?;
        Some((f.id, SecretKey(key.try_into().ok()?)))
    }
}

#[test]
fn legacy_cmk_json_opens_and_wraps_byte_compatibly() {
    let dir = tempfile::tempdir().unwrap();
    let (id, kms_key, bytes) = kms_format::create(PASS, 100_000);
    let path = dir.path().join("cmk.json");
    std::fs::write(&path, &bytes).unwrap();

    let key = FileBackend::open_legacy(&path, PASS).unwrap();
    assert_eq!(key.id(), id);
    // Blobs made by the KMS's SecretKey::wrap open here, and the other way round.
    let kms_blob = kms_key.wrap(&format!("kek:{id}"), b"kek made by the kms");
    assert_eq!(&key.unwrap(&format!("kek:{id}"), &kms_blob).unwrap()[..], b"kek made by the kms");
    let our_blob = key.wrap("ticket-key:3", b"made by cmk").unwrap();
    assert_eq!(kms_key.unwrap("ticket-key:3", &our_blob).unwrap(), b"made by cmk");
    assert!(kms_key.unwrap("ticket-key:4", &our_blob).is_none());
    // Same key bytes as a SoftwareKey: identical behaviour.
    let same = SoftwareKey::from_bytes(id.clone(), &kms_key.0).unwrap();
    assert_eq!(&same.unwrap("ticket-key:3", &our_blob).unwrap()[..], b"made by cmk");

    assert!(matches!(FileBackend::open_legacy(&path, b"wrong horse battery staple"), Err(CmkError::Passphrase { .. })));
    assert!(matches!(FileBackend::open_legacy(&dir.path().join("absent.json"), PASS), Err(CmkError::Io { .. })));

    // Adopted into a backend directory, it lists (origin generated) and opens.
    let b = backend(&dir.path().join("cmks"));
    let adopted = b.adopt_legacy(&path).unwrap();
    b.adopt_legacy(&path).unwrap(); // idempotent
    let listed = b.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].origin, Origin::Generated);
    assert!(listed[0].created_unix_ms > 0, "from the file's mtime");
    assert_eq!(&adopted.unwrap(&format!("kek:{id}"), &kms_blob).unwrap()[..], b"kek made by the kms");
    assert_eq!(std::fs::read(dir.path().join("cmks").join(format!("{id}.cmk.json"))).unwrap(), bytes);
    // The directory's passphrase must open it.
    let other = FileBackend::open(dir.path().join("other"), b"another long passphrase").unwrap();
    assert!(matches!(other.adopt_legacy(&path), Err(CmkError::Passphrase { .. })));

    // And the KMS's reader opens the files this backend writes.
    let k = b.generate().unwrap();
    let written = std::fs::read(dir.path().join("cmks").join(format!("{}.cmk.json", k.id()))).unwrap();
    let (read_id, read_key) = kms_format::open(&written, PASS).expect("the KMS reads our file");
    assert_eq!(read_id, k.id());
    assert_eq!(read_key.unwrap("a", &k.wrap("a", b"b").unwrap()).unwrap(), b"b");
}

// ---------------------------------------------------------------- BYOK

/// Wraps with the `rsa` crate (RustCrypto), independent of aws-lc-rs.
fn oaep_wrap(public: &cmk::RsaPublicKey, key: &[u8], hash: OaepHash) -> Vec<u8> {
    let pk = rsa::RsaPublicKey::from_public_key_der(&public.to_spki_der()).unwrap();
    let mut rng = rand_core::OsRng;
    match hash {
        OaepHash::Sha1 => pk.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), key).unwrap(),
        OaepHash::Sha256 => pk.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), key).unwrap(),
    }
}

#[test]
fn byok_import() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    let public = b.import_public_key().unwrap();
    assert_eq!(public.bits(), 3072);
    assert_eq!(public.kid(), Some(public.thumbprint().as_str()));
    assert_eq!(b.import_public_key().unwrap(), public);
    // Kept: another backend over the directory has the same one.
    assert_eq!(backend(dir.path()).import_public_key().unwrap(), public);
    let sealed = std::fs::read_to_string(dir.path().join("byok-import.key.json")).unwrap();
    assert!(!sealed.contains("PRIVATE KEY"));
    assert!(b.list().unwrap().is_empty(), "the import key is not a CMK");

    for hash in [OaepHash::Sha1, OaepHash::Sha256] {
        let mut org_key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut org_key).unwrap();
        let imported = b.import_wrapped(&oaep_wrap(&public, &org_key, hash), hash).unwrap();
        let info = b.list().unwrap().into_iter().find(|i| i.id == imported.id()).unwrap();
        assert_eq!(info.origin, Origin::Imported);
        // The imported CMK is exactly the org's key: a software key from the
        // same bytes opens its blobs, and the other way round.
        let reference = SoftwareKey::from_bytes(imported.id(), &org_key).unwrap();
        let blob = imported.wrap("kek:byok", b"wrapped under the org's own key").unwrap();
        assert_eq!(&reference.unwrap("kek:byok", &blob).unwrap()[..], b"wrapped under the org's own key");
        let blob = reference.wrap("kek:byok", b"the other way").unwrap();
        assert_eq!(&imported.unwrap("kek:byok", &blob).unwrap()[..], b"the other way");
        assert_eq!(&b.open(imported.id()).unwrap().unwrap("kek:byok", &blob).unwrap()[..], b"the other way");
    }

    // Wrong hash, garbage, a key of the wrong size: Import, never a panic.
    let blob = oaep_wrap(&public, &[1u8; 32], OaepHash::Sha1);
    assert!(matches!(b.import_wrapped(&blob, OaepHash::Sha256), Err(CmkError::Import(OaepHash::Sha256))));
    let mut tampered = blob.clone();
    tampered[100] ^= 1;
    assert!(matches!(b.import_wrapped(&tampered, OaepHash::Sha1), Err(CmkError::Import(OaepHash::Sha1))));
    assert!(matches!(b.import_wrapped(&blob[..200], OaepHash::Sha1), Err(CmkError::Import(_))));
    assert!(matches!(b.import_wrapped(b"", OaepHash::Sha1), Err(CmkError::Import(_))));
    let short = oaep_wrap(&public, &[1u8; 16], OaepHash::Sha1);
    assert!(matches!(b.import_wrapped(&short, OaepHash::Sha1), Err(CmkError::Import(_))));
    assert_eq!(b.list().unwrap().len(), 2);

    // Another passphrase cannot use the import key.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("byok-import.key.json"), empty.path().join("byok-import.key.json")).unwrap();
    let wrong = FileBackend::open(empty.path(), b"wrong horse battery staple").unwrap();
    assert!(matches!(wrong.import_public_key(), Err(CmkError::Passphrase { .. })));
    assert!(matches!(wrong.import_wrapped(&blob, OaepHash::Sha1), Err(CmkError::Passphrase { .. })));
}

#[test]
fn byok_without_import_key_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    assert!(matches!(b.import_wrapped(&[0u8; 384], OaepHash::Sha1), Err(CmkError::Import(OaepHash::Sha1))));
    assert!(!dir.path().join("byok-import.key.json").exists());
}
