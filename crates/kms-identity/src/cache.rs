//! Validated tokens remembered by hash until they expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::Identity;

/// SHA-256 of a token: what the cache keys on, so no token is kept in plain.
pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A bounded map from token hash to identity. When full, expired entries go
/// first, then the ones that expire soonest (they have the least use left).
pub(crate) struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<TokenHash, Identity>,
    by_expiry: BTreeSet<(i64, TokenHash)>,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every method
        // updates both indexes before it can fail.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity of a token seen before, if it has not expired: a cached
    /// result never outlives the token's `exp`.
    pub(crate) fn get(&self, hash: &TokenHash, now: i64) -> Option<Identity> {
        self.lock().by_hash.get(hash).filter(|id| now < id.expires_at).cloned()
    }

    pub(crate) fn insert(&self, hash: TokenHash, identity: &Identity, now: i64) {
        if self.capacity == 0 || identity.expires_at <= now {
            return;
        }
        let mut inner = self.lock();
        if inner.by_hash.contains_key(&hash) {
            return;
        }
        while let Some(&(exp, h)) = inner.by_expiry.first() {
            if exp > now && inner.by_hash.len() < self.capacity {
                break;
            }
            inner.by_expiry.pop_first();
            inner.by_hash.remove(&h);
        }
        inner.by_expiry.insert((identity.expires_at, hash));
        inner.by_hash.insert(hash, identity.clone());
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_hash.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, exp: i64) -> Identity {
        Identity {
            user_id: user.into(),
            issuer: "https://idp".into(),
            subject: user.into(),
            expires_at: exp,
            client_id: None,
            scope: vec![],
            client_credentials: false,
        }
    }

    #[test]
    fn entries_die_at_exp() {
        let c = TokenCache::new(10);
        c.insert(hash("a"), &id("a", 100), 50);
        assert_eq!(c.get(&hash("a"), 99).unwrap().user_id, "a");
        assert!(c.get(&hash("a"), 100).is_none());
    }

    #[test]
    fn full_cache_drops_expired_then_soonest() {
        let c = TokenCache::new(2);
        c.insert(hash("old"), &id("old", 10), 0);
        c.insert(hash("late"), &id("late", 1000), 0);
        // At t=20 "old" is expired: it goes, "late" stays.
        c.insert(hash("new"), &id("new", 500), 20);
        assert_eq!(c.len(), 2);
        assert!(c.get(&hash("late"), 20).is_some());
        // Full of live entries: the soonest to expire ("new") makes room.
        c.insert(hash("newer"), &id("newer", 800), 20);
        assert!(c.get(&hash("new"), 20).is_none());
        assert!(c.get(&hash("late"), 20).is_some());
        assert!(c.get(&hash("newer"), 20).is_some());
    }

    #[test]
    fn expired_or_zero_capacity_not_stored() {
        let c = TokenCache::new(0);
        c.insert(hash("a"), &id("a", 100), 0);
        assert_eq!(c.len(), 0);
        let c = TokenCache::new(5);
        c.insert(hash("a"), &id("a", 100), 100);
        assert_eq!(c.len(), 0);
    }
}
