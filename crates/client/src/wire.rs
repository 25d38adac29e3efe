//! The core's records as its HTTP API sends them: what the core claims,
//! unverified. Public (re-exported at the crate root) and free of transport
//! code, so that the browser's bindings parse the same structs.

use serde::{Deserialize, Serialize};

/// A space as the core describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CoreSpace {
    /// Id.
    pub id: String,
    /// The KMS resource (as the core claims; checked against the sealed metadata).
    pub resource_uri: String,
    /// The org that created it.
    pub org: String,
    /// Sealed metadata (title and resource binding), compact JWE.
    pub title: Option<String>,
    /// Creator.
    pub creator: String,
    /// Created (ms since the epoch).
    pub create_date: i64,
    /// Latest sequence number.
    pub last_seq: i64,
}

/// A member as the core lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CoreMember {
    /// `name@org`.
    pub user_id: String,
    /// `member` or `moderator`.
    pub role: String,
    /// When they were added (ms since the epoch; the core's word).
    #[serde(default)]
    pub added_at: Option<i64>,
}

/// An event as the core stores it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CoreEvent {
    /// The space.
    pub space_id: String,
    /// Sequence number in the space.
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// The sender's own id for the post.
    #[serde(default)]
    pub client_event_id: Option<String>,
    /// `message`, `edit`, `delete`, `reaction`, `member_added`, `member_removed`, `title`, `file_ready`.
    pub kind: String,
    /// Who the core says sent it.
    pub sender: String,
    /// Thread parent.
    #[serde(default)]
    pub parent: Option<String>,
    /// The event acted on.
    #[serde(default)]
    pub target: Option<String>,
    /// The member concerned.
    #[serde(default)]
    pub subject: Option<String>,
    /// Ciphertext.
    #[serde(default)]
    pub ciphertext: Option<String>,
    /// Key URI.
    #[serde(default)]
    pub key_uri: Option<String>,
    /// Routing metadata (JSON text).
    #[serde(default)]
    pub meta: Option<String>,
    /// When the core stored it (ms).
    pub create_date: i64,
}

/// A file as the core describes it.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct CoreFile {
    /// Id.
    pub id: String,
    /// Its space.
    pub space_id: String,
    /// Uploader.
    pub uploader: String,
    /// Ciphertext size.
    pub size: i64,
    /// Chunk size.
    pub chunk_size: i64,
    /// Sealed metadata.
    pub meta_ciphertext: String,
    /// Its key.
    pub key_uri: String,
    /// Upload finished.
    pub ready: bool,
}

/// A space as a compliance reader sees it (`GET /v1/compliance/spaces/{id}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CoreComplianceSpace {
    /// The space.
    pub space: CoreSpace,
    /// Current members.
    pub members: Vec<CoreMember>,
    /// Users who were members and are no longer.
    #[serde(default)]
    pub former_members: Vec<String>,
}

