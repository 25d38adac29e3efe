//! What the transports (HTTP API, WebSocket, KMS relay) share: the service,
//! and the links KMSs opened to this node, which only the relay uses. The
//! service knows nothing of either transport.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::relay::Links;
use crate::service::Core;

/// The router's state; handlers take the part they need (`State<Arc<Core>>`,
/// `State<Arc<Links>>`) or all of it.
#[derive(Clone)]
pub struct AppState {
    /// The messaging service.
    pub core: Arc<Core>,
    /// KMSs that connected out to this node.
    pub links: Arc<Links>,
}

impl AppState {
    /// The state for `core`, with the KMS links its configuration allows.
    pub fn new(core: Arc<Core>) -> anyhow::Result<Self> {
        let links = Arc::new(Links::from_config(&core.cfg)?);
        Ok(Self { core, links })
    }
}

impl FromRef<AppState> for Arc<Core> {
    fn from_ref(s: &AppState) -> Self {
        s.core.clone()
    }
}

impl FromRef<AppState> for Arc<Links> {
    fn from_ref(s: &AppState) -> Self {
        s.links.clone()
    }
}
