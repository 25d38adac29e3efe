//! The org policy as the engine sees it: one versioned document in the store,
//! cached on each node for at most [`POLICY_CACHE`], so that a revocation made
//! on any node applies everywhere within a second.
//!
//! Every node also watches the version ([`Policies::poll`]) and announces the
//! principals a new version cuts off, so that WebSocket transports can push
//! a signed 499 to their open sessions without waiting for a request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_protocol::policy::{OrgPolicy, PolicyObject, ServicePolicy, ServiceState};
use kms_store::Store;
use tokio::sync::{broadcast, RwLock};

use crate::error::EngineError;
use crate::from_ms;

/// Longest a node trusts its copy of the policy.
pub const POLICY_CACHE: Duration = Duration::from_millis(400);

const KIND: &str = "policy";

/// A loaded policy and its version (0: never set).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Version in the store.
    pub version: i64,
    /// Last change (ms).
    pub update_date: i64,
    /// The document.
    pub policy: OrgPolicy,
}

impl Loaded {
    /// As it travels.
    pub fn object(&self) -> PolicyObject {
        PolicyObject {
            version: self.version as u64,
            update_date: (self.version > 0).then(|| from_ms(self.update_date)),
            policy: self.policy.clone(),
        }
    }

    /// The registry entry that governs `principal_id`, if it is a service.
    pub fn service(&self, principal_id: &str) -> Option<&ServicePolicy> {
        self.policy.services.get(principal_id)
    }
}

/// Someone a policy change cut off: sessions of `principal` (only those of
/// `client_id` when set) are reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutOff {
    /// Principal id (as sessions record it).
    pub principal: String,
    /// One client (device) only.
    pub client_id: Option<String>,
}

/// The org's policy, cached.
pub struct Policies {
    store: Arc<dyn Store>,
    org: String,
    cached: RwLock<Option<(Instant, Arc<Loaded>)>>,
    cut_off: broadcast::Sender<CutOff>,
}

/// Why an update did not happen.
#[derive(Debug)]
pub enum UpdateError {
    /// Someone changed the policy since `expected`; nothing was written.
    Conflict(u64),
    /// The store failed.
    Engine(EngineError),
}

impl From<EngineError> for UpdateError {
    fn from(e: EngineError) -> Self {
        UpdateError::Engine(e)
    }
}

impl Policies {
    /// The policy of `org` in `store`.
    pub fn new(store: Arc<dyn Store>, org: &str) -> Self {
        Self { store, org: org.to_string(), cached: RwLock::new(None), cut_off: broadcast::channel(256).0 }
    }

    /// The policy in force (re-read when the cached copy is older than [`POLICY_CACHE`]).
    pub async fn current(&self) -> Result<Arc<Loaded>, EngineError> {
        if let Some((at, p)) = &*self.cached.read().await {
            if at.elapsed() < POLICY_CACHE {
                return Ok(p.clone());
            }
        }
        self.reload().await
    }

    async fn reload(&self) -> Result<Arc<Loaded>, EngineError> {
        let loaded = Arc::new(self.read().await?);
        let mut cached = self.cached.write().await;
        let previous = cached.as_ref().map(|(_, p)| p.clone());
        // Never go back to an older version read by a slower concurrent reload.
        if let Some(prev) = &previous {
            if prev.version > loaded.version {
                *cached = Some((Instant::now(), prev.clone()));
                return Ok(prev.clone());
            }
        }
        *cached = Some((Instant::now(), loaded.clone()));
        drop(cached);
        if let Some(prev) = previous {
            if prev.version != loaded.version {
                for c in cut_off(&prev.policy, &loaded.policy) {
                    let _ = self.cut_off.send(c);
                }
            }
        }
        Ok(loaded)
    }

    async fn read(&self) -> Result<Loaded, EngineError> {
        let Some(doc) = self.store.get_document(KIND, &self.org).await? else { return Ok(Loaded::default()) };
        let policy: OrgPolicy = serde_json::from_str(&doc.body)
            .map_err(|e| EngineError::Policy(format!("the stored org policy does not decode: {e}")))?;
        Ok(Loaded { version: doc.version, update_date: doc.update_date, policy })
    }

    /// Replaces the policy if its version is still `expected`; stamps the
    /// KMS-decided times. Returns the new policy and the one it replaced.
    pub async fn update(
        &self,
        mut new: OrgPolicy,
        expected: u64,
        now: i64,
    ) -> Result<(Arc<Loaded>, Arc<Loaded>), UpdateError> {
        let old = Arc::new(self.read().await?);
        if old.version as u64 != expected {
            return Err(UpdateError::Conflict(old.version as u64));
        }
        new.stamp(&old.policy, from_ms(now));
        let body = serde_json::to_string(&new).map_err(|e| EngineError::Policy(e.to_string()))?;
        if body.len() > kms_protocol::policy::MAX_POLICY_BYTES {
            return Err(UpdateError::Engine(EngineError::Policy("the policy is too large".into())));
        }
        if !self.store.put_document(KIND, &self.org, expected as i64, &body, now).await.map_err(EngineError::from)? {
            let v = self.read().await?.version;
            return Err(UpdateError::Conflict(v as u64));
        }
        let loaded = self.reload().await?;
        Ok((loaded, old))
    }

    /// Principals cut off by policy changes, on this node or (through
    /// polling) any other.
    pub fn subscribe(&self) -> broadcast::Receiver<CutOff> {
        self.cut_off.subscribe()
    }

    /// Re-reads the policy forever (spawn it), so cut-offs are announced even
    /// when no request arrives.
    pub async fn poll(self: Arc<Self>) {
        loop {
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reading the org policy failed");
            }
            // Twice per cache lifetime, so requests find a fresh copy and never read it themselves.
            tokio::time::sleep(POLICY_CACHE / 2).await;
        }
    }
}

/// Who `new` cuts off that `old` did not.
pub fn cut_off(old: &OrgPolicy, new: &OrgPolicy) -> Vec<CutOff> {
    let mut out = Vec::new();
    for (id, s) in &new.services {
        // Not revoked before: allowed, or unlisted (a token principal then acted as a user).
        // A node may skip versions between two reads, so "unlisted" counts too.
        let was_revoked = old.services.get(id).is_some_and(|o| o.state == ServiceState::Revoked);
        if s.state == ServiceState::Revoked && !was_revoked {
            out.push(CutOff { principal: id.clone(), client_id: None });
        }
    }
    for (id, o) in &old.services {
        if o.state == ServiceState::Allowed && !new.services.contains_key(id) && id.starts_with("service:") {
            out.push(CutOff { principal: id.clone(), client_id: None });
        }
    }
    for u in new.disabled_users.keys() {
        if !old.disabled_users.contains_key(u) {
            out.push(CutOff { principal: u.clone(), client_id: None });
        }
    }
    for (u, m) in &new.disabled_clients {
        for c in m.keys() {
            if !old.disabled_clients.get(u).is_some_and(|o| o.contains_key(c)) {
                out.push(CutOff { principal: u.clone(), client_id: Some(c.clone()) });
            }
        }
    }
    out
}

/// A short, id-only summary of what changed (for the audit log).
pub fn changes(old: &OrgPolicy, new: &OrgPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let keys = |a: &std::collections::BTreeMap<String, ServicePolicy>,
                b: &std::collections::BTreeMap<String, ServicePolicy>| {
        let mut k: Vec<&String> = a.keys().chain(b.keys()).collect();
        k.sort();
        k.dedup();
        k.into_iter().cloned().collect::<Vec<_>>()
    };
    for id in keys(&old.services, &new.services) {
        match (old.services.get(&id), new.services.get(&id)) {
            (None, Some(s)) => out.push(format!("service {id} added ({:?})", s.state).to_lowercase()),
            (Some(_), None) => out.push(format!("service {id} removed")),
            (Some(a), Some(b)) if a.state != b.state => out
                .push(format!("service {id} {}", if b.state == ServiceState::Revoked { "revoked" } else { "allowed" })),
            (Some(a), Some(b)) if a != b => out.push(format!("service {id} scope changed")),
            _ => {}
        }
    }
    let sets = |name: &str, a: Vec<&String>, b: Vec<&String>, out: &mut Vec<String>| {
        for x in &b {
            if !a.contains(x) {
                out.push(format!("{name} +{x}"));
            }
        }
        for x in &a {
            if !b.contains(x) {
                out.push(format!("{name} -{x}"));
            }
        }
    };
    sets("admins", old.admins.iter().collect(), new.admins.iter().collect(), &mut out);
    sets(
        "complianceOfficers",
        old.compliance_officers.iter().collect(),
        new.compliance_officers.iter().collect(),
        &mut out,
    );
    sets("disabledUsers", old.disabled_users.keys().collect(), new.disabled_users.keys().collect(), &mut out);
    let clients = |p: &OrgPolicy| -> Vec<String> {
        p.disabled_clients.iter().flat_map(|(u, m)| m.keys().map(move |c| format!("{u}/{c}"))).collect()
    };
    let (a, b) = (clients(old), clients(new));
    sets("disabledClients", a.iter().collect(), b.iter().collect(), &mut out);
    sets("legalHolds", old.legal_holds.keys().collect(), new.legal_holds.keys().collect(), &mut out);
    if old.retention != new.retention {
        out.push(format!("retention {:?}", new.retention.as_ref().map(|r| r.days)));
    }
    if old.approval != new.approval {
        out.push(format!("approval {:?}", new.approval.as_ref().map(|a| (a.required, a.approvers.len()))));
    }
    let mut peers: Vec<&String> = old.federation.keys().chain(new.federation.keys()).collect();
    peers.sort();
    peers.dedup();
    for d in peers {
        match (old.federation.get(d), new.federation.get(d)) {
            (None, Some(p)) => out.push(format!("federation {d} added ({:?})", p.state).to_lowercase()),
            (Some(_), None) => out.push(format!("federation {d} removed")),
            (Some(a), Some(b)) if a.state != b.state => {
                out.push(format!("federation {d} {:?}", b.state).to_lowercase())
            }
            (Some(a), Some(b)) if a != b => out.push(format!("federation {d} changed")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(json: serde_json::Value) -> OrgPolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn cut_offs_survive_skipped_versions() {
        let none = p(serde_json::json!({}));
        let allowed = p(serde_json::json!({"services": {"bot@o": {"state": "allowed"}}}));
        let revoked = p(serde_json::json!({"services": {"bot@o": {"state": "revoked"}}}));
        let cut = |a: &OrgPolicy, b: &OrgPolicy| cut_off(a, b).into_iter().map(|c| c.principal).collect::<Vec<_>>();
        assert_eq!(cut(&allowed, &revoked), ["bot@o"]);
        // A node that never saw the "allowed" version still announces the revocation.
        assert_eq!(cut(&none, &revoked), ["bot@o"]);
        assert!(cut(&revoked, &revoked).is_empty());
        assert!(cut(&none, &allowed).is_empty());
        // A certificate service dropped from the registry is cut off; a user id is not.
        let cert =
            p(serde_json::json!({"services": {"service:s@o": {"state": "allowed"}, "u@o": {"state": "allowed"}}}));
        assert_eq!(cut(&cert, &none), ["service:s@o"]);
        let users =
            p(serde_json::json!({"disabledUsers": {"eve@o": {}}, "disabledClients": {"bob@o": {"laptop": {}}}}));
        let got = cut_off(&none, &users);
        assert!(got.contains(&CutOff { principal: "eve@o".into(), client_id: None }));
        assert!(got.contains(&CutOff { principal: "bob@o".into(), client_id: Some("laptop".into()) }));
    }
}
