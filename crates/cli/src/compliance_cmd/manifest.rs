//! The export's manifest: every file's size and SHA-256, one SHA-256 over
//! the sorted list, and `custos compliance verify`, which recomputes them.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::output::text::safe;
use crate::output::Out;

/// The manifest's format name.
pub(super) const FORMAT: &str = "custos-compliance-export/1";
/// The manifest's file name.
pub(super) const MANIFEST: &str = "manifest.json";
/// Staging directories (inside the export directory) start with this.
pub(super) const STAGING_PREFIX: &str = ".custos-export-";
/// Largest manifest `verify` reads.
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;

/// How `digest` is computed.
pub(super) const DIGEST_RULE: &str = "sha256 over, for each file sorted by name: name, NUL, sha256 (lowercase hex), LF";

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub(super) format: String,
    pub(super) space: ManifestSpace,
    pub(super) range: ManifestRange,
    pub(super) officer: String,
    pub(super) subject: String,
    pub(super) case: Option<String>,
    pub(super) generated_at: String,
    pub(super) digest_rule: String,
    pub(super) files: Vec<ManifestFile>,
    pub(super) digest: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ManifestSpace {
    pub(super) id: String,
    pub(super) resource: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ManifestRange {
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ManifestFile {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_file(p: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).with_context(|| format!("reading {}", p.display()))?;
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(ctx.finish().as_ref())))
}

pub(super) fn list_digest(list: &[ManifestFile]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut sorted: Vec<&ManifestFile> = list.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for f in sorted {
        ctx.update(f.name.as_bytes());
        ctx.update(b"\0");
        ctx.update(f.sha256.as_bytes());
        ctx.update(b"\n");
    }
    hex(ctx.finish().as_ref())
}

/// Every regular file under `root` (relative names with `/`), sorted, with
/// size and SHA-256; the manifest and staging leftovers are skipped. Anything
/// that is neither a file nor a directory (a link, a device) is an error.
pub(super) fn hash_tree(root: &Path, skip_manifest: bool) -> anyhow::Result<Vec<ManifestFile>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<ManifestFile>, skip_manifest: bool) -> anyhow::Result<()> {
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let name =
                e.file_name().into_string().map_err(|n| anyhow::anyhow!("a file name that is not UTF-8: {n:?}"))?;
            if rel.is_empty() && ((skip_manifest && name == MANIFEST) || name.starts_with(STAGING_PREFIX)) {
                continue;
            }
            let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let t = e.file_type()?;
            if t.is_dir() {
                walk(root, &path, out, skip_manifest)?;
            } else if t.is_file() {
                let (size, sha256) = sha256_file(&root.join(&path))?;
                out.push(ManifestFile { name: path, size, sha256 });
            } else {
                bail!("{path} is not a regular file");
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", &mut out, skip_manifest)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A safe relative name: `a/b`, no `..`, no empty or hidden-root tricks.
fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('/')
        && n.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !n.chars().any(|c| c == '\\' || c.is_control())
}

/// What `verify` found wrong: a kind (`manifest`, `digest`, `missing`,
/// `not_a_file`, `modified`, `unlisted`), the file, and what.
struct Problem {
    kind: &'static str,
    file: String,
    detail: String,
}

/// The manifest if everything matches it, else the first problem found.
fn check_export(dir: &Path) -> anyhow::Result<Result<Manifest, Problem>> {
    let problem = |kind: &'static str, file: &str, detail: String| Ok(Err(Problem { kind, file: file.into(), detail }));
    let mpath = dir.join(MANIFEST);
    let meta = match std::fs::symlink_metadata(&mpath) {
        Ok(m) => m,
        Err(_) => return problem("manifest", MANIFEST, "there is no manifest.json: not a complete export".into()),
    };
    if !meta.is_file() || meta.len() > MAX_MANIFEST {
        return problem("manifest", MANIFEST, "manifest.json is not a regular file of sane size".into());
    }
    let text = std::fs::read(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let m: Manifest = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(e) => return problem("manifest", MANIFEST, format!("manifest.json is not a manifest ({e})")),
    };
    if m.format != FORMAT {
        return problem("manifest", MANIFEST, format!("unknown format {:?}", safe(&m.format)));
    }
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return problem("manifest", MANIFEST, "the file list is not sorted by name without repeats".into());
    }
    if let Some(bad) = m.files.iter().find(|f| !safe_name(&f.name) || f.name == MANIFEST) {
        return problem("manifest", &bad.name, "a listed name that is not a plain relative path".into());
    }
    let digest = list_digest(&m.files);
    if digest != m.digest {
        return problem(
            "digest",
            MANIFEST,
            format!("the digest over the file list is {digest}, the manifest says {}", m.digest),
        );
    }
    for f in &m.files {
        let p = dir.join(&f.name);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => return problem("missing", &f.name, "listed in the manifest, not in the directory".into()),
        };
        if !meta.is_file() {
            return problem("not_a_file", &f.name, "not a regular file".into());
        }
        let (size, sha) = sha256_file(&p)?;
        if size != f.size {
            return problem("modified", &f.name, format!("{size} bytes, the manifest says {}", f.size));
        }
        if sha != f.sha256 {
            return problem("modified", &f.name, format!("SHA-256 {sha}, the manifest says {}", f.sha256));
        }
    }
    let listed: HashSet<&str> = names.iter().copied().collect();
    let present = match hash_tree(dir, true) {
        Ok(p) => p,
        Err(e) => return problem("unlisted", "", format!("{e:#}")),
    };
    if let Some(extra) = present.iter().find(|p| !listed.contains(p.name.as_str())) {
        return problem("unlisted", &extra.name, "in the directory, not in the manifest".into());
    }
    Ok(Ok(m))
}

pub(super) fn verify(dir: &Path, out: Out) -> anyhow::Result<bool> {
    match check_export(dir)? {
        Ok(m) => {
            let n = m.files.len();
            let leftovers: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(STAGING_PREFIX))
                .collect();
            out.print(
                || {
                    let mut s = format!(
                        "OK: {n} file(s) match the manifest (digest {}).\nSpace {} ({}), officer {}, on behalf of {}, case {}, generated {}.\nThe manifest shows the export is complete and unchanged since it was written; it is not signed, so it does not show who wrote it.",
                        m.digest,
                        safe(&m.space.id),
                        safe(&m.space.resource),
                        safe(&m.officer),
                        safe(&m.subject),
                        m.case.as_deref().map(safe).unwrap_or_else(|| "none".into()),
                        safe(&m.generated_at)
                    );
                    for l in &leftovers {
                        let _ = write!(s, "\nNote: {} is left over from an interrupted export (not part of it; safe to delete).", safe(l));
                    }
                    s
                },
                json!({"ok": true, "files": n, "digest": m.digest, "space": m.space.id, "officer": m.officer, "subject": m.subject, "case": m.case, "leftovers": leftovers}),
            );
            Ok(true)
        }
        Err(Problem { kind, file, detail }) => {
            out.print(
                || format!("MISMATCH ({kind}) {}: {}", safe(&file), safe(&detail)),
                json!({"ok": false, "problem": {"kind": kind, "file": file, "detail": detail}}),
            );
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_over_the_sorted_list() {
        let a = ManifestFile { name: "a".into(), size: 1, sha256: "00".into() };
        let b = ManifestFile { name: "b".into(), size: 1, sha256: "11".into() };
        assert_eq!(list_digest(&[a.clone(), b.clone()]), list_digest(&[b, a]));
        assert!(safe_name("eml/000001-x.eml"));
        for bad in ["", "/etc/passwd", "../x", "a//b", "a/./b", "a\\b"] {
            assert!(!safe_name(bad), "{bad}");
        }
    }
}
