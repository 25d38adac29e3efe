//! The JSON bodies the HTTP API answers with, each with its OpenAPI schema.
//!
//! These are the wire format the SDK, the CLI and browsers read, so they are
//! types of their own rather than the store's: a change to storage must not
//! change the API unnoticed. Each converts from what the engine returns. The
//! WebSocket and webhook frames still serialize the store's [`core_store::Event`];
//! a test below checks that it and [`Event`] serialize alike.
//!
//! `#[serde(deny_unknown_fields)]` does nothing when serializing; it is
//! there so that the schemas say `additionalProperties: false`, and the
//! OpenAPI test (`tests/openapi.rs`) notices a field the schema lacks.
//! Likewise `#[schema(required = true)]` on options: they are sent as
//! `null`, never left out.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service::SpaceView;

/// A member's role in a space.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also adds and removes members, deletes others' messages, sets the title.
    Moderator,
}

impl From<core_store::Role> for Role {
    fn from(r: core_store::Role) -> Self {
        match r {
            core_store::Role::Member => Role::Member,
            core_store::Role::Moderator => Role::Moderator,
        }
    }
}

/// What kind of change an event is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new message (a reply when it has a `parent`).
    Message,
    /// A new version of the message `target`.
    Edit,
    /// Hides the message `target` (no ciphertext).
    Delete,
    /// A reaction to the message `target`.
    Reaction,
    /// `subject` became a member (`meta`: their role).
    MemberAdded,
    /// `subject` is no longer a member.
    MemberRemoved,
    /// The space's title changed.
    Title,
    /// The file `target` finished uploading.
    FileReady,
}

impl From<core_store::EventKind> for EventKind {
    fn from(k: core_store::EventKind) -> Self {
        use core_store::EventKind as K;
        match k {
            K::Message => EventKind::Message,
            K::Edit => EventKind::Edit,
            K::Delete => EventKind::Delete,
            K::Reaction => EventKind::Reaction,
            K::MemberAdded => EventKind::MemberAdded,
            K::MemberRemoved => EventKind::MemberRemoved,
            K::Title => EventKind::Title,
            K::FileReady => EventKind::FileReady,
        }
    }
}

/// A space. Times are Unix milliseconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Space {
    /// A UUID.
    pub id: String,
    /// The KMS resource (`kms://…/resources/<id>`) whose keys encrypt its content.
    pub resource_uri: String,
    /// The org that created it (and owns its KMS resource).
    pub org: String,
    /// The title, as a compact JWE, if one was set.
    #[schema(required = true)]
    pub title: Option<String>,
    /// Who created it (`name@org`).
    pub creator: String,
    /// When it was created.
    pub create_date: i64,
    /// The sequence number of its latest event.
    pub last_seq: i64,
}

impl From<core_store::Space> for Space {
    fn from(s: core_store::Space) -> Self {
        let core_store::Space { id, resource_uri, org, title, creator, create_date, last_seq } = s;
        Space { id, resource_uri, org, title, creator, create_date, last_seq }
    }
}

/// A membership of a space.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The space's id.
    pub space_id: String,
    /// The member (`name@org`).
    pub user_id: String,
    /// What they may do.
    pub role: Role,
    /// The moderator who added them (the creator, for the creator).
    pub added_by: String,
    /// When (Unix milliseconds).
    pub added_at: i64,
}

impl From<core_store::Membership> for Membership {
    fn from(m: core_store::Membership) -> Self {
        let core_store::Membership { space_id, user_id, role, added_by, added_at } = m;
        Membership { space_id, user_id, role: role.into(), added_by, added_at }
    }
}

/// Where one member's read marker stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadMarker {
    /// The member.
    pub user_id: String,
    /// The last sequence number they read.
    pub seq: i64,
}

impl From<core_store::ReadMarker> for ReadMarker {
    fn from(m: core_store::ReadMarker) -> Self {
        ReadMarker { user_id: m.user_id, seq: m.seq }
    }
}

/// An event of a space: ciphertext and the routing fields the core needs.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The space's id.
    pub space_id: String,
    /// Its place in the space's stream: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// A UUID the core chose.
    pub id: String,
    /// The sender's own id for the post, if they gave one (retries are stored once).
    #[schema(required = true)]
    pub client_event_id: Option<String>,
    /// What kind of change it is.
    pub kind: EventKind,
    /// Who caused it (`name@org`).
    pub sender: String,
    /// The message it replies to.
    #[schema(required = true)]
    pub parent: Option<String>,
    /// The message an edit, deletion or reaction acts on; the file of `file_ready`.
    #[schema(required = true)]
    pub target: Option<String>,
    /// Whose membership changed.
    #[schema(required = true)]
    pub subject: Option<String>,
    /// Compact JWE (`dir`, `A256GCM`) under `key_uri`; absent for deletions and membership events.
    #[schema(required = true)]
    pub ciphertext: Option<String>,
    /// The KMS key of `ciphertext`.
    #[schema(required = true)]
    pub key_uri: Option<String>,
    /// What the core itself needs to know (a role, a file size), as JSON text.
    #[schema(required = true)]
    pub meta: Option<String>,
    /// When the core stored it (Unix milliseconds).
    pub create_date: i64,
}

impl From<core_store::Event> for Event {
    fn from(e: core_store::Event) -> Self {
        let core_store::Event {
            space_id,
            seq,
            id,
            client_event_id,
            kind,
            sender,
            parent,
            target,
            subject,
            ciphertext,
            key_uri,
            meta,
            create_date,
        } = e;
        Event {
            space_id,
            seq,
            id,
            client_event_id,
            kind: kind.into(),
            sender,
            parent,
            target,
            subject,
            ciphertext,
            key_uri,
            meta,
            create_date,
        }
    }
}

/// A file upload.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// A UUID the core chose.
    pub id: String,
    /// The space it was shared in.
    pub space_id: String,
    /// Who uploads it; only they add chunks and complete it.
    pub uploader: String,
    /// Total ciphertext size in bytes.
    pub size: i64,
    /// Every chunk but the last has exactly this many bytes.
    pub chunk_size: i64,
    /// Its metadata (name, type, file key, hash) as a compact JWE.
    pub meta_ciphertext: String,
    /// The KMS key of `meta_ciphertext`.
    pub key_uri: String,
    /// Whether every chunk arrived and the upload was completed.
    pub ready: bool,
    /// When the upload started (Unix milliseconds).
    pub create_date: i64,
}

impl From<core_store::FileRecord> for FileRecord {
    fn from(f: core_store::FileRecord) -> Self {
        let core_store::FileRecord {
            id,
            space_id,
            uploader,
            size,
            chunk_size,
            meta_ciphertext,
            key_uri,
            ready,
            create_date,
        } = f;
        FileRecord { id, space_id, uploader, size, chunk_size, meta_ciphertext, key_uri, ready, create_date }
    }
}

/// One of the caller's spaces.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpaceSummary {
    /// Its routing metadata and sealed title.
    pub space: Space,
    /// The caller's role in it.
    pub role: Role,
    /// The caller's read marker (0 when none is set).
    pub read_seq: i64,
}

impl From<core_store::SpaceSummary> for SpaceSummary {
    fn from(s: core_store::SpaceSummary) -> Self {
        SpaceSummary { space: s.space.into(), role: s.role.into(), read_seq: s.read_seq }
    }
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok`: an answer at all means the core serves.
    pub status: &'static str,
}

/// `GET /v1/me`: who the token says the caller is.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Me {
    /// `name@org`.
    pub user_id: String,
    /// The caller's org as this core serves it.
    #[schema(required = true)]
    pub org: Option<MyOrg>,
}

/// The caller's org.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyOrg {
    /// Its domain: user ids are `name@<domain>`.
    pub domain: String,
    /// Its KMS (`kms://<domain>`), which holds the keys of its spaces.
    pub kms_uri: String,
}

/// `GET /v1/spaces`: the caller's spaces, most recently active first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Spaces {
    /// With the caller's role and read marker in each.
    pub spaces: Vec<SpaceSummary>,
}

/// `GET /v1/spaces/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpaceDetail {
    /// Its routing metadata and sealed title.
    pub space: Space,
    /// The caller's role in it.
    pub role: Role,
    /// Its current members.
    pub members: Vec<Membership>,
    /// The read markers of the current members who set one.
    pub read_markers: Vec<ReadMarker>,
}

impl From<SpaceView> for SpaceDetail {
    fn from(v: SpaceView) -> Self {
        SpaceDetail {
            space: v.space.into(),
            role: v.role.into(),
            members: v.members.into_iter().map(Into::into).collect(),
            read_markers: v.read_markers.into_iter().map(Into::into).collect(),
        }
    }
}

/// `POST /v1/spaces/{id}/members`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddedMember {
    /// The `member_added` event; null when the user already was a member with that role.
    #[schema(required = true)]
    pub event: Option<Event>,
}

/// `DELETE /v1/spaces/{id}/members/{user}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemovedMember {
    /// The `member_removed` event.
    pub event: Event,
}

/// A list of events: a page of a space's stream, or search results.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// Oldest first when paging with `after`, newest first with `before` and in search results.
    pub events: Vec<Event>,
}

impl From<Vec<core_store::Event>> for Events {
    fn from(events: Vec<core_store::Event>) -> Self {
        Events { events: events.into_iter().map(Into::into).collect() }
    }
}

/// `PUT /v1/spaces/{id}/read-marker`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkerInForce {
    /// The caller's read marker now: the one given, or a later one set before (it never moves back).
    pub seq: i64,
}

/// `GET /v1/files/{id}/preview`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preview {
    /// The thumbnail or excerpt as a compact JWE.
    pub ciphertext: String,
    /// Its key, of the file's space.
    pub key_uri: String,
    /// The preview service that stored it.
    pub creator: String,
    /// When (Unix milliseconds).
    pub create_date: i64,
}

impl From<core_store::Preview> for Preview {
    fn from(p: core_store::Preview) -> Self {
        Preview { ciphertext: p.ciphertext, key_uri: p.key_uri, creator: p.creator, create_date: p.create_date }
    }
}

/// `POST /v1/spaces/{id}/index`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Indexed {
    /// How many messages' tokens were stored.
    pub indexed: usize,
}

/// `GET /v1/spaces/{id}/search/keys`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchKeys {
    /// The key versions the space's search tokens are under: query each.
    pub keys: Vec<SearchKey>,
}

/// One key version of a space's search tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchKey {
    /// The content key whose search key made the tokens.
    pub key_uri: String,
    /// How many messages are indexed under it.
    pub events: i64,
}

/// `PUT /v1/webhook`. Not `Debug`-printable with its secret.
#[derive(Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRegistered {
    /// Where the core POSTs the caller's spaces' events.
    pub url: String,
    /// When it was registered (Unix milliseconds).
    pub created: i64,
    /// The signing secret of its requests, shown only here.
    pub secret: String,
}

impl std::fmt::Debug for WebhookRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRegistered").field("url", &self.url).field("created", &self.created).finish()
    }
}

/// `GET /v1/webhook` (never the secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where the core POSTs the caller's spaces' events.
    pub url: String,
    /// When it was registered (Unix milliseconds).
    pub created: i64,
}

/// `GET /v1/files/{id}/chunks`: what an interrupted upload has so far.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Chunks {
    /// The file.
    pub file: String,
    /// How many chunks it has in all.
    pub chunk_count: i64,
    /// The indexes of those stored, ascending.
    pub stored: Vec<i64>,
}

/// `GET /v1/compliance/spaces/{id}`: a space as a compliance reader sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceSpace {
    /// The space (its title is ciphertext).
    pub space: Space,
    /// Its current members.
    pub members: Vec<Membership>,
    /// Users who were members and are no longer.
    pub former_members: Vec<String>,
}

impl From<crate::compliance::ComplianceSpace> for ComplianceSpace {
    fn from(c: crate::compliance::ComplianceSpace) -> Self {
        ComplianceSpace {
            space: c.space.into(),
            members: c.members.into_iter().map(Into::into).collect(),
            former_members: c.former_members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::to_value;

    fn event(kind: core_store::EventKind) -> core_store::Event {
        let s = |v: &str| Some(v.to_string());
        core_store::Event {
            space_id: "s".into(),
            seq: 7,
            id: "e".into(),
            client_event_id: s("c"),
            kind,
            sender: "bob@acme.example".into(),
            parent: s("p"),
            target: s("t"),
            subject: s("carol@acme.example"),
            ciphertext: s("x.y.z.w.v"),
            key_uri: s("kms://k/keys/1"),
            meta: s("{}"),
            create_date: 1,
        }
    }

    /// The wire types serialize as the store's did: the socket and webhook
    /// frames (which use the store's types) and the HTTP answers agree.
    #[test]
    fn the_same_json_as_the_stores_types() {
        use core_store::EventKind as K;
        for k in [K::Message, K::Edit, K::Delete, K::Reaction, K::MemberAdded, K::MemberRemoved, K::Title, K::FileReady]
        {
            let e = event(k);
            assert_eq!(to_value(Event::from(e.clone())).unwrap(), to_value(&e).unwrap());
        }
        let mut e = event(K::Delete);
        (e.client_event_id, e.parent, e.target, e.subject, e.ciphertext, e.key_uri, e.meta) =
            (None, None, None, None, None, None, None);
        assert_eq!(to_value(Event::from(e.clone())).unwrap(), to_value(&e).unwrap(), "nulls stay");

        let space = core_store::Space {
            id: "s".into(),
            resource_uri: "kms://k/resources/r".into(),
            org: "acme.example".into(),
            title: None,
            creator: "bob@acme.example".into(),
            create_date: 1,
            last_seq: 2,
        };
        for role in [core_store::Role::Member, core_store::Role::Moderator] {
            let s = core_store::SpaceSummary { space: space.clone(), role, read_seq: 3 };
            assert_eq!(to_value(SpaceSummary::from(s.clone())).unwrap(), to_value(&s).unwrap());
            let m = core_store::Membership {
                space_id: "s".into(),
                user_id: "u".into(),
                role,
                added_by: "a".into(),
                added_at: 4,
            };
            assert_eq!(to_value(Membership::from(m.clone())).unwrap(), to_value(&m).unwrap());
        }
        let m = core_store::ReadMarker { user_id: "u".into(), seq: 5 };
        assert_eq!(to_value(ReadMarker::from(m.clone())).unwrap(), to_value(&m).unwrap());
        let f = core_store::FileRecord {
            id: "f".into(),
            space_id: "s".into(),
            uploader: "u".into(),
            size: 10,
            chunk_size: 4,
            meta_ciphertext: "m".into(),
            key_uri: "k".into(),
            ready: true,
            create_date: 6,
        };
        assert_eq!(to_value(FileRecord::from(f.clone())).unwrap(), to_value(&f).unwrap());
    }

    #[test]
    fn the_webhook_secret_does_not_print() {
        let w = WebhookRegistered { url: "https://bot.example/hook".into(), created: 1, secret: "s3cr3t".into() };
        assert!(!format!("{w:?}").contains("s3cr3t"));
    }
}
