//! Rotating the static key with an overlap, so that clients re-pin without an outage.
//!
//! 1. `stage`: a new key and certificate are generated beside the current
//!    ones (`static-key.next.sealed`, `static-cert.next.pem`), sealed under
//!    the CMK. From the next start every node serves both: handshakes
//!    encrypted to either are answered and signed by that same key, and
//!    `GET /kms/info` lists both (`keys`). The org distributes the new pin.
//! 2. `promote`: the next key becomes the current one and the old one the
//!    previous one (`static-key.previous.sealed`), still served. Nodes pick
//!    it up as they restart, one by one: every node serves both keys all
//!    along, so no client is refused in between.
//! 3. `retire`: the previous key is destroyed once no client pins it.
//!
//! Each session remembers the key its client pinned, so its resets are
//! signed with that key across a promotion.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::crypto::Cmk;
use crate::server::{load_or_create_static_key, StaticKey};

/// A static key besides the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Staged, not yet promoted.
    Next,
    /// Promoted away from, not yet retired.
    Previous,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Next => "next",
            Slot::Previous => "previous",
        }
    }
}

/// `dir/name.ext` → `dir/name.<slot>.ext`.
fn sibling(path: &Path, slot: Slot) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{}.{}", slot.name(), ext.to_string_lossy()),
        None => format!("{stem}.{}", slot.name()),
    };
    path.with_file_name(name)
}

/// The key and certificate paths of the current key.
fn current_paths(cfg: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = cfg.static_key.path.clone().context("static_key.path is not set (Config::parse sets it)")?;
    let cert = cfg.static_key.cert_path.clone().context("static_key.cert_path is not set (Config::parse sets it)")?;
    Ok((key, cert))
}

/// The key and certificate paths of a slot.
pub fn slot_paths(cfg: &Config, slot: Slot) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (key, cert) = current_paths(cfg)?;
    Ok((sibling(&key, slot), sibling(&cert, slot)))
}

fn with_paths(cfg: &Config, key: PathBuf, cert: PathBuf) -> Config {
    let mut c = cfg.clone();
    c.static_key.path = Some(key);
    c.static_key.cert_path = Some(cert);
    c
}

/// The key in `slot`, if there is one.
pub fn load_slot(cfg: &Config, cmk: &Cmk, slot: Slot) -> anyhow::Result<Option<StaticKey>> {
    let (key, cert) = slot_paths(cfg, slot)?;
    if !key.exists() {
        return Ok(None);
    }
    if !cert.exists() {
        bail!("{} has no certificate beside it ({})", key.display(), cert.display());
    }
    let k = load_or_create_static_key(&with_paths(cfg, key.clone(), cert), cmk)
        .with_context(|| format!("the {} static key {}", slot.name(), key.display()))?;
    Ok(Some(k))
}

/// Generates the next key (refused if one is staged already).
pub fn stage(cfg: &Config, cmk: &Cmk) -> anyhow::Result<StaticKey> {
    let (key, cert) = slot_paths(cfg, Slot::Next)?;
    if key.exists() || cert.exists() {
        bail!("a next static key is staged already ({}): promote it, or delete both files first", key.display());
    }
    let k = load_or_create_static_key(&with_paths(cfg, key.clone(), cert), cmk)?;
    if !k.created {
        // Another `stage` ran at the same moment; its key is the one staged.
        bail!("a next static key was staged meanwhile ({}): promote it, or delete both files first", key.display());
    }
    Ok(k)
}

/// Makes the next key current and the current one previous.
pub fn promote(cfg: &Config) -> anyhow::Result<()> {
    let (key, cert) = current_paths(cfg)?;
    let (next_key, next_cert) = slot_paths(cfg, Slot::Next)?;
    let (prev_key, prev_cert) = slot_paths(cfg, Slot::Previous)?;
    if !next_key.exists() || !next_cert.exists() {
        bail!("no next static key is staged ({}): run `custos kms static-key stage` first", next_key.display());
    }
    if prev_key.exists() || prev_cert.exists() {
        bail!("a previous static key is still served ({}): retire it first", prev_key.display());
    }
    // Each rename is atomic; the order keeps a key in every role a node may read at any moment.
    std::fs::rename(&key, &prev_key).with_context(|| format!("renaming {}", key.display()))?;
    std::fs::rename(&cert, &prev_cert).with_context(|| format!("renaming {}", cert.display()))?;
    std::fs::rename(&next_key, &key).with_context(|| format!("renaming {}", next_key.display()))?;
    std::fs::rename(&next_cert, &cert).with_context(|| format!("renaming {}", next_cert.display()))?;
    sync_dir(&key)?;
    Ok(())
}

/// Destroys the previous key (overwritten, then removed).
pub fn retire(cfg: &Config) -> anyhow::Result<()> {
    let (prev_key, prev_cert) = slot_paths(cfg, Slot::Previous)?;
    if !prev_key.exists() {
        bail!("there is no previous static key ({})", prev_key.display());
    }
    // Overwritten in place (same inode), so the sealed bytes do not simply move to a free block.
    crate::masterkeys::shred_file(&prev_key).with_context(|| format!("shredding {}", prev_key.display()))?;
    let _ = std::fs::remove_file(&prev_cert);
    sync_dir(&prev_key)?;
    Ok(())
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_keep_the_extension() {
        assert_eq!(sibling(Path::new("/d/static-key.sealed"), Slot::Next), Path::new("/d/static-key.next.sealed"));
        assert_eq!(sibling(Path::new("/d/static-cert.pem"), Slot::Previous), Path::new("/d/static-cert.previous.pem"));
        assert_eq!(sibling(Path::new("/d/key"), Slot::Next), Path::new("/d/key.next"));
    }
}
