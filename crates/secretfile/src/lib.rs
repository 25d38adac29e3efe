//! Writing secrets to disk, one way.
//!
//! Every file this crate writes is
//!
//! - **private**: created with mode 0600 (0700 for directories), so it is
//!   never readable by others, not even for an instant;
//! - **whole or absent**: written to a uniquely named temporary file in the
//!   same directory (`.<name>.<random>.tmp`, created with `O_EXCL`), fsynced,
//!   and only then given its name, so no reader ever sees it half-written;
//! - **durable**: the directory is fsynced after the name appears, so that a
//!   crash does not take back a file a caller was told exists;
//! - **never replaced unless asked**: [`create_new`] publishes with
//!   `renameat2(RENAME_NOREPLACE)` or, where the file system lacks it, a hard
//!   link, and fails with [`io::ErrorKind::AlreadyExists`] (changing nothing)
//!   if the name is taken; only [`replace`] and [`NewFile::publish_replacing`]
//!   rename over an existing file.
//!
//! Writers that race for one name (two nodes starting on one data directory)
//! use [`create_or_read`]: exactly one wins, and the others get the winner's
//! bytes to use instead of their own.
//!
//! A temporary file left behind by a crash has a name nobody else will pick,
//! so it never blocks a later write; it is not cleaned up (another process may
//! be writing it), and holds what the crashed writer wrote, with mode 0600.
//!
//! Unix is what this is for. Elsewhere it compiles and does the same except
//! for modes and directory fsyncs, which those systems do not have.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Random characters in a temporary file's name.
const RANDOM_CHARS: usize = 12;

/// Writes `bytes` to a new file at `path` (mode 0600), durably, never
/// replacing anything: if `path` exists the error is
/// [`io::ErrorKind::AlreadyExists`], and nothing is changed.
///
/// The directory must exist ([`create_dir_all`] makes one privately).
pub fn create_new(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    let mut f = NewFile::create(path)?;
    f.write_all(bytes)?;
    f.publish()
}

/// Writes `bytes` to `path` (mode 0600), durably, atomically replacing
/// whatever file is there: readers see the old file or the new one, whole.
///
/// For callers that mean to overwrite (a rotated credential, a key re-sealed
/// under a new master key); a first write of a secret others may race for
/// wants [`create_new`] or [`create_or_read`].
pub fn replace(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    let mut f = NewFile::create(path)?;
    f.write_all(bytes)?;
    f.publish_replacing()
}

/// What [`create_or_read`] did.
pub enum Outcome {
    /// Our bytes are at the path now.
    Created,
    /// Another writer's file was there first: its bytes (zeroized on drop).
    Existing(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Created => f.write_str("Created"),
            Outcome::Existing(b) => write!(f, "Existing({} bytes)", b.len()),
        }
    }
}

/// [`create_new`], or, if another writer got there first, the bytes it wrote
/// (complete: a file appears only once written and fsynced). For writers that
/// may race for one name: exactly one creates it, every other reads and uses
/// the winner's.
pub fn create_or_read(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<Outcome> {
    let path = path.as_ref();
    // A file seen as existing may be deleted before it is read (by an operator,
    // or a rotation): then try again, a few times.
    let mut last = None;
    for _ in 0..3 {
        match create_new(path, bytes) {
            Ok(()) => return Ok(Outcome::Created),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match fs::read(path) {
            Ok(b) => return Ok(Outcome::Existing(Zeroizing::new(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("the file kept appearing and vanishing")))
}

/// A private file being written, to be published under the name it was made
/// for. Created as a uniquely named temporary file (mode 0600, `O_EXCL`) in
/// that name's directory; deleted if dropped unpublished.
///
/// For writers that stream (a download); [`create_new`] and [`replace`] are
/// this with one write.
pub struct NewFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl std::fmt::Debug for NewFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewFile").field("dest", &self.dest).field("tmp", &self.tmp.path()).finish()
    }
}

impl NewFile {
    /// Starts a file to be published at `dest` (whose directory must exist).
    pub fn create(dest: impl AsRef<Path>) -> io::Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
            .to_string_lossy()
            .into_owned();
        let mut b = tempfile::Builder::new();
        let prefix = format!(".{name}.");
        b.prefix(&prefix).suffix(".tmp").rand_bytes(RANDOM_CHARS);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            b.permissions(fs::Permissions::from_mode(0o600));
        }
        let tmp = b.tempfile_in(parent(&dest))?;
        Ok(Self { tmp, dest })
    }

    /// The open temporary file (to clone for an async writer, say).
    pub fn as_file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The name the file is published under.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Fsyncs the file, gives it its name unless that name is taken
    /// ([`io::ErrorKind::AlreadyExists`]: the temporary file is deleted and
    /// nothing else changes), and fsyncs the directory.
    pub fn publish(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist_noclobber(&self.dest).map_err(|e| e.error)?;
        sync_dir(parent(&self.dest))
    }

    /// Fsyncs the file, renames it over whatever is at its name, and fsyncs
    /// the directory: for callers that mean to overwrite.
    pub fn publish_replacing(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.dest).map_err(|e| e.error)?;
        sync_dir(parent(&self.dest))
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.as_file_mut().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.tmp.as_file_mut().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.as_file_mut().flush()
    }
}

/// Creates `path` itself exclusively (mode 0600, `O_EXCL`:
/// [`io::ErrorKind::AlreadyExists`] if it exists), writes `bytes` and fsyncs
/// the file; removes it again if writing fails. No temporary file and no
/// directory fsync: a reader could see it half-written, so this is only for
/// files in a private directory nobody reads until it is complete (an
/// export's staging directory), which the caller fsyncs once with
/// [`sync_dir`] when done.
pub fn write_exclusive(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    let path = path.as_ref();
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if written.is_err() {
        drop(f);
        let _ = fs::remove_file(path);
    }
    written
}

/// Creates the directory `path` (mode 0700) and fsyncs its parent. Fails
/// with [`io::ErrorKind::AlreadyExists`] if it exists, like
/// [`std::fs::create_dir`].
pub fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    mkdir_private(path)?;
    sync_dir(parent(path))
}

/// Creates `path` and any missing parents (each mode 0700, each parent
/// fsynced). An existing directory is fine and its mode is left as it is.
pub fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    let missing: Vec<&Path> = path
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| fs::symlink_metadata(p).is_err())
        .collect();
    for dir in missing.into_iter().rev() {
        match mkdir_private(dir) {
            Ok(()) => sync_dir(parent(dir))?,
            // Made meanwhile by someone else: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    if path.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not a directory", path.display())))
    }
}

/// Fsyncs a directory, so that names created or removed in it last (a no-op
/// where directories cannot be opened, as on Windows).
pub fn sync_dir(dir: impl AsRef<Path>) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir.as_ref())?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn mkdir_private(path: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

/// The directory a path's file is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn creates_private_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        create_new(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(mode(&p), 0o600);
        let e = create_new(&p, b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"first", "the existing file is untouched");
        assert_eq!(entries(dir.path()), ["secret.key"], "no temporary file left behind");
    }

    #[test]
    fn an_existing_file_of_any_kind_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // Someone else's file, readable by all: not ours to replace, nor to chmod.
        let p = dir.path().join("theirs");
        fs::write(&p, b"theirs").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(create_new(&p, b"ours").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!((fs::read(&p).unwrap(), mode(&p)), (b"theirs".to_vec(), 0o644));
        // A dangling symlink is a name taken, not a place to write through.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert_eq!(create_new(&link, b"ours").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("elsewhere").exists());
        // A directory too.
        fs::create_dir(dir.path().join("d")).unwrap();
        assert!(create_new(dir.path().join("d"), b"ours").is_err());
        let mut left = entries(dir.path());
        left.retain(|n| n.starts_with('.'));
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    #[test]
    fn replace_overwrites_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("credentials.json");
        replace(&p, b"one").unwrap(); // absent: created
        assert_eq!(fs::read(&p).unwrap(), b"one");
        // An old file readable by others is replaced by a private one (a new inode).
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(entries(dir.path()), ["credentials.json"]);
    }

    #[test]
    fn no_directory_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = create_new(dir.path().join("missing/secret"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!dir.path().join("missing").exists(), "directories are the caller's to make");
    }

    #[test]
    fn a_bare_name_is_in_the_current_directory() {
        assert_eq!(parent(Path::new("secret")), Path::new("."));
        assert_eq!(parent(Path::new("/secret")), Path::new("/"));
        assert_eq!(parent(Path::new("a/secret")), Path::new("a"));
    }

    #[test]
    fn concurrent_creators_one_wins_whole() {
        const THREADS: usize = 16;
        const LEN: usize = 256 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("static-key.sealed");
        let barrier = std::sync::Barrier::new(THREADS);
        let outcomes: Vec<(u8, Outcome)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS as u8)
                .map(|i| {
                    let (p, barrier) = (&p, &barrier);
                    s.spawn(move || {
                        let bytes = vec![i; LEN];
                        barrier.wait();
                        (i, create_or_read(p, &bytes).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<u8> =
            outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Created)).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "exactly one writer creates the file: {winners:?}");
        let on_disk = fs::read(&p).unwrap();
        assert_eq!(on_disk, vec![winners[0]; LEN], "the file holds the winner's bytes, whole");
        for (i, o) in &outcomes {
            if let Outcome::Existing(b) = o {
                assert_eq!(**b, on_disk, "writer {i} read the winner's bytes, whole");
            }
        }
        assert_eq!(mode(&p), 0o600);
        assert_eq!(entries(dir.path()), ["static-key.sealed"], "no temporary files left behind");
    }

    #[test]
    fn concurrent_create_new_exactly_one_ok() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("webhook.key");
        let results: Vec<io::Result<()>> = std::thread::scope(|s| {
            let p = &p;
            let hs: Vec<_> = (0..8u8).map(|i| s.spawn(move || create_new(p, &[i; 32]))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| e.kind() == io::ErrorKind::AlreadyExists));
        assert_eq!(fs::read(&p).unwrap().len(), 32);
        assert_eq!(entries(dir.path()), ["webhook.key"]);
    }

    #[test]
    fn leftovers_of_a_crash_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("static-key.sealed");
        // What crashed writers leave: the fixed names older code used, and a
        // temporary file of this crate's kind.
        for left in [".static-key.sealed.tmp", "static-key.tmp", ".static-key.sealed.AAAAAAAAAAAA.tmp"] {
            fs::write(dir.path().join(left), b"half").unwrap();
        }
        create_new(&p, b"whole").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"whole");
        replace(&p, b"again").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"again");
    }

    #[test]
    fn an_unpublished_file_vanishes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("download.bin");
        let mut f = NewFile::create(&p).unwrap();
        f.write_all(b"partial").unwrap();
        let name = f.tmp.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".download.bin.") && name.ends_with(".tmp"), "{name}");
        assert_eq!(mode(f.tmp.path()), 0o600);
        drop(f);
        assert!(entries(dir.path()).is_empty());
        // Streamed in pieces, then published.
        let mut f = NewFile::create(&p).unwrap();
        for chunk in [&b"one "[..], b"two ", b"three"] {
            f.write_all(chunk).unwrap();
        }
        assert_eq!(f.dest(), p);
        f.publish().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one two three");
        // Publishing over it is refused, and the refused file is gone.
        let mut f = NewFile::create(&p).unwrap();
        f.write_all(b"other").unwrap();
        assert_eq!(f.publish().unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(entries(dir.path()), ["download.bin"]);
    }

    #[test]
    fn write_exclusive_is_exclusive_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("messages.json");
        write_exclusive(&p, b"{}").unwrap();
        assert_eq!((fs::read(&p).unwrap(), mode(&p)), (b"{}".to_vec(), 0o600));
        assert_eq!(write_exclusive(&p, b"[]").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"{}");
    }

    #[test]
    fn private_directories() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        create_dir_all(&deep).unwrap(); // existing: fine
        // An existing directory's mode is the operator's.
        fs::set_permissions(dir.path().join("a"), fs::Permissions::from_mode(0o750)).unwrap();
        create_dir_all(dir.path().join("a/x")).unwrap();
        assert_eq!((mode(&dir.path().join("a")), mode(&dir.path().join("a/x"))), (0o750, 0o700));
        // create_dir: exactly one, new.
        create_dir(dir.path().join("staging")).unwrap();
        assert_eq!(mode(&dir.path().join("staging")), 0o700);
        assert_eq!(create_dir(dir.path().join("staging")).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        // A file in the way.
        fs::write(dir.path().join("f"), b"").unwrap();
        assert!(create_dir_all(dir.path().join("f")).is_err());
        assert!(create_dir_all(dir.path().join("f/g")).is_err());
    }

    #[test]
    fn concurrent_create_dir_all() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("x/y/z");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| create_dir_all(&deep).unwrap());
            }
        });
        assert!(deep.is_dir());
    }

    #[test]
    fn outcome_does_not_print_bytes() {
        let o = Outcome::Existing(Zeroizing::new(b"hunter2".to_vec()));
        assert_eq!(format!("{o:?}"), "Existing(7 bytes)");
    }
}
