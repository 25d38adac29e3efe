//! The schema, embedded; `sqlstore::migrate` creates it.
//!
//! Migrations are idempotent (`CREATE … IF NOT EXISTS`) and run at every
//! open, in one transaction; on PostgreSQL under an advisory lock so that
//! several nodes starting at once do not race on the catalog. The two
//! dialects differ only in column types (`BLOB`/`BYTEA`, `INTEGER`/`BIGINT`),
//! the revocation sequence (`AUTOINCREMENT`/`BIGSERIAL`) and, on PostgreSQL,
//! `COLLATE "C"` on text keys so that ordering and range comparisons are
//! bytewise, as in SQLite.

/// The schema version this code writes and understands.
const SCHEMA_VERSION: i64 = 1;

/// Advisory lock key serializing schema creation on PostgreSQL ("custos" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x6375_7374_6f73;

/// SQLite schema (STRICT tables: no silent type coercion).
const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kms_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS kms_resources (
        id TEXT PRIMARY KEY NOT NULL,
        creator TEXT NOT NULL,
        create_date INTEGER NOT NULL,
        expiration_date INTEGER,
        ttl INTEGER
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS kms_keys (
        id TEXT PRIMARY KEY NOT NULL,
        wrapped BLOB NOT NULL,
        kek_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        create_date INTEGER NOT NULL,
        expiration_date INTEGER NOT NULL,
        resource_id TEXT REFERENCES kms_resources (id),
        bind_date INTEGER,
        CHECK ((resource_id IS NULL) = (bind_date IS NULL))
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS kms_keys_resource ON kms_keys (resource_id, bind_date)",
    "CREATE INDEX IF NOT EXISTS kms_keys_unbound_expiry ON kms_keys (expiration_date) WHERE resource_id IS NULL",
    "CREATE TABLE IF NOT EXISTS kms_authorizations (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        resource_id TEXT NOT NULL REFERENCES kms_resources (id) ON DELETE CASCADE,
        auth_id TEXT,
        role_uri TEXT,
        creator TEXT NOT NULL,
        create_date INTEGER NOT NULL,
        expiration_date INTEGER
    ) STRICT",
    "CREATE UNIQUE INDEX IF NOT EXISTS kms_authorizations_resource_auth
        ON kms_authorizations (resource_id, auth_id) WHERE auth_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS kms_authorizations_resource ON kms_authorizations (resource_id, create_date)",
    "CREATE INDEX IF NOT EXISTS kms_authorizations_expiry
        ON kms_authorizations (expiration_date) WHERE expiration_date IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS kms_requests (
        session TEXT NOT NULL,
        request_id TEXT NOT NULL,
        response TEXT,
        expires INTEGER NOT NULL,
        PRIMARY KEY (session, request_id)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS kms_requests_expires ON kms_requests (expires)",
    "CREATE TABLE IF NOT EXISTS kms_revoked_sessions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        expires INTEGER NOT NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS kms_revoked_sessions_expires ON kms_revoked_sessions (expires)",
    "CREATE TABLE IF NOT EXISTS kms_keks (
        id TEXT PRIMARY KEY NOT NULL,
        org TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        cmk_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'inactive', 'revoked')),
        create_date INTEGER NOT NULL,
        update_date INTEGER NOT NULL
    ) STRICT",
    "CREATE UNIQUE INDEX IF NOT EXISTS kms_keks_one_active ON kms_keks (org) WHERE state = 'active'",
    "CREATE INDEX IF NOT EXISTS kms_keks_org ON kms_keks (org, create_date)",
    "CREATE TABLE IF NOT EXISTS kms_meta (
        name TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS kms_documents (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0),
        body TEXT NOT NULL,
        update_date INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) STRICT",
];

/// PostgreSQL schema.
const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kms_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    )",
    r#"CREATE TABLE IF NOT EXISTS kms_resources (
        id TEXT COLLATE "C" PRIMARY KEY,
        creator TEXT NOT NULL,
        create_date BIGINT NOT NULL,
        expiration_date BIGINT,
        ttl BIGINT
    )"#,
    r#"CREATE TABLE IF NOT EXISTS kms_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        wrapped BYTEA NOT NULL,
        kek_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        create_date BIGINT NOT NULL,
        expiration_date BIGINT NOT NULL,
        resource_id TEXT COLLATE "C" REFERENCES kms_resources (id),
        bind_date BIGINT,
        CHECK ((resource_id IS NULL) = (bind_date IS NULL))
    )"#,
    "CREATE INDEX IF NOT EXISTS kms_keys_resource ON kms_keys (resource_id, bind_date)",
    "CREATE INDEX IF NOT EXISTS kms_keys_unbound_expiry ON kms_keys (expiration_date) WHERE resource_id IS NULL",
    r#"CREATE TABLE IF NOT EXISTS kms_authorizations (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT COLLATE "C" NOT NULL UNIQUE,
        resource_id TEXT COLLATE "C" NOT NULL REFERENCES kms_resources (id) ON DELETE CASCADE,
        auth_id TEXT COLLATE "C",
        role_uri TEXT,
        creator TEXT NOT NULL,
        create_date BIGINT NOT NULL,
        expiration_date BIGINT
    )"#,
    "CREATE UNIQUE INDEX IF NOT EXISTS kms_authorizations_resource_auth
        ON kms_authorizations (resource_id, auth_id) WHERE auth_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS kms_authorizations_resource ON kms_authorizations (resource_id, create_date)",
    "CREATE INDEX IF NOT EXISTS kms_authorizations_expiry
        ON kms_authorizations (expiration_date) WHERE expiration_date IS NOT NULL",
    r#"CREATE TABLE IF NOT EXISTS kms_requests (
        session TEXT COLLATE "C" NOT NULL,
        request_id TEXT COLLATE "C" NOT NULL,
        response TEXT,
        expires BIGINT NOT NULL,
        PRIMARY KEY (session, request_id)
    )"#,
    "CREATE INDEX IF NOT EXISTS kms_requests_expires ON kms_requests (expires)",
    "CREATE TABLE IF NOT EXISTS kms_revoked_sessions (
        seq BIGSERIAL PRIMARY KEY,
        session TEXT NOT NULL,
        expires BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS kms_revoked_sessions_expires ON kms_revoked_sessions (expires)",
    r#"CREATE TABLE IF NOT EXISTS kms_keks (
        id TEXT COLLATE "C" PRIMARY KEY,
        org TEXT COLLATE "C" NOT NULL,
        wrapped BYTEA NOT NULL,
        cmk_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'inactive', 'revoked')),
        create_date BIGINT NOT NULL,
        update_date BIGINT NOT NULL
    )"#,
    "CREATE UNIQUE INDEX IF NOT EXISTS kms_keks_one_active ON kms_keks (org) WHERE state = 'active'",
    "CREATE INDEX IF NOT EXISTS kms_keks_org ON kms_keks (org, create_date)",
    r#"CREATE TABLE IF NOT EXISTS kms_meta (
        name TEXT COLLATE "C" PRIMARY KEY,
        value BYTEA NOT NULL
    )"#,
    r#"CREATE TABLE IF NOT EXISTS kms_documents (
        kind TEXT COLLATE "C" NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL CHECK (version > 0),
        body TEXT NOT NULL,
        update_date BIGINT NOT NULL,
        PRIMARY KEY (kind, id)
    )"#,
];

/// What `sqlstore` needs to migrate this store.
pub(crate) const SCHEMA: sqlstore::Schema = sqlstore::Schema {
    version_table: "kms_schema_version",
    version: SCHEMA_VERSION,
    pg_lock: PG_MIGRATION_LOCK,
    sqlite: SQLITE_SCHEMA,
    postgres: POSTGRES_SCHEMA,
};
