//! File previews: a thumbnail or a text excerpt that the org's preview
//! service makes of an uploaded file, sealed under a key bound to the same
//! space and bound to the file, stored by the core beside the file.

use base64::Engine as _;

use crate::engine::envelope::{self, Body};
use crate::error::{Error, Result};
use crate::session::Session;
use crate::types::{FileId, SpaceId};

/// A preview, opened and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// A thumbnail (`image/png`).
    Image {
        /// Its media type.
        media_type: String,
        /// The image.
        bytes: Vec<u8>,
    },
    /// The beginning of a text file.
    Excerpt(String),
}

impl Session {
    /// Stores a preview of `file` (the org's preview service): sealed under
    /// the space's current key, bound to the file.
    pub async fn put_preview(&self, file: &FileId, preview: &Preview) -> Result<()> {
        let rec = self.core.file(file).await?;
        let key = self.current_key(&SpaceId::from(&rec.space_id)).await?;
        let resource = key.resource.clone().ok_or_else(|| Error::Tampered("an unbound space key".into()))?;
        let (media_type, data) = match preview {
            Preview::Image { media_type, bytes } => {
                (media_type.clone(), base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Preview::Excerpt(t) => ("text/plain".to_string(), t.clone()),
        };
        let env = self.envelope(&resource, Body::Preview { file: file.to_string(), media_type, data });
        let sealed = envelope::seal(&key.key, &key.uri.to_string(), &env)?;
        self.core.put_preview(file, &sealed, &key.uri.to_string()).await
    }

    /// The preview of `file`, opened and checked: sealed by the preview
    /// service the core names, under a key of the file's own space, for this file.
    pub async fn preview(&self, file: &FileId) -> Result<Preview> {
        let rec = self.core.file(file).await?;
        let (ciphertext, key_uri, creator) = self.core.preview(file).await?;
        let resource = self.space(&SpaceId::from(&rec.space_id)).await?.resource;
        let key = self.kms().key(&key_uri).await?;
        if key.resource.as_ref() != Some(&resource) {
            return Err(Error::Tampered("the preview's key belongs to another space".into()));
        }
        let env = envelope::open(&key.key, &ciphertext, &key_uri, &resource.to_string(), Some(&creator), None)?;
        let Body::Preview { file: of, media_type, data } = &env.body else {
            return Err(Error::Tampered("the preview is not a preview".into()));
        };
        if *file != *of {
            return Err(Error::Tampered("the preview belongs to another file".into()));
        }
        if media_type == "text/plain" {
            return Ok(Preview::Excerpt(data.clone()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| Error::Tampered("the preview's image is not base64".into()))?;
        Ok(Preview::Image { media_type: media_type.clone(), bytes })
    }
}
