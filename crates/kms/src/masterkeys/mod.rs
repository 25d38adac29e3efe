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

mod admin;
mod format;
mod registry;

pub(crate) use admin::AdminCtx;
pub(crate) use format::shred_file;
pub use format::{envelope, seal_static_key, sealed_static_key_cmk, split_envelope, STATIC_KEY_AAD};
pub use registry::{stored_active, CmkEntry, CmkState, Registry, Rewrapped, Usage, REGISTRY, REGISTRY_CACHE, SETTLE};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cmk::{CmkBackend, CmkError, MasterKey, Origin};
use kms_protocol::{Response, Status};
use kms_store::Store;
use zeroize::Zeroizing;

use crate::crypto::{Cmk, CryptoError};
use crate::error::EngineError;
use crate::keyring::Keyring;
use crate::session::Tickets;

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
