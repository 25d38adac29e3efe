//! A content key as the client keeps it, from the key object the KMS released.

use std::sync::Arc;

use jose::OctKey;
use kms_protocol::message::KeyObject;
use kms_protocol::uri::KmsUri;

use crate::error::{Error, Result};

/// A content key as the client keeps it.
#[derive(Clone)]
pub struct ContentKey {
    /// `kms://…/keys/<id>`.
    pub uri: KmsUri,
    /// The key itself (zeroized on drop, never printed).
    pub key: Arc<OctKey>,
    /// The resource it is bound to, if bound.
    pub resource: Option<KmsUri>,
    /// When it was bound.
    pub bind_date: Option<time::OffsetDateTime>,
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentKey")
            .field("uri", &self.uri.to_string())
            .field("resource", &self.resource.as_ref().map(|u| u.to_string()))
            .finish_non_exhaustive()
    }
}

impl ContentKey {
    /// The key of a "newest key of this resource" answer (`keys`, newest
    /// first): it must be bound to `resource`.
    pub fn newest_of(keys: &[KeyObject], resource: &KmsUri) -> Result<Self> {
        let k = keys.first().ok_or_else(|| Error::Tampered("the space's resource has no key".into()))?;
        let k = Self::from_object(k)?;
        if k.resource.as_ref() != Some(resource) {
            return Err(Error::Tampered("the KMS answered with a key of another resource".into()));
        }
        Ok(k)
    }

    /// From the KMS's key object: a 256-bit oct key, else the KMS is not to be trusted with it.
    pub fn from_object(k: &KeyObject) -> Result<Self> {
        let key = k
            .jwk
            .to_oct()
            .map_err(|e| Error::Tampered(format!("the KMS sent a content key that is not a 256-bit oct key ({e})")))?;
        if key.expose().len() != 32 {
            return Err(Error::Tampered("the KMS sent a content key that is not 256 bits".into()));
        }
        Ok(Self { uri: k.uri.clone(), key: Arc::new(key), resource: k.resource_uri.clone(), bind_date: k.bind_date })
    }
}
