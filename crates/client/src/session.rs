//! One user's session: the high-level calls (spaces, members, messages,
//! history) that combine the KMS and the core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_protocol::uri::KmsUri;
use serde_json::{json, Value};

use crate::core_api::{CoreApi, CoreEvent, CoreSpace};
use crate::engine::envelope::{self, Body, Envelope};
use crate::engine::search::{search_key, text_tokens};
use crate::error::{Error, Result};
use crate::kms::{ContentKey, KmsClient, KmsOptions, KmsPin, Route};
use crate::tokens::TokenSource;
use crate::types::{core_role, Content, EventId, Member, Message, Role, Space, SpaceId, SpaceSummary, UserId};

/// How long a space's current key is used before asking the KMS again:
/// rotations by other members, and the KMS's `rekeyAfter` after the org
/// revokes a service or disables a device, take effect within this. One
/// second matches the KMS's own bound on applying a revocation everywhere.
const CURRENT_KEY_TTL: Duration = Duration::from_secs(1);

/// What a session needs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The core's base URL.
    pub core_url: String,
    /// The core's token audience.
    pub core_audience: String,
    /// The user's KMS, pinned from the org's configuration.
    pub kms: KmsPin,
    /// The KMS's token audience.
    pub kms_audience: String,
    /// How KMS messages travel.
    pub kms_route: Route,
    /// This device's client id.
    pub client_id: String,
    /// Rotate a space's key when its newest is older than this (default daily).
    pub rotation: Duration,
    /// Content keys kept in memory.
    pub key_cache: usize,
}

impl SessionConfig {
    /// Defaults: relay through the core, daily rotation, a 4,096-key cache.
    pub fn new(core_url: &str, core_audience: &str, kms: KmsPin, kms_audience: &str) -> Self {
        Self {
            core_url: core_url.to_string(),
            core_audience: core_audience.to_string(),
            kms,
            kms_audience: kms_audience.to_string(),
            kms_route: Route::Relay { core_url: core_url.to_string() },
            client_id: format!("custos-sdk-{}", uuid::Uuid::new_v4()),
            rotation: Duration::from_secs(24 * 3600),
            key_cache: crate::kms::DEFAULT_KEY_CACHE,
        }
    }
}

struct SpaceState {
    resource: KmsUri,
    current: Option<(ContentKey, Instant)>,
}

/// One user's session.
pub struct Session {
    pub(crate) core: CoreApi,
    pub(crate) kms: Arc<KmsClient>,
    user_id: UserId,
    /// The org the core says we belong to.
    org: Option<String>,
    rotation: Duration,
    spaces: Mutex<HashMap<SpaceId, SpaceState>>,
    /// `(space, sender, client event id)` → the seq it was first seen at: a
    /// second event with the same sealed id is a replay.
    seen: crate::events::Seen,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("core", &self.core.base())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens a session: asks the core who the token says we are.
    pub async fn open(cfg: SessionConfig, tokens: Arc<dyn TokenSource>) -> Result<Self> {
        let core = CoreApi::new(&cfg.core_url, &cfg.core_audience, tokens.clone());
        let me = core.me().await?;
        let user_id = UserId::from(
            me["user_id"].as_str().ok_or_else(|| Error::Invalid("the core did not say who you are".into()))?,
        );
        let org = me["org"].as_str().map(str::to_string);
        let kms = Arc::new(KmsClient::new(
            KmsOptions {
                pin: cfg.kms,
                route: cfg.kms_route,
                kms_audience: cfg.kms_audience,
                core_audience: cfg.core_audience,
                client_id: cfg.client_id,
                key_cache: cfg.key_cache,
            },
            tokens,
        ));
        // The sealed sender of everything we send: must be who the KMS (not
        // only the core) says we are.
        let kms_user = kms.user_id().await?;
        if user_id != kms_user {
            return Err(Error::Tampered(format!(
                "the core says you are {user_id}, your KMS says {kms_user}: refusing to continue"
            )));
        }
        Ok(Self {
            core,
            kms,
            user_id,
            org,
            rotation: cfg.rotation,
            spaces: Mutex::new(HashMap::new()),
            seen: Mutex::new(crate::engine::events::ReplayGuard::new()),
        })
    }

    /// The user id (`name@org`) the core knows us by (and the KMS agreed to).
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The org the core says we belong to, if it said.
    pub fn org(&self) -> Option<&str> {
        self.org.as_deref()
    }

    /// The core's base URL.
    pub fn core_url(&self) -> &str {
        self.core.base()
    }

    /// The KMS client (keys, authorizations, and raw KMS requests).
    pub fn kms(&self) -> &KmsClient {
        &self.kms
    }

    /// The core's HTTP API.
    pub(crate) fn core(&self) -> &CoreApi {
        &self.core
    }

    pub(crate) fn envelope(&self, resource: &KmsUri, body: Body) -> Envelope {
        Envelope {
            v: 1,
            space: resource.to_string(),
            sender: self.user_id.to_string(),
            ts: now_ms(),
            event: None,
            body,
        }
    }

    /// Creates a space titled `title` with `members` (user ids; you are
    /// added as moderator): one KMS resource with a fresh key and the members
    /// authorized, then the space on the core with the sealed metadata.
    pub async fn create_space(&self, title: &str, members: &[UserId]) -> Result<Space> {
        let key = self.kms.create_keys(1).await?.remove(0);
        let auth: Vec<String> = members.iter().filter(|m| **m != self.user_id).map(|m| m.to_string()).collect();
        let resource = self.kms.create_resource(&auth, std::slice::from_ref(&key.uri)).await?;
        // Bound by the resource's creation (the KMS's date; ours if it gave none).
        let bound_at = resource.create_date.unwrap_or_else(time::OffsetDateTime::now_utc);
        let key = ContentKey { resource: Some(resource.uri.clone()), bind_date: Some(bound_at), ..key };
        let meta = envelope::seal_space_title(&key, &resource.uri, self.user_id.as_str(), now_ms(), title)?;
        let s = self.core.create_space(&resource.uri.to_string(), &meta, &key.uri.to_string()).await?;
        for m in &auth {
            self.core.add_member(&s.id, m, Role::Member.as_str()).await?;
        }
        let id = SpaceId::from(s.id);
        self.spaces
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), SpaceState { resource: resource.uri.clone(), current: Some((key, Instant::now())) });
        self.space(&id).await
    }

    /// Checks a space's sealed metadata against what the core says and
    /// remembers its resource. Fails closed: no metadata, a key bound to
    /// another resource, or metadata naming another resource is `Tampered`.
    async fn verify_space(&self, s: &CoreSpace) -> Result<(KmsUri, String)> {
        let claimed =
            KmsUri::parse_absolute(&s.resource_uri).map_err(|e| Error::Tampered(format!("space resource: {e}")))?;
        let sealed = s.title.as_deref().ok_or_else(|| Error::Tampered("the space has no sealed metadata".into()))?;
        let key_uri = envelope::key_uri_of(sealed)?;
        let key = self.kms.key(&key_uri).await?;
        let title = envelope::open_space_title(&key, sealed, &claimed)?;
        let mut spaces = self.spaces.lock().expect("not poisoned");
        let st = spaces.entry(SpaceId::from(&s.id)).or_insert_with(|| SpaceState { resource: claimed.clone(), current: None });
        if st.resource != claimed {
            return Err(Error::Tampered("the core moved the space to another resource".into()));
        }
        Ok((claimed, title))
    }

    /// A space, checked and with its title decrypted.
    pub async fn space(&self, id: &SpaceId) -> Result<Space> {
        let (s, role, members) = self.core.space(id).await?;
        let (resource, title) = self.verify_space(&s).await?;
        let members = members
            .into_iter()
            .map(|m| Ok(Member { role: core_role(&m.role)?, user: UserId::from(m.user_id) }))
            .collect::<Result<_>>()?;
        Ok(Space { id: SpaceId::from(s.id), resource, title, role: core_role(&role)?, members, last_seq: s.last_seq })
    }

    /// Your spaces, most recently active first, each with its title (or why
    /// it is unreadable), your role and your read marker.
    pub async fn spaces(&self) -> Result<Vec<SpaceSummary>> {
        let mut out = Vec::new();
        for (s, role, read) in self.core.spaces().await? {
            let title = self.verify_space(&s).await.map(|(_, t)| t);
            let role = core_role(&role)?;
            out.push(SpaceSummary { id: SpaceId::from(s.id), title, role, last_seq: s.last_seq, read_seq: read });
        }
        Ok(out)
    }

    /// The core's records of a space's events as it stores them: ciphertext,
    /// neither decrypted nor checked (to inspect what the provider holds;
    /// [`Session::decrypt`] opens one). `after` and `before` bound the
    /// sequence numbers, `limit` the count.
    pub async fn stored_events(
        &self,
        space: &SpaceId,
        after: Option<i64>,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<CoreEvent>> {
        self.core.events(space, after, before, limit).await
    }

    /// Registers `url` as where the core POSTs your spaces' events (bots);
    /// returns the secret (shown only now) that signs each request.
    pub async fn set_webhook(&self, url: &str) -> Result<zeroize::Zeroizing<String>> {
        let v = self.core.set_webhook(url).await?;
        v["secret"]
            .as_str()
            .map(|s| zeroize::Zeroizing::new(s.to_string()))
            .ok_or_else(|| Error::Invalid("the core answered without a webhook secret".into()))
    }

    /// Stops the core's webhook requests.
    pub async fn delete_webhook(&self) -> Result<()> {
        self.core.delete_webhook().await
    }

    pub(crate) async fn resource_of(&self, space: &SpaceId) -> Result<KmsUri> {
        if let Some(st) = self.spaces.lock().expect("not poisoned").get(space) {
            return Ok(st.resource.clone());
        }
        Ok(self.space(space).await?.resource)
    }

    /// The key to send with: the newest bound to the space's resource,
    /// rotated first when older than the rotation period.
    pub(crate) async fn current_key(&self, space: &SpaceId) -> Result<ContentKey> {
        let resource = self.resource_of(space).await?;
        if let Some(st) = self.spaces.lock().expect("not poisoned").get(space) {
            if let Some((k, at)) = &st.current {
                if at.elapsed() < CURRENT_KEY_TTL && !self.too_old(k) {
                    return Ok(k.clone());
                }
            }
        }
        let (mut key, rekey_after) = self.kms.newest_key_and_hint(&resource).await?;
        // Someone who could read this space lost that right after this key was bound:
        // whatever it cached must not open what is sent from now on.
        let revoked_since = match (rekey_after, key.bind_date) {
            (Some(r), Some(b)) => r >= b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        // Another org's space: its own members rotate its key; we send under the newest.
        if (self.too_old(&key) || revoked_since) && self.kms.is_own(&resource) {
            key = self.rotate_resource(&resource).await?;
        }
        if key.resource.as_ref() != Some(&resource) {
            return Err(Error::Tampered("the newest key is bound to another resource".into()));
        }
        if let Some(st) = self.spaces.lock().expect("not poisoned").get_mut(space) {
            st.current = Some((key.clone(), Instant::now()));
        }
        Ok(key)
    }

    fn too_old(&self, k: &ContentKey) -> bool {
        let age = k.bind_date.map(|d| time::OffsetDateTime::now_utc() - d).unwrap_or(time::Duration::ZERO);
        age > self.rotation
    }

    async fn rotate_resource(&self, resource: &KmsUri) -> Result<ContentKey> {
        self.own_space(resource)?;
        let key = self.kms.create_keys(1).await?.remove(0);
        self.kms.bind(&key.uri, resource).await
    }

    /// Binds a fresh key to the space; new messages use it.
    pub async fn rotate(&self, space: &SpaceId) -> Result<ContentKey> {
        let resource = self.resource_of(space).await?;
        let key = self.rotate_resource(&resource).await?;
        if let Some(st) = self.spaces.lock().expect("not poisoned").get_mut(space) {
            st.current = Some((key.clone(), Instant::now()));
        }
        Ok(key)
    }

    /// Refuses what only the space's own org may do (its KMS holds the resource).
    pub(crate) fn own_space(&self, resource: &KmsUri) -> Result<()> {
        if self.kms.is_own(resource) {
            Ok(())
        } else {
            Err(Error::OtherKms { domain: resource.domain().to_string() })
        }
    }

    /// Adds `user` as `role` (KMS authorization first, then the core's membership).
    pub async fn add_member(&self, space: &SpaceId, user: &UserId, role: Role) -> Result<()> {
        let resource = self.resource_of(space).await?;
        self.own_space(&resource)?;
        self.kms.authorize(&resource, &[user.to_string()]).await?;
        match self.core.add_member(space, user, role.as_str()).await {
            Ok(()) => Ok(()),
            // The core refused (not a moderator, say): leave no authorization
            // the member list does not show (unless they were a member already).
            Err(e) => {
                let listed = match self.core.space(space).await {
                    Ok((_, _, members)) => members.iter().any(|m| *user == m.user_id),
                    Err(_) => true, // unknown: never take access on a guess
                };
                if !listed {
                    if let Err(undo) = self.kms.deauthorize(&resource, user).await {
                        tracing::warn!(error = %undo, "undoing a KMS authorization the core refused failed");
                    }
                }
                Err(e)
            }
        }
    }

    async fn post(
        &self,
        space: &SpaceId,
        kind: &str,
        parent: Option<&EventId>,
        target: Option<&EventId>,
        body: Option<Body>,
    ) -> Result<Message> {
        let cid = uuid::Uuid::new_v4().to_string();
        let mut req = json!({"kind": kind, "client_event_id": cid});
        if let Some(p) = parent {
            req["parent"] = json!(p.as_str());
        }
        if let Some(t) = target {
            req["target"] = json!(t.as_str());
        }
        let mut searchable = None;
        if let Some(body) = body {
            envelope::check_text(&body)?;
            let key = self.current_key(space).await?;
            if let (Body::Text { text }, "message" | "edit") = (&body, kind) {
                searchable = Some((key.clone(), text.clone()));
            }
            // What the event is, sealed: the core cannot re-post it, turn it
            // into another kind, or move it to another parent or target.
            let binding = envelope::EventBinding {
                kind: kind.to_string(),
                id: cid.clone(),
                parent: parent.map(|p| p.to_string()),
                target: target.map(|t| t.to_string()),
            };
            let sealed = envelope::seal_event(&key, self.user_id.as_str(), now_ms(), binding, body)?;
            req["sealed"] = json!({"ciphertext": sealed, "key_uri": key.uri.to_string()});
        }
        let e = self.post_retrying(space, &req).await?;
        if let Some((key, text)) = searchable {
            // Search is a convenience: a failure here loses no message (the indexer backfills).
            if let Err(err) = self.index_text(space, &e.id, &key, &text).await {
                tracing::warn!(error = %err, "indexing a message for search failed");
            }
        }
        Ok(self.decrypt(&e).await)
    }

    /// Posts, retrying transient failures with the same client_event_id (the
    /// core stores it once).
    async fn post_retrying(&self, space: &SpaceId, req: &Value) -> Result<CoreEvent> {
        let mut pause = Duration::from_millis(100);
        for attempt in 0.. {
            match self.core.post_event(space, req).await {
                Err(Error::CoreUnreachable(_)) | Err(Error::Core { status: 502..=504, .. }) if attempt < 4 => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }

    /// Sends the blinded tokens of `text` (event `event_id`) to the core, under `key`.
    async fn index_text(&self, space: &SpaceId, event_id: &str, key: &ContentKey, text: &str) -> Result<()> {
        let tokens = text_tokens(&search_key(&key.key, &key.uri.to_string())?, text);
        if tokens.is_empty() {
            return Ok(());
        }
        self.core.index_event(space, event_id, &key.uri.to_string(), &tokens).await
    }

    /// Sends a message.
    pub async fn send(&self, space: &SpaceId, text: &str) -> Result<Message> {
        self.post(space, "message", None, None, Some(Body::Text { text: text.to_string() })).await
    }

    /// Replies in the thread of `parent`.
    pub async fn reply(&self, space: &SpaceId, parent: &EventId, text: &str) -> Result<Message> {
        self.post(space, "message", Some(parent), None, Some(Body::Text { text: text.to_string() })).await
    }

    /// Edits message `target`.
    pub async fn edit(&self, space: &SpaceId, target: &EventId, text: &str) -> Result<Message> {
        self.post(space, "edit", None, Some(target), Some(Body::Text { text: text.to_string() })).await
    }

    /// Deletes message `target`.
    pub async fn delete(&self, space: &SpaceId, target: &EventId) -> Result<Message> {
        self.post(space, "delete", None, Some(target), None).await
    }

    /// Reacts to message `target`.
    pub async fn react(&self, space: &SpaceId, target: &EventId, emoji: &str) -> Result<Message> {
        self.post(space, "reaction", None, Some(target), Some(Body::Reaction { emoji: emoji.to_string() })).await
    }

    /// Decrypts one event; failures become [`Content::Unreadable`].
    pub async fn decrypt(&self, e: &CoreEvent) -> Message {
        crate::events::message(e, self.decrypt_content(e).await)
    }

    /// Decrypts one event, or says why not.
    pub async fn decrypt_content(&self, e: &CoreEvent) -> Result<Content> {
        if let Some(c) = crate::events::plain_content(e) {
            if matches!(c, Content::MemberRemoved { .. }) {
                // Someone left: the key may have rotated; look again before the next send.
                if let Some(st) = self.spaces.lock().expect("not poisoned").get_mut(e.space_id.as_str()) {
                    st.current = None;
                }
            }
            return Ok(c);
        }
        let resource = self.resource_of(&SpaceId::from(&e.space_id)).await?;
        crate::events::open_sealed(&self.kms, &self.seen, &resource, e).await
    }

    /// History: up to `limit` events before `before` (newest first from the
    /// core; returned oldest first), decrypted.
    pub async fn history(&self, space: &SpaceId, before: Option<i64>, limit: u32) -> Result<Vec<Message>> {
        // Without `before`, the newest events.
        let mut events = self.core.events(space, None, Some(before.unwrap_or(i64::MAX)), Some(limit)).await?;
        events.sort_by_key(|e| e.seq);
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            out.push(self.decrypt(e).await);
        }
        Ok(out)
    }

    /// Events after `after`, oldest first, decrypted (incremental sync).
    pub async fn sync(&self, space: &SpaceId, after: i64, limit: u32) -> Result<Vec<Message>> {
        let events = self.core.events(space, Some(after), None, Some(limit)).await?;
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            out.push(self.decrypt(e).await);
        }
        Ok(out)
    }

    /// Moves your read marker.
    pub async fn mark_read(&self, space: &SpaceId, seq: i64) -> Result<()> {
        self.core.set_read_marker(space, seq).await
    }
}

/// Milliseconds since the epoch, now: the send time sealed into what this
/// client sends (the native side reads the clock; the engine never does).
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
