//! The core's engine: plain async functions over typed inputs, no HTTP.
//!
//! Every method takes the authenticated [`Caller`] and checks membership and
//! roles itself. Content arrives as ciphertext and is checked for shape only
//! ([`crate::envelope`]); the core never holds a key that could open it.

use std::sync::Arc;

use base64::Engine as _;

use core_bus::{EventBus, Notice};
use core_store::{
    Appended, Event, EventKind, FileRecord, Membership, NewEvent, ReadMarker, Role, Space, SpaceSummary, Store,
};
use kms_protocol::{Kind, KmsUri};
use object_store::{path::Path as BlobPath, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::{Access, Cached, SpaceMeta};
use crate::config::Config;
use crate::envelope;
use crate::error::ApiError;
use crate::fanout::Fanout;
use crate::notices::{receipts_channel, user_channel, MEMBERSHIP_CHANNEL};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time_now_nanos() / 1_000_000) as i64
}

fn time_now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `name@org`.
    pub user_id: String,
}

/// Ciphertext and the KMS key it is under.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Compact JWE (`dir`, `A256GCM`, `kid` = `key_uri`).
    pub ciphertext: String,
    /// `kms://<kms>/keys/<id>`.
    pub key_uri: String,
}

/// `POST /v1/spaces`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSpace {
    /// The KMS resource of the space (`kms://<creator's KMS>/resources/<id>`).
    pub resource_uri: String,
    /// Encrypted title.
    #[serde(default)]
    pub title: Option<Sealed>,
}

/// `POST /v1/spaces/{id}/events`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostEvent {
    /// `message`, `edit`, `delete`, `reaction` or `title`.
    #[schema(value_type = String)]
    pub kind: EventKind,
    /// The sender's own id for this post: a retry with the same id is not stored twice.
    #[serde(default)]
    pub client_event_id: Option<String>,
    /// Thread parent (a message id), for replies.
    #[serde(default)]
    pub parent: Option<String>,
    /// The message an edit, deletion or reaction acts on.
    #[serde(default)]
    pub target: Option<String>,
    /// Content (absent for deletions).
    #[serde(default)]
    pub sealed: Option<Sealed>,
}

/// `POST /v1/spaces/{id}/members`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// `name@org`.
    pub user_id: String,
    /// `member` (default) or `moderator`.
    #[serde(default = "member")]
    #[schema(value_type = String)]
    pub role: Role,
}

fn member() -> Role {
    Role::Member
}

/// `POST /v1/spaces/{id}/files`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFile {
    /// Total ciphertext size in bytes.
    pub size: i64,
    /// Chunk size in bytes.
    pub chunk_size: i64,
    /// Encrypted metadata (name, type, file key, hash).
    pub meta: Sealed,
}

/// The core.
pub struct Core {
    /// Configuration.
    pub cfg: Config,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Event fan-out.
    pub bus: Arc<dyn EventBus>,
    /// File chunks.
    pub blobs: Arc<dyn ObjectStore>,
    /// Per-caller budgets on the KMS relay (see [`crate::limit`]).
    pub relay_limiter: crate::limit::CallerLimiter,
    /// Real-time fan-out of this node (see [`crate::fanout`]).
    pub fanout: Arc<Fanout>,
    /// Remembered spaces and roles (see [`crate::access`]).
    pub access: Arc<Access>,
    /// Webhook signing and delivery (see [`crate::webhooks`]).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    verifier: kms_identity::Verifier,
    touched: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How often a user's "last seen" is written.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(crate) fn check_id(s: &str, what: &'static str) -> Result<(), ApiError> {
    if valid_id(s) {
        Ok(())
    } else {
        Err(ApiError::not_found(what))
    }
}

impl Core {
    /// Puts the pieces together, and registers the store's commit listener
    /// (the fan-out's frames, forgetting roles whose membership changed).
    /// Call [`Core::follow_membership`] too, once serving, so that changes
    /// other nodes make reach this node's role cache at once.
    pub fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        blobs: Arc<dyn ObjectStore>,
    ) -> anyhow::Result<Self> {
        let verifier = kms_identity::Verifier::new(cfg.identity.clone())?;
        let fanout = Fanout::new(bus.clone(), store.clone());
        let access = Arc::new(Access::default());
        let webhooks = Arc::new(crate::webhooks::Webhooks::open(&cfg.data_dir, cfg.webhooks.allow_http)?);
        // Weak: the store holds the listener, and the fan-out holds the store.
        let (f, a, w) = (Arc::downgrade(&fanout), Arc::downgrade(&access), Arc::downgrade(&webhooks));
        store.set_commit_listener(Arc::new(move |events: &[Event]| {
            if let Some(a) = a.upgrade() {
                a.on_commit(events);
            }
            if let Some(f) = f.upgrade() {
                f.committed(events);
            }
            if let Some(w) = w.upgrade() {
                w.wake();
            }
        }));
        let l = &cfg.limits;
        let relay_limiter = crate::limit::CallerLimiter::new(l.relay_per_second, l.relay_burst, l.relay_max_callers);
        Ok(Self {
            cfg,
            store,
            bus,
            blobs,
            relay_limiter,
            fanout,
            access,
            webhooks,
            verifier,
            touched: Default::default(),
        })
    }

    /// Follows the membership changes other nodes announce, forgetting the
    /// roles this node remembers (see [`crate::access`]). Returns once the
    /// subscription is live; the task ends with the core.
    pub async fn follow_membership(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut sub = self.bus.subscribe(MEMBERSHIP_CHANNEL).await?;
        let (access, bus) = (Arc::downgrade(&self.access), self.bus.clone());
        tokio::spawn(async move {
            loop {
                if sub.next().await.is_none() {
                    // Notices may have been lost: forget, and listen again.
                    if let Some(a) = access.upgrade() {
                        a.forget_roles();
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    match bus.subscribe(MEMBERSHIP_CHANNEL).await {
                        Ok(s) => sub = s,
                        Err(e) => tracing::warn!(error = %e, "subscribing to membership notices failed"),
                    }
                    continue;
                }
                let Some(a) = access.upgrade() else { return };
                a.forget_roles();
            }
        });
        Ok(())
    }

    /// Validates a bearer token meant for the core, from a user of a served org.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let id = self
            .verifier
            .verify(token)
            .await
            .map_err(|e| ApiError::unauthenticated(format!("the bearer token was refused: {e}")))?;
        if self.cfg.org_of(&id.user_id).is_none() {
            return Err(ApiError::forbidden("unknown_org", "this core does not serve your organization"));
        }
        // "Last seen" needs no precision: one write per user per TOUCH_EVERY, not per request.
        let due = {
            let mut t = self.touched.lock().expect("not poisoned");
            if t.len() > 100_000 {
                t.clear();
            }
            match t.get(&id.user_id) {
                Some(at) if at.elapsed() < TOUCH_EVERY => false,
                _ => {
                    t.insert(id.user_id.clone(), std::time::Instant::now());
                    true
                }
            }
        };
        if due {
            self.store.touch_user(&id.user_id, now_ms()).await?;
        }
        Ok(Caller { user_id: id.user_id })
    }

    /// The space and the caller's role in it, remembered (see [`crate::access`]);
    /// `None` when the space does not exist or the caller is not a member.
    async fn access(&self, space_id: &str, user: &str) -> Result<Option<(Arc<SpaceMeta>, Role)>, ApiError> {
        let generation = match self.access.get(space_id, user) {
            Cached::Hit(meta, role) => return Ok(role.map(|r| (meta, r))),
            Cached::Miss(g) => g,
        };
        let meta = match self.access.space(space_id) {
            Some(m) => m,
            None => {
                let Some(space) = self.store.get_space(space_id).await? else { return Ok(None) };
                let kms_domain =
                    KmsUri::parse_absolute(&space.resource_uri).map(|u| u.domain().to_string()).unwrap_or_default();
                Arc::new(SpaceMeta { id: space.id, resource_uri: space.resource_uri, kms_domain })
            }
        };
        let role = self.store.role(space_id, user).await?;
        self.access.remember(generation, &meta, user, role);
        Ok(role.map(|r| (meta, r)))
    }

    async fn space_as(&self, c: &Caller, id: &str) -> Result<(Arc<SpaceMeta>, Role), ApiError> {
        check_id(id, "space")?;
        // Non-members learn nothing, not even that the space exists.
        self.access(id, &c.user_id).await?.ok_or_else(|| ApiError::not_found("space"))
    }

    async fn publish(&self, e: &Event) {
        // The database is the truth; a lost notice only delays delivery until the next one.
        // (This node's sockets were woken by the commit listener already.)
        if let Err(err) = self.bus.publish(Notice { space_id: e.space_id.clone(), seq: e.seq }).await {
            tracing::warn!(error = %err, "publishing an event notice failed");
        }
        metrics::counter!("core_events_total").increment(1);
    }

    /// Tells the other nodes to forget the roles they remember (this node
    /// did when the change committed).
    async fn publish_membership(&self, e: &Event) {
        if let Err(err) = self.bus.publish(Notice { space_id: MEMBERSHIP_CHANNEL.into(), seq: e.seq }).await {
            tracing::warn!(error = %err, "publishing a membership notice failed");
        }
    }

    /// Whether `c` is an org-level moderator of the org whose KMS holds the space's keys.
    fn org_moderator(&self, c: &Caller, space_kms: &str) -> bool {
        self.cfg
            .org_of(&c.user_id)
            .is_some_and(|o| o.moderators.contains(&c.user_id) && o.kms_uri.strip_prefix("kms://") == Some(space_kms))
    }

    /// Stores the blinded search tokens of a message: by its sender, or by
    /// one of the org's search indexers (re-indexing under a newer key).
    pub async fn index_event(&self, c: &Caller, space: &str, event_id: &str, req: IndexEvent) -> Result<(), ApiError> {
        let (meta, _) = self.space_as(c, space).await?;
        let (seq, key, tokens) = self.checked_postings(c, space, &meta.kms_domain, event_id, &req).await?;
        self.store.set_postings(space, seq, &key, &tokens).await?;
        metrics::counter!("core_search_postings_total").increment(tokens.len() as u64);
        Ok(())
    }

    /// Stores the blinded tokens of up to [`MAX_INDEX_BATCH`] messages in one
    /// transaction (a backfill or re-index): every item is checked as
    /// [`Self::index_event`] checks one, and if any is refused nothing is
    /// stored and the error names the item.
    pub async fn index_events(&self, c: &Caller, space: &str, req: IndexEvents) -> Result<usize, ApiError> {
        let (meta, _) = self.space_as(c, space).await?;
        if req.items.is_empty() || req.items.len() > MAX_INDEX_BATCH {
            return Err(ApiError::bad("bad_batch", format!("give 1 to {MAX_INDEX_BATCH} items")));
        }
        let mut checked = Vec::with_capacity(req.items.len());
        for (i, item) in req.items.iter().enumerate() {
            let one = IndexEvent { key_uri: item.key_uri.clone(), tokens: item.tokens.clone() };
            let c = self.checked_postings(c, space, &meta.kms_domain, &item.event, &one).await.map_err(|mut e| {
                e.message = format!("items[{i}]: {}", e.message);
                e
            })?;
            checked.push(c);
        }
        let sets: Vec<core_store::PostingSet<'_>> = checked
            .iter()
            .map(|(seq, key, tokens)| core_store::PostingSet { space_id: space, seq: *seq, key_uri: key, tokens })
            .collect();
        self.store.set_postings_batch(&sets).await?;
        let n: usize = checked.iter().map(|(_, _, t)| t.len()).sum();
        metrics::counter!("core_search_postings_total").increment(n as u64);
        Ok(checked.len())
    }

    /// Checks one message's postings: an indexable event of the space, indexed
    /// by its sender or the caller's org's indexer, under a key of the space's
    /// KMS, with well-formed tokens. Returns its seq, the key URI and the tokens.
    async fn checked_postings(
        &self,
        c: &Caller,
        space: &str,
        kms_domain: &str,
        event_id: &str,
        req: &IndexEvent,
    ) -> Result<(i64, String, Vec<[u8; 16]>), ApiError> {
        check_id(event_id, "event")?;
        let e = self.store.event(space, event_id).await?.ok_or_else(|| ApiError::not_found("event"))?;
        if !matches!(e.kind, EventKind::Message | EventKind::Edit | EventKind::FileReady) {
            return Err(ApiError::bad("not_indexable", "only messages, edits and finished files are indexed"));
        }
        let indexer = self.cfg.org_of(&c.user_id).is_some_and(|o| o.search_indexers.contains(&c.user_id));
        if e.sender != c.user_id && !indexer {
            return Err(ApiError::forbidden(
                "not_sender",
                "only the sender or the org's search indexer indexes a message",
            ));
        }
        let key = KmsUri::parse_absolute(&req.key_uri)
            .ok()
            .filter(|u| u.is_object(Kind::Keys) && u.domain() == kms_domain)
            .ok_or_else(|| ApiError::bad("bad_key_uri", "key_uri must name a key of the space's KMS"))?;
        let tokens = decode_tokens(&req.tokens, MAX_INDEX_TOKENS)?;
        Ok((e.seq, key.to_string(), tokens))
    }

    /// The events whose blinded tokens hold every token of one of the queries
    /// (one query per key version), newest first.
    pub async fn search(&self, c: &Caller, space: &str, req: SearchRequest) -> Result<Vec<Event>, ApiError> {
        self.space_as(c, space).await?;
        if req.queries.is_empty() || req.queries.len() > 64 {
            return Err(ApiError::bad("bad_query", "give 1 to 64 queries"));
        }
        let limit = req.limit.unwrap_or(50).clamp(1, 200);
        let before = req.before.unwrap_or(i64::MAX);
        let mut seqs = Vec::new();
        for q in &req.queries {
            let tokens = decode_tokens(&q.tokens, MAX_QUERY_TOKENS)?;
            if tokens.is_empty() {
                return Err(ApiError::bad("bad_query", "a query needs at least one token"));
            }
            seqs.extend(self.store.search_postings(space, &q.key_uri, &tokens, before, limit).await?);
        }
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        seqs.dedup();
        seqs.truncate(limit as usize);
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs {
            if let Some(e) = self.store.events_after(space, s - 1, 1).await?.into_iter().next() {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The key versions a space's search postings are under (for queries per key).
    pub async fn search_keys(&self, c: &Caller, space: &str) -> Result<Vec<(String, i64)>, ApiError> {
        self.space_as(c, space).await?;
        Ok(self.store.posting_keys(space).await?)
    }

    /// Registers (or replaces) the caller's webhook; the answer holds its signing secret (shown once).
    pub async fn set_webhook(&self, c: &Caller, url: &str) -> Result<(core_store::Webhook, String), ApiError> {
        self.webhooks.check_url(url).map_err(|e| ApiError::bad("bad_url", e.0))?;
        let w = core_store::Webhook { user_id: c.user_id.clone(), url: url.to_string(), create_date: now_ms() };
        self.store.set_webhook(&w).await?;
        let secret = self.webhooks.secret(&w).to_string();
        self.webhooks.wake();
        Ok((w, secret))
    }

    /// The caller's webhook, if any (never its secret).
    pub async fn webhook(&self, c: &Caller) -> Result<core_store::Webhook, ApiError> {
        let all = self.store.webhooks().await?;
        all.into_iter().find(|w| w.user_id == c.user_id).ok_or_else(|| ApiError::not_found("webhook (you have none)"))
    }

    /// Removes the caller's webhook.
    pub async fn delete_webhook(&self, c: &Caller) -> Result<(), ApiError> {
        if self.store.delete_webhook(&c.user_id).await? {
            Ok(())
        } else {
            Err(ApiError::not_found("webhook (you have none)"))
        }
    }

    /// Creates a space with the caller as moderator.
    pub async fn create_space(&self, c: &Caller, req: CreateSpace) -> Result<Space, ApiError> {
        let org = self
            .cfg
            .org_of(&c.user_id)
            .ok_or_else(|| ApiError::forbidden("unknown_org", "this core does not serve your organization"))?;
        let uri = KmsUri::parse_absolute(&req.resource_uri)
            .map_err(|_| ApiError::bad("bad_resource_uri", "resource_uri must be kms://<domain>/resources/<id>"))?;
        if !uri.is_object(Kind::Resources) {
            return Err(ApiError::bad("bad_resource_uri", "resource_uri must name a KMS resource"));
        }
        if Some(uri.domain()) != org.kms_uri.strip_prefix("kms://") {
            return Err(ApiError::bad("wrong_kms", "a space's resource must belong to your organization's KMS"));
        }
        if let Some(t) = &req.title {
            envelope::check(&t.ciphertext, &t.key_uri, uri.domain(), self.cfg.limits.max_ciphertext_bytes)?;
        }
        let now = now_ms();
        let space = Space {
            id: uuid::Uuid::new_v4().to_string(),
            resource_uri: uri.to_string(),
            org: org.domain.clone(),
            title: req.title.as_ref().map(|t| t.ciphertext.clone()),
            creator: c.user_id.clone(),
            create_date: now,
            last_seq: 1,
        };
        let e = self.store.create_space(&space, &uuid::Uuid::new_v4().to_string()).await?;
        self.publish(&e).await;
        Ok(space)
    }

    /// The caller's spaces.
    pub async fn spaces(&self, c: &Caller) -> Result<Vec<SpaceSummary>, ApiError> {
        Ok(self.store.spaces_of(&c.user_id).await?)
    }

    /// One space, with its members and where their read markers stand.
    pub async fn space(
        &self,
        c: &Caller,
        id: &str,
    ) -> Result<(Space, Role, Vec<Membership>, Vec<ReadMarker>), ApiError> {
        let (_, r) = self.space_as(c, id).await?;
        let s = self.store.get_space(id).await?.ok_or_else(|| ApiError::not_found("space"))?;
        let members = self.store.members(id).await?;
        let markers = self.store.read_markers(id).await?;
        // Former members' markers are theirs: only current members' are shown.
        let current: std::collections::HashSet<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        let markers = markers.into_iter().filter(|m| current.contains(m.user_id.as_str())).collect();
        Ok((s, r, members, markers))
    }

    /// Adds a member (moderators only).
    pub async fn add_member(&self, c: &Caller, id: &str, req: AddMember) -> Result<Option<Event>, ApiError> {
        let (_, role) = self.space_as(c, id).await?;
        if role != Role::Moderator {
            return Err(ApiError::forbidden("not_moderator", "only moderators add members"));
        }
        let user = kms_protocol::message::qualify_user_id(&req.user_id, "invalid.invalid")
            .ok()
            .filter(|u| !u.ends_with("@invalid.invalid"))
            .ok_or_else(|| ApiError::bad("bad_user_id", "user_id must be name@org"))?;
        if self.cfg.org_of(&user).is_none() {
            return Err(ApiError::bad("unknown_org", "this core does not serve that user's organization"));
        }
        let m = Membership {
            space_id: id.into(),
            user_id: user,
            role: req.role,
            added_by: c.user_id.clone(),
            added_at: now_ms(),
        };
        let user = m.user_id.clone();
        let e = self.store.add_member(&m, &uuid::Uuid::new_v4().to_string()).await?;
        if let Some(e) = &e {
            self.publish(e).await;
            self.publish_membership(e).await;
            // The new member's sockets start watching the space.
            if let Err(err) = self.bus.publish(Notice { space_id: user_channel(&user), seq: e.seq }).await {
                tracing::warn!(error = %err, "publishing a join notice failed");
            }
        }
        Ok(e)
    }

    /// Removes a member (moderators; anyone may leave).
    pub async fn remove_member(&self, c: &Caller, id: &str, user: &str) -> Result<Event, ApiError> {
        let (_, role) = self.space_as(c, id).await?;
        if role != Role::Moderator && user != c.user_id {
            return Err(ApiError::forbidden("not_moderator", "only moderators remove others"));
        }
        let e = self
            .store
            .remove_member(id, user, &c.user_id, &uuid::Uuid::new_v4().to_string(), now_ms())
            .await?
            .ok_or_else(|| ApiError::not_found("member"))?;
        self.publish(&e).await;
        self.publish_membership(&e).await;
        Ok(e)
    }

    /// Posts a message, edit, deletion, reaction or title.
    pub async fn post(&self, c: &Caller, id: &str, req: PostEvent) -> Result<(Event, bool), ApiError> {
        let (space, role) = self.space_as(c, id).await?;
        let kms = space.kms_domain.as_str();
        if let Some(cid) = &req.client_event_id {
            if cid.is_empty() || cid.len() > 128 || cid.chars().any(char::is_control) {
                return Err(ApiError::bad(
                    "bad_client_event_id",
                    "client_event_id must be 1 to 128 printable characters",
                ));
            }
        }
        let target = match req.kind {
            EventKind::Edit | EventKind::Delete | EventKind::Reaction => {
                let t = req
                    .target
                    .as_deref()
                    .ok_or_else(|| ApiError::bad("missing_target", "this kind needs a target message"))?;
                check_id(t, "target")?;
                let ev = self.store.event(id, t).await?.ok_or_else(|| ApiError::not_found("target"))?;
                if ev.kind != EventKind::Message {
                    return Err(ApiError::bad("bad_target", "the target must be a message"));
                }
                let own = ev.sender == c.user_id;
                match req.kind {
                    EventKind::Edit if !own => {
                        return Err(ApiError::forbidden("not_sender", "only the sender edits a message"))
                    }
                    EventKind::Delete
                        if !own && role != Role::Moderator && !self.org_moderator(c, &space.kms_domain) =>
                    {
                        return Err(ApiError::forbidden(
                            "not_sender",
                            "only the sender, a moderator of the space or of its org deletes a message",
                        ))
                    }
                    _ => {}
                }
                Some(t.to_string())
            }
            EventKind::Message | EventKind::Title => {
                if req.target.is_some() {
                    return Err(ApiError::bad("unexpected_target", "this kind takes no target"));
                }
                None
            }
            _ => return Err(ApiError::bad("bad_kind", "clients post message, edit, delete, reaction or title events")),
        };
        if req.kind == EventKind::Title && role != Role::Moderator {
            return Err(ApiError::forbidden("not_moderator", "only moderators change the title"));
        }
        if let Some(p) = &req.parent {
            check_id(p, "parent")?;
            if req.kind != EventKind::Message {
                return Err(ApiError::bad("unexpected_parent", "only messages have a thread parent"));
            }
            match self.store.event(id, p).await? {
                Some(ev) if ev.kind == EventKind::Message => {}
                _ => return Err(ApiError::not_found("parent message")),
            }
        }
        let sealed = match (req.kind, &req.sealed) {
            (EventKind::Delete, None) => None,
            (EventKind::Delete, Some(_)) => {
                return Err(ApiError::bad("unexpected_ciphertext", "a deletion carries no content"))
            }
            (_, None) => return Err(ApiError::bad("missing_ciphertext", "this kind needs sealed content")),
            (_, Some(s)) => {
                envelope::check(&s.ciphertext, &s.key_uri, kms, self.cfg.limits.max_ciphertext_bytes)?;
                Some(s.clone())
            }
        };
        let ne = NewEvent {
            id: uuid::Uuid::new_v4().to_string(),
            client_event_id: req.client_event_id.clone(),
            kind: req.kind,
            sender: c.user_id.clone(),
            parent: req.parent.clone(),
            target,
            subject: None,
            ciphertext: sealed.as_ref().map(|s| s.ciphertext.clone()),
            key_uri: sealed.as_ref().map(|s| s.key_uri.clone()),
            meta: None,
        };
        match self.store.append(id, &ne, now_ms()).await? {
            Appended::New(e) => {
                self.publish(&e).await;
                Ok((e, true))
            }
            Appended::Duplicate(e) => Ok((e, false)),
        }
    }

    /// Events after `after` (sync) or before `before` (history), at most `limit`.
    pub async fn events(
        &self,
        c: &Caller,
        id: &str,
        after: Option<i64>,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<Event>, ApiError> {
        self.space_as(c, id).await?;
        self.events_page(id, after, before, limit).await
    }

    /// A page of a space's events, for a caller already allowed to read them.
    pub(crate) async fn events_page(
        &self,
        id: &str,
        after: Option<i64>,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<Event>, ApiError> {
        // (max(1): a configured max_page of 0 must not make clamp panic.)
        let limit = limit.unwrap_or(100).clamp(1, self.cfg.limits.max_page.max(1));
        Ok(match (after, before) {
            (Some(_), Some(_)) => return Err(ApiError::bad("bad_range", "give after or before, not both")),
            (_, Some(b)) => self.store.events_before(id, b, limit).await?,
            (a, None) => self.store.events_after(id, a.unwrap_or(0), limit).await?,
        })
    }

    /// Moves the caller's read marker forward.
    pub async fn read_marker(&self, c: &Caller, id: &str, seq: i64) -> Result<i64, ApiError> {
        self.space_as(c, id).await?;
        let last = self.store.get_space(id).await?.ok_or_else(|| ApiError::not_found("space"))?.last_seq;
        if seq < 0 || seq > last {
            return Err(ApiError::bad(
                "bad_seq",
                "the read marker must be between 0 and the space's last sequence number",
            ));
        }
        let marker = self.store.set_read_marker(id, &c.user_id, seq, now_ms()).await?;
        // The user's other sockets learn of it through the user's channel.
        if let Err(err) = self.bus.publish(Notice { space_id: user_channel(&c.user_id), seq: marker.max(1) }).await {
            tracing::warn!(error = %err, "publishing a read-marker notice failed");
        }
        // The other members' sockets learn of it as a read receipt: each node
        // watching the space reads the space's markers and tells them what moved.
        if let Err(err) = self.bus.publish(Notice { space_id: receipts_channel(id), seq: marker.max(1) }).await {
            tracing::warn!(error = %err, "publishing a read-receipt notice failed");
        }
        Ok(marker)
    }

    // ---- files

    /// Starts an upload.
    pub async fn create_file(&self, c: &Caller, id: &str, req: CreateFile) -> Result<FileRecord, ApiError> {
        let (space, _) = self.space_as(c, id).await?;
        let l = &self.cfg.limits;
        if req.size < 0 {
            return Err(ApiError::bad("bad_size", "size must not be negative"));
        }
        if req.size > l.max_file_bytes {
            return Err(ApiError::too_large(format!("files may be at most {} bytes", l.max_file_bytes)));
        }
        if req.chunk_size < 1 || req.chunk_size > l.max_chunk_bytes {
            return Err(ApiError::bad(
                "bad_chunk_size",
                format!("chunk_size must be 1 to {} bytes", l.max_chunk_bytes),
            ));
        }
        envelope::check(&req.meta.ciphertext, &req.meta.key_uri, &space.kms_domain, l.max_ciphertext_bytes)?;
        let f = FileRecord {
            id: uuid::Uuid::new_v4().to_string(),
            space_id: id.into(),
            uploader: c.user_id.clone(),
            size: req.size,
            chunk_size: req.chunk_size,
            meta_ciphertext: req.meta.ciphertext,
            key_uri: req.meta.key_uri,
            ready: false,
            create_date: now_ms(),
        };
        self.store.create_file(&f).await?;
        Ok(f)
    }

    async fn file_as(&self, c: &Caller, file_id: &str) -> Result<(FileRecord, Role), ApiError> {
        check_id(file_id, "file")?;
        let f = self.store.file(file_id).await?.ok_or_else(|| ApiError::not_found("file"))?;
        let (_, role) = self.access(&f.space_id, &c.user_id).await?.ok_or_else(|| ApiError::not_found("file"))?;
        Ok((f, role))
    }

    /// Stores a file's sealed preview: by one of the org's preview services, a member of the file's space.
    pub async fn put_preview(&self, c: &Caller, file_id: &str, sealed: Sealed) -> Result<(), ApiError> {
        let (f, _) = self.file_as(c, file_id).await?;
        let space = self.store.get_space(&f.space_id).await?.ok_or_else(|| ApiError::not_found("file"))?;
        let kms = KmsUri::parse_absolute(&space.resource_uri).map(|u| u.domain().to_string()).unwrap_or_default();
        let allowed = self.cfg.org_of(&c.user_id).is_some_and(|o| {
            o.preview_services.contains(&c.user_id) && o.kms_uri.strip_prefix("kms://") == Some(kms.as_str())
        });
        if !allowed {
            return Err(ApiError::forbidden("not_preview_service", "only the org's preview services store previews"));
        }
        if !f.ready {
            return Err(ApiError::conflict("not_ready", "the file is not complete yet"));
        }
        envelope::check(&sealed.ciphertext, &sealed.key_uri, &kms, MAX_PREVIEW)?;
        let p = core_store::Preview {
            file_id: f.id.clone(),
            ciphertext: sealed.ciphertext,
            key_uri: sealed.key_uri,
            creator: c.user_id.clone(),
            create_date: now_ms(),
        };
        self.store.put_preview(&p).await?;
        Ok(())
    }

    /// A file's preview (for members of its space).
    pub async fn preview(&self, c: &Caller, file_id: &str) -> Result<core_store::Preview, ApiError> {
        let (f, _) = self.file_as(c, file_id).await?;
        self.store.preview(&f.id).await?.ok_or_else(|| ApiError::not_found("preview"))
    }

    fn blob(file_id: &str, index: i64) -> BlobPath {
        BlobPath::from(format!("files/{file_id}/{index:08}"))
    }

    /// Stores chunk `index` (uploader only; exact size; idempotent).
    pub async fn put_chunk(&self, c: &Caller, file_id: &str, index: i64, bytes: bytes::Bytes) -> Result<(), ApiError> {
        let (f, _) = self.file_as(c, file_id).await?;
        if f.uploader != c.user_id {
            return Err(ApiError::forbidden("not_uploader", "only the uploader adds chunks"));
        }
        if f.ready {
            return Err(ApiError::conflict("file_complete", "the upload is complete"));
        }
        let n = f.chunk_count();
        if index < 0 || index >= n {
            return Err(ApiError::bad("bad_chunk_index", format!("chunk index must be 0 to {}", n - 1)));
        }
        let expected = if index == n - 1 { f.size - f.chunk_size * (n - 1) } else { f.chunk_size };
        if bytes.len() as i64 != expected {
            return Err(ApiError::bad("bad_chunk_size", format!("chunk {index} must be exactly {expected} bytes")));
        }
        self.blobs.put(&Self::blob(file_id, index), PutPayload::from_bytes(bytes)).await.map_err(ApiError::internal)?;
        self.store.put_chunk(file_id, index, expected).await?;
        Ok(())
    }

    /// The chunks stored so far (to resume).
    pub async fn chunks(&self, c: &Caller, file_id: &str) -> Result<(FileRecord, Vec<i64>), ApiError> {
        let (f, _) = self.file_as(c, file_id).await?;
        let chunks = self.store.chunks(file_id).await?;
        Ok((f, chunks))
    }

    /// Completes an upload: every chunk must be there.
    pub async fn complete_file(&self, c: &Caller, file_id: &str) -> Result<Event, ApiError> {
        let (f, _) = self.file_as(c, file_id).await?;
        if f.uploader != c.user_id {
            return Err(ApiError::forbidden("not_uploader", "only the uploader completes an upload"));
        }
        let e = self
            .store
            .complete_file(file_id, &uuid::Uuid::new_v4().to_string(), now_ms())
            .await?
            .ok_or_else(|| ApiError::conflict("chunks_missing", "some chunks have not been uploaded"))?;
        self.publish(&e).await;
        Ok(e)
    }

    /// One chunk of a ready file (members only).
    pub async fn get_chunk(&self, c: &Caller, file_id: &str, index: i64) -> Result<bytes::Bytes, ApiError> {
        let (f, _) = self.file_as(c, file_id).await?;
        self.read_chunk(&f, index).await
    }

    /// One chunk of a ready file, for a caller already allowed to read it.
    pub(crate) async fn read_chunk(&self, f: &FileRecord, index: i64) -> Result<bytes::Bytes, ApiError> {
        let file_id = f.id.as_str();
        if !f.ready {
            return Err(ApiError::conflict("file_incomplete", "the upload is not complete"));
        }
        if index < 0 || index >= f.chunk_count() {
            return Err(ApiError::not_found("chunk"));
        }
        let r = self.blobs.get(&Self::blob(file_id, index)).await.map_err(ApiError::internal)?;
        r.bytes().await.map_err(ApiError::internal)
    }
}

/// Most tokens one message may be indexed under (the `search` crate's cap).
pub const MAX_INDEX_TOKENS: usize = 2048;
/// Most tokens in one query.
pub const MAX_QUERY_TOKENS: usize = 64;
/// Most messages one `POST /v1/spaces/{id}/index` indexes.
pub const MAX_INDEX_BATCH: usize = 200;

/// `PUT /v1/spaces/{id}/events/{event}/index`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexEvent {
    /// The content key whose search key made the tokens (`kms://…/keys/…`).
    pub key_uri: String,
    /// Blinded tokens (16 bytes each, base64url); the core cannot invert them.
    pub tokens: Vec<String>,
}

/// `POST /v1/spaces/{id}/index`: several messages' tokens at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexEvents {
    /// 1 to 200 messages; all are stored, or none.
    pub items: Vec<IndexItem>,
}

/// One message of an [`IndexEvents`] batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexItem {
    /// The event id.
    pub event: String,
    /// The content key whose search key made the tokens (`kms://…/keys/…`).
    pub key_uri: String,
    /// Blinded tokens (16 bytes each, base64url).
    pub tokens: Vec<String>,
}

/// One query under one key version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// The key version.
    pub key_uri: String,
    /// Every one of these tokens must be in a result's postings.
    pub tokens: Vec<String>,
}

/// `POST /v1/spaces/{id}/search`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// One query per key version (results are their union).
    pub queries: Vec<KeyQuery>,
    /// Only events below this sequence number (paging).
    #[serde(default)]
    pub before: Option<i64>,
    /// At most this many (default 50, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
}

fn decode_tokens(list: &[String], max: usize) -> Result<Vec<[u8; 16]>, ApiError> {
    if list.len() > max {
        return Err(ApiError::bad("too_many_tokens", format!("at most {max} tokens")));
    }
    list.iter()
        .map(|t| {
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| ApiError::bad("bad_token", "tokens are base64url (no padding)"))?;
            <[u8; 16]>::try_from(b.as_slice()).map_err(|_| ApiError::bad("bad_token", "tokens are 16 bytes"))
        })
        .collect()
}

/// Largest sealed preview (a thumbnail of at most 256 pixels a side, or an excerpt).
pub const MAX_PREVIEW: usize = 256 * 1024;
