//! Sessions any node can serve with no database write per handshake.
//!
//! The ephemeral key's URI carries a *ticket*: the session (shared key, user,
//! client, expiry, a random session id) sealed with AES-256-GCM under an
//! epoch key. Epoch keys rotate every [`EPOCH`] (hours, not months); each is
//! random, stored once in the database wrapped under the active CMK (an
//! envelope naming that CMK, see [`crate::masterkeys::envelope`]; re-wrapped
//! when the CMK rotates), created by whichever node needs it first, and
//! deleted once no live ticket can use it.
//!
//! Deletions are the exception: they live in the store, and every node polls
//! them (every [`POLL`]) into an in-memory set, so a deleted session is
//! refused everywhere within a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jose::OctKey;
use kms_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use cmk::MasterKey;

use crate::crypto::{CryptoError, SecretKey};
use crate::error::EngineError;
use crate::masterkeys::{envelope, MasterKeys};

/// How long one ticket key is used to seal new tickets.
pub const EPOCH: Duration = Duration::from_secs(4 * 3600);
/// How often each node reads new session deletions.
pub const POLL: Duration = Duration::from_millis(250);
const PREFIX: &str = "ticket-key:";

/// A session, as its ticket carries it.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// Random id: the key for deletions and the requestId log.
    pub id: String,
    /// The shared key.
    pub shared: OctKey,
    /// The authenticated principal id (user id, or an anonymous authorization URI).
    pub principal: String,
    /// The client id.
    pub client_id: String,
    /// When it ends (Unix ms).
    pub expires: i64,
    /// The static key the client pinned (its kid), when the ticket says.
    pub static_kid: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct TicketBody {
    s: String,
    k: String,
    u: String,
    c: String,
    e: i64,
    /// The kid of the static key the client encrypted its handshake to (the
    /// key it pinned): resets for this session are signed with it, also
    /// after a static key rotation promoted another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

impl Drop for TicketBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.k.zeroize();
    }
}

/// Why a ticket was refused. The client gets a reset either way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket of ours.
    #[error("unknown ephemeral key")]
    Unknown,
    /// Past its expiry.
    #[error("ephemeral key expired")]
    Expired,
    /// Deleted.
    #[error("ephemeral key deleted")]
    Deleted,
}

/// Seals and opens tickets; tracks deletions.
pub struct Tickets {
    store: Arc<dyn Store>,
    cmk: Arc<MasterKeys>,
    keys: RwLock<HashMap<i64, SecretKey>>,
    // Deleted session ids, with when this node learned of them (to forget them
    // once every ticket they could name has expired).
    revoked: RwLock<HashMap<String, std::time::Instant>>,
    revoked_seq: AtomicI64,
    max_lifetime_ms: i64,
    notify: tokio::sync::broadcast::Sender<String>,
}

fn epoch_of(ms: i64) -> i64 {
    ms / EPOCH.as_millis() as i64
}

fn meta_name(epoch: i64) -> String {
    format!("{PREFIX}{epoch:020}")
}

impl Tickets {
    /// Tickets for sessions of at most `max_lifetime`, their keys wrapped under `cmk`.
    pub fn new(store: Arc<dyn Store>, cmk: Arc<MasterKeys>, max_lifetime: Duration) -> Self {
        Self {
            store,
            cmk,
            keys: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashMap::new()),
            revoked_seq: AtomicI64::new(0),
            max_lifetime_ms: max_lifetime.as_millis() as i64,
            notify: tokio::sync::broadcast::channel(1024).0,
        }
    }

    async fn epoch_key(&self, epoch: i64, create: bool) -> Result<Option<SecretKey>, EngineError> {
        if let Some(k) = self.keys.read().await.get(&epoch) {
            return Ok(Some(k.clone()));
        }
        let name = meta_name(epoch);
        let wrapped = match self.store.get_meta(&name).await? {
            Some(w) => w,
            None if create => {
                let fresh = SecretKey::generate()?;
                // Another node may win the race; then its key is the one in force.
                self.store.put_meta_if_absent(&name, &self.cmk.seal_stored(&name, fresh.expose()).await?).await?
            }
            None => return Ok(None),
        };
        let key = SecretKey::from_slice(&self.cmk.open_stored(&name, &wrapped).await?)?;
        self.keys.write().await.insert(epoch, key.clone());
        Ok(Some(key))
    }

    /// The key sealing new tickets now, with its epoch (created on first use).
    pub async fn current_key(&self, now: i64) -> Result<(i64, SecretKey), EngineError> {
        let epoch = epoch_of(now);
        let key = self.epoch_key(epoch, true).await?.expect("created on demand");
        Ok((epoch, key))
    }

    /// Seals a new session into a ticket (the id part of its `kms://…/ecdhe/` URI)
    /// with a key from [`Tickets::current_key`]. Returns the ticket and the session id.
    pub fn seal_with(
        key: &(i64, SecretKey),
        shared: &OctKey,
        principal: &str,
        client_id: &str,
        expires: i64,
        static_kid: Option<&str>,
    ) -> Result<(String, String), EngineError> {
        let (epoch, key) = key;
        let mut sid = [0u8; 16];
        aws_lc_rs::rand::fill(&mut sid).map_err(|_| EngineError::Internal("random"))?;
        let id = jose::b64::encode(sid);
        let body = TicketBody {
            s: id.clone(),
            k: jose::b64::encode(shared.expose()),
            u: principal.into(),
            c: client_id.into(),
            e: expires,
            p: static_kid.map(str::to_string),
        };
        let json = zeroize::Zeroizing::new(serde_json::to_vec(&body).expect("serializes"));
        let sealed = key.wrap(&format!("ticket:{epoch}"), &json)?;
        Ok((format!("t1.{epoch}.{}", jose::b64::encode(sealed)), id))
    }

    /// Opens a ticket; refuses unknown, expired and deleted sessions.
    pub async fn open(&self, ticket: &str, now: i64) -> Result<SessionState, EngineError> {
        let (state, problem) = self.open_any(ticket, now).await?;
        match problem {
            None => Ok(state),
            Some(p) => Err(p.into()),
        }
    }

    /// Opens a ticket that may be expired or deleted (the caller still needs
    /// its key to read the requestId a reset must echo). Unknown tickets fail.
    pub async fn open_any(&self, ticket: &str, now: i64) -> Result<(SessionState, Option<TicketError>), EngineError> {
        let mut parts = ticket.splitn(3, '.');
        let (Some("t1"), Some(epoch), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TicketError::Unknown.into());
        };
        let epoch: i64 = epoch.parse().map_err(|_| TicketError::Unknown)?;
        // A ticket can only be younger than the longest session: older epochs are refused unread.
        let oldest = epoch_of(now - self.max_lifetime_ms);
        if epoch > epoch_of(now) || epoch < oldest {
            return Err(TicketError::Expired.into());
        }
        let sealed = jose::b64::decode(body, jose::Part::Payload).map_err(|_| TicketError::Unknown)?;
        let key = self.epoch_key(epoch, false).await?.ok_or(TicketError::Unknown)?;
        let json = key.unwrap(&format!("ticket:{epoch}"), &sealed).map_err(|_| TicketError::Unknown)?;
        let body: TicketBody = serde_json::from_slice(&json).map_err(|_| TicketError::Unknown)?;
        let problem = if body.e <= now {
            Some(TicketError::Expired)
        } else if self.revoked.read().await.contains_key(&body.s) {
            Some(TicketError::Deleted)
        } else {
            None
        };
        let k = jose::b64::decode_secret(&body.k, jose::Part::Payload).map_err(|_| TicketError::Unknown)?;
        let state = SessionState {
            id: body.s.clone(),
            shared: OctKey::new(k.to_vec(), None).map_err(|_| TicketError::Unknown)?,
            principal: body.u.clone(),
            client_id: body.c.clone(),
            expires: body.e,
            static_kid: body.p.clone(),
        };
        Ok((state, problem))
    }

    /// Deletes a session everywhere.
    pub async fn revoke(&self, session: &SessionState) -> Result<(), EngineError> {
        self.store.revoke_session(&session.id, session.expires).await?;
        if self.revoked.write().await.insert(session.id.clone(), std::time::Instant::now()).is_none() {
            let _ = self.notify.send(session.id.clone());
        }
        Ok(())
    }

    /// Reads deletions made on any node since the last call.
    pub async fn refresh(&self) -> Result<(), EngineError> {
        let after = self.revoked_seq.load(Ordering::Acquire);
        let (ids, seq) = self.store.revoked_sessions_since(after).await?;
        if !ids.is_empty() {
            let mut set = self.revoked.write().await;
            for id in ids {
                if set.insert(id.clone(), std::time::Instant::now()).is_none() {
                    let _ = self.notify.send(id);
                }
            }
        }
        self.revoked_seq.fetch_max(seq, Ordering::AcqRel);
        Ok(())
    }

    /// Drops ticket keys no live ticket can use, and forgets expired deletions.
    pub async fn housekeeping(&self, now: i64) -> Result<(), EngineError> {
        let oldest = epoch_of(now - self.max_lifetime_ms);
        self.store.delete_meta_before(PREFIX, &meta_name(oldest)).await?;
        self.keys.write().await.retain(|e, _| *e >= oldest);
        // A session deleted longer ago than the longest lifetime has expired anyway.
        let keep = Duration::from_millis(self.max_lifetime_ms as u64) + POLL;
        self.revoked.write().await.retain(|_, at| at.elapsed() < keep);
        Ok(())
    }

    /// The epochs whose keys a live ticket may use (and the next one, which a
    /// node with a clock slightly ahead may already have made).
    fn live_epochs(&self, now: i64) -> std::ops::RangeInclusive<i64> {
        epoch_of(now - self.max_lifetime_ms)..=epoch_of(now) + 1
    }

    /// CMK rotation: re-wraps the live ticket keys not under `target` (a
    /// compare-and-swap on the stored value). Returns how many moved.
    pub async fn rewrap_keys(&self, target: &Arc<dyn MasterKey>, now: i64) -> Result<usize, EngineError> {
        let mut moved = 0;
        for epoch in self.live_epochs(now) {
            let name = meta_name(epoch);
            let Some(stored) = self.store.get_meta(&name).await? else { continue };
            let (owner, _) = self.cmk.owner_of(&stored).await?;
            if owner == target.id() {
                continue;
            }
            let plain = self.cmk.open_stored(&name, &stored).await?;
            let blob = target.wrap(&name, &plain).map_err(CryptoError::from)?;
            // False: another node re-wrapped it first (the key itself never changes).
            if self.store.swap_meta(&name, &stored, &envelope(target.id(), &blob)).await? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// How many live ticket keys are wrapped under CMK `cmk_id`.
    pub async fn keys_under(&self, cmk_id: &str, now: i64) -> Result<usize, EngineError> {
        let mut n = 0;
        for epoch in self.live_epochs(now) {
            if let Some(stored) = self.store.get_meta(&meta_name(epoch)).await? {
                if self.cmk.owner_of(&stored).await?.0 == cmk_id {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Session ids as they are deleted (on this node or, via polling, any other).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.notify.subscribe()
    }

    /// Polls deletions forever (spawn it).
    pub async fn poll(self: Arc<Self>) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading session deletions failed");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
