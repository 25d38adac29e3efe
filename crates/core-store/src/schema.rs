//! The schema, embedded; `sqlstore::migrate` creates it.
//!
//! Migrations are idempotent (`CREATE … IF NOT EXISTS`) and run at every
//! open, in one transaction; on PostgreSQL under an advisory lock so that
//! several nodes starting at once do not race on the catalog. The two
//! dialects differ only in column types (`INTEGER`/`BIGINT`) and, on
//! PostgreSQL, `COLLATE "C"` on text keys so that ordering is bytewise, as in
//! SQLite. Tables are prefixed `core_` so that they can share a database with
//! the KMS's `kms_` tables.
//!
//! Ciphertext (titles, bodies, file metadata) is `TEXT`, kept verbatim.

/// The schema version this code writes and understands.
const SCHEMA_VERSION: i64 = 1;

/// Advisory lock key serializing schema creation on PostgreSQL ("custosc" in
/// ASCII; the KMS uses "custos").
const PG_MIGRATION_LOCK: i64 = 0x63_7573_746f_7363;

/// SQLite schema (STRICT tables: no silent type coercion).
const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS core_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_users (
        id TEXT PRIMARY KEY NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_spaces (
        id TEXT PRIMARY KEY NOT NULL,
        resource_uri TEXT NOT NULL UNIQUE,
        org TEXT NOT NULL,
        title TEXT,
        creator TEXT NOT NULL,
        create_date INTEGER NOT NULL,
        last_seq INTEGER NOT NULL CHECK (last_seq >= 0),
        updated INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_members (
        space_id TEXT NOT NULL REFERENCES core_spaces (id),
        user_id TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('member', 'moderator')),
        added_by TEXT NOT NULL,
        added_at INTEGER NOT NULL,
        PRIMARY KEY (space_id, user_id)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS core_members_user ON core_members (user_id)",
    "CREATE TABLE IF NOT EXISTS core_events (
        space_id TEXT NOT NULL REFERENCES core_spaces (id),
        seq INTEGER NOT NULL CHECK (seq > 0),
        id TEXT NOT NULL,
        client_event_id TEXT,
        kind TEXT NOT NULL,
        sender TEXT NOT NULL,
        parent TEXT,
        target TEXT,
        subject TEXT,
        ciphertext TEXT,
        key_uri TEXT,
        meta TEXT,
        create_date INTEGER NOT NULL,
        PRIMARY KEY (space_id, seq)
    ) STRICT",
    "CREATE UNIQUE INDEX IF NOT EXISTS core_events_id ON core_events (space_id, id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS core_events_client
        ON core_events (space_id, sender, client_event_id) WHERE client_event_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS core_read_markers (
        space_id TEXT NOT NULL REFERENCES core_spaces (id),
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (space_id, user_id)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_postings (
        space_id TEXT NOT NULL,
        token BLOB NOT NULL,
        seq INTEGER NOT NULL,
        key_uri TEXT NOT NULL,
        PRIMARY KEY (space_id, token, seq)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS core_postings_seq ON core_postings (space_id, seq)",
    "CREATE TABLE IF NOT EXISTS core_previews (
        file_id TEXT PRIMARY KEY NOT NULL,
        ciphertext TEXT NOT NULL,
        key_uri TEXT NOT NULL,
        creator TEXT NOT NULL,
        create_date INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_webhooks (
        user_id TEXT PRIMARY KEY NOT NULL,
        url TEXT NOT NULL,
        create_date INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_webhook_cursors (
        user_id TEXT NOT NULL,
        space_id TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq >= 0),
        PRIMARY KEY (user_id, space_id)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS core_files (
        id TEXT PRIMARY KEY NOT NULL,
        space_id TEXT NOT NULL REFERENCES core_spaces (id),
        uploader TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0),
        chunk_size INTEGER NOT NULL CHECK (chunk_size > 0),
        meta_ciphertext TEXT NOT NULL,
        key_uri TEXT NOT NULL,
        create_date INTEGER NOT NULL,
        ready_event_id TEXT
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS core_files_space ON core_files (space_id)",
    "CREATE TABLE IF NOT EXISTS core_chunks (
        file_id TEXT NOT NULL REFERENCES core_files (id),
        idx INTEGER NOT NULL CHECK (idx >= 0),
        size INTEGER NOT NULL CHECK (size >= 0),
        PRIMARY KEY (file_id, idx)
    ) STRICT",
];

/// PostgreSQL schema.
const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS core_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    )",
    r#"CREATE TABLE IF NOT EXISTS core_users (
        id TEXT COLLATE "C" PRIMARY KEY,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL
    )"#,
    r#"CREATE TABLE IF NOT EXISTS core_spaces (
        id TEXT COLLATE "C" PRIMARY KEY,
        resource_uri TEXT COLLATE "C" NOT NULL UNIQUE,
        org TEXT NOT NULL,
        title TEXT,
        creator TEXT NOT NULL,
        create_date BIGINT NOT NULL,
        last_seq BIGINT NOT NULL CHECK (last_seq >= 0),
        updated BIGINT NOT NULL
    )"#,
    r#"CREATE TABLE IF NOT EXISTS core_members (
        space_id TEXT COLLATE "C" NOT NULL REFERENCES core_spaces (id),
        user_id TEXT COLLATE "C" NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('member', 'moderator')),
        added_by TEXT NOT NULL,
        added_at BIGINT NOT NULL,
        PRIMARY KEY (space_id, user_id)
    )"#,
    "CREATE INDEX IF NOT EXISTS core_members_user ON core_members (user_id)",
    r#"CREATE TABLE IF NOT EXISTS core_events (
        space_id TEXT COLLATE "C" NOT NULL REFERENCES core_spaces (id),
        seq BIGINT NOT NULL CHECK (seq > 0),
        id TEXT COLLATE "C" NOT NULL,
        client_event_id TEXT COLLATE "C",
        kind TEXT NOT NULL,
        sender TEXT COLLATE "C" NOT NULL,
        parent TEXT,
        target TEXT,
        subject TEXT,
        ciphertext TEXT,
        key_uri TEXT,
        meta TEXT,
        create_date BIGINT NOT NULL,
        PRIMARY KEY (space_id, seq)
    )"#,
    "CREATE UNIQUE INDEX IF NOT EXISTS core_events_id ON core_events (space_id, id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS core_events_client
        ON core_events (space_id, sender, client_event_id) WHERE client_event_id IS NOT NULL",
    r#"CREATE TABLE IF NOT EXISTS core_read_markers (
        space_id TEXT COLLATE "C" NOT NULL REFERENCES core_spaces (id),
        user_id TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        PRIMARY KEY (space_id, user_id)
    )"#,
    r#"CREATE TABLE IF NOT EXISTS core_postings (
        space_id TEXT COLLATE "C" NOT NULL,
        token BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        key_uri TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (space_id, token, seq)
    )"#,
    "CREATE INDEX IF NOT EXISTS core_postings_seq ON core_postings (space_id, seq)",
    r#"CREATE TABLE IF NOT EXISTS core_previews (
        file_id TEXT COLLATE "C" PRIMARY KEY,
        ciphertext TEXT NOT NULL,
        key_uri TEXT NOT NULL,
        creator TEXT NOT NULL,
        create_date BIGINT NOT NULL
    )"#,
    r#"CREATE TABLE IF NOT EXISTS core_webhooks (
        user_id TEXT COLLATE "C" PRIMARY KEY,
        url TEXT NOT NULL,
        create_date BIGINT NOT NULL
    )"#,
    r#"CREATE TABLE IF NOT EXISTS core_webhook_cursors (
        user_id TEXT COLLATE "C" NOT NULL,
        space_id TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL CHECK (seq >= 0),
        PRIMARY KEY (user_id, space_id)
    )"#,
    r#"CREATE TABLE IF NOT EXISTS core_files (
        id TEXT COLLATE "C" PRIMARY KEY,
        space_id TEXT COLLATE "C" NOT NULL REFERENCES core_spaces (id),
        uploader TEXT NOT NULL,
        size BIGINT NOT NULL CHECK (size >= 0),
        chunk_size BIGINT NOT NULL CHECK (chunk_size > 0),
        meta_ciphertext TEXT NOT NULL,
        key_uri TEXT NOT NULL,
        create_date BIGINT NOT NULL,
        ready_event_id TEXT
    )"#,
    "CREATE INDEX IF NOT EXISTS core_files_space ON core_files (space_id)",
    r#"CREATE TABLE IF NOT EXISTS core_chunks (
        file_id TEXT COLLATE "C" NOT NULL REFERENCES core_files (id),
        idx BIGINT NOT NULL CHECK (idx >= 0),
        size BIGINT NOT NULL CHECK (size >= 0),
        PRIMARY KEY (file_id, idx)
    )"#,
];

/// What `sqlstore` needs to migrate this store.
pub(crate) const SCHEMA: sqlstore::Schema = sqlstore::Schema {
    version_table: "core_schema_version",
    version: SCHEMA_VERSION,
    pg_lock: PG_MIGRATION_LOCK,
    sqlite: SQLITE_SCHEMA,
    postgres: POSTGRES_SCHEMA,
};
