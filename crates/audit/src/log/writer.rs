//! The writer task: group commit of queued appends.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::sql::Db;
use super::Result;
use crate::entry::{Entry, NewEntry};
use crate::error::AuditError;

pub(super) struct Job {
    pub(super) entry: NewEntry,
    pub(super) reply: oneshot::Sender<Result<Entry>>,
}

pub(super) enum Msg {
    Append(Job),
    Close(oneshot::Sender<()>),
}

/// The writer task: takes whatever appends have queued (up to `max_batch`),
/// commits them in one transaction, answers each; on failure answers each
/// with the error (nothing of the batch is in the log).
pub(super) async fn writer(
    db: Db,
    mut rx: mpsc::Receiver<Msg>,
    behind: watch::Sender<u64>,
    max_batch: usize,
    commit_timeout: Duration,
) {
    let mut entries = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        let mut close = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Append(job) => {
                    entries.push(job.entry);
                    replies.push(job.reply);
                }
                Msg::Close(ack) => {
                    close = Some(ack);
                    break;
                }
            }
            if entries.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !entries.is_empty() {
            let n = entries.len();
            let outcome = tokio::time::timeout(commit_timeout, db.commit_batch(std::mem::take(&mut entries))).await;
            match outcome {
                Ok(Ok((sealed, uncovered))) => {
                    for (reply, e) in replies.drain(..).zip(sealed) {
                        let _ = reply.send(Ok(e));
                    }
                    behind.send_replace(uncovered);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, batch = n, "audit append failed; refusing the requests");
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(_) => {
                    tracing::error!(batch = n, timeout = ?commit_timeout, "audit append timed out; refusing the requests");
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(AuditError::Timeout(commit_timeout)));
                    }
                }
            }
        }
        if let Some(ack) = close {
            let _ = ack.send(());
            return;
        }
    }
}
