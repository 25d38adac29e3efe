//! # core-store: what the messaging core keeps
//!
//! The core is the cloud provider's server: it stores and relays ciphertext
//! and the little metadata it needs to route it (ids, memberships, sequence
//! numbers, sizes). Everything a person typed or uploaded arrives here already
//! encrypted: message bodies, space titles, reactions, file metadata are
//! compact JWE strings the store keeps verbatim and never looks into.
//!
//! One [`Store`] trait, SQLite (the embedded default) and PostgreSQL behind
//! it, one conformance suite run against both. Times are Unix milliseconds.
//!
//! Every change to a space is an [`Event`] with the next per-space sequence
//! number: messages, edits, deletions (tombstones), reactions, membership
//! changes, title changes, files becoming ready. History is paged and sync is
//! incremental by sequence number. Read markers are per user and space.
//!
//! ## Opening
//!
//! [`open`] picks the backend from the URL and brings the schema up to date
//! (idempotent, embedded DDL; safe when several nodes start at once):
//!
//! - `sqlite://PATH` (or `sqlite:PATH`): the file is created if missing; WAL,
//!   `synchronous=FULL`, foreign keys on, 5 s busy timeout. `sqlite::memory:`
//!   gives a private in-memory database (tests only).
//! - `postgres://…` / `postgresql://…`: tables (prefixed `core_`) in the
//!   default schema. [`open_postgres_schema`] puts them in a named schema
//!   instead (created if missing); [`drop_postgres_schema`] removes one.
//!
//! ## One implementation
//!
//! Both backends run the same SQL through `sqlx::Any` ([`SqlStore`]). Every
//! change to a space takes the next sequence number with `UPDATE … SET
//! last_seq = last_seq + 1 … RETURNING last_seq` in the transaction that
//! writes the event, which also serializes the space's writers across
//! processes; changes that turn out to be no-ops (a retried post, re-adding a
//! member with the same role) roll back and consume no sequence number.
//! Writes return only after their transaction committed (SQLite: WAL with
//! `synchronous=FULL`).
//!
//! ## Group commit
//!
//! [`Store::append`] (the hot path: every message) does not get a
//! transaction of its own: a writer task per handle puts every append
//! queued while the previous commit was flushing into one transaction, with
//! the same numbering, idempotency and durability (see the `batch` module).
//! A commit costs the same flush whether it carries one event or a hundred.
//!
//! ## Commit listener
//!
//! [`Store::set_commit_listener`] registers a function told of every event
//! this handle commits, right after the commit and before the write returns.
//! The core uses it to fan out frames it has just serialized instead of
//! having every socket read the event back.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod batch;
mod open;
mod schema;
mod sql;

pub use open::{drop_postgres_schema, open, open_postgres_schema};
pub use sql::SqlStore;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Told of the events a store handle committed: called right after each
/// commit, before the write that made them returns, with the events of that
/// commit ordered by space and sequence number. For one space, calls come in
/// sequence order (the handle's event-appending writes take turns), but a
/// listener still sees gaps: events other handles (other nodes) appended.
/// It runs on the writer's path: keep it short, never block.
pub type CommitListener = std::sync::Arc<dyn Fn(&[Event]) + Send + Sync>;

/// Where one member's read marker stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMarker {
    /// The member.
    pub user_id: String,
    /// The last sequence number they read.
    pub seq: i64,
}

/// A member's role in a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also adds and removes members and deletes others' messages.
    Moderator,
}

impl Role {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Role::Member),
            "moderator" => Some(Role::Moderator),
            _ => None,
        }
    }
}

/// A space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Id (UUID).
    pub id: String,
    /// The KMS resource (`kms://…/resources/<id>`) whose keys encrypt it.
    pub resource_uri: String,
    /// The org that created it (owns its KMS resource).
    pub org: String,
    /// Title, as ciphertext (compact JWE), if any.
    pub title: Option<String>,
    /// Creator's user id.
    pub creator: String,
    /// Created.
    pub create_date: Millis,
    /// The last sequence number used.
    pub last_seq: i64,
}

/// A membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The space.
    pub space_id: String,
    /// The member's user id (`name@org`).
    pub user_id: String,
    /// Role.
    pub role: Role,
    /// Who added them.
    pub added_by: String,
    /// When.
    pub added_at: Millis,
}

/// What kind of change an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new message (optionally a reply: `parent`).
    Message,
    /// A new version of `target`.
    Edit,
    /// A tombstone for `target` (no ciphertext).
    Delete,
    /// A reaction to `target` (ciphertext).
    Reaction,
    /// `subject` became a member (payload: role).
    MemberAdded,
    /// `subject` is no longer a member.
    MemberRemoved,
    /// The title changed (ciphertext).
    Title,
    /// File `target` finished uploading.
    FileReady,
}

impl EventKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Edit => "edit",
            EventKind::Delete => "delete",
            EventKind::Reaction => "reaction",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::Title => "title",
            EventKind::FileReady => "file_ready",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "message" => EventKind::Message,
            "edit" => EventKind::Edit,
            "delete" => EventKind::Delete,
            "reaction" => EventKind::Reaction,
            "member_added" => EventKind::MemberAdded,
            "member_removed" => EventKind::MemberRemoved,
            "title" => EventKind::Title,
            "file_ready" => EventKind::FileReady,
            _ => return None,
        })
    }
}

/// An event to append; the store assigns `seq` and `create_date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event id (UUID), chosen by the server.
    pub id: String,
    /// The sender's own id for this post (idempotency: a retried post with the
    /// same `(space, sender, client_event_id)` returns the first event).
    pub client_event_id: Option<String>,
    /// Kind.
    pub kind: EventKind,
    /// Who caused it.
    pub sender: String,
    /// Thread parent (a message event id), for replies.
    pub parent: Option<String>,
    /// The event it acts on (edit, delete, reaction, file ready).
    pub target: Option<String>,
    /// The member concerned (membership events).
    pub subject: Option<String>,
    /// Compact JWE (messages, edits, reactions, titles); never plaintext.
    pub ciphertext: Option<String>,
    /// The KMS key URI the ciphertext is under.
    pub key_uri: Option<String>,
    /// Small routing metadata the core itself needs (e.g. a role, a file size), as JSON.
    pub meta: Option<String>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The space.
    pub space_id: String,
    /// Sequence number in the space (1, 2, 3, … without gaps).
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// The sender's own id for the post, if given.
    pub client_event_id: Option<String>,
    /// Kind.
    pub kind: EventKind,
    /// Who caused it.
    pub sender: String,
    /// Thread parent.
    pub parent: Option<String>,
    /// The event it acts on.
    pub target: Option<String>,
    /// The member concerned.
    pub subject: Option<String>,
    /// Ciphertext.
    pub ciphertext: Option<String>,
    /// Key URI.
    pub key_uri: Option<String>,
    /// Routing metadata (JSON).
    pub meta: Option<String>,
    /// When the core stored it.
    pub create_date: Millis,
}

/// The outcome of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now.
    New(Event),
    /// The same `(sender, client_event_id)` was stored before: that event, unchanged.
    Duplicate(Event),
}

/// A file upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Id (UUID).
    pub id: String,
    /// The space it belongs to.
    pub space_id: String,
    /// Who uploads it.
    pub uploader: String,
    /// Total ciphertext size in bytes, declared up front.
    pub size: i64,
    /// Chunk size in bytes (every chunk but the last has exactly this size).
    pub chunk_size: i64,
    /// Encrypted metadata (name, type, file key…), compact JWE.
    pub meta_ciphertext: String,
    /// Key URI of `meta_ciphertext`.
    pub key_uri: String,
    /// Whether every chunk has arrived and the upload was completed
    /// ([`Store::complete_file`]); ignored by [`Store::create_file`].
    pub ready: bool,
    /// Created.
    pub create_date: Millis,
}

impl FileRecord {
    /// How many chunks the file has.
    pub fn chunk_count(&self) -> i64 {
        if self.size == 0 {
            0
        } else {
            // ⌈size / chunk_size⌉ without overflowing near i64::MAX.
            (self.size - 1) / self.chunk_size + 1
        }
    }
}

/// A space as one user sees it in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceSummary {
    /// The space.
    pub space: Space,
    /// The user's role.
    pub role: Role,
    /// The user's read marker (0 when none).
    pub read_seq: i64,
}

/// One event's postings, for [`Store::set_postings_batch`].
#[derive(Debug, Clone, Copy)]
pub struct PostingSet<'a> {
    /// The space.
    pub space_id: &'a str,
    /// The event's seq in the space.
    pub seq: i64,
    /// The search key the tokens are under.
    pub key_uri: &'a str,
    /// Blinded tokens, 16 bytes each (duplicates are stored once).
    pub tokens: &'a [[u8; 16]],
}

/// A file's preview (a thumbnail or a text excerpt), sealed under a key of the file's space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The file.
    pub file_id: String,
    /// Compact JWE; never plaintext.
    pub ciphertext: String,
    /// Its key's URI.
    pub key_uri: String,
    /// Who made it (the org's preview service).
    pub creator: String,
    /// When.
    pub create_date: Millis,
}

/// Where the core POSTs the events of a user's spaces (a bot's webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Whose spaces (the bot's user id).
    pub user_id: String,
    /// The HTTPS endpoint.
    pub url: String,
    /// When it was (last) registered; part of its signing secret's derivation.
    pub create_date: Millis,
}

/// Errors: the database failed or holds something unreadable, or a request
/// names something missing or taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(String),
    /// A URL this crate does not know, or a bad schema name.
    #[error("{0}")]
    Config(String),
    /// A row that does not decode.
    #[error("corrupt row in {0}")]
    Corrupt(&'static str),
    /// A unique id was already taken (e.g. a space id).
    #[error("{0} already exists")]
    Exists(&'static str),
    /// A referenced object does not exist.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// An argument the store refuses (a chunk index out of range, a chunk of
    /// the wrong size, a non-positive chunk size).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The commit of the transaction carrying this append (shared with other
    /// appends: group commit) failed, or the writer stopped: it may or may
    /// not be stored. Retrying with the same `client_event_id` is safe.
    #[error("commit failed; the outcome is unknown: {0}")]
    CommitFailed(String),
}

impl StoreError {
    /// The shared plumbing's error as this crate's: an unsupported URL is a
    /// `Config` error here, with the same message.
    pub(crate) fn from_shared(e: sqlstore::Error) -> StoreError {
        match e {
            sqlstore::Error::Database(e) => StoreError::Database(e),
            sqlstore::Error::Migration(m) => StoreError::Migration(m),
            e @ sqlstore::Error::UnsupportedUrl => StoreError::Config(e.to_string()),
            sqlstore::Error::Corrupt(table) => StoreError::Corrupt(table),
            sqlstore::Error::Config(m) => StoreError::Config(m),
        }
    }
}

/// Every store operation fails with a [`StoreError`] unless told otherwise.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything the core keeps. All methods are atomic; writes are durable on return.
///
/// Every method that appends an event answers `Exists("event")`, writing
/// nothing, if the event id is already taken in the space.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;

    /// Records that a user was seen (keeps the earliest and latest times given).
    async fn touch_user(&self, user_id: &str, now: Millis) -> Result<()>;

    // ---- spaces and memberships

    /// Creates a space with its creator as moderator, and the `MemberAdded`
    /// event for the creator (seq 1; sender and subject the creator, meta
    /// `{"role":"moderator"}`, dated `create_date`), atomically.
    /// `Exists("space")` if the id or the resource URI is taken.
    /// `space.last_seq` is ignored (a new space's is 1).
    async fn create_space(&self, space: &Space, event_id: &str) -> Result<Event>;
    /// One space.
    async fn get_space(&self, id: &str) -> Result<Option<Space>>;
    /// The spaces a user is a member of, newest activity first (the latest
    /// `now` of any change to the space; ties by id).
    async fn spaces_of(&self, user_id: &str) -> Result<Vec<SpaceSummary>>;
    /// A user's role in a space, if a member.
    async fn role(&self, space_id: &str, user_id: &str) -> Result<Option<Role>>;
    /// A space's members, in the order they were added (ties by user id).
    async fn members(&self, space_id: &str) -> Result<Vec<Membership>>;
    /// Everyone who is or ever was a member of a space (the subjects of its
    /// `MemberAdded` events), by user id, each once. Empty for an unknown space.
    async fn member_history(&self, space_id: &str) -> Result<Vec<String>>;
    /// Adds (or changes the role of) a member and appends the `MemberAdded`
    /// event (sender `added_by`, subject the member, meta `{"role":"…"}`, dated
    /// `added_at`), atomically. Adding an existing member with the same role
    /// appends nothing and returns `None`; a role change keeps the original
    /// `added_by` and `added_at` on the membership. `NotFound("space")` if
    /// there is no such space.
    async fn add_member(&self, m: &Membership, event_id: &str) -> Result<Option<Event>>;
    /// Removes a member and appends the `MemberRemoved` event (sender `by`,
    /// subject the member), atomically; `None` if not a member.
    /// `NotFound("space")` if there is no such space.
    async fn remove_member(
        &self,
        space_id: &str,
        user_id: &str,
        by: &str,
        event_id: &str,
        now: Millis,
    ) -> Result<Option<Event>>;

    // ---- events

    /// Appends an event with the next seq (no gaps, no duplicates, even under
    /// concurrent appends from several nodes). Idempotent on
    /// `(space, sender, client_event_id)`: a retry returns `Duplicate` with the
    /// first event and consumes no seq. A `Title` event also sets the space's
    /// title to its ciphertext; other kinds are stored as given (membership
    /// and file events belong to [`Store::add_member`],
    /// [`Store::remove_member`] and [`Store::complete_file`], which keep the
    /// state they describe in step). `NotFound("space")` if there is no such space;
    /// `Exists("event")` if the event id is taken in the space.
    async fn append(&self, space_id: &str, e: &NewEvent, now: Millis) -> Result<Appended>;
    /// Events with `seq > after`, ascending, at most `limit`.
    async fn events_after(&self, space_id: &str, after: i64, limit: u32) -> Result<Vec<Event>>;
    /// Events with `seq < before`, descending (history pages), at most `limit`.
    async fn events_before(&self, space_id: &str, before: i64, limit: u32) -> Result<Vec<Event>>;
    /// One event by id.
    async fn event(&self, space_id: &str, id: &str) -> Result<Option<Event>>;

    // ---- read markers

    /// Moves a user's read marker forward (never back; a seq beyond the
    /// space's last is taken as the last); returns the marker in force.
    /// `NotFound("space")` if there is no such space.
    async fn set_read_marker(&self, space_id: &str, user_id: &str, seq: i64, now: Millis) -> Result<i64>;
    /// A user's read marker (0 when none).
    async fn read_marker(&self, space_id: &str, user_id: &str) -> Result<i64>;
    /// Every read marker of a space (members' and former members'), by user id.
    async fn read_markers(&self, space_id: &str) -> Result<Vec<ReadMarker>>;

    // ---- files (metadata; the bytes live in the blob store)

    // ---- previews

    /// Stores (or replaces) a file's preview.
    async fn put_preview(&self, p: &Preview) -> Result<()>;
    /// A file's preview, if any.
    async fn preview(&self, file_id: &str) -> Result<Option<Preview>>;

    // ---- search postings (blinded tokens; see the `search` crate)

    /// Replaces the postings of event `seq` with `tokens` (16 bytes each), under `key_uri`.
    async fn set_postings(&self, space_id: &str, seq: i64, key_uri: &str, tokens: &[[u8; 16]]) -> Result<()> {
        self.set_postings_batch(&[PostingSet { space_id, seq, key_uri, tokens }]).await
    }
    /// Replaces the postings of several events in one transaction: all of
    /// them or, on error, none. Backfills use it (one commit per batch, not
    /// per event). An event named twice keeps the later set.
    async fn set_postings_batch(&self, sets: &[PostingSet<'_>]) -> Result<()>;
    /// Events of the space (newest first, below `before`, at most `limit`) whose
    /// postings under `key_uri` hold every one of `tokens`.
    async fn search_postings(
        &self,
        space_id: &str,
        key_uri: &str,
        tokens: &[[u8; 16]],
        before: i64,
        limit: u32,
    ) -> Result<Vec<i64>>;
    /// The key URIs the space's postings are under, with how many events each.
    async fn posting_keys(&self, space_id: &str) -> Result<Vec<(String, i64)>>;

    // ---- webhooks

    /// Registers (or replaces) `w.user_id`'s webhook; a replaced one's delivery positions are forgotten.
    async fn set_webhook(&self, w: &Webhook) -> Result<()>;
    /// Removes a user's webhook and its delivery positions; whether there was one.
    async fn delete_webhook(&self, user_id: &str) -> Result<bool>;
    /// Every webhook.
    async fn webhooks(&self) -> Result<Vec<Webhook>>;
    /// The last seq of `space_id` delivered to `user_id`'s webhook, if any.
    async fn webhook_cursor(&self, user_id: &str, space_id: &str) -> Result<Option<i64>>;
    /// Records a delivery position; a position never moves back.
    async fn set_webhook_cursor(&self, user_id: &str, space_id: &str, seq: i64) -> Result<()>;

    /// Starts an upload (never ready). `NotFound("space")` if there is no such
    /// space, `Exists("file")` if the id is taken, `Invalid` if the size is
    /// negative or the chunk size not positive.
    async fn create_file(&self, f: &FileRecord) -> Result<()>;
    /// One file.
    async fn file(&self, id: &str) -> Result<Option<FileRecord>>;
    /// Records that chunk `index` (of `size` bytes) is stored; idempotent.
    /// `NotFound("file")` if there is no such file; `Invalid` if `index` is
    /// not below [`FileRecord::chunk_count`] or `size` is not what that chunk
    /// must have (`chunk_size`, or the remainder for the last one).
    async fn put_chunk(&self, file_id: &str, index: i64, size: i64) -> Result<()>;
    /// The chunk indexes stored so far, ascending (to resume an upload).
    async fn chunks(&self, file_id: &str) -> Result<Vec<i64>>;
    /// Marks the file ready if every chunk is stored, and appends its
    /// `FileReady` event, atomically. `Ok(None)` if chunks are missing;
    /// completing twice returns the first event. The event has sender the
    /// uploader, target the file id and meta `{"size":N}`.
    /// `NotFound("file")` if there is no such file.
    async fn complete_file(&self, file_id: &str, event_id: &str, now: Millis) -> Result<Option<Event>>;

    // ---- observing

    /// Registers the [`CommitListener`] of this handle (replacing any
    /// earlier one). Stores that cannot tell ignore it: the listener is an
    /// optimization, never the only way to learn of an event.
    fn set_commit_listener(&self, listener: CommitListener) {
        let _ = listener;
    }
}
