//! Shared by the audit test binaries: the KMS's own signer, the two-backend
//! harness, raw SQL access (to break or tamper with the database), sample entries.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use audit::{
    Action, ActorKind, AuditLog, AuditOptions, CheckpointBody, CheckpointSigner, NewEntry, Outcome, SignError,
};
use jose::{RsaPrivateKey, RsaPublicKey};
use kms_protocol::{ServerKey, SigningContext};
use sqlstore::testing::{Ctx, Harness};
use sqlx::Connection;

pub const HARNESS: Harness = Harness {
    name: "audit",
    drop_schema: |url, schema| {
        Box::pin(async move { audit::drop_postgres_schema(&url, &schema).await.map_err(|e| format!("{e:?}")) })
    },
};

/// Signs exactly as the KMS engine will: `ServerKey::sign(SigningContext::AuditCheckpoint, body)`.
pub struct KmsSigner(pub Arc<ServerKey>);

impl CheckpointSigner for KmsSigner {
    fn sign(&self, body: &CheckpointBody) -> Result<String, SignError> {
        Ok(self.0.sign(SigningContext::AuditCheckpoint, body)?)
    }

    fn public_key(&self) -> Option<&RsaPublicKey> {
        Some(self.0.public_key())
    }
}

/// The KMS static private key, PKCS#8 (one per test binary: RSA generation is slow).
fn kms_key_der() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| RsaPrivateKey::generate(2048, None).unwrap().to_pkcs8_der().to_vec())
}

/// A copy of the KMS static private key (kid `kms-static-1`).
pub fn kms_private_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_der(kms_key_der(), Some("kms-static-1".into())).unwrap()
}

/// The KMS static key as the KMS holds it.
pub fn server_key() -> Arc<ServerKey> {
    static KEY: OnceLock<Arc<ServerKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(ServerKey::new(kms_private_key(), "kms.example.com").unwrap())).clone()
}

/// Another RSA key (not the KMS's), with the same kid.
pub fn other_key() -> RsaPrivateKey {
    other_key_with_kid("kms-static-1")
}

/// The other RSA key under another kid (a rotated KMS key).
pub fn other_key_with_kid(kid: &str) -> RsaPrivateKey {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    let der = DER.get_or_init(|| RsaPrivateKey::generate(2048, None).unwrap().to_pkcs8_der().to_vec());
    RsaPrivateKey::from_pkcs8_der(der, Some(kid.into())).unwrap()
}

pub fn public_key() -> RsaPublicKey {
    server_key().public_key().clone()
}

pub fn signer() -> Arc<dyn CheckpointSigner> {
    Arc::new(KmsSigner(server_key()))
}

pub async fn open_log(ctx: &Ctx, node: &str) -> AuditLog {
    open_log_with(ctx, node, AuditOptions::default()).await
}

pub async fn open_log_with(ctx: &Ctx, node: &str, options: AuditOptions) -> AuditLog {
    try_open(ctx, node, options).await.expect("open audit log")
}

pub async fn try_open(ctx: &Ctx, node: &str, options: AuditOptions) -> Result<AuditLog, audit::AuditError> {
    match ctx {
        Ctx::Sqlite { .. } => AuditLog::open_with(&ctx.url(), node, signer(), options).await,
        Ctx::Postgres { url, schema } => AuditLog::open_postgres_schema(url, schema, node, signer(), options).await,
    }
}

/// A raw connection to the test's database (tables of the test's schema in reach).
pub async fn raw(ctx: &Ctx) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    match ctx {
        Ctx::Sqlite { path } => {
            let mut c = sqlx::AnyConnection::connect(&format!("sqlite:{}", path.display())).await.unwrap();
            sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut c).await.unwrap();
            c
        }
        Ctx::Postgres { url, schema } => {
            let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
            sqlx::query("SELECT set_config('search_path', $1, false)")
                .bind(format!("\"{schema}\""))
                .execute(&mut c)
                .await
                .unwrap();
            c
        }
    }
}

/// Runs SQL on a raw connection, panicking on failure.
pub async fn exec(conn: &mut sqlx::AnyConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub const SPACE: &str = "kms://kms.example.com/resources/6a1f5e0c-2d4b-4c1e-9a77-3b2f1d0e8c55";
pub const OTHER_SPACE: &str = "kms://kms.example.com/resources/0c9d8e7f-1a2b-4c3d-8e5f-6a7b8c9d0e1f";

pub fn key_uri(i: usize) -> String {
    format!("kms://kms.example.com/keys/00000000-0000-4000-8000-{i:012}")
}

/// A varied entry: user and service releases, compliance access with a
/// case, authorization changes, a denial, an action this build does not know.
pub fn sample(i: usize) -> NewEntry {
    match i % 6 {
        0 => NewEntry::new(format!("user{i}@example.com"), ActorKind::User, Action::KeyRelease, Outcome::Allowed)
            .resource(SPACE)
            .keys([key_uri(i)]),
        1 => NewEntry::new("search-indexer@example.com", ActorKind::Service, Action::KeyRelease, Outcome::Allowed)
            .resource(SPACE)
            .keys([key_uri(i), key_uri(i + 1)]),
        2 => NewEntry::new("officer@example.com", ActorKind::Compliance, Action::KeyRelease, Outcome::Allowed)
            .on_behalf_of("bob@example.com")
            .case("CASE-2026-0042")
            .resource(SPACE)
            .keys([key_uri(i)])
            .detail("reason", "legal_hold"),
        3 => NewEntry::new("alice@example.com", ActorKind::User, Action::AuthorizationCreate, Outcome::Allowed)
            .resource(OTHER_SPACE)
            .detail("auth_ids", vec!["carol@example.com".to_owned(), "dave@example.com".to_owned()])
            .detail("count", 2i64),
        4 => NewEntry::new("dlp-bot@example.com", ActorKind::Service, Action::KeyDenied, Outcome::Denied)
            .resource(OTHER_SPACE)
            .keys([key_uri(i)])
            .detail("reason", "not_authorized"),
        _ => NewEntry::new(
            "kms.example.com",
            ActorKind::Kms,
            Action::other("key_escrow_sync").unwrap(),
            Outcome::Allowed,
        )
        .detail("note", "Ünïcode \"quoted\" \\ end")
        .detail("dry_run", true),
    }
}
