//! # kms-store: what the KMS keeps, and where
//!
//! One [`Store`] trait with two implementations: SQLite (the embedded default,
//! `sqlite://PATH`) and PostgreSQL (`postgres://…`, for several KMS nodes).
//! One conformance suite runs against both.
//!
//! The store never sees key material in the clear: content keys arrive already
//! wrapped under a KEK, KEKs under the CMK. Times are Unix milliseconds (UTC).
//! Ids are object ids (the last segment of a `kms://` URI), not URIs, except
//! an authorization's `auth_id`, which is a user id or a resource URI as given.
//!
//! Durability: every write returns only after its transaction committed, with
//! SQLite in WAL mode and `synchronous=FULL`, so a key the KMS hands out after
//! a write survives `kill -9` the instant after.
//!
//! ## Opening
//!
//! [`open`] picks the backend from the URL and brings the schema up to date
//! (idempotent, embedded DDL; safe when several nodes start at once):
//!
//! - `sqlite://PATH` (or `sqlite:PATH`): the file is created if missing; WAL,
//!   `synchronous=FULL`, foreign keys on, 5 s busy timeout. `sqlite::memory:`
//!   gives a private in-memory database (tests only).
//! - `postgres://…` / `postgresql://…`: tables in the default schema.
//!   [`open_postgres_schema`] puts them in a named schema instead (created if
//!   missing; `search_path` set on every pooled connection), which is how
//!   tests and several KMS nodes in one test share or isolate a database;
//!   [`drop_postgres_schema`] removes one.
//!
//! ## One implementation
//!
//! Both backends run the same SQL through `sqlx::Any` ([`SqlStore`]): SQLite
//! accepts `$N` placeholders, and both have `ON CONFLICT … DO NOTHING` and
//! `RETURNING`. Races are settled by the database (conditional updates,
//! unique indexes, insert-or-nothing), never by read-then-write in the
//! application, so several processes may share one PostgreSQL database.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use async_trait::async_trait;

mod open;
mod schema;
mod sql;

pub use open::{drop_postgres_schema, open, open_postgres_schema};
pub use sql::SqlStore;

/// Unix time in milliseconds.
pub type Millis = i64;

/// A content key, wrapped.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Object id.
    pub id: String,
    /// The key, wrapped under the KEK named by `kek_id` (opaque to the store).
    pub wrapped: Vec<u8>,
    /// Which KEK wraps it.
    pub kek_id: String,
    /// Creator.
    pub user_id: String,
    /// Creator's client.
    pub client_id: String,
    /// Created.
    pub create_date: Millis,
    /// Unbound: bind deadline. Bound: last date to encrypt with it.
    pub expiration_date: Millis,
    /// The resource it is bound to (object id).
    pub resource_id: Option<String>,
    /// When it was bound.
    pub bind_date: Option<Millis>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("resource_id", &self.resource_id)
            .finish_non_exhaustive()
    }
}

/// A resource (KRO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    /// Object id.
    pub id: String,
    /// Who created it.
    pub creator: String,
    /// Created.
    pub create_date: Millis,
    /// When it expires (from its ttl), if ever.
    pub expiration_date: Option<Millis>,
    /// Its ttl in seconds, as asked.
    pub ttl: Option<i64>,
}

/// A resource with the ids of its keys and authorizations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceView {
    /// The resource.
    pub resource: ResourceRecord,
    /// Bound keys (object ids), oldest bind first.
    pub key_ids: Vec<String>,
    /// Authorizations (object ids), oldest first.
    pub authorization_ids: Vec<String>,
}

/// An authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecord {
    /// Object id.
    pub id: String,
    /// The resource (object id).
    pub resource_id: String,
    /// Who: a user id (`name@org`) or a resource URI. `None` for anonymous ones.
    pub auth_id: Option<String>,
    /// Role URI; participant when `None`.
    pub role_uri: Option<String>,
    /// Who created it.
    pub creator: String,
    /// Created.
    pub create_date: Millis,
    /// Anonymous authorizations expire.
    pub expiration_date: Option<Millis>,
}

/// States of a KEK or CMK record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MasterKeyState {
    /// In use for wrapping new keys (at most one per org and kind).
    Active,
    /// Still unwraps, wraps nothing new.
    Inactive,
    /// Refuses to unwrap (crypto-shredding until re-activated).
    Revoked,
}

impl MasterKeyState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MasterKeyState::Active => "active",
            MasterKeyState::Inactive => "inactive",
            MasterKeyState::Revoked => "revoked",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => MasterKeyState::Active,
            "inactive" => MasterKeyState::Inactive,
            "revoked" => MasterKeyState::Revoked,
            _ => return None,
        })
    }
}

/// A KEK, wrapped under the CMK named by `cmk_id`.
#[derive(Clone, PartialEq, Eq)]
pub struct KekRecord {
    /// Object id.
    pub id: String,
    /// The org it serves.
    pub org: String,
    /// The KEK, wrapped (opaque).
    pub wrapped: Vec<u8>,
    /// Which CMK wraps it.
    pub cmk_id: String,
    /// State.
    pub state: MasterKeyState,
    /// Created.
    pub create_date: Millis,
    /// Last state change.
    pub update_date: Millis,
}

impl std::fmt::Debug for KekRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekRecord")
            .field("id", &self.id)
            .field("org", &self.org)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A versioned document (org policy, compliance case): opaque JSON to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its id within its kind.
    pub id: String,
    /// Starts at 1, one more per change.
    pub version: i64,
    /// The JSON body.
    pub body: String,
    /// Last change.
    pub update_date: Millis,
}

/// The result of a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindOutcome {
    /// Bound now.
    Bound(KeyRecord),
    /// Already bound to that same resource (a retried bind): success, unchanged.
    AlreadyBound(KeyRecord),
    /// Bound to another resource: never rebound.
    BoundElsewhere,
    /// The caller did not create the key.
    NotCreator,
    /// Unbound and past its bind deadline.
    Expired,
    /// No such key.
    NotFound,
}

/// Why a resource could not be created. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateResourceOutcome {
    /// Created, with its keys bound and authorizations made.
    Created(ResourceView),
    /// That resource id already exists.
    Exists,
    /// A key that does not exist, is not the creator's, is expired or already bound.
    KeyNotBindable(String),
}

/// Store errors: the database failed or holds something unreadable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(String),
    /// A URL this crate does not know.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// A row that does not decode.
    #[error("corrupt row in {0}")]
    Corrupt(&'static str),
    /// A setting this crate refuses (such as an invalid PostgreSQL schema name).
    #[error("configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// The shared plumbing's error as this crate's (same variants, same messages).
    pub(crate) fn from_shared(e: sqlstore::Error) -> StoreError {
        match e {
            sqlstore::Error::Database(e) => StoreError::Database(e),
            sqlstore::Error::Migration(m) => StoreError::Migration(m),
            sqlstore::Error::UnsupportedUrl => StoreError::UnsupportedUrl,
            sqlstore::Error::Corrupt(table) => StoreError::Corrupt(table),
            sqlstore::Error::Config(m) => StoreError::Config(m),
        }
    }
}

/// Every store operation fails with a [`StoreError`] unless told otherwise.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything the KMS keeps. All methods are atomic; all writes are durable on return.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;

    // ---- keys

    /// Inserts new unbound keys, all or none (an id already taken fails the batch).
    async fn insert_keys(&self, keys: &[KeyRecord]) -> Result<()>;
    /// One key.
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// Binds key `id` to `resource_id` if `user_id` created it, it is unbound
    /// and `bind_date < expiration_date`; sets `bind_date` and the new
    /// `expiration_date`. A key already bound to the same resource returns
    /// `AlreadyBound` unchanged. Refusals are checked in this order:
    /// `NotFound`, `NotCreator`, `AlreadyBound`/`BoundElsewhere`, `Expired`.
    /// The resource must exist (a foreign key: binding to an unknown
    /// resource is an error, not an outcome).
    async fn bind_key(
        &self,
        id: &str,
        resource_id: &str,
        user_id: &str,
        bind_date: Millis,
        new_expiration: Millis,
    ) -> Result<BindOutcome>;
    /// A resource's keys with `bound_after <= bind_date < bound_before`,
    /// newest bind first, at most `limit`.
    async fn list_resource_keys(
        &self,
        resource_id: &str,
        bound_after: Option<Millis>,
        bound_before: Option<Millis>,
        limit: Option<u32>,
    ) -> Result<Vec<KeyRecord>>;

    // ---- resources

    /// Creates a resource, its authorizations, and binds `key_ids` (created by
    /// `resource.creator`, unbound, unexpired at `resource.create_date`) with
    /// bind date `resource.create_date` and expiration `key_expiration`: all or nothing.
    /// The authorizations are made on `resource.id` (their own `resource_id` is
    /// not consulted), as by [`Store::create_authorizations`]; a key listed twice
    /// is bound once. `Exists` is checked before the keys.
    async fn create_resource(
        &self,
        resource: &ResourceRecord,
        authorizations: &[AuthorizationRecord],
        key_ids: &[String],
        key_expiration: Millis,
    ) -> Result<CreateResourceOutcome>;
    /// A resource with its key and authorization ids.
    async fn get_resource(&self, id: &str) -> Result<Option<ResourceView>>;

    // ---- authorizations

    /// Creates authorizations on one resource, all or none. A (resource,
    /// auth_id) pair that already exists is not duplicated: the existing
    /// record is returned in its place (safe retries). Anonymous ones
    /// (`auth_id: None`) are always new. Results are in request order. The
    /// resource must exist; that, or an authorization id already taken, fails
    /// the whole batch with an error.
    async fn create_authorizations(&self, authorizations: &[AuthorizationRecord]) -> Result<Vec<AuthorizationRecord>>;
    /// One authorization.
    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>>;
    /// A resource's authorizations, optionally only those of `auth_id`, oldest first.
    async fn list_authorizations(&self, resource_id: &str, auth_id: Option<&str>) -> Result<Vec<AuthorizationRecord>>;
    /// Whether any of `auth_ids` is authorized on the resource (unexpired at `now`).
    async fn has_authorization(&self, resource_id: &str, auth_ids: &[&str], now: Millis) -> Result<bool>;
    /// Deletes one authorization; returns it if it existed.
    async fn delete_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>>;
    /// Deletes the authorizations of `auth_ids` on a resource; returns those deleted, oldest first.
    async fn delete_authorizations(&self, resource_id: &str, auth_ids: &[String]) -> Result<Vec<AuthorizationRecord>>;

    // ---- idempotency log (per session, per requestId)

    /// Claims `(session, request_id)`. `Ok(None)`: claimed, go ahead.
    /// `Ok(Some(Some(r)))`: already answered with `r`. `Ok(Some(None))`: claimed
    /// by an earlier attempt that has not answered (still running, or crashed).
    async fn claim_request(&self, session: &str, request_id: &str, expires: Millis) -> Result<Option<Option<String>>>;
    /// Records the answer to a claimed request (nothing happens if there is no
    /// such claim, e.g. it was purged).
    async fn complete_request(&self, session: &str, request_id: &str, response: &str) -> Result<()>;
    /// Drops an unanswered claim (the request failed inside the KMS), so that a
    /// retry runs again instead of waiting for an answer that will never come.
    async fn release_request(&self, session: &str, request_id: &str) -> Result<()>;

    // ---- sessions

    /// Marks a session deleted until `expires`. Revoking one again is fine
    /// (it is reported again, with a new sequence number).
    async fn revoke_session(&self, session: &str, expires: Millis) -> Result<()>;
    /// Sessions revoked with a sequence number greater than `after`, and the
    /// greatest sequence number seen (for nodes that poll): `after` itself
    /// when there is nothing new. Each session is listed once. Sequence numbers
    /// become visible in increasing order, so a poller passing back the number
    /// it got never misses a revocation.
    async fn revoked_sessions_since(&self, after: i64) -> Result<(Vec<String>, i64)>;

    // ---- key hierarchy

    /// Inserts a KEK; if it is `Active`, the org's previous active KEK becomes
    /// `Inactive` (with `update_date` = the new KEK's `update_date`), atomically.
    async fn insert_kek(&self, kek: &KekRecord) -> Result<()>;
    /// One KEK.
    async fn get_kek(&self, id: &str) -> Result<Option<KekRecord>>;
    /// The org's active KEK.
    async fn active_kek(&self, org: &str) -> Result<Option<KekRecord>>;
    /// All KEKs of an org (all orgs when `None`), newest first.
    async fn list_keks(&self, org: Option<&str>) -> Result<Vec<KekRecord>>;
    /// Changes a KEK's state (to `Active` demotes the org's other active KEK). False if absent.
    async fn set_kek_state(&self, id: &str, state: MasterKeyState, now: Millis) -> Result<bool>;
    /// CMK rotation: replaces a KEK's wrapped form and CMK id if it is still
    /// wrapped under `expected_cmk_id` (state and dates unchanged). False when
    /// it is not (already re-wrapped by someone else, or absent).
    async fn rewrap_kek(&self, id: &str, expected_cmk_id: &str, wrapped: &[u8], cmk_id: &str) -> Result<bool>;

    // ---- retention (crypto-shredding)

    /// Keys wrapped under a KEK, by id, at most `limit` after id `after`.
    async fn keys_wrapped_by(&self, kek_id: &str, after: &str, limit: u32) -> Result<Vec<KeyRecord>>;
    /// Replaces a key's wrapped form if it is still wrapped under `expected_kek`. False otherwise.
    async fn rewrap_key(&self, id: &str, expected_kek: &str, wrapped: &[u8], kek_id: &str) -> Result<bool>;
    /// Deletes a KEK and every key still wrapped under it, atomically; returns how many keys went.
    async fn destroy_kek(&self, kek_id: &str) -> Result<u64>;
    /// Resources on which `auth_id` holds an authorization.
    async fn resources_of(&self, auth_id: &str) -> Result<Vec<String>>;

    // ---- federation

    /// Keeps this KMS's copy of another KMS's resource, keys and
    /// authorizations (federation), in one transaction, under ids that no
    /// URI of this KMS can name (the caller prefixes them; `:` is never in an
    /// object id). Adds what is new; never changes or removes what is there
    /// (keys and bindings never change; an authorization once seen stays as
    /// the record of who could read).
    async fn cache_federated(
        &self,
        resource: &ResourceRecord,
        authorizations: &[AuthorizationRecord],
        keys: &[KeyRecord],
    ) -> Result<()>;

    // ---- small named values (wrapped ticket keys, CMK check values)

    /// Gets a value.
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Sets `name` to `value` unless it is set; returns the value in force (race-safe).
    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;
    /// Sets `name` to `value` if its value is still exactly `expected`
    /// (compare-and-swap). False when it is not, or `name` is not set.
    async fn swap_meta(&self, name: &str, expected: &[u8], value: &[u8]) -> Result<bool>;
    /// Deletes values whose names start with `prefix` and compare less than
    /// `before` (bytewise, on both backends). Returns how many went.
    async fn delete_meta_before(&self, prefix: &str, before: &str) -> Result<u64>;

    // ---- versioned documents (org policy, compliance cases)

    /// One document: its version (from 1), body and last change.
    async fn get_document(&self, kind: &str, id: &str) -> Result<Option<Document>>;
    /// Writes a document if its version is still `expected` (0: it must not
    /// exist yet); the new version is `expected + 1`. False when someone else
    /// changed it first (nothing is written).
    async fn put_document(&self, kind: &str, id: &str, expected: i64, body: &str, now: Millis) -> Result<bool>;
    /// All documents of a kind, by id.
    async fn list_documents(&self, kind: &str) -> Result<Vec<Document>>;

    // ---- housekeeping

    /// Deletes expired unbound keys, expired request log entries, expired session revocations,
    /// expired anonymous authorizations. Returns how many rows went.
    ///
    /// "Expired" means an expiration date `<= now`. Bound keys are never
    /// deleted. Any authorization with an expiration date goes when it passes
    /// (anonymous ones, and those of resources with a ttl): it no longer counts
    /// for [`Store::has_authorization`] anyway.
    async fn purge_expired(&self, now: Millis) -> Result<u64>;
}
