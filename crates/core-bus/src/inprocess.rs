//! [`InProcessBus`]: the embedded default, for a core running as a single process.

use std::sync::Arc;

use async_trait::async_trait;

use crate::hub::{Hub, Listener};
use crate::{BusError, EventBus, Notice, Subscription, DEFAULT_CAPACITY};

/// An [`EventBus`] within one process: publish hands the notice straight to the
/// local fan-out registry. Cheap to clone; clones share the registry.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    hub: Arc<Hub>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// A bus whose per-space channels buffer [`DEFAULT_CAPACITY`] notices.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A bus whose per-space channels buffer `capacity` notices (at least 1)
    /// before a slow subscriber skips ahead.
    pub fn with_capacity(capacity: usize) -> Self {
        InProcessBus { hub: Hub::new(capacity) }
    }

    /// Number of spaces that currently have at least one subscription.
    pub fn active_spaces(&self) -> usize {
        self.hub.active_spaces()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, n: Notice) -> Result<(), BusError> {
        n.validate()?;
        self.hub.deliver(n);
        Ok(())
    }

    async fn subscribe(&self, space_id: &str) -> Result<Subscription, BusError> {
        self.hub.subscribe(space_id, |_, _| async { Ok(Listener(None)) }).await
    }
}
