//! Event bus for the Custos messaging core.
//!
//! The database stays the source of truth; the bus only says "space X advanced
//! to sequence N" (a [`Notice`]). A node that receives a notice re-reads the
//! space from the database by sequence number, so the bus may coalesce, skip or
//! (on transport loss) drop notices without losing messages: the next notice for
//! the space, or the consumer's own catch-up, repairs the gap.
//!
//! Two implementations of [`EventBus`]:
//! * [`InProcessBus`]: the embedded default, for a single core process.
//! * [`NatsBus`]: several core nodes behind a load balancer, fanned out over NATS
//!   (subject `<prefix>.space.<space_id>`, one NATS subscription per space that
//!   the node has local subscribers for).
//!
//! Both put the same local fan-out registry in front of the transport: all
//! [`Subscription`]s of one space on one node share one
//! `tokio::sync::broadcast` channel (and, for NATS, one NATS subscription); the
//! entry is created on the first subscribe and removed when the last
//! subscription of the space is dropped.
//!
//! # Consumer pattern
//! ```no_run
//! # async fn demo(bus: &dyn core_bus::EventBus, mut cursor: i64) -> Result<(), core_bus::BusError> {
//! let mut sub = bus.subscribe("space-1").await?; // live from here on
//! // 1. catch up from the database (events after `cursor`), then:
//! while let Some(notice) = sub.next().await {
//!     if notice.seq > cursor {
//!         // 2. read events after `cursor` up to (at least) `notice.seq` from the database
//!         cursor = notice.seq;
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod hub;
mod inprocess;
mod nats;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use inprocess::InProcessBus;
pub use nats::{NatsBus, DEFAULT_PREFIX};

/// Longest accepted space id, in bytes.
pub const MAX_SPACE_ID_LEN: usize = 128;

/// Longest accepted encoded notice, in bytes (a valid one is far shorter).
pub const MAX_NOTICE_LEN: usize = 512;

/// Capacity of the per-space local broadcast channel: how many notices a slow
/// subscriber may fall behind before it skips ahead (see [`Subscription::next`]).
pub const DEFAULT_CAPACITY: usize = 256;

/// "Space `space_id` advanced to sequence `seq`."
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Notice {
    /// Space id: 1..=[`MAX_SPACE_ID_LEN`] characters of `[A-Za-z0-9-]`.
    pub space_id: String,
    /// Sequence number the space advanced to; always > 0.
    pub seq: i64,
}

impl Notice {
    /// Builds a notice, validating it.
    pub fn new(space_id: impl Into<String>, seq: i64) -> Result<Self, BusError> {
        let n = Notice { space_id: space_id.into(), seq };
        n.validate()?;
        Ok(n)
    }

    /// Checks the space id (see [`validate_space_id`]) and that `seq > 0`.
    pub fn validate(&self) -> Result<(), BusError> {
        validate_space_id(&self.space_id)?;
        if self.seq <= 0 {
            return Err(BusError::InvalidNotice("seq must be > 0"));
        }
        Ok(())
    }

    /// Wire encoding: compact JSON, e.g. `{"space_id":"s1","seq":42}`.
    ///
    /// JSON rather than a bespoke format so that a field can be added later:
    /// [`Notice::decode`] ignores unknown fields, so nodes of mixed versions keep
    /// understanding each other during a rolling upgrade.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of a String and an i64 cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates a notice from the wire. Never panics; rejects
    /// payloads longer than [`MAX_NOTICE_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        if bytes.len() > MAX_NOTICE_LEN {
            return Err(BusError::InvalidNotice("payload too long"));
        }
        let n: Notice = serde_json::from_slice(bytes).map_err(|_| BusError::InvalidNotice("not a JSON notice"))?;
        n.validate()?;
        Ok(n)
    }
}

/// Checks that `space_id` is 1..=[`MAX_SPACE_ID_LEN`] characters of
/// `[A-Za-z0-9-]`, which also makes it a single, wildcard-free NATS subject token.
pub fn validate_space_id(space_id: &str) -> Result<(), BusError> {
    if space_id.is_empty() || space_id.len() > MAX_SPACE_ID_LEN {
        return Err(BusError::InvalidNotice("space id must be 1..=128 characters"));
    }
    if !space_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(BusError::InvalidNotice("space id must be [A-Za-z0-9-] only"));
    }
    Ok(())
}

/// Errors of the event bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A notice or space id failed validation.
    #[error("invalid notice: {0}")]
    InvalidNotice(&'static str),
    /// The NATS subject prefix is not a valid, wildcard-free subject.
    #[error("invalid subject prefix {0:?}: dot-separated tokens of [A-Za-z0-9_-]")]
    InvalidPrefix(String),
    /// Could not connect to the NATS server (the URL is left out: it may carry credentials).
    #[error("could not connect to NATS: {0}")]
    Connect(#[source] async_nats::ConnectError),
    /// The transport failed an operation.
    #[error("NATS {op} failed: {source}")]
    Transport {
        /// The operation: `publish`, `subscribe`, ...
        op: &'static str,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The transport did not complete an operation in time (e.g. while disconnected).
    #[error("NATS {op} timed out")]
    Timeout {
        /// The operation: `publish`, `subscribe`, ...
        op: &'static str,
    },
}

/// A bus carrying [`Notice`]s between the core nodes (or within one).
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Announces that a space advanced. Best effort: the notice reaches the
    /// subscriptions that are live at that time, on every node; it is not
    /// persisted. Validates the notice first.
    async fn publish(&self, n: Notice) -> Result<(), BusError>;

    /// Subscribes to the notices of one space. When this returns `Ok`, the
    /// subscription is live: every notice published afterwards, by any node, is
    /// delivered to it (barring transport loss). Subscribe first, then catch up
    /// from the database, then follow the notices.
    async fn subscribe(&self, space_id: &str) -> Result<Subscription, BusError>;
}

/// What travels through a space's local broadcast channel.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    Notice(Notice),
    /// The transport ended for good: subscriptions yield `None`.
    Closed,
}

/// The notices of one space, for one consumer. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    // Field order matters: the receiver goes before the guard releases the space.
    rx: broadcast::Receiver<Signal>,
    lagged: u64,
    closed: bool,
    guard: hub::SpaceGuard,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Signal>, guard: hub::SpaceGuard) -> Self {
        Subscription { rx, lagged: 0, closed: false, guard }
    }

    /// The next notice of this space, or `None` once the bus has shut down.
    ///
    /// A subscriber that falls more than the channel capacity behind does not
    /// hold the others up: it *skips ahead* to the oldest notice still buffered,
    /// and the skipped count is added to [`Subscription::lagged`]. Nothing is
    /// lost by that, since the newest notice of a space subsumes the older ones
    /// (the consumer re-reads the database by sequence number).
    pub async fn next(&mut self) -> Option<Notice> {
        if self.closed {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Ok(Signal::Notice(n)) => return Some(n),
                Ok(Signal::Closed) | Err(broadcast::error::RecvError::Closed) => {
                    self.closed = true;
                    return None;
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    self.lagged += skipped;
                    tracing::debug!(space_id = %self.guard.space_id, skipped, "subscriber lagged; skipping ahead");
                }
            }
        }
    }

    /// The space this subscription follows.
    pub fn space_id(&self) -> &str {
        &self.guard.space_id
    }

    /// How many notices this subscription skipped because it lagged behind.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_roundtrip_and_validation() {
        let n = Notice::new("space-1", 7).unwrap();
        assert_eq!(Notice::decode(&n.encode()).unwrap(), n);
        assert!(Notice::new("", 1).is_err());
        assert!(Notice::new("a.b", 1).is_err());
        assert!(Notice::new("a*", 1).is_err());
        assert!(Notice::new("a", 0).is_err());
        assert!(Notice::new("x".repeat(MAX_SPACE_ID_LEN + 1), 1).is_err());
        assert!(Notice::new("x".repeat(MAX_SPACE_ID_LEN), 1).is_ok());
        for bad in [
            &b""[..],
            b"garbage",
            b"\xff\xfe",
            br#"{"space_id":"s","seq":-1}"#,
            br#"{"space_id":"s/x","seq":1}"#,
            br#"{"space_id":"s","seq":99999999999999999999}"#,
            br#"{"seq":1}"#,
        ] {
            assert!(Notice::decode(bad).is_err(), "{bad:?}");
        }
        assert!(Notice::decode(&vec![b' '; MAX_NOTICE_LEN + 1]).is_err());
        // Unknown fields are tolerated (rolling upgrades).
        assert_eq!(Notice::decode(br#"{"space_id":"s","seq":3,"v":2}"#).unwrap(), Notice::new("s", 3).unwrap());
    }
}
