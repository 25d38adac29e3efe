//! The audit tables, embedded; `sqlstore::migrate` creates them.
//!
//! - `audit_head`: one row (`id = 1`): the last entry (`seq`, `hash`,
//!   `time_ms`) and the last stored checkpoint (`checkpoint_index`,
//!   `checkpoint_count`, `checkpoint_time`). Every append and every checkpoint
//!   locks it (`SELECT … FOR UPDATE` on PostgreSQL; `BEGIN IMMEDIATE` on
//!   SQLite) and updates it in the same transaction: that is what keeps the
//!   chain one linear sequence however many nodes append.
//! - `audit_entries`: one row per entry, `seq` the primary key.
//! - `audit_checkpoints`: stored checkpoints, `idx` 1, 2, 3….
//!
//! Entries and checkpoints are append-only: triggers refuse `UPDATE`,
//! `DELETE` (and on PostgreSQL `TRUNCATE`). Someone with DDL rights can drop
//! them; the hash chain and the signed checkpoints are what catch that.

/// The schema version this code writes and understands.
const SCHEMA_VERSION: i64 = 1;

/// Advisory lock key serializing schema creation on PostgreSQL ("audit!" in ASCII;
/// kms-store and core-store use other keys).
const PG_MIGRATION_LOCK: i64 = 0x6175_6469_7421;

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL CHECK (seq >= 0),
        hash TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        checkpoint_index INTEGER NOT NULL,
        checkpoint_count INTEGER NOT NULL,
        checkpoint_time INTEGER NOT NULL
    ) STRICT",
    "INSERT INTO audit_head (id, seq, hash, time_ms, checkpoint_index, checkpoint_count, checkpoint_time)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, 0, 0, 0)
        ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS audit_entries (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        time_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        actor TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        on_behalf_of TEXT,
        case_id TEXT,
        action TEXT NOT NULL,
        resource TEXT,
        key_uris TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS audit_entries_resource ON audit_entries (resource, seq) WHERE resource IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_entries_actor ON audit_entries (actor, seq)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (
        idx INTEGER PRIMARY KEY CHECK (idx >= 1),
        entry_count INTEGER NOT NULL,
        last_hash TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        node TEXT NOT NULL,
        jws TEXT NOT NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS audit_checkpoints_count ON audit_checkpoints (entry_count)",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL CHECK (seq >= 0),
        hash TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        checkpoint_index BIGINT NOT NULL,
        checkpoint_count BIGINT NOT NULL,
        checkpoint_time BIGINT NOT NULL
    )",
    "INSERT INTO audit_head (id, seq, hash, time_ms, checkpoint_index, checkpoint_count, checkpoint_time)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, 0, 0, 0)
        ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS audit_entries (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        time_ms BIGINT NOT NULL,
        node TEXT NOT NULL,
        actor TEXT COLLATE \"C\" NOT NULL,
        actor_kind TEXT NOT NULL,
        on_behalf_of TEXT,
        case_id TEXT,
        action TEXT NOT NULL,
        resource TEXT COLLATE \"C\",
        key_uris TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS audit_entries_resource ON audit_entries (resource, seq) WHERE resource IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_entries_actor ON audit_entries (actor, seq)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (
        idx BIGINT PRIMARY KEY CHECK (idx >= 1),
        entry_count BIGINT NOT NULL,
        last_hash TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        node TEXT NOT NULL,
        jws TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS audit_checkpoints_count ON audit_checkpoints (entry_count)",
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit log is append-only (% on %)', TG_OP, TG_TABLE_NAME;
        END
    $$",
    // Created only when missing: CREATE OR REPLACE TRIGGER would lock the
    // table against appends at every node start.
    "DO $$
    DECLARE t TEXT;
    BEGIN
        FOREACH t IN ARRAY ARRAY['audit_entries', 'audit_checkpoints'] LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t::regclass AND tgname = t || '_append_only') THEN
                EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I
                    FOR EACH ROW EXECUTE FUNCTION audit_append_only()', t || '_append_only', t);
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t::regclass AND tgname = t || '_no_truncate') THEN
                EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I
                    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()', t || '_no_truncate', t);
            END IF;
        END LOOP;
    END
    $$",
];

/// The audit schema, for `sqlstore::connect` / `sqlstore::migrate`.
pub(crate) const SCHEMA: sqlstore::Schema = sqlstore::Schema {
    version_table: "audit_schema_version",
    version: SCHEMA_VERSION,
    pg_lock: PG_MIGRATION_LOCK,
    sqlite: SQLITE_SCHEMA,
    postgres: POSTGRES_SCHEMA,
};
