//! # audit: the KMS's verifiable audit log
//!
//! Every key release, refusal, authorization change, policy change and admin
//! action the KMS performs is appended here before the KMS answers; if the
//! append fails, the KMS refuses the request (fail closed).
//!
//! - **Hash chain.** Each [`Entry`] carries `prev`, the hash of the entry
//!   before it, and `hash`, over all its own fields. `seq` runs 1, 2, 3…
//!   without gaps; several KMS nodes appending to one PostgreSQL database
//!   still build one linear chain (appends lock a one-row head table).
//! - **Checkpoints.** The KMS static key signs the entry count and last hash
//!   ([`CheckpointBody`], JWS `typ` `kms-audit-checkpoint`), by hand
//!   ([`AuditLog::checkpoint`]) or by policy ([`AuditLog::run_checkpoints`]).
//!   Because a checkpoint commits to the count, cutting entries off the end
//!   is caught, not only changing them.
//! - **Group commit.** [`AuditLog::append`] queues the entry for one writer
//!   task per node, which commits everything queued in one transaction and
//!   answers each caller after the commit is durable.
//! - **Export and offline verification.** [`AuditLog::export_jsonl`] writes
//!   JSON lines for a SIEM, ending with a freshly signed seal;
//!   [`verify_jsonl`] checks such a file with nothing but the KMS public key
//!   and names the first problem by line and seq.
//! - **Key-access transparency.** [`AuditLog::key_access`] lists which
//!   services and compliance cases retrieved keys of a resource.
//!
//! ## Using it from the KMS
//!
//! ```ignore
//! let signer = Arc::new(KmsAuditSigner(server_key.clone())); // impl CheckpointSigner: ServerKey::sign(SigningContext::AuditCheckpoint, body)
//! let log = Arc::new(AuditLog::open(&config.audit_url, &config.node_name, signer).await?);
//! log.spawn_checkpoints(CheckpointPolicy::default());
//! // For each decision, before answering:
//! let entry = NewEntry::new(user_id, ActorKind::User, Action::KeyRelease, Outcome::Allowed)
//!     .resource(resource_uri)
//!     .keys([key_uri]);
//! if log.append(entry).await.is_err() { /* refuse the request */ }
//! ```
//!
//! ## Storage
//!
//! Three tables (created by `sqlstore::migrate`, version table
//! `audit_schema_version`, PostgreSQL advisory lock `0x6175_6469_7421`):
//! `audit_head` (one row: last seq, hash and time; last checkpoint index,
//! count and time), `audit_entries` (one row per entry, `seq` primary key,
//! indexes on `(resource, seq)` and `(actor, seq)`) and `audit_checkpoints`
//! (`idx` primary key). Every append and checkpoint transaction locks the
//! head row first (`SELECT … FOR UPDATE`; on SQLite `BEGIN IMMEDIATE`), so
//! any number of nodes build one chain. Triggers make entries and checkpoints
//! append-only.
//!
//! ## The line format (for auditors re-implementing the check)
//!
//! An export is UTF-8 text, one JSON object per line, each line ending in
//! `\n`, nothing else. Every line is the **RFC 8785 (JCS)** serialization of
//! its object: members sorted by name, no whitespace, integers in plain
//! decimal, strings with only `"`, `\`, and characters below U+0020 escaped
//! (`\b \f \n \r \t`, others `\u00xx`), no `null` (absent optional members are
//! omitted). A verifier re-serializes every line and refuses any that differs
//! by one byte, so formatting cannot carry unsigned changes.
//!
//! **Entry** (`"type":"entry"`):
//!
//! ```text
//! {"action":"key_release","actor":"search-bot@example.com","actor_kind":"service",
//!  "case":"C-42","detail":{"reason":"legal_hold"},"hash":"<64 hex>",
//!  "keys":["kms://kms.example.com/keys/…"],"node":"kms-1","on_behalf_of":"bob@example.com",
//!  "outcome":"allowed","prev":"<64 hex>","resource":"kms://kms.example.com/resources/…",
//!  "seq":12,"time":1767225600123,"type":"entry","v":1}
//! ```
//!
//! (shown wrapped; a real line has no whitespace). `case`, `on_behalf_of` and
//! `resource` are omitted when absent; `keys` and `detail` are always present.
//!
//! **`hash`** = lowercase hex SHA-256 of the UTF-8 bytes of the JCS
//! serialization of the entry object *without its `hash` member* (all other
//! members, including `type`, `v` and `prev`). Equivalently: take the line,
//! delete the top-level `"hash":"<64 hex>",` and hash the rest. **`prev`** =
//! the previous entry's `hash`, or 64 zeros for seq 1.
//!
//! **Stored checkpoint** (`"type":"checkpoint"`) and **seal** (`"type":"seal"`,
//! the last line of an export):
//!
//! ```text
//! {"count":12,"index":3,"jws":"<compact JWS>","last_hash":"<64 hex>","node":"kms-1","time":1767225601000,"type":"checkpoint"}
//! {"count":12,"export":{"first_checkpoint":1,"from_seq":1,"last_checkpoint":3},"jws":"…","last_hash":"…","node":"kms-1","time":…,"type":"seal"}
//! ```
//!
//! `jws` is a compact JWS, `alg` `PS256`, `typ` `kms-audit-checkpoint`, by the
//! KMS static key, whose payload is the JSON of the other members (without
//! `type` and `jws`); the visible members must equal the signed ones. See
//! [`verify_jsonl`] for every rule a reader applies.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod canon;
mod checkpoint;
mod entry;
mod error;
mod log;
mod schema;
mod verify;

pub use canon::MAX_SAFE_INTEGER;
pub use checkpoint::{
    verify_checkpoint, Checkpoint, CheckpointBody, CheckpointError, CheckpointSigner, ExportRange, RsaCheckpointSigner,
    SignError, CHECKPOINT_TYP, MAX_CHECKPOINT_LEN,
};
pub use entry::{
    Action, ActorKind, Detail, DetailValue, Entry, EntryError, NewEntry, OtherName, Outcome, ENTRY_VERSION,
    GENESIS_HASH, MAX_DETAIL_LEN, MAX_DETAIL_STR, MAX_ID_LEN, MAX_KEYS, MAX_URI_LEN,
};
pub use error::AuditError;
pub use log::{
    AuditLog, AuditOptions, Backend, CheckpointPolicy, ExportSummary, LogHead, Query, KEY_ACCESS_KINDS, MAX_QUERY_LIMIT,
};
pub use verify::{verify_jsonl, verify_jsonl_keys, Problem, ProblemKind, Report, MAX_LINE_LEN};

/// Drops a PostgreSQL schema and everything in it, if it exists (for tests
/// that used [`AuditLog::open_postgres_schema`]).
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), AuditError> {
    sqlstore::drop_postgres_schema(url, schema).await.map_err(AuditError::from)
}
