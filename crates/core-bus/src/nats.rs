//! [`NatsBus`]: several core nodes, fanned out over NATS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::time::timeout;

use crate::hub::{Hub, Listener, Space};
use crate::{BusError, EventBus, Notice, Signal, Subscription, DEFAULT_CAPACITY};

/// The subject prefix of production deployments: notices go to `custos.space.<space_id>`.
pub const DEFAULT_PREFIX: &str = "custos";

/// How long publish and subscribe wait for the transport (e.g. while it reconnects).
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted subject prefix, in bytes.
const MAX_PREFIX_LEN: usize = 64;

/// An [`EventBus`] over NATS core (at-most-once, no persistence: the database
/// is the source of truth).
///
/// Each notice is published on `<prefix>.space.<space_id>`. A node holds **one
/// NATS subscription per space it has local subscribers for** (not one wildcard
/// `<prefix>.space.*`): the NATS server then routes each notice only to the
/// nodes that have sockets in that space, instead of every node receiving and
/// filtering every notice of the cluster; interest changes (SUB/UNSUB) are cheap
/// and happen only when a node's first socket joins or last socket leaves a space.
/// Every notice, including those published on this node, arrives through NATS,
/// so every subscription sees one publisher's notices in publish order.
///
/// Reconnects are handled by `async-nats` (unlimited attempts); it re-sends the
/// subscriptions after a reconnect, so [`Subscription`]s survive it. Notices
/// published while a node was disconnected are lost to it: consumers should
/// catch up from the database on their own schedule as well (e.g. periodically),
/// not only on notices.
///
/// Cheap to clone; clones share the connection and the registry.
#[derive(Debug, Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    prefix: String,
    hub: Arc<Hub>,
    malformed: Arc<AtomicU64>,
}

impl NatsBus {
    /// Connects to the NATS server at `url` (e.g. `nats://127.0.0.1:4222`) and
    /// publishes under `prefix` ([`DEFAULT_PREFIX`] in production; tests use a
    /// unique prefix so that parallel runs don't cross-talk).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        validate_prefix(prefix)?;
        let client = async_nats::ConnectOptions::new()
            .name("custos-core")
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                    other => tracing::warn!(event = %other, "NATS event"),
                }
            })
            .connect(url)
            .await
            .map_err(BusError::Connect)?;
        Self::from_client(client, prefix, DEFAULT_CAPACITY)
    }

    /// Wraps an already configured client (TLS, credentials, ...), with
    /// `capacity` notices buffered per space before a slow subscriber skips ahead.
    pub fn from_client(client: async_nats::Client, prefix: &str, capacity: usize) -> Result<Self, BusError> {
        validate_prefix(prefix)?;
        Ok(NatsBus {
            inner: Arc::new(Inner {
                client,
                prefix: prefix.to_owned(),
                hub: Hub::new(capacity),
                malformed: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// The NATS subject of a space's notices: `<prefix>.space.<space_id>`.
    pub fn subject(&self, space_id: &str) -> String {
        self.inner.subject(space_id)
    }

    /// Number of spaces that currently have at least one subscription on this
    /// node (= NATS subscriptions held for notices).
    pub fn active_spaces(&self) -> usize {
        self.inner.hub.active_spaces()
    }

    /// How many malformed notices this node received and dropped.
    pub fn malformed_notices(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn subject(&self, space_id: &str) -> String {
        format!("{}.space.{}", self.prefix, space_id)
    }

    /// Returns once the server has processed everything this connection sent
    /// before: a request to a fresh inbox nobody listens on, which the server
    /// answers with "no responders" (NATS >= 2.2).
    async fn barrier(&self) -> Result<(), BusError> {
        let subject = self.client.new_inbox();
        match timeout(OP_TIMEOUT, self.client.request(subject, Default::default())).await {
            Err(_) => Err(BusError::Timeout { op: "subscribe" }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(BusError::Transport { op: "subscribe", source: Box::new(e) }),
        }
    }

    /// Starts the NATS subscription of one space and the task forwarding its
    /// notices to the local broadcast channel.
    async fn listen(
        &self,
        space_id: &str,
        tx: broadcast::Sender<Signal>,
        space: Weak<Space>,
    ) -> Result<Listener, BusError> {
        let subscriber = match timeout(OP_TIMEOUT, self.client.subscribe(self.subject(space_id))).await {
            Err(_) => return Err(BusError::Timeout { op: "subscribe" }),
            Ok(Err(e)) => return Err(BusError::Transport { op: "subscribe", source: Box::new(e) }),
            Ok(Ok(s)) => s,
        };
        // Make the subscription live at the server before subscribe() returns.
        self.barrier().await?;
        let task = tokio::spawn(forward(
            subscriber,
            space_id.to_owned(),
            tx,
            space,
            Arc::downgrade(&self.hub),
            self.malformed.clone(),
        ));
        Ok(Listener(Some(task)))
    }
}

/// Decodes the notices of one space's NATS subscription into its broadcast channel.
async fn forward(
    mut subscriber: async_nats::Subscriber,
    space_id: String,
    tx: broadcast::Sender<Signal>,
    space: Weak<Space>,
    hub: Weak<Hub>,
    malformed: Arc<AtomicU64>,
) {
    while let Some(msg) = subscriber.next().await {
        match Notice::decode(&msg.payload) {
            Ok(n) if n.space_id == space_id => {
                // Err only means every receiver just went away.
                let _ = tx.send(Signal::Notice(n));
            }
            Ok(n) => {
                malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, other = %n.space_id, "dropping notice for another space");
            }
            Err(e) => {
                malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %msg.subject, len = msg.payload.len(), error = %e, "dropping malformed notice");
            }
        }
    }
    tracing::warn!(%space_id, "NATS subscription ended");
    match hub.upgrade() {
        Some(hub) => hub.retire(&space_id, &space, &tx),
        None => {
            let _ = tx.send(Signal::Closed);
        }
    }
}

/// A prefix is 1..=64 bytes of dot-separated, non-empty `[A-Za-z0-9_-]` tokens.
fn validate_prefix(prefix: &str) -> Result<(), BusError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidPrefix(prefix.to_owned()))
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, n: Notice) -> Result<(), BusError> {
        n.validate()?;
        let subject = self.inner.subject(&n.space_id);
        match timeout(OP_TIMEOUT, self.inner.client.publish(subject, n.encode().into())).await {
            Err(_) => Err(BusError::Timeout { op: "publish" }),
            Ok(Err(e)) => Err(BusError::Transport { op: "publish", source: Box::new(e) }),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn subscribe(&self, space_id: &str) -> Result<Subscription, BusError> {
        let inner = &self.inner;
        inner.hub.subscribe(space_id, |tx, space| inner.listen(space_id, tx, space)).await
    }
}

#[cfg(test)]
mod tests {
    use super::validate_prefix;

    #[test]
    fn prefixes() {
        for ok in ["custos", "t-1.custos", "a_b.c"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "a..b", "a.*", "a.>", "a b", "a.", &"x".repeat(65)] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
