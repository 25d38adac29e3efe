//! The KMS's customer master keys (CMKs): which one is active, opening the
//! others from the backend, rotation, bring-your-own-key and destruction.
//!
//! **The registry.** Which CMK is active is recorded in the store (the
//! `kms_meta` value [`REGISTRY`], a small JSON document), so that every node
//! agrees: the active CMK's id, the CMK that wrapped everything made before
//! the registry existed (values of the original layout name no CMK), and each
//! CMK this KMS has used, with its [`CmkState`]. Nodes re-read it at most
//! [`REGISTRY_CACHE`] apart; every change is a compare-and-swap
//! ([`kms_store::Store::swap_meta`]).
//!
//! **What names its CMK.** Every blob wrapped under a CMK says which one: a
//! KEK row has `cmk_id`; a session-ticket key in `kms_meta` is an envelope
//! `custos-cmk1:<cmk id>:<blob>` ([`envelope`]); the sealed static key file
//! starts with a header line naming the CMK ([`seal_static_key`]). So a node
//! unwraps each with the CMK it names (opened lazily from the backend and kept
//! open), and wraps new ones with the active CMK.
//!
//! **Rotation** ([`MasterKeys::rotate_to`]): the new CMK becomes active in the
//! registry, then every KEK of the org, every live ticket key and this node's
//! sealed static key are re-wrapped under it, one by one, each with a
//! compare-and-swap on the CMK it was under. Content keys and ciphertext are
//! untouched (they are wrapped under KEKs). The sweep runs twice, the second
//! time once every node has seen the new active CMK, to catch what a node
//! wrapped under the old one meanwhile. Nothing is ever left unopenable: until
//! an admin deletes it, the previous CMK stays in the backend and still
//! unwraps (other nodes may hold the old wrapped form of a row for a moment),
//! and a crash midway leaves each row under one CMK or the other; the next
//! sweep (start-up, the minute housekeeping, or the admin API) finishes it.
//!
//! **Destruction** (state `DELETED`): refused for the active CMK and for one
//! that still wraps anything; otherwise the registry marks it deleted (every
//! node stops using it within [`REGISTRY_CACHE`]), then the backend destroys it
//! ([`cmk::CmkBackend::destroy`]): crypto-shredding of everything only it
//! wrapped, as far as the backend reaches (not backups, snapshots or HSM
//! replicas).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmk::{CmkBackend, CmkError, MasterKey, OaepHash, Origin};
use kms_protocol::message::{CmkWrapAlg, KeyState, MasterKeyObject};
use kms_protocol::{Kind, KmsUri, Response, Status};
use kms_store::Store;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{Cmk, CryptoError};
use crate::error::EngineError;
use crate::keyring::Keyring;
use crate::session::Tickets;

/// The `kms_meta` name of the CMK registry.
pub const REGISTRY: &str = "cmk/registry";
/// How long a node trusts its copy of the registry.
pub const REGISTRY_CACHE: Duration = Duration::from_secs(1);
/// How long a rotation waits before its second sweep: past every node's registry cache.
pub const SETTLE: Duration = Duration::from_millis(1250);
/// The AAD of the sealed static key.
pub const STATIC_KEY_AAD: &str = "static-key";

const ENVELOPE: &[u8] = b"custos-cmk1:";
const SEALED_HEADER: &[u8] = b"custos-sealed-static-key/1 cmk=";
/// Longest BYOK blob accepted (an RSA-4096 ciphertext is 512 bytes).
const MAX_BYOK_BLOB: usize = 2048;

/// The state of a CMK in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmkState {
    /// Wraps everything new (exactly one CMK).
    Active,
    /// No longer wraps anything new; still unwraps (what was wrapped under it
    /// before a rotation, and stale copies other nodes hold for a moment).
    Deactivated,
    /// As [`CmkState::Deactivated`], set by an admin as `RETIRED`.
    Retired,
    /// Destroyed in the backend (crypto-shredded). Final.
    Deleted,
}

impl CmkState {
    /// The protocol's name for it.
    pub fn key_state(self) -> KeyState {
        match self {
            CmkState::Active => KeyState::Active,
            CmkState::Deactivated => KeyState::Deactivated,
            CmkState::Retired => KeyState::Retired,
            CmkState::Deleted => KeyState::Deleted,
        }
    }
}

/// One CMK in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmkEntry {
    /// Its state.
    pub state: CmkState,
    /// When this KMS first used it (ms).
    pub created: i64,
    /// Last state change (ms).
    pub updated: i64,
    /// `generated` or `imported`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The registry document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Format version (1).
    pub version: u32,
    /// The active CMK.
    pub active: String,
    /// The CMK that wrapped everything made before the registry existed.
    pub initial: String,
    /// Every CMK this KMS has used.
    pub keys: BTreeMap<String, CmkEntry>,
}

impl Registry {
    fn first(id: &str, now: i64) -> Self {
        let entry = CmkEntry { state: CmkState::Active, created: now, updated: now, origin: None };
        Self { version: 1, active: id.into(), initial: id.into(), keys: BTreeMap::from([(id.to_string(), entry)]) }
    }

    fn decode(raw: &[u8]) -> Result<Self, EngineError> {
        let r: Registry = serde_json::from_slice(raw)
            .map_err(|_| EngineError::Internal("the store's CMK registry does not decode"))?;
        if r.version != 1 || r.keys.get(&r.active).map(|e| e.state) != Some(CmkState::Active) {
            return Err(EngineError::Internal("the store's CMK registry is inconsistent"));
        }
        Ok(r)
    }

    fn encode(&self) -> Result<Vec<u8>, EngineError> {
        serde_json::to_vec(self).map_err(|_| EngineError::Internal("encoding the CMK registry"))
    }

    /// Whether `id` may unwrap (known and not deleted).
    fn usable(&self, id: &str) -> bool {
        self.keys.get(id).is_some_and(|e| e.state != CmkState::Deleted)
    }
}

/// What a re-wrapping sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrapped {
    /// KEKs moved under the active CMK.
    pub keks: usize,
    /// KEKs that could not be (their CMK is unavailable here); logged.
    pub keks_stuck: usize,
    /// Session-ticket keys moved.
    pub ticket_keys: usize,
    /// Whether this node's sealed static key was re-sealed.
    pub static_key: bool,
}

/// What still depends on a CMK.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// KEKs (of any org in this store) wrapped under it.
    pub keks: usize,
    /// Live session-ticket keys wrapped under it.
    pub ticket_keys: usize,
    /// Whether this node's static key is sealed under it.
    pub static_key: bool,
}

impl Usage {
    fn is_empty(&self) -> bool {
        self.keks == 0 && self.ticket_keys == 0 && !self.static_key
    }
}

/// The static key file this node re-seals on rotation.
struct StaticKeyFile {
    path: PathBuf,
    pkcs8: Zeroizing<Vec<u8>>,
}

/// The CMKs: the registry, open handles, the backend.
pub struct MasterKeys {
    store: Arc<dyn Store>,
    backend: Option<Arc<dyn CmkBackend>>,
    /// Open CMKs by id (opened lazily; dropped once the registry says deleted).
    handles: std::sync::RwLock<HashMap<String, Arc<dyn MasterKey>>>,
    cached: tokio::sync::RwLock<Option<(Registry, Instant)>>,
    /// One rotation (or deletion) at a time on this node; the registry's
    /// compare-and-swap orders them across nodes.
    admin: tokio::sync::Mutex<()>,
    /// A `cmk.json` of the original layout adopted into the backend: shredded
    /// with its CMK.
    legacy_file: std::sync::Mutex<Option<(PathBuf, String)>>,
    // This node's sealed static key files: the current key, and during a
    // static key rotation the next or previous one.
    static_key: std::sync::Mutex<Vec<StaticKeyFile>>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys").field("backend", &self.backend.as_ref().map(|b| b.kind())).finish_non_exhaustive()
    }
}

/// Runs blocking backend work (PBKDF2, RSA, HSM calls, file I/O) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CmkError> + Send + 'static,
) -> Result<Result<T, CmkError>, EngineError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| EngineError::Internal("a CMK backend task failed"))
}

fn err(status: Status, rid: &str, reason: &str) -> Response {
    Response::error(status, rid, reason)
}

/// The active CMK the store's registry names, if the store has a registry yet.
pub async fn stored_active(store: &dyn Store) -> Result<Option<String>, EngineError> {
    match store.get_meta(REGISTRY).await? {
        Some(raw) => Ok(Some(Registry::decode(&raw)?.active)),
        None => Ok(None),
    }
}

impl MasterKeys {
    /// Opens the CMKs over `store`, starting from `cmk`. On the first start
    /// (no registry yet) `cmk` becomes the active CMK; afterwards the
    /// registry decides, and its active CMK must open here (fail closed).
    pub async fn open(store: Arc<dyn Store>, cmk: Cmk) -> Result<Arc<Self>, EngineError> {
        let this = Self {
            store,
            backend: cmk.backend().cloned(),
            handles: std::sync::RwLock::new(HashMap::from([(cmk.id().to_string(), cmk.key().clone())])),
            cached: tokio::sync::RwLock::new(None),
            admin: tokio::sync::Mutex::new(()),
            legacy_file: std::sync::Mutex::new(None),
            static_key: std::sync::Mutex::new(Vec::new()),
        };
        if this.store.get_meta(REGISTRY).await?.is_none() {
            let first = Registry::first(cmk.id(), crate::now_ms()).encode()?;
            // Another node may win the race: then its registry is the one in force.
            this.store.put_meta_if_absent(REGISTRY, &first).await?;
        }
        this.active().await?;
        Ok(Arc::new(this))
    }

    /// The backend, if this KMS has one (rotation and BYOK need it).
    pub fn backend(&self) -> Option<&Arc<dyn CmkBackend>> {
        self.backend.as_ref()
    }

    /// Remembers the `cmk.json` of the original layout that was adopted as
    /// CMK `id`: it is overwritten and deleted when that CMK is.
    pub fn set_legacy_file(&self, path: PathBuf, id: String) {
        *self.legacy_file.lock().unwrap_or_else(|e| e.into_inner()) = Some((path, id));
    }

    /// The registry, at most [`REGISTRY_CACHE`] old.
    pub async fn registry(&self) -> Result<Registry, EngineError> {
        if let Some((r, at)) = self.cached.read().await.as_ref() {
            if at.elapsed() < REGISTRY_CACHE {
                return Ok(r.clone());
            }
        }
        self.refresh().await
    }

    /// The registry as the store has it now.
    pub async fn refresh(&self) -> Result<Registry, EngineError> {
        let raw = self.store.get_meta(REGISTRY).await?.ok_or(EngineError::Internal("the store has no CMK registry"))?;
        let reg = Registry::decode(&raw)?;
        self.forget_unusable(&reg);
        *self.cached.write().await = Some((reg.clone(), Instant::now()));
        Ok(reg)
    }

    /// Drops handles of CMKs deleted (on any node): fail closed.
    fn forget_unusable(&self, reg: &Registry) {
        let mut h = self.handles.write().unwrap_or_else(|e| e.into_inner());
        h.retain(|id, _| reg.keys.get(id).is_none_or(|e| e.state != CmkState::Deleted));
    }

    /// Applies `change` to the registry with compare-and-swap, retrying on
    /// concurrent changes. `change` may refuse, with a reason for a 409.
    async fn update<R>(
        &self,
        mut change: impl FnMut(&mut Registry) -> Result<R, &'static str>,
    ) -> Result<Result<R, &'static str>, EngineError> {
        for _ in 0..32 {
            let raw =
                self.store.get_meta(REGISTRY).await?.ok_or(EngineError::Internal("the store has no CMK registry"))?;
            let mut reg = Registry::decode(&raw)?;
            let out = match change(&mut reg) {
                Ok(out) => out,
                Err(refusal) => return Ok(Err(refusal)),
            };
            Registry::decode(&reg.encode()?)?; // still consistent (one active CMK)
            if self.store.swap_meta(REGISTRY, &raw, &reg.encode()?).await? {
                self.forget_unusable(&reg);
                *self.cached.write().await = Some((reg, Instant::now()));
                return Ok(Ok(out));
            }
        }
        Err(EngineError::Internal("the CMK registry kept changing"))
    }

    /// The handle of CMK `id`, opening it from the backend if needed (no registry check).
    async fn handle(&self, id: &str) -> Result<Arc<dyn MasterKey>, EngineError> {
        if let Some(k) = self.handles.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(k.clone());
        }
        let Some(backend) = self.backend.clone() else {
            return Err(CryptoError::CmkUnavailable(id.to_string()).into());
        };
        let owned = id.to_string();
        let key = blocking(move || backend.open(&owned)).await?.map_err(CryptoError::from)?;
        self.handles.write().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), key.clone());
        Ok(key)
    }

    /// CMK `id`, if the registry knows it and it is not deleted. A CMK this
    /// node's copy of the registry does not know yet (another node just
    /// rotated to it) is looked up in the store's registry.
    pub async fn get(&self, id: &str) -> Result<Arc<dyn MasterKey>, EngineError> {
        let reg = self.registry().await?;
        let usable = match reg.keys.get(id) {
            Some(e) => e.state != CmkState::Deleted,
            None => self.refresh().await?.usable(id),
        };
        if !usable {
            return Err(CryptoError::CmkUnavailable(id.to_string()).into());
        }
        self.handle(id).await
    }

    /// The active CMK.
    pub async fn active(&self) -> Result<Arc<dyn MasterKey>, EngineError> {
        let reg = self.registry().await?;
        self.handle(&reg.active).await
    }

    /// Wraps under the active CMK: (blob, CMK id).
    pub async fn wrap_active(&self, aad: &str, plain: &[u8]) -> Result<(Vec<u8>, String), EngineError> {
        let cmk = self.active().await?;
        let blob = cmk.wrap(aad, plain).map_err(CryptoError::from)?;
        Ok((blob, cmk.id().to_string()))
    }

    /// Unwraps with CMK `id`.
    pub async fn unwrap_with(&self, id: &str, aad: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, EngineError> {
        let cmk = self.get(id).await?;
        Ok(cmk.unwrap(aad, blob).map_err(CryptoError::from)?)
    }

    /// The CMK a stored value (see [`envelope`]) is wrapped under, and its blob.
    pub async fn owner_of<'v>(&self, value: &'v [u8]) -> Result<(String, &'v [u8]), EngineError> {
        match split_envelope(value) {
            Some((id, blob)) => Ok((id.to_string(), blob)),
            None => Ok((self.registry().await?.initial, value)),
        }
    }

    /// Opens a stored value made by [`MasterKeys::seal_stored`] (or, of the
    /// original layout, wrapped under the initial CMK).
    pub async fn open_stored(&self, aad: &str, value: &[u8]) -> Result<Zeroizing<Vec<u8>>, EngineError> {
        let (id, blob) = self.owner_of(value).await?;
        self.unwrap_with(&id, aad, blob).await
    }

    /// Wraps under the active CMK, as an envelope naming it.
    pub async fn seal_stored(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, EngineError> {
        let (blob, id) = self.wrap_active(aad, plain).await?;
        Ok(envelope(&id, &blob))
    }

    // ------------------------------------------------------------ static key

    /// Registers this node's sealed static key file (re-sealed on rotation)
    /// and re-seals it now if it is not under the active CMK.
    pub async fn set_static_key_file(&self, path: PathBuf, pkcs8: Zeroizing<Vec<u8>>) -> Result<bool, EngineError> {
        {
            let mut files = self.static_key.lock().unwrap_or_else(|e| e.into_inner());
            files.retain(|f| f.path != path);
            files.push(StaticKeyFile { path, pkcs8 });
        }
        let active = self.active().await?;
        self.reseal_static_key(&active).await
    }

    /// The CMKs this node's static key files are sealed under (read from the files).
    async fn static_key_cmks(&self) -> Result<Vec<(PathBuf, String)>, EngineError> {
        let paths: Vec<PathBuf> =
            self.static_key.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|f| f.path.clone()).collect();
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            // A file renamed away by a static key promotion is re-registered at the next start.
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CryptoError::Io { op: "read", path: path.clone(), source }.into()),
            };
            let id = match sealed_static_key_cmk(&bytes) {
                Some((id, _)) => id.to_string(),
                None => self.registry().await?.initial,
            };
            out.push((path, id));
        }
        Ok(out)
    }

    async fn reseal_static_key(&self, target: &Arc<dyn MasterKey>) -> Result<bool, EngineError> {
        let stale: Vec<PathBuf> =
            self.static_key_cmks().await?.into_iter().filter(|(_, id)| id != target.id()).map(|(p, _)| p).collect();
        let guard = self.static_key.lock().unwrap_or_else(|e| e.into_inner());
        let mut any = false;
        for f in guard.iter().filter(|f| stale.contains(&f.path)) {
            let sealed = seal_static_key(target.as_ref(), &f.pkcs8)?;
            // Replacing is meant here: the same key, re-sealed under the active
            // CMK. Every node sharing the file may do it at once; each writes
            // the same key under the same CMK, so any rename landing last is right.
            secretfile::replace(&f.path, &sealed).map_err(|source| CryptoError::Io {
                op: "write",
                path: f.path.clone(),
                source,
            })?;
            tracing::info!(cmk = target.id(), path = %f.path.display(), "static key re-sealed under the active CMK");
            any = true;
        }
        Ok(any)
    }

    // ------------------------------------------------------------ rotation

    /// Re-wraps everything under the active CMK (as the store has it now):
    /// the org's KEKs, live ticket keys, this node's static key.
    pub async fn rewrap_all(&self, keyring: &Keyring, tickets: &Tickets, now: i64) -> Result<Rewrapped, EngineError> {
        let reg = self.refresh().await?;
        let target = self.handle(&reg.active).await?;
        let (keks, keks_stuck) = keyring.rewrap_keks(&target).await?;
        let ticket_keys = tickets.rewrap_keys(&target, now).await?;
        let static_key = self.reseal_static_key(&target).await?;
        Ok(Rewrapped { keks, keks_stuck, ticket_keys, static_key })
    }

    /// Makes `new` the active CMK and re-wraps everything under it (see the module docs).
    pub async fn rotate_to(
        &self,
        new: Arc<dyn MasterKey>,
        origin: Option<Origin>,
        keyring: &Keyring,
        tickets: &Tickets,
        now: i64,
    ) -> Result<Rewrapped, EngineError> {
        let _one = self.admin.lock().await;
        let id = new.id().to_string();
        self.handles.write().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), new);
        let activated = self
            .update(|r| {
                if r.keys.get(&id).is_some_and(|e| e.state == CmkState::Deleted) {
                    return Err("this CMK was deleted");
                }
                if let Some(prev) = r.keys.get_mut(&r.active).filter(|_| r.active != id) {
                    prev.state = CmkState::Deactivated;
                    prev.updated = now;
                }
                let entry = r.keys.entry(id.clone()).or_insert(CmkEntry {
                    state: CmkState::Active,
                    created: now,
                    updated: now,
                    origin: origin.map(|o| o.as_str().to_string()),
                });
                entry.state = CmkState::Active;
                entry.updated = now;
                r.active = id.clone();
                Ok(())
            })
            .await?;
        if activated.is_err() {
            return Err(CryptoError::CmkUnavailable(id).into());
        }
        let first = self.rewrap_all(keyring, tickets, now).await?;
        // Nodes that had not yet seen the new active CMK may have wrapped
        // something under the old one meanwhile: sweep again once all have.
        tokio::time::sleep(SETTLE).await;
        let second = self.rewrap_all(keyring, tickets, now).await?;
        let done = Rewrapped {
            keks: first.keks + second.keks,
            keks_stuck: second.keks_stuck,
            ticket_keys: first.ticket_keys + second.ticket_keys,
            static_key: first.static_key || second.static_key,
        };
        tracing::info!(cmk = %id, keks = done.keks, ticket_keys = done.ticket_keys, stuck = done.keks_stuck, "CMK rotated");
        Ok(done)
    }

    /// What still depends on CMK `id`.
    pub async fn usage(&self, id: &str, tickets: &Tickets, now: i64) -> Result<Usage, EngineError> {
        let keks = self.store.list_keks(None).await?.iter().filter(|k| k.cmk_id == id).count();
        let ticket_keys = tickets.keys_under(id, now).await?;
        let static_key = self.static_key_cmks().await?.iter().any(|(_, s)| s == id);
        Ok(Usage { keks, ticket_keys, static_key })
    }

    /// Destroys CMK `id` in the backend (and the adopted `cmk.json` it came from).
    async fn destroy(&self, id: &str) -> Result<(), EngineError> {
        self.handles.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(backend) = self.backend.clone() {
            let owned = id.to_string();
            match blocking(move || backend.destroy(&owned)).await? {
                Ok(()) | Err(CmkError::NotFound(_)) => {}
                Err(e) => return Err(CryptoError::from(e).into()),
            }
        }
        let legacy = self.legacy_file.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((path, _)) = legacy.filter(|(_, lid)| lid == id) {
            shred_file(&path).map_err(|source| CryptoError::Io { op: "shred", path: path.clone(), source })?;
            tracing::info!(path = %path.display(), "the adopted cmk.json was overwritten and deleted with its CMK");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the admin API

/// What the administrative operations on CMKs need from the engine.
pub(crate) struct AdminCtx<'a> {
    pub keyring: &'a Keyring,
    pub tickets: &'a Tickets,
    pub kms_domain: &'a str,
    pub org_domain: &'a str,
    /// Who asks (for the log).
    pub by: &'a str,
    pub now: i64,
    pub rid: &'a str,
}

impl AdminCtx<'_> {
    fn object(
        &self,
        id: &str,
        state: KeyState,
        created: i64,
        updated: Option<i64>,
    ) -> Result<MasterKeyObject, EngineError> {
        Ok(MasterKeyObject {
            uri: KmsUri::object(self.kms_domain, Kind::Cmk, id).map_err(|_| EngineError::Internal("a CMK id"))?,
            assigned_org_id: Some(self.org_domain.to_string()),
            usage_state: state,
            create_date: crate::from_ms(created),
            update_date: updated.map(crate::from_ms),
        })
    }
}

fn no_backend(rid: &str) -> Response {
    err(
        Status(501),
        rid,
        "this KMS's CMK has no backend (an in-memory CMK): it cannot rotate, import or give a BYOK public key",
    )
}

/// base64url (as specified), or standard base64, padded or not.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD].iter().find_map(|e| e.decode(s.trim()).ok())
}

impl MasterKeys {
    /// `retrieve /publicKey`: the backend's BYOK import key, as PEM.
    pub(crate) async fn admin_public_key(&self, rid: &str) -> Result<Response, EngineError> {
        let Some(backend) = self.backend.clone() else { return Ok(no_backend(rid)) };
        let public = blocking(move || backend.import_public_key()).await?.map_err(CryptoError::from)?;
        let mut resp = Response::new(Status::OK, rid);
        resp.public_key = Some(public.to_pem());
        Ok(resp)
    }

    /// `create /cmk`: a new CMK (generated, or the customer's own), made
    /// active, everything re-wrapped under it.
    pub(crate) async fn admin_create(
        &self,
        ctx: &AdminCtx<'_>,
        wrapped: Option<&str>,
        alg: CmkWrapAlg,
    ) -> Result<Response, EngineError> {
        let rid = ctx.rid;
        let Some(backend) = self.backend.clone() else { return Ok(no_backend(rid)) };
        let (new, origin) = match wrapped {
            None => (blocking(move || backend.generate()).await?.map_err(CryptoError::from)?, Origin::Generated),
            Some(text) => {
                let Some(blob) = decode_b64(text).filter(|b| !b.is_empty() && b.len() <= MAX_BYOK_BLOB) else {
                    return Ok(err(
                        Status::BAD_REQUEST,
                        rid,
                        "customerMasterKey must be base64url of an RSA-OAEP ciphertext",
                    ));
                };
                let hash = match alg {
                    CmkWrapAlg::RsaOaep => OaepHash::Sha1,
                    CmkWrapAlg::RsaOaep256 => OaepHash::Sha256,
                };
                match blocking(move || backend.import_wrapped(&blob, hash)).await? {
                    Ok(k) => (k, Origin::Imported),
                    Err(CmkError::Import(h)) => {
                        return Ok(err(
                            Status::BAD_REQUEST,
                            rid,
                            &format!(
                                "customerMasterKey is not a 32-byte key wrapped with {h} to this KMS's /publicKey \
                                 (retrieve /publicKey first)"
                            ),
                        ))
                    }
                    Err(CmkError::Unsupported { backend, what }) => {
                        return Ok(err(
                            Status(501),
                            rid,
                            &format!("{what} is not supported by the {backend} CMK backend"),
                        ))
                    }
                    Err(e) => return Err(CryptoError::from(e).into()),
                }
            }
        };
        let id = new.id().to_string();
        let done = self.rotate_to(new, Some(origin), ctx.keyring, ctx.tickets, ctx.now).await?;
        tracing::info!(cmk = %id, origin = origin.as_str(), by = ctx.by, keks = done.keks, "new active CMK");
        let mut resp = Response::new(Status::CREATED, rid);
        resp.master_keys = Some(vec![ctx.object(&id, KeyState::Active, ctx.now, Some(ctx.now))?]);
        if done.keks_stuck > 0 {
            resp.reason = Some(format!(
                "{} KEK(s) could not be re-wrapped (their CMK is not available on this node); see the KMS log",
                done.keks_stuck
            ));
        }
        Ok(resp)
    }

    /// `retrieve /cmk`: every CMK with its state. CMKs in the backend that the
    /// registry never knew (generated or imported, then the KMS stopped before
    /// activating them) are listed as `PENDING`.
    pub(crate) async fn admin_list(&self, ctx: &AdminCtx<'_>) -> Result<Response, EngineError> {
        let reg = self.refresh().await?;
        let infos = match self.backend.clone() {
            Some(b) => blocking(move || b.list()).await?.map_err(CryptoError::from)?,
            None => Vec::new(),
        };
        let created_of = |id: &str| infos.iter().find(|i| i.id == id).map(|i| i.created_unix_ms as i64);
        let mut list = Vec::new();
        for (id, e) in &reg.keys {
            let created = created_of(id).unwrap_or(e.created);
            list.push((created, ctx.object(id, e.state.key_state(), created, Some(e.updated))?));
        }
        for info in infos.iter().filter(|i| !reg.keys.contains_key(&i.id)) {
            let created = info.created_unix_ms as i64;
            list.push((created, ctx.object(&info.id, KeyState::Pending, created, None)?));
        }
        list.sort_by_key(|(created, o)| (*created, o.uri.to_string()));
        let mut resp = Response::new(Status::OK, ctx.rid);
        resp.master_keys = Some(list.into_iter().map(|(_, o)| o).collect());
        Ok(resp)
    }

    /// `update /cmk/<id>` with `keyState`.
    pub(crate) async fn admin_update(
        &self,
        ctx: &AdminCtx<'_>,
        id: &str,
        state: KeyState,
    ) -> Result<Response, EngineError> {
        let rid = ctx.rid;
        let reg = self.refresh().await?;
        let entry = reg.keys.get(id).cloned();
        if entry.is_none() {
            // Not in the registry: perhaps in the backend, never activated (PENDING).
            let listed = match self.backend.clone() {
                Some(b) => blocking(move || b.list()).await?.map_err(CryptoError::from)?,
                None => Vec::new(),
            };
            if !listed.iter().any(|i| i.id == id) {
                return Ok(err(Status::NOT_FOUND, rid, "no such CMK"));
            }
        }
        let deleted = entry.as_ref().is_some_and(|e| e.state == CmkState::Deleted);
        let is_active = reg.active == id;
        match state {
            KeyState::Active => {
                if deleted {
                    return Ok(err(Status::CONFLICT, rid, "this CMK was deleted (destroyed); it cannot be activated"));
                }
                if is_active {
                    // Finishing an interrupted rotation: re-wrap whatever is still elsewhere.
                    let _one = self.admin.lock().await;
                    let done = self.rewrap_all(ctx.keyring, ctx.tickets, ctx.now).await?;
                    tracing::info!(cmk = %id, by = ctx.by, keks = done.keks, "re-wrapped under the active CMK");
                    return Ok(Response::new(Status::OK, rid));
                }
                let key = match self.handle(id).await {
                    Ok(k) => k,
                    Err(EngineError::Crypto(CryptoError::CmkUnavailable(_))) => {
                        return Ok(err(Status::CONFLICT, rid, "this CMK is no longer in the backend"))
                    }
                    Err(e) => return Err(e),
                };
                let done = self.rotate_to(key, None, ctx.keyring, ctx.tickets, ctx.now).await?;
                tracing::info!(cmk = %id, by = ctx.by, keks = done.keks, "CMK activated");
                Ok(Response::new(Status::OK, rid))
            }
            KeyState::Deactivated | KeyState::Retired => {
                if is_active {
                    return Ok(err(
                        Status::CONFLICT,
                        rid,
                        "the active CMK cannot be deactivated: create a new CMK or activate another one first",
                    ));
                }
                if deleted {
                    return Ok(err(Status::CONFLICT, rid, "this CMK was deleted (destroyed)"));
                }
                let new = if state == KeyState::Retired { CmkState::Retired } else { CmkState::Deactivated };
                let now = ctx.now;
                let changed = self
                    .update(|r| {
                        if r.active == id || r.keys.get(id).is_some_and(|e| e.state == CmkState::Deleted) {
                            return Err("this CMK changed meanwhile; read it again");
                        }
                        let e = r.keys.entry(id.to_string()).or_insert(CmkEntry {
                            state: new,
                            created: now,
                            updated: now,
                            origin: None,
                        });
                        e.state = new;
                        e.updated = now;
                        Ok(())
                    })
                    .await?;
                if let Err(reason) = changed {
                    return Ok(err(Status::CONFLICT, rid, reason));
                }
                tracing::info!(cmk = %id, state = ?new, by = ctx.by, "CMK state changed");
                Ok(Response::new(Status::OK, rid))
            }
            KeyState::Deleted => {
                if is_active {
                    return Ok(err(
                        Status::CONFLICT,
                        rid,
                        "refusing to delete the active CMK: create a new CMK or activate another one first",
                    ));
                }
                let _one = self.admin.lock().await;
                if !deleted {
                    // Every node's copy of the registry must know it is no longer active.
                    if entry.as_ref().is_some_and(|e| ctx.now - e.updated < REGISTRY_CACHE.as_millis() as i64) {
                        return Ok(err(
                            Status::CONFLICT,
                            rid,
                            "this CMK changed state moments ago (other nodes may still use it); retry in a few seconds",
                        ));
                    }
                    let usage = self.usage(id, ctx.tickets, ctx.now).await?;
                    if !usage.is_empty() {
                        return Ok(err(Status::CONFLICT, rid, &still_wraps(id, &usage)));
                    }
                    let now = ctx.now;
                    let marked = self
                        .update(|r| {
                            if r.active == id {
                                return Err("this CMK became active meanwhile");
                            }
                            let e = r.keys.entry(id.to_string()).or_insert(CmkEntry {
                                state: CmkState::Deleted,
                                created: now,
                                updated: now,
                                origin: None,
                            });
                            e.state = CmkState::Deleted;
                            e.updated = now;
                            Ok(())
                        })
                        .await?;
                    if let Err(reason) = marked {
                        return Ok(err(Status::CONFLICT, rid, reason));
                    }
                }
                // Marked deleted first (every node stops using it), then destroyed;
                // a retry after a crash in between destroys it then.
                self.destroy(id).await?;
                tracing::warn!(cmk = %id, by = ctx.by, "CMK deleted: destroyed in the backend (crypto-shredding)");
                Ok(Response::new(Status::OK, rid))
            }
            _ => Ok(err(Status::BAD_REQUEST, rid, "a CMK may be set ACTIVE, DEACTIVATED, RETIRED or DELETED")),
        }
    }
}

fn still_wraps(id: &str, u: &Usage) -> String {
    let mut what = Vec::new();
    if u.keks > 0 {
        what.push(format!("{} KEK(s)", u.keks));
    }
    if u.ticket_keys > 0 {
        what.push(format!("{} session-ticket key(s)", u.ticket_keys));
    }
    if u.static_key {
        what.push("this node's sealed static key".to_string());
    }
    format!(
        "CMK {id} still wraps {}: deleting it would destroy them; re-wrap them under the active CMK first \
         (update the active CMK with keyState ACTIVE)",
        what.join(", ")
    )
}

// ---------------------------------------------------------------- formats

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
/// directory (the file backend's `destroy`, for a file outside its directory).
fn shred_file(path: &Path) -> std::io::Result<()> {
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

    #[test]
    fn registry_round_trip_and_checks() {
        let r = Registry::first("c1", 5);
        assert_eq!(Registry::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(r.usable("c1") && !r.usable("c2"));
        let mut bad = r.clone();
        bad.active = "c2".into();
        assert!(Registry::decode(&bad.encode().unwrap()).is_err(), "the active CMK must be listed as active");
        assert!(Registry::decode(b"{").is_err());
    }
}
