//! Keys: creating unbound keys, binding them, releasing them.

use jose::OctKey;
use kms_protocol::message::KeyObject;
use kms_store::{BindOutcome, KeyRecord};

use super::authz::Checked;
use super::{err, ms, not_found, Answer, Engine, CACHE_CAP};
use crate::crypto::SecretKey;
use crate::error::EngineError;
use crate::from_ms;
use crate::session::SessionState;
use kms_protocol::{Kind, KmsUri, Response, Status};

impl Engine {
    pub(super) async fn create_keys(
        &self,
        session: &SessionState,
        user: &str,
        count: u32,
        now: i64,
        rid: &str,
    ) -> Answer {
        let exp = now + ms(self.cfg.unbound_key_lifetime);
        let mut recs = Vec::with_capacity(count as usize);
        let mut secrets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = uuid::Uuid::new_v4().to_string();
            let key = SecretKey::generate()?;
            let (wrapped, kek_id) = self.keyring.wrap(&id, &key).await?;
            recs.push(KeyRecord {
                id,
                wrapped,
                kek_id,
                user_id: user.to_string(),
                client_id: session.client_id.clone(),
                create_date: now,
                expiration_date: exp,
                resource_id: None,
                bind_date: None,
            });
            secrets.push(key);
        }
        // Durable before any response reveals them.
        self.store.insert_keys(&recs).await?;
        let keys = recs.iter().zip(&secrets).map(|(r, k)| self.key_object_with(r, k)).collect();
        let mut resp = Response::new(Status::CREATED, rid);
        resp.keys = Some(keys);
        Ok(resp)
    }

    /// Binds a key the caller created (checked by the rule) to a resource, once and forever.
    pub(super) async fn bind_key(&self, user: &str, key: &KmsUri, resource: &KmsUri, now: i64, rid: &str) -> Answer {
        let (Some(kid), Some(res)) = (self.own_id(key), self.own_id(resource)) else { return Ok(not_found(rid)) };
        match self.store.bind_key(kid, res, user, now, now + ms(self.cfg.bound_key_lifetime)).await? {
            BindOutcome::Bound(r) | BindOutcome::AlreadyBound(r) => {
                let mut resp = Response::new(Status::OK, rid);
                resp.key = Some(self.key_object(&r, true).await?);
                Ok(resp)
            }
            BindOutcome::BoundElsewhere => Ok(err(Status::CONFLICT, rid, "the key is bound to another resource")),
            // A key's creator never changes, and the rule checked it: reaching this is a bug. Fail closed.
            BindOutcome::NotCreator => Err(EngineError::Internal("the store refused a bind the rule allowed")),
            BindOutcome::Expired => Ok(err(Status::CONFLICT, rid, "the key expired before it was bound")),
            BindOutcome::NotFound => Ok(not_found(rid)),
        }
    }

    /// Releases the key the rule checked (and loaded).
    pub(super) async fn retrieve_key(&self, checked: &Checked, rid: &str) -> Answer {
        let rec = checked.key.as_ref().ok_or(EngineError::Internal("key not loaded"))?;
        let mut resp = Response::new(Status::OK, rid);
        resp.key = Some(self.key_object(rec, true).await?);
        Ok(resp)
    }

    /// A key's record; bound keys (immutable) from the cache.
    pub(super) async fn key_record(&self, kid: &str) -> Result<Option<KeyRecord>, EngineError> {
        if let Some(r) = self.bound_keys.read().await.get(kid) {
            return Ok(Some(r.clone()));
        }
        let Some(rec) = self.store.get_key(kid).await? else { return Ok(None) };
        if rec.resource_id.is_some() {
            let mut c = self.bound_keys.write().await;
            if c.len() >= CACHE_CAP {
                c.clear();
            }
            c.insert(kid.to_string(), rec.clone());
        }
        Ok(Some(rec))
    }

    pub(super) fn key_object_with(&self, r: &KeyRecord, k: &SecretKey) -> KeyObject {
        let uri = self.uri(Kind::Keys, &r.id);
        let jwk = OctKey::new(k.expose().to_vec(), Some(uri.to_string())).expect("32-byte key").to_jwk();
        KeyObject {
            uri,
            jwk,
            user_id: r.user_id.clone(),
            client_id: r.client_id.clone(),
            create_date: from_ms(r.create_date),
            expiration_date: from_ms(r.expiration_date),
            resource_uri: r.resource_id.as_ref().map(|id| self.uri(Kind::Resources, id)),
            bind_date: r.bind_date.map(from_ms),
        }
    }

    pub(super) async fn key_object(&self, r: &KeyRecord, _with_key: bool) -> Result<KeyObject, EngineError> {
        let k = self.keyring.unwrap(r).await?;
        Ok(self.key_object_with(r, &k))
    }
}
