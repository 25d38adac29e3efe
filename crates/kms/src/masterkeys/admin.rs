//! The administrative operations on CMKs (`retrieve /publicKey`,
//! `create`/`retrieve /cmk`, `update <cmk uri>`), for org admins through the
//! engine's authorization rule.

use cmk::{CmkError, OaepHash, Origin};
use kms_protocol::message::{CmkWrapAlg, KeyState, MasterKeyObject};
use kms_protocol::{Kind, KmsUri, Response, Status};

use super::registry::{CmkEntry, CmkState, Usage, REGISTRY_CACHE};
use super::{blocking, err, MasterKeys};
use crate::crypto::CryptoError;
use crate::error::EngineError;
use crate::keyring::Keyring;
use crate::session::Tickets;

/// Longest BYOK blob accepted (an RSA-4096 ciphertext is 512 bytes).
const MAX_BYOK_BLOB: usize = 2048;

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
