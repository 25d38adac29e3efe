//! The key hierarchy: the CMKs (see [`crate::masterkeys`]), the org's KEKs
//! (each wrapped in the store under the CMK its row names; new ones under the
//! active CMK), content keys (wrapped under a KEK).
//!
//! Unwrapped KEKs are cached for at most [`KEK_CACHE`], so a KEK revoked on
//! one node stops unwrapping on every node within that time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_store::{KekRecord, KeyRecord, MasterKeyState, Store};
use tokio::sync::RwLock;

use cmk::MasterKey;

use crate::crypto::{CryptoError, SecretKey};
use crate::error::EngineError;
use crate::masterkeys::MasterKeys;

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
    /// The CMKs: KEKs unwrap with the one their row names, new ones wrap with the active one.
    cmk: Arc<MasterKeys>,
    org: String,
    keks: RwLock<HashMap<String, Cached>>,
    /// The active KEK: id, creation date (ms), when read.
    active: RwLock<Option<(String, i64, Instant)>>,
    /// Each KEK wraps the keys of one retention period (ms); see [`Keyring::set_period`].
    period_ms: std::sync::atomic::AtomicI64,
}

/// Default length of a KEK's retention period: one UTC day.
pub const DEFAULT_KEK_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The start of the period `t` falls in.
pub fn period_start(t: i64, period_ms: i64) -> i64 {
    t.div_euclid(period_ms) * period_ms
}

fn kek_aad(id: &str) -> String {
    format!("kek:{id}")
}

fn key_aad(id: &str) -> String {
    format!("key:{id}")
}

impl Keyring {
    /// Opens the keyring; creates the org's first KEK if it has none.
    pub async fn open(store: Arc<dyn Store>, cmk: Arc<MasterKeys>, org: &str) -> Result<Self, EngineError> {
        let ring = Self {
            store,
            cmk,
            org: org.to_string(),
            keks: RwLock::new(HashMap::new()),
            active: RwLock::new(None),
            period_ms: std::sync::atomic::AtomicI64::new(DEFAULT_KEK_PERIOD.as_millis() as i64),
        };
        if ring.store.active_kek(org).await?.is_none() {
            ring.rotate(crate::now_ms()).await?;
        }
        Ok(ring)
    }

    /// The CMKs.
    pub fn master_keys(&self) -> &Arc<MasterKeys> {
        &self.cmk
    }

    /// Creates a new active KEK; the previous one becomes inactive (still unwraps).
    pub async fn rotate(&self, now: i64) -> Result<KekRecord, EngineError> {
        let id = uuid::Uuid::new_v4().to_string();
        let kek = SecretKey::generate()?;
        let (wrapped, cmk_id) = self.cmk.wrap_active(&kek_aad(&id), kek.expose()).await?;
        let rec = KekRecord {
            id: id.clone(),
            org: self.org.clone(),
            wrapped,
            cmk_id,
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
        // Keys are deleted with their KEK, so only a stale cached key record can get here.
        let rec = self.store.get_kek(id).await?.ok_or(EngineError::KekDestroyed)?;
        // The CMK the row names (after a rotation, other nodes may briefly read the old form).
        let key = SecretKey::from_slice(&self.cmk.unwrap_with(&rec.cmk_id, &kek_aad(id), &rec.wrapped).await?)?;
        self.keks
            .write()
            .await
            .insert(id.to_string(), Cached { key: key.clone(), state: rec.state, at: Instant::now() });
        Ok((key, rec.state))
    }

    /// Sets the retention period length: a KEK wraps only keys created in
    /// the period it was created in, so that destroying it destroys exactly
    /// one period's keys.
    pub fn set_period(&self, period: Duration) {
        let ms = (period.as_millis() as i64).max(60_000);
        self.period_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The retention period length (ms).
    pub fn period_ms(&self) -> i64 {
        self.period_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The active KEK for a key created at `now`: a new one when the active
    /// KEK belongs to an earlier period (or the org has none left).
    async fn active_id(&self, now: i64) -> Result<String, EngineError> {
        let period = self.period_ms();
        if let Some((id, created, at)) = self.active.read().await.as_ref() {
            if at.elapsed() < KEK_CACHE && period_start(*created, period) == period_start(now, period) {
                return Ok(id.clone());
            }
        }
        let rec = match self.store.active_kek(&self.org).await? {
            Some(r) if period_start(r.create_date, period) == period_start(now, period) => r,
            // A new period (or every KEK shredded): its own KEK. Two nodes may both
            // rotate at a boundary; the store keeps one active, both serve the period.
            _ => self.rotate(now).await?,
        };
        *self.active.write().await = Some((rec.id.clone(), rec.create_date, Instant::now()));
        Ok(rec.id)
    }

    /// Destroys a KEK and every content key still wrapped under it
    /// (crypto-shredding); returns how many keys went. Other nodes stop
    /// unwrapping with it within [`KEK_CACHE`].
    pub async fn destroy(&self, kek_id: &str) -> Result<u64, EngineError> {
        let n = self.store.destroy_kek(kek_id).await?;
        self.keks.write().await.remove(kek_id);
        *self.active.write().await = None;
        Ok(n)
    }

    /// Moves a content key under the KEK of `now`'s period (a legal hold keeps it past its own period's end).
    pub async fn rewrap(&self, rec: &KeyRecord, now: i64) -> Result<bool, EngineError> {
        let key = self.unwrap(rec).await?;
        let (wrapped, kek_id) = self.wrap_at(&rec.id, &key, now).await?;
        if kek_id == rec.kek_id {
            return Ok(true);
        }
        Ok(self.store.rewrap_key(&rec.id, &rec.kek_id, &wrapped, &kek_id).await?)
    }

    /// Wraps a new content key under the active KEK: (wrapped, kek id).
    pub async fn wrap(&self, key_id: &str, key: &SecretKey) -> Result<(Vec<u8>, String), EngineError> {
        self.wrap_at(key_id, key, crate::now_ms()).await
    }

    async fn wrap_at(&self, key_id: &str, key: &SecretKey, now: i64) -> Result<(Vec<u8>, String), EngineError> {
        let kek_id = self.active_id(now).await?;
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

    /// CMK rotation: re-wraps every KEK of the org (whatever its state) that is
    /// not under `target`, each with a compare-and-swap on the CMK it was
    /// under. Returns (re-wrapped, stuck): a KEK whose CMK is not available
    /// here is logged and left as it is (it still opens wherever it did).
    pub async fn rewrap_keks(&self, target: &Arc<dyn MasterKey>) -> Result<(usize, usize), EngineError> {
        let (mut done, mut stuck) = (0, 0);
        for rec in self.store.list_keks(Some(&self.org)).await? {
            if rec.cmk_id == target.id() {
                continue;
            }
            let aad = kek_aad(&rec.id);
            let plain = match self.cmk.unwrap_with(&rec.cmk_id, &aad, &rec.wrapped).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(kek = %rec.id, cmk = %rec.cmk_id, error = %e, "a KEK cannot be re-wrapped");
                    stuck += 1;
                    continue;
                }
            };
            let wrapped = target.wrap(&aad, &plain).map_err(CryptoError::from)?;
            // False: another node re-wrapped it first, or retention destroyed it.
            if self.store.rewrap_kek(&rec.id, &rec.cmk_id, &wrapped, target.id()).await? {
                done += 1;
            }
        }
        Ok((done, stuck))
    }
}
