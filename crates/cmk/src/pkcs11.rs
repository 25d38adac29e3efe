//! The PKCS#11 backend: CMKs are non-extractable AES-256 keys inside a token.
//!
//! **Objects.** A CMK is a token secret key (`CKK_AES`, 32 bytes) with
//! `CKA_LABEL` = `<prefix><id>` and `CKA_ID` = `<id>` (UTF-8), private,
//! sensitive, not extractable, usable only to encrypt and decrypt with
//! `CKM_AES_GCM`. Its origin is `CKA_LOCAL` (true: generated in the token;
//! false: unwrapped, that is, imported). The BYOK import key is an RSA-3072
//! pair labelled `<prefix>byok-import` (public: encrypt only; private:
//! sensitive, non-extractable, unwrap only with `CKM_RSA_PKCS_OAEP`).
//!
//! **Threads and sessions.** The module is loaded and `C_Initialize`d once per
//! process (OS locking) and never finalized; every backend over the same module
//! shares it. Each call borrows a read-write session from a mutex-guarded pool
//! (at most 8 idle; a new one is opened and logged in when the pool is empty),
//! so calls from several threads run in parallel on separate sessions, and a
//! `Session` is never used by two threads at once. A session that fails with a
//! session-level error (closed, invalid handle, logged out, token removed) is
//! dropped, and the call is retried once on a fresh session. Object handles are
//! looked up by label and id on every call, never cached, so a destroyed CMK is
//! noticed at once and a reused handle number can never point at another key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::ids::{check_id, created_from_id, new_id};
use crate::soft::split_nonce;
use crate::{
    CmkBackend, CmkError, CmkInfo, MasterKey, OaepHash, Origin, RsaPublicKey, IMPORT_KEY_BITS, KEY_LEN, NONCE_LEN,
    TAG_LEN,
};

/// The default prefix of the CMKs' `CKA_LABEL`.
pub const DEFAULT_LABEL_PREFIX: &str = "custos-cmk-";
/// Where [`default_module_path`] looks, in order.
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
/// Label suffix of the BYOK import key pair.
const IMPORT_LABEL: &str = "byok-import";
/// Idle sessions kept per backend.
const POOL_MAX_IDLE: usize = 8;
/// AES-GCM tag length in bits.
const TAG_BITS: u64 = (TAG_LEN * 8) as u64;

/// softhsm2's module, if installed in one of the usual places
/// (`/usr/lib/softhsm/`, `/usr/lib/<arch>-linux-gnu/softhsm/`, `/usr/local/lib/softhsm/`).
pub fn default_module_path() -> Option<PathBuf> {
    MODULE_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// How to reach the token.
pub struct Pkcs11Config {
    /// The PKCS#11 module (`.so`); `None`: [`default_module_path`].
    pub module: Option<PathBuf>,
    /// The token's label (`softhsm2-util --init-token --label …`).
    pub token_label: String,
    /// The user PIN. The caller reads it from wherever it is kept (an
    /// environment variable, for the KMS). Zeroized on drop, never printed.
    user_pin: Zeroizing<String>,
    /// Prefix of every object label this backend creates and lists
    /// (default [`DEFAULT_LABEL_PREFIX`]); several KMSs can share a token with
    /// different prefixes.
    pub label_prefix: String,
}

impl Pkcs11Config {
    /// A configuration with the default module and label prefix.
    pub fn new(token_label: impl Into<String>, user_pin: impl Into<String>) -> Self {
        Self {
            module: None,
            token_label: token_label.into(),
            user_pin: Zeroizing::new(user_pin.into()),
            label_prefix: DEFAULT_LABEL_PREFIX.into(),
        }
    }

    /// Sets the module path.
    pub fn with_module(mut self, module: impl Into<PathBuf>) -> Self {
        self.module = Some(module.into());
        self
    }

    /// Sets the label prefix.
    pub fn with_label_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.label_prefix = prefix.into();
        self
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("user_pin", &"[redacted]")
            .field("label_prefix", &self.label_prefix)
            .finish()
    }
}

/// CMKs in a PKCS#11 token (see the module docs for objects and threads).
#[derive(Clone)]
pub struct Pkcs11Backend {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    module: PathBuf,
    slot: Slot,
    token_label: String,
    pin: AuthPin,
    prefix: String,
    pool: Mutex<Vec<Session>>,
    /// Serializes finding-or-generating the import key pair.
    import_lock: Mutex<()>,
}

/// One module context per process and module file: `C_Initialize` may be called
/// only once, and finalizing would pull the token from under other backends.
fn context(module: &Path) -> Result<Pkcs11, CmkError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_owned());
    let mut map = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = map.get(&key) {
        return Ok(ctx.clone());
    }
    let load_err = |source| CmkError::ModuleLoad { path: module.to_owned(), source };
    let ctx = Pkcs11::new(&key).map_err(load_err)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process initialized it already: fine.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e)),
    }
    map.insert(key, ctx.clone());
    Ok(ctx)
}

fn ck(op: &'static str) -> impl FnOnce(CkError) -> CmkError {
    move |source| CmkError::Pkcs11 { op, source }
}

fn rv_of(e: &CmkError) -> Option<RvError> {
    match e {
        CmkError::Pkcs11 { source: CkError::Pkcs11(rv, _), .. } => Some(*rv),
        _ => None,
    }
}

/// Errors after which a session is no good.
fn is_session_error(e: &CmkError) -> bool {
    matches!(
        rv_of(e),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
        )
    )
}

impl Pkcs11Backend {
    /// Loads the module (once per process), finds the initialized token by its
    /// label, and logs in with the user PIN, so that a wrong PIN fails now.
    ///
    /// PKCS#11 login state belongs to the process, not to a session: while
    /// this process already has a logged-in session with the token (another
    /// backend over it), the token answers `CKR_USER_ALREADY_LOGGED_IN` without
    /// looking at the PIN, and this backend shares that login.
    pub fn open(config: Pkcs11Config) -> Result<Self, CmkError> {
        let module = match config.module {
            Some(m) => m,
            None => default_module_path()
                .ok_or_else(|| CmkError::ModuleNotFound { searched: MODULE_CANDIDATES.join(", ") })?,
        };
        if config.label_prefix.len() > 64 {
            return Err(CmkError::Config("the label prefix must be at most 64 bytes"));
        }
        let ctx = context(&module)?;
        let slots = ctx.get_slots_with_initialized_token().map_err(ck("C_GetSlotList"))?;
        let mut found = Vec::new();
        for slot in slots {
            let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
            if info.label() == config.token_label {
                found.push(slot);
            }
        }
        let slot = match found.as_slice() {
            [] => return Err(CmkError::TokenNotFound(config.token_label)),
            [slot] => *slot,
            more => return Err(CmkError::Ambiguous { label: config.token_label, count: more.len() }),
        };
        let inner = Inner {
            ctx,
            module,
            slot,
            token_label: config.token_label,
            pin: AuthPin::from(config.user_pin.as_str()),
            prefix: config.label_prefix,
            pool: Mutex::new(Vec::new()),
            import_lock: Mutex::new(()),
        };
        let first = inner.open_session()?;
        inner.put_back(first);
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The module in use.
    pub fn module(&self) -> &Path {
        &self.inner.module
    }

    /// The `CKA_LABEL` of the CMK with this id.
    pub fn label_of(&self, id: &str) -> String {
        self.inner.label(id)
    }
}

impl Inner {
    fn label(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    fn open_session(&self) -> Result<Session, CmkError> {
        let s = self.ctx.open_rw_session(self.slot).map_err(ck("C_OpenSession"))?;
        match s.login(UserType::User, Some(&self.pin)) {
            // Login is per application and token: other sessions may have done it.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(source) => Err(CmkError::Login { token: self.token_label.clone(), source }),
        }
    }

    fn put_back(&self, s: Session) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX_IDLE {
            pool.push(s);
        }
    }

    /// Runs `f` on a pooled session; on a session-level error from a pooled
    /// session, once more on a fresh one (a call that failed so did not run).
    fn with_session<T>(&self, f: impl Fn(&Session) -> Result<T, CmkError>) -> Result<T, CmkError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let from_pool = pooled.is_some();
        let s = match pooled {
            Some(s) => s,
            None => self.open_session()?,
        };
        let result = f(&s);
        match result {
            Err(e) if is_session_error(&e) => {
                drop(s);
                if !from_pool {
                    return Err(e);
                }
                let fresh = self.open_session()?;
                let result = f(&fresh);
                if !matches!(&result, Err(e) if is_session_error(e)) {
                    self.put_back(fresh);
                }
                result
            }
            other => {
                self.put_back(s);
                other
            }
        }
    }

    fn find_one(&self, s: &Session, template: &[Attribute], label: &str) -> Result<Option<ObjectHandle>, CmkError> {
        let found = s.find_objects(template).map_err(ck("C_FindObjects"))?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            more => Err(CmkError::Ambiguous { label: label.to_owned(), count: more.len() }),
        }
    }

    fn find_cmk(&self, s: &Session, id: &str) -> Result<Option<ObjectHandle>, CmkError> {
        let label = self.label(id);
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(label.clone().into_bytes()),
            Attribute::Id(id.as_bytes().to_vec()),
        ];
        self.find_one(s, &template, &label)
    }

    /// The attributes of a CMK object (without the value, which the token makes).
    fn cmk_template(&self, id: &str) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM]),
            Attribute::Label(self.label(id).into_bytes()),
            Attribute::Id(id.as_bytes().to_vec()),
        ]
    }

    /// The import key pair `(public, private)`, generated on first use.
    fn import_key(&self, s: &Session) -> Result<(ObjectHandle, ObjectHandle), CmkError> {
        let _guard = self.import_lock.lock().unwrap_or_else(|e| e.into_inner());
        let label = self.label(IMPORT_LABEL);
        let find = |class| {
            let template = [
                Attribute::Class(class),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(true),
                Attribute::Label(label.clone().into_bytes()),
            ];
            self.find_one(s, &template, &label)
        };
        match (find(ObjectClass::PUBLIC_KEY)?, find(ObjectClass::PRIVATE_KEY)?) {
            (Some(public), Some(private)) => Ok((public, private)),
            (None, None) => self.generate_import_key(s, &label),
            _ => Err(CmkError::Token("only one half of the BYOK import key pair is in the token")),
        }
    }

    fn generate_import_key(&self, s: &Session, label: &str) -> Result<(ObjectHandle, ObjectHandle), CmkError> {
        let id = format!("{IMPORT_LABEL}-{}", new_id()).into_bytes();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::ModulusBits((IMPORT_KEY_BITS as u64).into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Encrypt(true),
            Attribute::Wrap(false),
            Attribute::Verify(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(true),
            Attribute::Sign(false),
            Attribute::Derive(false),
            Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP]),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(ck("C_GenerateKeyPair (RSA-3072)"))
    }
}

impl CmkBackend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn list(&self) -> Result<Vec<CmkInfo>, CmkError> {
        let inner = &self.inner;
        let mut out = inner.with_session(|s| {
            let template =
                [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES), Attribute::Token(true)];
            let mut out = Vec::new();
            for h in s.find_objects(&template).map_err(ck("C_FindObjects"))? {
                let attrs = s
                    .get_attributes(h, &[AttributeType::Label, AttributeType::Id, AttributeType::Local])
                    .map_err(ck("C_GetAttributeValue"))?;
                let (mut label, mut id, mut local) = (None, None, None);
                for a in attrs {
                    match a {
                        Attribute::Label(l) => label = Some(l),
                        Attribute::Id(i) => id = Some(i),
                        Attribute::Local(b) => local = Some(b),
                        _ => {}
                    }
                }
                // Only our objects: a valid id, and the label that goes with it.
                let Some(id) = id.and_then(|i| String::from_utf8(i).ok()) else { continue };
                if check_id(&id).is_err() || label.as_deref() != Some(inner.label(&id).as_bytes()) {
                    continue;
                }
                let origin = if local == Some(false) { Origin::Imported } else { Origin::Generated };
                out.push(CmkInfo { created_unix_ms: created_from_id(&id).unwrap_or(0), id, origin });
            }
            Ok(out)
        })?;
        out.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        Ok(out)
    }

    fn open(&self, id: &str) -> Result<Arc<dyn MasterKey>, CmkError> {
        check_id(id)?;
        self.inner.with_session(|s| self.inner.find_cmk(s, id))?.ok_or_else(|| CmkError::NotFound(id.to_owned()))?;
        Ok(Arc::new(HsmKey { id: id.to_owned(), inner: self.inner.clone() }))
    }

    fn generate(&self) -> Result<Arc<dyn MasterKey>, CmkError> {
        let id = new_id();
        let mut template = self.inner.cmk_template(&id);
        template.push(Attribute::ValueLen((KEY_LEN as u64).into()));
        self.inner.with_session(|s| s.generate_key(&Mechanism::AesKeyGen, &template).map_err(ck("C_GenerateKey")))?;
        Ok(Arc::new(HsmKey { id, inner: self.inner.clone() }))
    }

    /// `C_DestroyObject`. Copies in HSM backups or replicas are out of its reach.
    fn destroy(&self, id: &str) -> Result<(), CmkError> {
        check_id(id)?;
        self.inner.with_session(|s| {
            let h = self.inner.find_cmk(s, id)?.ok_or_else(|| CmkError::NotFound(id.to_owned()))?;
            s.destroy_object(h).map_err(ck("C_DestroyObject"))
        })
    }

    fn import_public_key(&self) -> Result<RsaPublicKey, CmkError> {
        let (n, e) = self.inner.with_session(|s| {
            let (public, _) = self.inner.import_key(s)?;
            let attrs = s
                .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent])
                .map_err(ck("C_GetAttributeValue"))?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            n.zip(e).ok_or(CmkError::Token("the BYOK import public key has no modulus or exponent"))
        })?;
        let public = RsaPublicKey::from_components(&n, &e, None)
            .map_err(|_| CmkError::Token("the BYOK import key is not a usable RSA key"))?;
        Ok(public.clone().with_kid(public.thumbprint()))
    }

    /// `C_UnwrapKey` with `CKM_RSA_PKCS_OAEP` into a new non-extractable AES
    /// key (softhsm2 2.6 supports SHA-1 only: [`CmkError::Unsupported`] for
    /// SHA-256). The key's length is checked inside the token: from
    /// `CKA_VALUE_LEN`, or, where the token leaves that at 0 for unwrapped keys
    /// (softhsm2 2.6), with a probe (see `probe_len_is_32`).
    fn import_wrapped(&self, wrapped: &[u8], hash: OaepHash) -> Result<Arc<dyn MasterKey>, CmkError> {
        let (hash_alg, mgf) = match hash {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        let id = self.inner.with_session(|s| {
            let (_, private) = self.inner.import_key(s)?;
            let mechanism = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash_alg, mgf, PkcsOaepSource::empty()));
            // A new id per attempt: a retried call never makes two objects with one label.
            let id = new_id();
            let h = match s.unwrap_key(&mechanism, private, wrapped, &self.inner.cmk_template(&id)) {
                Ok(h) => h,
                Err(CkError::Pkcs11(RvError::ArgumentsBad | RvError::MechanismParamInvalid, _))
                    if hash == OaepHash::Sha256 =>
                {
                    return Err(CmkError::Unsupported {
                        backend: "pkcs11",
                        what: "RSA-OAEP with SHA-256 on this token",
                    });
                }
                Err(CkError::Pkcs11(rv, _)) if is_bad_wrapped_key(rv) => return Err(CmkError::Import(hash)),
                Err(e) => return Err(ck("C_UnwrapKey (RSA-OAEP)")(e)),
            };
            // A CMK is exactly 32 bytes; anything else is refused and removed.
            let ok = match s.get_attributes(h, &[AttributeType::ValueLen]).map_err(ck("C_GetAttributeValue")) {
                Ok(len) => match len.as_slice() {
                    [Attribute::ValueLen(l)] if u64::from(*l) != 0 => Ok(u64::from(*l) == KEY_LEN as u64),
                    // 25 to 32 bytes by the probe, and 16, 24 or 32 by AES: 32.
                    _ => probe_len_is_32(&self.inner, s, private, &mechanism, wrapped)
                        .map(|len_ok| len_ok && gcm_self_test(s, h)),
                },
                Err(e) => Err(e),
            };
            match ok {
                Ok(true) => Ok(id),
                Ok(false) => {
                    s.destroy_object(h).map_err(ck("C_DestroyObject"))?;
                    Err(CmkError::Import(hash))
                }
                Err(e) => {
                    // Best effort: do not leave an unchecked key behind.
                    let _ = s.destroy_object(h);
                    Err(e)
                }
            }
        })?;
        Ok(Arc::new(HsmKey { id, inner: self.inner.clone() }))
    }
}

/// Whether an RSA-OAEP-wrapped key is 32 bytes long, found out inside the
/// token for tokens that do not record `CKA_VALUE_LEN` on unwrapped keys
/// (softhsm2 2.6 leaves it at 0, and implements no mechanism that depends on a
/// secret key's length short of wrapping it). The blob is unwrapped once more
/// as a session-only probe object, which is wrapped with `CKM_AES_KEY_WRAP`
/// (RFC 3394: output = length + 8, the length rounded up to a multiple of 8 by
/// softhsm2) under a fresh session AES key generated in the token, sensitive
/// and non-extractable; only the output's *length* is looked at; the caller
/// then checks that AES-GCM works with the key (16, 24 or 32 bytes). Both are destroyed at once; the wrapping key never leaves the
/// token, so neither does the imported key. The CMK object itself is never
/// extractable. A token that cannot do this answers [`CmkError::Unsupported`].
fn probe_len_is_32(
    inner: &Inner,
    s: &Session,
    private: ObjectHandle,
    mechanism: &Mechanism<'_>,
    wrapped: &[u8],
) -> Result<bool, CmkError> {
    let probe_template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Derive(false),
    ];
    let kek_template = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::ValueLen((KEY_LEN as u64).into()),
        Attribute::Wrap(true),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ];
    let mechanisms = inner.ctx.get_mechanism_list(inner.slot).map_err(ck("C_GetMechanismList"))?;
    if ![MechanismType::AES_KEY_GEN, MechanismType::AES_KEY_WRAP].iter().all(|m| mechanisms.contains(m)) {
        return Err(CmkError::Unsupported {
            backend: "pkcs11",
            what: "checking the length of an imported key on this token (no CKA_VALUE_LEN, no CKM_AES_KEY_WRAP)",
        });
    }
    let probe = s.unwrap_key(mechanism, private, wrapped, &probe_template).map_err(ck("C_UnwrapKey (length probe)"))?;
    let result = match s.generate_key(&Mechanism::AesKeyGen, &kek_template) {
        Ok(kek) => {
            let out = s.wrap_key(&Mechanism::AesKeyWrap, kek, probe);
            let _ = s.destroy_object(kek);
            match out {
                // 40 bytes: 25 to 32 (softhsm2 zero-pads to a multiple of 8).
                Ok(out) => Ok(out.len() == KEY_LEN + 8),
                // Too short for RFC 3394 (under 16 bytes), or refused.
                Err(CkError::Pkcs11(_, _)) => Ok(false),
                Err(e) => Err(ck("C_WrapKey (length probe)")(e)),
            }
        }
        Err(e) => Err(ck("C_GenerateKey (length probe)")(e)),
    };
    let _ = s.destroy_object(probe);
    result
}

/// What a token answers to a wrapped key that does not decrypt to a key
/// (softhsm2 2.6: `CKR_GENERAL_ERROR` for a bad OAEP padding).
fn is_bad_wrapped_key(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::KeySizeRange
    )
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.inner.module)
            .field("token_label", &self.inner.token_label)
            .field("slot", &self.inner.slot.id())
            .field("label_prefix", &self.inner.prefix)
            .field("user_pin", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A CMK inside the token: every wrap and unwrap is one `CKM_AES_GCM`
/// operation there; the key bytes never reach this process.
pub struct HsmKey {
    id: String,
    inner: Arc<Inner>,
}

impl HsmKey {
    fn handle(&self, s: &Session) -> Result<ObjectHandle, CmkError> {
        self.inner.find_cmk(s, &self.id)?.ok_or_else(|| CmkError::Destroyed(self.id.clone()))
    }
}

impl MasterKey for HsmKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CmkError> {
        // A fresh IV for every attempt (in `gcm_seal`): a retry never reuses one.
        self.inner.with_session(|s| gcm_seal(s, self.handle(s)?, aad, plain))
    }

    fn unwrap(&self, aad: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CmkError> {
        split_nonce(wrapped)?;
        self.inner.with_session(|s| gcm_open(s, self.handle(s)?, aad, wrapped))
    }
}

/// AES-256-GCM in the token: `nonce ‖ ciphertext ‖ tag`, random nonce from aws-lc-rs.
fn gcm_seal(s: &Session, key: ObjectHandle, aad: &str, plain: &[u8]) -> Result<Vec<u8>, CmkError> {
    let mut iv = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| CmkError::Random)?;
    let mut param_iv = iv;
    let params = GcmParams::new(&mut param_iv, aad.as_bytes(), TAG_BITS.into()).map_err(ck("AES-GCM parameters"))?;
    let sealed = s.encrypt(&Mechanism::AesGcm(params), key, plain).map_err(ck("C_Encrypt (AES-GCM)"))?;
    if sealed.len() != plain.len() + TAG_LEN {
        return Err(CmkError::Token("AES-GCM output of unexpected length"));
    }
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`gcm_seal`] made.
fn gcm_open(s: &Session, key: ObjectHandle, aad: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CmkError> {
    let (nonce, sealed) = split_nonce(wrapped)?;
    let mut iv = nonce;
    let params = GcmParams::new(&mut iv, aad.as_bytes(), TAG_BITS.into()).map_err(ck("AES-GCM parameters"))?;
    match s.decrypt(&Mechanism::AesGcm(params), key, sealed) {
        Ok(plain) => Ok(Zeroizing::new(plain)),
        Err(CkError::Pkcs11(rv, _)) if is_bad_ciphertext(rv) => Err(CmkError::Unwrap),
        Err(e) => Err(ck("C_Decrypt (AES-GCM)")(e)),
    }
}

/// Whether a new key can seal and open with AES-GCM in the token (an AES key
/// of 16, 24 or 32 bytes can; any other length cannot).
fn gcm_self_test(s: &Session, key: ObjectHandle) -> bool {
    const AAD: &str = "custos-cmk:self-test";
    let probe = [0x5au8; 32];
    gcm_seal(s, key, AAD, &probe)
        .and_then(|blob| gcm_open(s, key, AAD, &blob))
        .is_ok_and(|plain| plain.as_slice() == probe)
}

/// What a token answers to a tag that does not verify. PKCS#11 says
/// `CKR_ENCRYPTED_DATA_INVALID`; softhsm2 2.6 answers `CKR_GENERAL_ERROR`, so a
/// general failure of `C_Decrypt` on a key that was just found is read as a
/// bad blob too (the key lookup before it would have failed on a broken token).
fn is_bad_ciphertext(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::GeneralError
            | RvError::FunctionFailed
    )
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmKey")
            .field("id", &self.id)
            .field("label", &self.inner.label(&self.id))
            .field("token_label", &self.inner.token_label)
            .finish()
    }
}
