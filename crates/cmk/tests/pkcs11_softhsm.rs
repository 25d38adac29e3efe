//! The PKCS#11 backend against softhsm2, in a token this test creates in a
//! temporary directory. softhsm2 must be installed (`scripts/test` installs
//! it): without it these tests fail, they never skip.
//!
//! `SOFTHSM2_CONF` is process-wide and the module is initialized once per
//! process, so every test here shares one token (each with its own label
//! prefix) and the tests run one at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cmk::{
    default_module_path, CmkBackend, CmkError, MasterKey, OaepHash, Origin, Pkcs11Backend, Pkcs11Config, SoftwareKey,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rsa::pkcs8::DecodePublicKey;

const TOKEN: &str = "custos-cmk-test";
const SO_PIN: &str = "so-pin-123456";
const PIN: &str = "user-pin-123456";

struct Token {
    module: PathBuf,
}

/// A directory for this process's token under Cargo's temporary directory
/// (statics are never dropped, so a `TempDir` would leak one per run): left
/// behind by this run, removed by the next.
fn token_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("cmk-softhsm-") else { continue };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(format!("cmk-softhsm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    dir
}

static TOKEN_ONCE: OnceLock<Token> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock that serializes these tests, and makes the token on first use.
fn token() -> (MutexGuard<'static, ()>, &'static Token) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let token = TOKEN_ONCE.get_or_init(|| {
        let util = Command::new("softhsm2-util").arg("--version").output();
        let module = default_module_path();
        let (Ok(util), Some(module)) = (util, module) else {
            panic!(
                "softhsm2 is not installed (softhsm2-util and libsofthsm2.so are required by the PKCS#11 tests): \
                 install it with `apt-get install -y softhsm2`; scripts/test installs it"
            );
        };
        assert!(util.status.success(), "softhsm2-util --version failed");
        let dir = token_dir();
        let tokens = dir.join("tokens");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
        )
        .unwrap();
        // Before anything in this process loads the module (it reads the variable then).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN, "--so-pin", SO_PIN, "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Token { module }
    });
    (guard, token)
}

fn backend(prefix: &str) -> Pkcs11Backend {
    Pkcs11Backend::open(Pkcs11Config::new(TOKEN, PIN).with_label_prefix(prefix)).unwrap()
}

/// A raw session on the same token, to look at objects behind the backend's back.
fn raw_session(token: &Token) -> Session {
    let ctx = Pkcs11::new(&token.module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == TOKEN)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    s
}

fn find_by_label(s: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    let found = s.find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())]).unwrap();
    assert_eq!(found.len(), 1, "{label}");
    found[0]
}

fn bool_attr(s: &Session, h: ObjectHandle, t: AttributeType) -> bool {
    match s.get_attributes(h, &[t]).unwrap().as_slice() {
        [Attribute::Extractable(b)]
        | [Attribute::Sensitive(b)]
        | [Attribute::NeverExtractable(b)]
        | [Attribute::AlwaysSensitive(b)]
        | [Attribute::Local(b)]
        | [Attribute::Token(b)]
        | [Attribute::Private(b)] => *b,
        other => panic!("{t:?}: {other:?}"),
    }
}

/// CKA_VALUE cannot be read, the key cannot be wrapped out, and the flags say so.
fn assert_never_leaves(s: &Session, h: ObjectHandle, value: AttributeType) {
    let info = s.get_attribute_info(h, &[value]).unwrap();
    assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{value:?}: {info:?}");
    assert!(s.get_attributes(h, &[value]).unwrap().is_empty(), "{value:?} was returned");
    assert!(!bool_attr(s, h, AttributeType::Extractable));
    assert!(bool_attr(s, h, AttributeType::Sensitive));
    assert!(bool_attr(s, h, AttributeType::Private));
    assert!(bool_attr(s, h, AttributeType::Token));
}

fn assert_aad_binding(key: &dyn MasterKey, other: &dyn MasterKey) {
    let blob = key.wrap("kek:1", b"a key-encryption key").unwrap();
    assert_eq!(blob.len(), 12 + 20 + 16);
    assert_eq!(&key.unwrap("kek:1", &blob).unwrap()[..], b"a key-encryption key");
    assert!(matches!(key.unwrap("kek:2", &blob), Err(CmkError::Unwrap)));
    assert!(matches!(other.unwrap("kek:1", &blob), Err(CmkError::Unwrap)));
    for i in [0, 5, 11, 12, 20, 31, 32, 40, blob.len() - 1] {
        let mut t = blob.clone();
        t[i] ^= 0x80;
        assert!(matches!(key.unwrap("kek:1", &t), Err(CmkError::Unwrap)), "flipped byte {i}");
    }
    for n in [0, 1, 11, 12, 27, 28, blob.len() - 1] {
        assert!(matches!(key.unwrap("kek:1", &blob[..n]), Err(CmkError::Unwrap)), "truncated to {n}");
    }
    let empty = key.wrap("x", b"").unwrap();
    assert_eq!(empty.len(), 28);
    assert!(key.unwrap("x", &empty).unwrap().is_empty());
    assert_ne!(key.wrap("x", b"same").unwrap(), key.wrap("x", b"same").unwrap());
}

#[test]
fn generate_list_wrap_unwrap_destroy() {
    let (_guard, _token) = token();
    let b = backend("rotation-");
    assert_eq!(b.kind(), "pkcs11");
    assert!(b.list().unwrap().is_empty());
    let old = b.generate().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let new = b.generate().unwrap();
    let listed = b.list().unwrap();
    assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![old.id(), new.id()]);
    assert!(listed.iter().all(|i| i.origin == Origin::Generated));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(listed[1].created_unix_ms.abs_diff(now) < 60_000);
    assert!(backend("other-prefix-").list().unwrap().is_empty(), "prefixes keep backends apart");

    assert_aad_binding(old.as_ref(), new.as_ref());

    // Rotation: re-wrap under the new CMK, destroy the old.
    let blob = old.wrap("kek:9", b"kek bytes").unwrap();
    let old_again = b.open(old.id()).unwrap();
    assert_eq!(&old_again.unwrap("kek:9", &blob).unwrap()[..], b"kek bytes");
    let rewrapped = new.wrap("kek:9", &old.unwrap("kek:9", &blob).unwrap()).unwrap();
    b.destroy(old.id()).unwrap();
    match b.open(old.id()) {
        Err(CmkError::NotFound(id)) => assert_eq!(id, old.id()),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(b.destroy(old.id()), Err(CmkError::NotFound(_))));
    assert!(matches!(old.unwrap("kek:9", &blob), Err(CmkError::Destroyed(_))));
    assert!(matches!(old_again.wrap("kek:9", b"x"), Err(CmkError::Destroyed(_))));
    assert!(matches!(b.open("../x"), Err(CmkError::InvalidId(_))));

    // Persistent in the token: a new backend sees only the new CMK.
    let b2 = backend("rotation-");
    assert_eq!(b2.list().unwrap().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![new.id()]);
    assert_eq!(&b2.open(new.id()).unwrap().unwrap("kek:9", &rewrapped).unwrap()[..], b"kek bytes");
    assert!(matches!(b2.open(old.id()), Err(CmkError::NotFound(_))));
}

#[test]
fn cmk_never_leaves_the_token() {
    let (_guard, token) = token();
    let b = backend("extract-");
    let k = b.generate().unwrap();
    let s = raw_session(token);
    let h = find_by_label(&s, ObjectClass::SECRET_KEY, &b.label_of(k.id()));
    assert_never_leaves(&s, h, AttributeType::Value);
    assert!(bool_attr(&s, h, AttributeType::NeverExtractable));
    assert!(bool_attr(&s, h, AttributeType::AlwaysSensitive));
    assert!(bool_attr(&s, h, AttributeType::Local));
    match s.get_attributes(h, &[AttributeType::Id, AttributeType::ValueLen]).unwrap().as_slice() {
        [Attribute::Id(id), Attribute::ValueLen(len)] => {
            assert_eq!(id, k.id().as_bytes());
            assert_eq!(u64::from(*len), 32);
        }
        other => panic!("{other:?}"),
    }
    // Not even wrapped under another key in the token.
    let wrapping = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(32u64.into()), Attribute::Wrap(true)],
        )
        .unwrap();
    match s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, h) {
        Err(CkError::Pkcs11(RvError::KeyUnextractable, _)) => {}
        other => panic!("wrapping the CMK out: {other:?}"),
    }
    // Nor used for anything but AES-GCM.
    assert!(s.encrypt(&Mechanism::AesEcb, h, &[0u8; 16]).is_err());
    // The token will not make it extractable afterwards.
    assert!(s.update_attributes(h, &[Attribute::Extractable(true)]).is_err());
    assert!(!bool_attr(&s, h, AttributeType::Extractable));

    // The BYOK import private key too.
    b.import_public_key().unwrap();
    let private = find_by_label(&s, ObjectClass::PRIVATE_KEY, &b.label_of("byok-import"));
    assert_never_leaves(&s, private, AttributeType::PrivateExponent);
}

fn oaep_wrap(public: &cmk::RsaPublicKey, key: &[u8], hash: OaepHash) -> Vec<u8> {
    let pk = rsa::RsaPublicKey::from_public_key_der(&public.to_spki_der()).unwrap();
    let mut rng = rand_core::OsRng;
    match hash {
        OaepHash::Sha1 => pk.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), key).unwrap(),
        OaepHash::Sha256 => pk.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), key).unwrap(),
    }
}

#[test]
fn byok_import_into_the_token() {
    let (_guard, token) = token();
    let b = backend("byok-");
    let public = b.import_public_key().unwrap();
    assert_eq!(public.bits(), 3072);
    assert_eq!(b.import_public_key().unwrap(), public, "generated once");
    assert_eq!(backend("byok-").import_public_key().unwrap(), public, "kept in the token");
    assert!(b.list().unwrap().is_empty(), "the import key is not a CMK");

    let mut org_key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut org_key).unwrap();
    let imported = b.import_wrapped(&oaep_wrap(&public, &org_key, OaepHash::Sha1), OaepHash::Sha1).unwrap();
    let listed = b.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, imported.id());
    assert_eq!(listed[0].origin, Origin::Imported);

    // The token now holds exactly the org's key: a software key from the same
    // bytes opens what the HSM wraps, and the other way round.
    let reference = SoftwareKey::from_bytes(imported.id(), &org_key).unwrap();
    let blob = imported.wrap("kek:byok", b"wrapped in the HSM").unwrap();
    assert_eq!(&reference.unwrap("kek:byok", &blob).unwrap()[..], b"wrapped in the HSM");
    let blob = reference.wrap("kek:byok", b"wrapped in software").unwrap();
    assert_eq!(&imported.unwrap("kek:byok", &blob).unwrap()[..], b"wrapped in software");
    assert_eq!(&b.open(imported.id()).unwrap().unwrap("kek:byok", &blob).unwrap()[..], b"wrapped in software");
    assert!(matches!(imported.unwrap("kek:other", &blob), Err(CmkError::Unwrap)));

    // Imported straight into the token as a non-extractable key.
    let s = raw_session(token);
    let h = find_by_label(&s, ObjectClass::SECRET_KEY, &b.label_of(imported.id()));
    assert_never_leaves(&s, h, AttributeType::Value);
    assert!(!bool_attr(&s, h, AttributeType::Local));

    // Bad blobs: Import, and nothing is left in the token.
    let good = oaep_wrap(&public, &[3u8; 32], OaepHash::Sha1);
    let mut tampered = good.clone();
    tampered[200] ^= 1;
    assert!(matches!(b.import_wrapped(&tampered, OaepHash::Sha1), Err(CmkError::Import(OaepHash::Sha1))));
    assert!(matches!(b.import_wrapped(&good[..100], OaepHash::Sha1), Err(CmkError::Import(OaepHash::Sha1))));
    assert!(matches!(b.import_wrapped(b"", OaepHash::Sha1), Err(CmkError::Import(OaepHash::Sha1))));
    // Keys of the wrong length, even AES-128/192 ones, are refused (softhsm2
    // records no CKA_VALUE_LEN for unwrapped keys: this is the length probe).
    for len in [0usize, 1, 16, 24, 31, 33, 40, 64] {
        let blob = oaep_wrap(&public, &vec![3u8; len], OaepHash::Sha1);
        let r = b.import_wrapped(&blob, OaepHash::Sha1);
        assert!(matches!(r, Err(CmkError::Import(OaepHash::Sha1))), "{len} bytes: {r:?}");
    }
    assert_eq!(b.list().unwrap().len(), 1);

    // softhsm2 2.6 does OAEP with SHA-1 only: SHA-256 is refused as unsupported.
    let sha256 = oaep_wrap(&public, &org_key, OaepHash::Sha256);
    match b.import_wrapped(&sha256, OaepHash::Sha256) {
        Err(CmkError::Unsupported { backend: "pkcs11", .. }) => {}
        Ok(k) => {
            // A newer softhsm2: then it must be the same key.
            let blob = reference.wrap("a", b"b").unwrap();
            assert_eq!(&k.unwrap("a", &blob).unwrap()[..], b"b");
        }
        Err(e) => panic!("RSA-OAEP-256 import: {e}"),
    }

    // Crypto-shredding an imported key works the same.
    b.destroy(imported.id()).unwrap();
    assert!(matches!(imported.unwrap("kek:byok", &blob), Err(CmkError::Destroyed(_))));
}

#[test]
fn open_errors_and_redaction() {
    let (_guard, token) = token();
    // No session of this process is open here (tests run one at a time and drop
    // their backends), so the token checks the PIN: login is per process.
    match Pkcs11Backend::open(Pkcs11Config::new(TOKEN, "wrong-pin-0000")) {
        Err(CmkError::Login { token, source }) => {
            assert_eq!(token, TOKEN);
            assert!(matches!(source, CkError::Pkcs11(RvError::PinIncorrect, _)), "{source}");
        }
        other => panic!("expected Login, got {other:?}"),
    }
    assert!(matches!(Pkcs11Backend::open(Pkcs11Config::new("no-such-token", PIN)), Err(CmkError::TokenNotFound(_))));
    assert!(matches!(
        Pkcs11Backend::open(Pkcs11Config::new(TOKEN, PIN).with_module("/nonexistent/libpkcs11.so")),
        Err(CmkError::ModuleLoad { .. })
    ));
    let config = Pkcs11Config::new(TOKEN, PIN).with_module(&token.module);
    assert!(!format!("{config:?}").contains(PIN));
    let b = Pkcs11Backend::open(config).unwrap();
    let k = b.generate().unwrap();
    let debug = format!("{b:?} {k:?}");
    assert!(debug.contains(k.id()) && debug.contains("redacted") && !debug.contains(PIN), "{debug}");
    b.destroy(k.id()).unwrap();
}

#[test]
fn concurrent_use_of_one_key() {
    let (_guard, _token) = token();
    let b = backend("threads-");
    let k: Arc<dyn MasterKey> = b.generate().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let k = k.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
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
    b.destroy(k.id()).unwrap();
}
