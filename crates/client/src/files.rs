//! Files: streamed through `filecrypt` (chunked AES-256-GCM under a fresh
//! per-file key) in bounded memory, uploaded as the core's chunks. The file
//! key, name and size travel in the file's metadata, sealed under the
//! space's key.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use filecrypt::{Decryptor, Encryptor, FileKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kms_protocol::uri::KmsUri;

use crate::core_api::{CoreApi, CoreFile};
use crate::engine::envelope::{self, Body};
use crate::error::{Error, Result};
use crate::kms::ContentKey;
use crate::session::{now_ms, Session};
use crate::types::{FileId, FileInfo, SpaceId, UserId};

/// Ciphertext bytes per upload chunk (the core takes up to 4 MiB by
/// default). Small enough that memory stays flat whatever the file size.
pub const UPLOAD_CHUNK: u64 = 1024 * 1024;

/// Largest chunk a download accepts from the core (its maximum is 4 MiB by default).
pub const MAX_DOWNLOAD_CHUNK: u64 = 64 * 1024 * 1024;

/// Progress: `(bytes done, bytes in all)`.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

impl Session {
    /// Uploads the file at `path` into `space`; returns its id. Memory stays
    /// around one upload chunk whatever the file's size.
    pub async fn upload(&self, space: &SpaceId, path: &Path, progress: Progress<'_>) -> Result<FileInfo> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file").to_string();
        let mut file = tokio::fs::File::open(path).await?;
        let size = file.metadata().await?.len();
        let segment = filecrypt::DEFAULT_SEGMENT;
        let total = filecrypt::ciphertext_len(size, segment);

        let file_key = FileKey::generate();
        let key = self.current_key(space).await?;
        let resource = key.resource.clone().expect("checked bound");
        let body = Body::File {
            name: name.clone(),
            size,
            key: URL_SAFE_NO_PAD.encode(file_key.as_bytes()),
            segment: segment as u32,
        };
        let env = envelope::Envelope {
            v: 1,
            space: resource.to_string(),
            sender: self.user_id().to_string(),
            ts: now_ms(),
            event: None,
            body,
        };
        let meta = envelope::seal(&key.key, &key.uri.to_string(), &env)?;
        let rec = self.core.create_file(space, total, UPLOAD_CHUNK, &meta, &key.uri.to_string()).await?;

        let (mut enc, header) = Encryptor::new(&file_key, segment)?;
        let mut chunk: Vec<u8> = Vec::with_capacity(UPLOAD_CHUNK as usize + segment + filecrypt::TAG_LEN);
        chunk.extend_from_slice(&header);
        let mut seg = Vec::with_capacity(segment + filecrypt::TAG_LEN);
        let mut read = 0u64;
        let mut index = 0u64;
        let mut sent = 0u64;
        loop {
            seg.clear();
            let want = segment.min((size - read) as usize);
            seg.resize(want, 0);
            file.read_exact(&mut seg).await?;
            read += want as u64;
            let last = read == size;
            enc.seal_segment(&mut seg, last)?;
            chunk.extend_from_slice(&seg);
            // Ship whole chunks; the remainder carries over.
            // One buffer for the whole upload (it never grows past its first
            // capacity), so memory stays flat however large the file.
            while chunk.len() as u64 >= UPLOAD_CHUNK || (last && !chunk.is_empty()) {
                let n = (chunk.len() as u64).min(UPLOAD_CHUNK) as usize;
                let body = bytes::Bytes::copy_from_slice(&chunk[..n]);
                chunk.drain(..n);
                self.put_chunk_retrying(&rec.id, index, body).await?;
                sent += n as u64;
                index += 1;
                progress(sent, total);
            }
            if last {
                break;
            }
        }
        if sent != total {
            return Err(Error::Io(std::io::Error::other("the file changed size while it was being read")));
        }
        self.core.complete_file(&rec.id).await?;
        Ok(FileInfo {
            id: FileId::from(rec.id),
            space_id: space.clone(),
            uploader: self.user_id().clone(),
            name,
            size,
            ready: true,
        })
    }

    async fn put_chunk_retrying(&self, file: &str, index: u64, body: bytes::Bytes) -> Result<()> {
        let mut pause = std::time::Duration::from_millis(200);
        for attempt in 0.. {
            match self.core.put_chunk(file, index, body.clone()).await {
                Err(Error::CoreUnreachable(_)) | Err(Error::Core { status: 502..=504, .. }) if attempt < 5 => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }

    /// A file's metadata, decrypted and checked (key bound to its space's
    /// resource, sender as the core claims).
    pub async fn file_info(&self, id: &FileId) -> Result<FileInfo> {
        Ok(self.file_meta(id).await?.0)
    }

    async fn file_meta(&self, id: &FileId) -> Result<(FileInfo, FileKey, usize, CoreFile)> {
        let rec = self.core.file(id).await?;
        let resource = self.space(&SpaceId::from(&rec.space_id)).await?.resource;
        let key = self.kms().key(&rec.key_uri).await?;
        let (info, file_key, segment) = open_file_meta(&key, &resource, &rec)?;
        Ok((info, file_key, segment, rec))
    }

    /// Downloads file `id` to `dest`, verifying every segment. Writes to a
    /// private temporary file beside it and gives it its name at the end: a
    /// failed download (tampered, truncated, reordered) leaves nothing at `dest`.
    pub async fn download(&self, id: &FileId, dest: &Path, progress: Progress<'_>) -> Result<FileInfo> {
        self.download_to(id, dest, false, progress).await
    }

    /// Like [`Session::download`]; `overwrite` allows replacing an existing
    /// `dest`. The plaintext goes to a fresh, private (0600) temporary file
    /// beside `dest`, created exclusively (never through a planted link), and
    /// reaches `dest` only after the final segment verified.
    pub async fn download_to(
        &self,
        id: &FileId,
        dest: &Path,
        overwrite: bool,
        progress: Progress<'_>,
    ) -> Result<FileInfo> {
        if !overwrite && tokio::fs::symlink_metadata(dest).await.is_ok() {
            return Err(Error::Invalid(format!("{} already exists", dest.display())));
        }
        let (info, file_key, segment, rec) = self.file_meta(id).await?;
        download_verified(&self.core, &rec, info, &file_key, segment, dest, overwrite, progress).await
    }
}

/// Opens a file's sealed metadata with `key` and checks it: the key is bound
/// to the space's `resource`, the sealed sender is the uploader the core
/// names, the segment and chunk sizes are sane, and the stored size is the
/// one the sealed size implies. Returns what it says, the file key and the
/// segment size.
pub(crate) fn open_file_meta(
    key: &ContentKey,
    resource: &KmsUri,
    rec: &CoreFile,
) -> Result<(FileInfo, FileKey, usize)> {
    if key.resource.as_ref() != Some(resource) {
        return Err(Error::Tampered("the file's key is bound to another resource than its space".into()));
    }
    let env =
        envelope::open(&key.key, &rec.meta_ciphertext, &rec.key_uri, &resource.to_string(), Some(&rec.uploader), None)?;
    let Body::File { name, size, key: fk, segment } = &env.body else {
        return Err(Error::Tampered("the file's metadata is not file metadata".into()));
    };
    let seg = *segment as usize;
    if !(filecrypt::MIN_SEGMENT..=filecrypt::MAX_SEGMENT).contains(&seg) {
        return Err(Error::Tampered("the file's sealed segment size is out of range".into()));
    }
    if rec.chunk_size < 1 || rec.chunk_size > MAX_DOWNLOAD_CHUNK as i64 {
        return Err(Error::Tampered("the core gives the file an impossible chunk size".into()));
    }
    let raw = zeroize::Zeroizing::new(
        URL_SAFE_NO_PAD.decode(fk).map_err(|_| Error::Tampered("the file key is not base64url".into()))?,
    );
    let file_key = FileKey::from_bytes(&raw)?;
    let expected = filecrypt::ciphertext_len(*size, seg);
    if rec.size < 0 || rec.size as u64 != expected {
        return Err(Error::Tampered("the file's stored size does not match its sealed size".into()));
    }
    let info = FileInfo {
        id: FileId::from(&rec.id),
        space_id: SpaceId::from(&rec.space_id),
        uploader: UserId::from(&rec.uploader),
        name: name.clone(),
        size: *size,
        ready: rec.ready,
    };
    Ok((info, file_key, seg))
}

/// Downloads a file whose metadata [`open_file_meta`] opened, through
/// `core` (a member's or a compliance reader's), to `dest`: into a fresh,
/// private (0600) temporary file beside it, created exclusively, placed at
/// `dest` only after the final segment verified (replacing it only with
/// `overwrite`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn download_verified(
    core: &CoreApi,
    rec: &CoreFile,
    info: FileInfo,
    file_key: &FileKey,
    segment: usize,
    dest: &Path,
    overwrite: bool,
    progress: Progress<'_>,
) -> Result<FileInfo> {
    if !info.ready {
        return Err(Error::Invalid("the file is still being uploaded".into()));
    }
    // Deleted when dropped unpublished (a failed download).
    let part = secretfile::NewFile::create(dest)?;
    let out = tokio::fs::File::from_std(part.as_file().try_clone()?);
    download_into(core, rec, file_key, segment, out, progress).await?;
    // Fsynced, named (never over an existing file without `overwrite`: the
    // name may have been taken meanwhile), the directory fsynced.
    let placed = tokio::task::spawn_blocking(move || if overwrite { part.publish_replacing() } else { part.publish() })
        .await
        .map_err(|_| Error::Io(std::io::Error::other("the task placing the download failed")))?;
    placed.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Invalid(format!("{} already exists", dest.display())),
        _ => Error::Io(e),
    })?;
    Ok(info)
}

async fn download_into(
    core: &CoreApi,
    rec: &CoreFile,
    file_key: &FileKey,
    segment: usize,
    mut out: tokio::fs::File,
    progress: Progress<'_>,
) -> Result<()> {
    let total = rec.size as u64;
    let chunks = if rec.size == 0 { 0 } else { (rec.size as u64 - 1) / rec.chunk_size as u64 + 1 };
    let header_len = filecrypt::header_len();
    let unit = segment + filecrypt::TAG_LEN;
    let mut buf: Vec<u8> = Vec::with_capacity(unit * 2);
    let mut dec: Option<Decryptor> = None;
    let mut consumed = 0u64;
    let mut received = 0u64;
    for index in 0..chunks {
        let data = core.get_chunk(&rec.id, index, rec.chunk_size as usize).await?;
        received += data.len() as u64;
        if received > total {
            return Err(Error::Tampered("the core sent more file data than the file has".into()));
        }
        let mut data = &data[..];
        while !data.is_empty() {
            // Top the buffer up to one unit (the header first).
            let want = if dec.is_none() { header_len } else { unit };
            let take = (want - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() < want {
                break;
            }
            match dec.as_mut() {
                None => {
                    dec = Some(Decryptor::new(file_key, &buf)?);
                    consumed += buf.len() as u64;
                    buf.clear();
                }
                Some(d) => {
                    consumed += buf.len() as u64;
                    // A full unit is the last only when it ends the file.
                    d.open_segment(&mut buf, consumed == total)?;
                    out.write_all(&buf).await?;
                    buf.clear();
                }
            }
        }
        progress(received, total);
    }
    if received != total {
        return Err(Error::Tampered("the file is shorter than its sealed size: truncated".into()));
    }
    let mut d = dec.ok_or_else(|| Error::Tampered("the file has no header: truncated".into()))?;
    if !buf.is_empty() {
        // The final, short segment.
        d.open_segment(&mut buf, true)?;
        out.write_all(&buf).await?;
    }
    d.finish()?;
    out.flush().await?;
    out.sync_all().await?;
    Ok(())
}
