//! What the engine writes to the audit log (crate `audit`): every key
//! release and denial, key creation and binding, resource and authorization
//! change, and administrative action. Written before the answer leaves the
//! KMS; if the log cannot be written, the request is refused (fail closed).

use audit::{Action, ActorKind, NewEntry, Outcome};
use kms_protocol::{Operation, Response, Status};

use crate::auth::Principal;

/// Most key URIs one entry holds (the log's limit); larger releases take several entries.
const KEYS_PER_ENTRY: usize = 64;

/// The entries that record `op` by `p`, answered with `resp`: none for
/// operations that change and reveal nothing (ping, listing authorizations,
/// reading a resource without keys, handshakes); several when more keys were
/// released or created than one entry holds.
///
/// `via` says how the authorization rule granted the request (`member`,
/// `resource <uri>`, …); it is recorded with every key release, so that
/// key-access transparency can tell a member reading for herself from
/// anyone else.
pub fn entries_for(
    p: &Principal,
    principal_id: &str,
    admin: bool,
    op: &Operation,
    resp: &Response,
    via: Option<&str>,
) -> Vec<NewEntry> {
    let Some(mut entry) = entry_for(p, principal_id, admin, op, resp) else { return Vec::new() };
    if let (Some(v), true) = (via, matches!(entry.action, audit::Action::KeyRelease)) {
        entry = entry.detail("via", v.to_string());
    }
    if entry.keys.len() <= KEYS_PER_ENTRY {
        return vec![entry];
    }
    entry.keys.chunks(KEYS_PER_ENTRY).map(|part| NewEntry { keys: part.to_vec(), ..entry.clone() }).collect()
}

fn entry_for(p: &Principal, principal_id: &str, admin: bool, op: &Operation, resp: &Response) -> Option<NewEntry> {
    let kind = match p {
        Principal::User { .. } if admin && is_admin_op(op) => ActorKind::Admin,
        // A service's own token: listed as a service in key-access transparency.
        Principal::User { client_credentials: true, .. } => ActorKind::Service,
        Principal::User { .. } => ActorKind::User,
        Principal::Service { .. } => ActorKind::Service,
        Principal::Compliance { .. } => ActorKind::Compliance,
        Principal::Anonymous { .. } => ActorKind::Anonymous,
        Principal::Peer { .. } => ActorKind::PeerKms,
    };
    let ok = resp.status.is_success();
    let outcome = if ok { Outcome::Allowed } else { Outcome::Denied };
    let refused = matches!(resp.status, Status::UNAUTHORIZED | Status::FORBIDDEN | Status::NOT_FOUND);
    let e = |action: Action, outcome: Outcome| {
        let n = NewEntry::new(principal_id, kind, action, outcome);
        match p {
            // Every compliance release names both the officer and the subject (and the case).
            Principal::Compliance { subject, case, .. } => {
                let n = n.on_behalf_of(subject.clone());
                match case {
                    Some(c) => n.case(c.clone()),
                    None => n,
                }
            }
            // A peer KMS's releases name the user it asked for (its word).
            Principal::Peer { user: Some(u), .. } => n.on_behalf_of(u.clone()),
            _ => n,
        }
    };
    let entry = match op {
        Operation::RetrieveKey { uri } => {
            if ok {
                let k = resp.key.as_ref()?;
                let mut n = e(Action::KeyRelease, Outcome::Allowed).keys([k.uri.to_string()]);
                if let Some(r) = &k.resource_uri {
                    n = n.resource(r.to_string());
                }
                n
            } else if refused {
                e(Action::KeyDenied, Outcome::Denied).keys([uri.to_string()]).detail("status", u32::from(resp.status.0))
            } else {
                return None;
            }
        }
        Operation::RetrieveResourceKeys { resource, .. } => {
            if ok {
                let keys: Vec<String> = resp.keys.iter().flatten().map(|k| k.uri.to_string()).collect();
                if keys.is_empty() {
                    return None;
                }
                e(Action::KeyRelease, Outcome::Allowed).resource(resource.to_string()).keys(keys)
            } else if refused {
                e(Action::KeyDenied, Outcome::Denied)
                    .resource(resource.to_string())
                    .detail("status", u32::from(resp.status.0))
            } else {
                return None;
            }
        }
        // Unbound keys go to their creator only; recorded so every key has a history.
        Operation::CreateKeys { .. } if ok => e(Action::KeyCreate, outcome)
            .keys(resp.keys.iter().flatten().map(|k| k.uri.to_string()).collect::<Vec<_>>()),
        Operation::BindKey { key, resource } if ok => {
            e(Action::KeyBind, outcome).keys([key.to_string()]).resource(resource.to_string())
        }
        Operation::CreateResource { auth_ids, key_uris, anonymous, .. } if ok => {
            let uri = resp.resource.as_ref().map(|r| r.uri.to_string())?;
            e(Action::ResourceCreate, outcome)
                .resource(uri)
                .keys(key_uris.iter().map(|k| k.to_string()).collect::<Vec<_>>())
                .detail("auth_ids", ids(auth_ids.iter().map(|a| a.to_string())))
                .detail("anonymous", *anonymous)
        }
        Operation::CreateAuthorizations { resource, auth_ids, anonymous, .. } => {
            e(Action::AuthorizationCreate, outcome)
                .resource(resource.to_string())
                .detail("auth_ids", ids(auth_ids.iter().map(|a| a.to_string())))
                .detail("anonymous", *anonymous)
                .detail("status", u32::from(resp.status.0))
        }
        Operation::DeleteAuthorization { uri } => {
            let resource = uri
                .parent_resource()
                .map(|r| r.to_string())
                .or_else(|| resp.authorization.as_ref().map(|a| a.resource_uri.to_string()));
            let mut n = e(Action::AuthorizationDelete, outcome).detail("status", u32::from(resp.status.0));
            if let Some(r) = resource {
                n = n.resource(r);
            }
            if let Some(a) = resp.authorization.as_ref().and_then(|a| a.auth_id.clone()) {
                n = n.detail("auth_ids", ids([a]));
            }
            n
        }
        Operation::DeleteAuthorizationByAuthId { resource, auth_id } => e(Action::AuthorizationDelete, outcome)
            .resource(resource.to_string())
            .detail("auth_ids", ids([auth_id.to_string()]))
            .detail("status", u32::from(resp.status.0)),
        Operation::DeleteAuthorizations { resource, auth_ids } => e(Action::AuthorizationDelete, outcome)
            .resource(resource.to_string())
            .detail("auth_ids", ids(auth_ids.iter().map(|a| a.to_string())))
            .detail("status", u32::from(resp.status.0)),
        Operation::CreateCmk { .. } | Operation::CreateKek { .. } | Operation::UpdateMasterKey { .. } => {
            let what = match op {
                Operation::CreateCmk { .. } => "create_cmk",
                Operation::CreateKek { .. } => "create_kek",
                _ => "update_master_key",
            };
            let mut n =
                e(Action::AdminAction, outcome).detail("operation", what).detail("status", u32::from(resp.status.0));
            if let Operation::UpdateMasterKey { uri, state } = op {
                n = n.detail("target", uri.to_string()).detail("state", format!("{state:?}"));
            }
            if let Some(k) = resp.master_keys.as_ref().and_then(|l| l.first()).filter(|_| ok) {
                n = n.detail("created", k.uri.to_string());
            }
            if let Operation::CreateCmk { customer_master_key, .. } = op {
                n = n.detail("origin", if customer_master_key.is_some() { "imported" } else { "generated" });
            }
            n
        }
        Operation::UpdatePolicy { .. } => {
            let mut n = e(Action::PolicyChange, outcome).detail("status", u32::from(resp.status.0));
            if let Some(p) = &resp.policy {
                n = n.detail("version", p.version as i64);
            }
            if let Some(r) = resp.reason.as_ref().filter(|_| ok) {
                // On success the reason carries the id-only summary of changes.
                n = n.detail("changes", r.split("; ").take(32).map(str::to_string).collect::<Vec<_>>());
            }
            n
        }
        Operation::CreateCase { case } => {
            let mut n = e(Action::AdminAction, outcome)
                .detail("operation", "case_create")
                .detail("spaces", ids(case.spaces.iter().cloned()))
                .detail("status", u32::from(resp.status.0));
            if let Some(c) = &resp.case {
                n = n.case(c.uri.to_string());
            }
            n
        }
        Operation::UpdateCase { uri, decision } => e(Action::AdminAction, outcome)
            .detail("operation", "case_decision")
            .detail("decision", format!("{decision:?}").to_lowercase())
            .detail("target", uri.to_string())
            .detail("status", u32::from(resp.status.0)),
        _ => return None,
    };
    Some(entry)
}

fn is_admin_op(op: &Operation) -> bool {
    matches!(
        op,
        Operation::CreateCmk { .. }
            | Operation::CreateKek { .. }
            | Operation::UpdateMasterKey { .. }
            | Operation::ListMasterKeys { .. }
            | Operation::UpdatePolicy { .. }
            | Operation::RetrievePolicy
    )
}

/// At most 32 ids in a detail list (the log's limit); the count says if more.
fn ids(it: impl IntoIterator<Item = String>) -> Vec<String> {
    it.into_iter().take(32).collect()
}

/// Signs checkpoints with the KMS static key in the `kms-audit-checkpoint` context.
pub struct StaticKeySigner(pub kms_protocol::ServerKey);

impl audit::CheckpointSigner for StaticKeySigner {
    fn sign(&self, body: &audit::CheckpointBody) -> Result<String, audit::SignError> {
        Ok(self.0.sign(kms_protocol::SigningContext::AuditCheckpoint, body)?)
    }

    fn public_key(&self) -> Option<&jose::RsaPublicKey> {
        Some(self.0.public_key())
    }
}
