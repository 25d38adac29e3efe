//! What the transports share: the engine and the relay, side by side.
//!
//! The HTTP API ([`crate::api`]), the client sockets ([`crate::ws`]) and the
//! KMS links ([`crate::relay`]) take what they need from here; the engine
//! itself ([`crate::service`]) knows nothing of any of them.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::relay::Relay;
use crate::service::Core;

/// The state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Shared by every connection: handlers parse, call it, and map the answer.
    pub core: Arc<Core>,
    /// The KMS relay: links and per-caller budgets.
    pub relay: Arc<Relay>,
}

impl FromRef<AppState> for Arc<Core> {
    fn from_ref(s: &AppState) -> Self {
        s.core.clone()
    }
}

impl FromRef<AppState> for Arc<Relay> {
    fn from_ref(s: &AppState) -> Self {
        s.relay.clone()
    }
}
