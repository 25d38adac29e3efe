//! The administrative API: the org policy, CMKs (with BYOK) and KEKs. Only
//! org admins reach these (see `authz`).

use kms_protocol::message::{KeyState, MasterKeyObject, Operation};
use kms_protocol::{Kind, Response, Status};
use kms_store::MasterKeyState;

use super::{err, not_found, Answer, Engine};
use crate::from_ms;
use crate::policy::{Loaded, UpdateError};

impl Engine {
    /// Runs an operation of the administrative API (the rule admitted only org admins).
    pub(super) async fn admin(&self, policy: &Loaded, pid: &str, op: &Operation, now: i64, rid: &str) -> Answer {
        match op {
            Operation::RetrievePolicy => {
                let mut resp = Response::new(Status::OK, rid);
                resp.policy = Some(policy.object());
                Ok(resp)
            }
            Operation::UpdatePolicy { policy: new, version } => {
                match self.policies.update((**new).clone(), *version, now).await {
                    Ok((loaded, old)) => {
                        let changes = crate::policy::changes(&old.policy, &loaded.policy);
                        if let Some(f) = &self.federation {
                            f.forget();
                        }
                        tracing::info!(
                            version = loaded.version,
                            by = pid,
                            changes = changes.len(),
                            "org policy changed"
                        );
                        // Decisions cached before the change must not outlive it.
                        self.forget_authorizations().await;
                        let mut resp = Response::new(Status::OK, rid);
                        if !changes.is_empty() {
                            resp.reason = Some(changes.join("; "));
                        }
                        resp.policy = Some(loaded.object());
                        Ok(resp)
                    }
                    Err(UpdateError::Conflict(v)) => Ok(err(
                        Status::CONFLICT,
                        rid,
                        &format!("the policy changed since version {version} (now {v}); read it again and retry"),
                    )),
                    Err(UpdateError::Engine(e)) => Err(e),
                }
            }
            Operation::RetrievePublicKey => self.master_keys().admin_public_key(rid).await,
            Operation::CreateCmk { customer_master_key, alg, assigned_org_id, .. } => {
                if assigned_org_id.as_deref().is_some_and(|o| !o.eq_ignore_ascii_case(&self.cfg.org_domain)) {
                    return Ok(err(Status::FORBIDDEN, rid, "this KMS serves only its own org's CMK"));
                }
                let ctx = self.cmk_admin(pid, now, rid);
                self.master_keys().admin_create(&ctx, customer_master_key.as_deref(), *alg).await
            }
            Operation::ListMasterKeys { kind: Kind::Kek, .. } => {
                let list = self
                    .store
                    .list_keks(Some(&self.cfg.org_domain))
                    .await?
                    .into_iter()
                    .map(|k| MasterKeyObject {
                        uri: self.uri(Kind::Kek, &k.id),
                        assigned_org_id: Some(k.org),
                        usage_state: match k.state {
                            MasterKeyState::Active => KeyState::Active,
                            MasterKeyState::Inactive => KeyState::Deactivated,
                            MasterKeyState::Revoked => KeyState::Revoked,
                        },
                        create_date: from_ms(k.create_date),
                        update_date: Some(from_ms(k.update_date)),
                    })
                    .collect();
                let mut resp = Response::new(Status::OK, rid);
                resp.master_keys = Some(list);
                Ok(resp)
            }
            Operation::ListMasterKeys { .. } => self.master_keys().admin_list(&self.cmk_admin(pid, now, rid)).await,
            Operation::CreateKek { .. } => {
                let k = self.keyring.rotate(now).await?;
                tracing::info!(kek = %k.id, by = pid, "new active KEK");
                let mut resp = Response::new(Status::CREATED, rid);
                resp.master_keys = Some(vec![MasterKeyObject {
                    uri: self.uri(Kind::Kek, &k.id),
                    assigned_org_id: Some(k.org),
                    usage_state: KeyState::Active,
                    create_date: from_ms(k.create_date),
                    update_date: Some(from_ms(k.update_date)),
                }]);
                Ok(resp)
            }
            Operation::UpdateMasterKey { uri: target, state } => {
                if target.is_object(Kind::Cmk) {
                    let Some(id) = self.own_id(target) else { return Ok(not_found(rid)) };
                    return self.master_keys().admin_update(&self.cmk_admin(pid, now, rid), id, *state).await;
                }
                let new = match state {
                    KeyState::Active => MasterKeyState::Active,
                    KeyState::Deactivated | KeyState::Retired => MasterKeyState::Inactive,
                    KeyState::Revoked | KeyState::Disabled => MasterKeyState::Revoked,
                    _ => {
                        return Ok(err(
                            Status::BAD_REQUEST,
                            rid,
                            "a KEK may be set ACTIVE, DEACTIVATED, RETIRED, REVOKED or DISABLED",
                        ))
                    }
                };
                let Some(id) = self.own_id(target) else { return Ok(not_found(rid)) };
                // Only this KMS's org's KEKs, even in a database shared with other orgs.
                if self.store.get_kek(id).await?.is_none_or(|k| k.org != self.cfg.org_domain) {
                    return Ok(not_found(rid));
                }
                if !self.keyring.set_state(id, new, now).await? {
                    return Ok(not_found(rid));
                }
                tracing::info!(kek = %id, state = new.as_str(), by = pid, "KEK state changed");
                Ok(Response::new(Status::OK, rid))
            }
            _ => Err(crate::error::EngineError::Internal("not an administrative operation")),
        }
    }

    /// What the CMK administration needs from the engine.
    fn cmk_admin<'a>(&'a self, by: &'a str, now: i64, rid: &'a str) -> crate::masterkeys::AdminCtx<'a> {
        crate::masterkeys::AdminCtx {
            keyring: &self.keyring,
            tickets: &self.tickets,
            kms_domain: &self.cfg.kms_domain,
            org_domain: &self.cfg.org_domain,
            by,
            now,
            rid,
        }
    }
}
