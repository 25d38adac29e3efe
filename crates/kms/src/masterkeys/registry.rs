//! The CMK registry: which CMK is active and the state of every CMK this KMS
//! has used, one JSON document in `kms_meta` that every node reads.

use std::collections::BTreeMap;
use std::time::Duration;

use kms_protocol::message::KeyState;
use kms_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// The `kms_meta` name of the CMK registry.
pub const REGISTRY: &str = "cmk/registry";
/// How long a node trusts its copy of the registry.
pub const REGISTRY_CACHE: Duration = Duration::from_secs(1);
/// How long a rotation waits before its second sweep: past every node's registry cache.
pub const SETTLE: Duration = Duration::from_millis(1250);

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
    pub(super) fn first(id: &str, now: i64) -> Self {
        let entry = CmkEntry { state: CmkState::Active, created: now, updated: now, origin: None };
        Self { version: 1, active: id.into(), initial: id.into(), keys: BTreeMap::from([(id.to_string(), entry)]) }
    }

    pub(super) fn decode(raw: &[u8]) -> Result<Self, EngineError> {
        let r: Registry = serde_json::from_slice(raw)
            .map_err(|_| EngineError::Internal("the store's CMK registry does not decode"))?;
        if r.version != 1 || r.keys.get(&r.active).map(|e| e.state) != Some(CmkState::Active) {
            return Err(EngineError::Internal("the store's CMK registry is inconsistent"));
        }
        Ok(r)
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, EngineError> {
        serde_json::to_vec(self).map_err(|_| EngineError::Internal("encoding the CMK registry"))
    }

    /// Whether `id` may unwrap (known and not deleted).
    pub(super) fn usable(&self, id: &str) -> bool {
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
    pub(super) fn is_empty(&self) -> bool {
        self.keks == 0 && self.ticket_keys == 0 && !self.static_key
    }
}

/// The active CMK the store's registry names, if the store has a registry yet.
pub async fn stored_active(store: &dyn Store) -> Result<Option<String>, EngineError> {
    match store.get_meta(REGISTRY).await? {
        Some(raw) => Ok(Some(Registry::decode(&raw)?.active)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
