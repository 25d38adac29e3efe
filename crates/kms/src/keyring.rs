//! The key hierarchy: the CMK (in memory), the org's KEKs (wrapped under it
//! in the store), content keys (wrapped under a KEK).
//!
//! Unwrapped KEKs are cached for at most [`KEK_CACHE`], so a KEK revoked on
//! one node stops unwrapping on every node within that time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_store::{KekRecord, KeyRecord, MasterKeyState, Store};
use tokio::sync::RwLock;

use crate::crypto::{Cmk, SecretKey};
use crate::error::EngineError;

/// How long an unwrapped KEK (and its state) is trusted without re-reading the store.
pub const KEK_CACHE: Duration = Duration::from_secs(1);

struct Cached {
    key: SecretKey,
    state: MasterKeyState,
    at: Instant,
}

/// Wraps and unwraps content keys for one org.
pub struct Keyring {
    store: Arc<dyn Store>,
    cmk: Cmk,
    org: String,
    keks: RwLock<HashMap<String, Cached>>,
    active: RwLock<Option<(String, Instant)>>,
}

fn kek_aad(id: &str) -> String {
    format!("kek:{id}")
}

fn key_aad(id: &str) -> String {
    format!("key:{id}")
}

impl Keyring {
    /// Opens the keyring; creates the org's first KEK if it has none.
    pub async fn open(store: Arc<dyn Store>, cmk: Cmk, org: &str) -> Result<Self, EngineError> {
        let ring =
            Self { store, cmk, org: org.to_string(), keks: RwLock::new(HashMap::new()), active: RwLock::new(None) };
        if ring.store.active_kek(org).await?.is_none() {
            ring.rotate(crate::now_ms()).await?;
        }
        Ok(ring)
    }

    /// The CMK's id.
    pub fn cmk_id(&self) -> &str {
        &self.cmk.id
    }

    /// Creates a new active KEK; the previous one becomes inactive (still unwraps).
    pub async fn rotate(&self, now: i64) -> Result<KekRecord, EngineError> {
        let id = uuid::Uuid::new_v4().to_string();
        let kek = SecretKey::generate()?;
        let rec = KekRecord {
            id: id.clone(),
            org: self.org.clone(),
            wrapped: self.cmk.key.wrap_key(&kek_aad(&id), &kek)?,
            cmk_id: self.cmk.id.clone(),
            state: MasterKeyState::Active,
            create_date: now,
            update_date: now,
        };
        self.store.insert_kek(&rec).await?;
        *self.active.write().await = None;
        Ok(rec)
    }

    /// Changes a KEK's state; takes effect everywhere within [`KEK_CACHE`].
    pub async fn set_state(&self, id: &str, state: MasterKeyState, now: i64) -> Result<bool, EngineError> {
        let changed = self.store.set_kek_state(id, state, now).await?;
        self.keks.write().await.remove(id);
        *self.active.write().await = None;
        Ok(changed)
    }

    async fn kek(&self, id: &str) -> Result<(SecretKey, MasterKeyState), EngineError> {
        if let Some(c) = self.keks.read().await.get(id) {
            if c.at.elapsed() < KEK_CACHE {
                return Ok((c.key.clone(), c.state));
            }
        }
        let rec = self.store.get_kek(id).await?.ok_or(EngineError::Internal("a key names an unknown KEK"))?;
        if rec.cmk_id != self.cmk.id {
            return Err(EngineError::Internal("a KEK is wrapped under another CMK"));
        }
        let key = self.cmk.key.unwrap_key(&kek_aad(id), &rec.wrapped)?;
        self.keks
            .write()
            .await
            .insert(id.to_string(), Cached { key: key.clone(), state: rec.state, at: Instant::now() });
        Ok((key, rec.state))
    }

    async fn active_id(&self) -> Result<String, EngineError> {
        if let Some((id, at)) = self.active.read().await.as_ref() {
            if at.elapsed() < KEK_CACHE {
                return Ok(id.clone());
            }
        }
        let rec = self.store.active_kek(&self.org).await?.ok_or(EngineError::Internal("the org has no active KEK"))?;
        *self.active.write().await = Some((rec.id.clone(), Instant::now()));
        Ok(rec.id)
    }

    /// Wraps a new content key under the active KEK: (wrapped, kek id).
    pub async fn wrap(&self, key_id: &str, key: &SecretKey) -> Result<(Vec<u8>, String), EngineError> {
        let kek_id = self.active_id().await?;
        let (kek, _) = self.kek(&kek_id).await?;
        Ok((kek.wrap_key(&key_aad(key_id), key)?, kek_id))
    }

    /// Unwraps a stored content key. A revoked KEK refuses (crypto-shredding).
    pub async fn unwrap(&self, rec: &KeyRecord) -> Result<SecretKey, EngineError> {
        let (kek, state) = self.kek(&rec.kek_id).await?;
        if state == MasterKeyState::Revoked {
            return Err(EngineError::KekRevoked);
        }
        Ok(kek.unwrap_key(&key_aad(&rec.id), &rec.wrapped)?)
    }
}
