//! The log's errors.

use std::sync::Arc;
use std::time::Duration;

use crate::entry::EntryError;

/// Everything that can go wrong with the audit log. For the KMS, any error
/// from [`crate::AuditLog::append`] means: refuse the request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database failed (the transaction was rolled back).
    #[error("audit database: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// Opening or migrating the database failed.
    #[error("audit store: {0}")]
    Store(#[source] Arc<sqlstore::Error>),
    /// The entry was refused before reaching the database.
    #[error("invalid audit entry: {0}")]
    InvalidEntry(#[from] EntryError),
    /// A refused setting (node name, options).
    #[error("audit configuration: {0}")]
    Config(String),
    /// The signer failed, or returned something that is not a valid checkpoint.
    #[error("checkpoint signing: {0}")]
    Sign(String),
    /// The database did not answer in time. The entries of that batch may or
    /// may not have been committed; their requests were refused either way.
    #[error("audit commit did not complete within {0:?}")]
    Timeout(Duration),
    /// A checkpoint kept racing with other nodes' checkpoints; try again.
    #[error("checkpoint contended by other nodes")]
    Contended,
    /// The log was closed (or its writer task stopped).
    #[error("the audit log is closed")]
    Closed,
    /// A stored row does not decode.
    #[error("corrupt audit row: {0}")]
    Corrupt(String),
    /// The stored log contradicts itself (entries or hashes changed behind
    /// the log's back, or the head row does not match the entries). The log
    /// signs nothing over such a state.
    #[error("audit log tampered with or inconsistent at seq {seq}: {what}")]
    Tampered {
        /// The first seq concerned.
        seq: u64,
        /// What was found.
        what: String,
    },
    /// Writing an export failed.
    #[error("export: {0}")]
    Io(#[source] Arc<std::io::Error>),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Database(Arc::new(e))
    }
}

impl From<sqlstore::Error> for AuditError {
    fn from(e: sqlstore::Error) -> Self {
        match e {
            sqlstore::Error::Database(e) => AuditError::Database(Arc::new(e)),
            other => AuditError::Store(Arc::new(other)),
        }
    }
}

impl From<std::io::Error> for AuditError {
    fn from(e: std::io::Error) -> Self {
        AuditError::Io(Arc::new(e))
    }
}
