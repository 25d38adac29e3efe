//! Retention: crypto-shredding by KEK period, legal holds.

use std::sync::Arc;
use std::time::Duration;

use kms_protocol::{Kind, KmsUri};

use super::Engine;
use crate::error::EngineError;
use crate::now_ms;

/// What one retention sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// KEKs destroyed (each one retention period of keys).
    pub keks_destroyed: u32,
    /// Content keys destroyed with them.
    pub keys_shredded: u64,
    /// Keys a legal hold kept (moved under a current KEK).
    pub keys_held: u64,
    /// Expired KEKs kept because a held key under them could not be moved.
    pub keks_kept: u32,
}

/// Retention: crypto-shredding by period, legal holds.
impl Engine {
    /// Destroys every KEK whose period ended more than the org's retention
    /// ago, with the keys under it, after moving the keys a legal hold covers
    /// under the current period's KEK. Each destruction is audited before it
    /// happens (no audit, no destruction). Nothing happens without a
    /// retention policy. `now` is a parameter so that tests can move time.
    pub async fn retention_sweep(&self, now: i64) -> Result<SweepReport, EngineError> {
        let mut report = SweepReport::default();
        let policy = self.policies.current().await?;
        let Some(retention) = &policy.policy.retention else { return Ok(report) };
        let cutoff = now - i64::from(retention.days) * 86_400_000;
        let period = self.keyring.period_ms();
        // What the holds cover: spaces named, spaces of the people named, keys they created.
        let mut held_resources = std::collections::HashSet::new();
        let mut held_users = std::collections::HashSet::new();
        for hold in policy.policy.legal_holds.values() {
            for s in &hold.spaces {
                if let Ok(u) = KmsUri::parse_absolute(s) {
                    if let Some(id) = self.own_id(&u) {
                        held_resources.insert(id.to_string());
                    } else if let Some(id) = u.id().filter(|_| u.is_object(Kind::Resources)) {
                        // Another org's space: the hold keeps this KMS's copies of its keys.
                        held_resources.insert(crate::federation::cached_id(u.domain(), id));
                    }
                }
            }
            for u in &hold.users {
                held_users.insert(u.clone());
                held_resources.extend(self.store.resources_of(u).await?);
            }
        }
        for kek in self.store.list_keks(Some(&self.cfg.org_domain)).await? {
            let start = crate::keyring::period_start(kek.create_date, period);
            if start + period > cutoff {
                continue;
            }
            let (mut after, mut doomed, mut held, mut stuck) = (String::new(), 0u64, 0u64, false);
            loop {
                let batch = self.store.keys_wrapped_by(&kek.id, &after, 500).await?;
                let Some(last) = batch.last() else { break };
                after = last.id.clone();
                for k in &batch {
                    let covered = k.resource_id.as_ref().is_some_and(|r| held_resources.contains(r))
                        || held_users.contains(&k.user_id);
                    if !covered {
                        doomed += 1;
                        continue;
                    }
                    match self.keyring.rewrap(k, now).await {
                        Ok(true) => held += 1,
                        Ok(false) => doomed += 1, // moved or gone meanwhile
                        Err(e) => {
                            tracing::error!(kek = %kek.id, error = %e, "a held key could not be moved; keeping its KEK");
                            stuck = true;
                        }
                    }
                }
            }
            if stuck {
                report.keks_kept += 1;
                continue;
            }
            let entry = audit::NewEntry::new(
                format!("kms://{}", self.cfg.kms_domain),
                audit::ActorKind::Kms,
                audit::Action::RetentionShred,
                audit::Outcome::Allowed,
            )
            .detail("kek", self.uri(Kind::Kek, &kek.id).to_string())
            .detail("keys", doomed as i64)
            .detail("held", held as i64)
            .detail("period_start", start)
            .detail("period_end", start + period)
            .detail("retention_days", i64::from(retention.days));
            if !self.audit_entry(entry).await {
                return Err(EngineError::Internal("the audit log cannot be written: nothing was shredded"));
            }
            let n = self.keyring.destroy(&kek.id).await?;
            tracing::info!(kek = %kek.id, keys = n, held, "retention: KEK and its keys destroyed");
            report.keks_destroyed += 1;
            report.keys_shredded += n;
            report.keys_held += held;
        }
        if report.keks_destroyed > 0 {
            // Cached key records must not outlive their KEK here (other nodes: within KEK_CACHE).
            self.bound_keys.write().await.clear();
        }
        Ok(report)
    }

    /// Runs [`Engine::retention_sweep`] every `every` (spawn it).
    pub async fn retention_loop(self: Arc<Self>, every: Duration) {
        loop {
            match self.retention_sweep(now_ms()).await {
                Ok(r) if r.keks_destroyed > 0 || r.keks_kept > 0 => tracing::info!(?r, "retention sweep"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention sweep failed"),
            }
            tokio::time::sleep(every).await;
        }
    }
}
