//! One download per destination at a time, across processes: the ranks of a job that all fetch
//! the same weights to the same path take turns on `DEST.part.lock` (an advisory `flock`)
//! instead of writing one `.part` file together and failing each other's renames.
//!
//! The owner of the lock downloads; when it is done it writes what it completed (the object's
//! ETag, version and size) into the lock file, unlinks it and lets go. A process that waited
//! reads that record from the file it still holds open: the same object means `DEST` is
//! already what it came for. Otherwise (the owner failed, or fetched another version) it
//! takes a fresh lock and carries on, resuming from the `.part` file where it can.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::file::Pinned;
use super::task::blocking;
use crate::error::Result;

/// The lock on one destination, held until [`DestLock::finish`] or drop.
#[derive(Debug)]
pub(crate) struct DestLock {
    file: File,
    path: PathBuf,
}

/// How waiting for the lock ended.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// This process owns the destination.
    Owned(DestLock),
    /// Another process completed the destination as this object while this one waited.
    Done,
}

impl DestLock {
    /// The lock file next to `dest`.
    pub(crate) fn path_for(dest: &Path) -> PathBuf {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(".part.lock");
        dest.with_file_name(name)
    }

    /// Waits for the lock on `dest`. `Done` when, meanwhile, another process completed `dest`
    /// as `wanted` (the object this process is about to fetch; `None`, with no ETag to
    /// compare, never counts as done).
    pub(crate) async fn acquire(dest: &Path, wanted: Option<Pinned>) -> Result<Acquired> {
        let path = Self::path_for(dest);
        let dest = dest.to_path_buf();
        let at = path.clone();
        blocking(&path, "lock", move || {
            loop {
                let opened = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&at);
                let file = match opened {
                    // A link planted there is removed, never written through.
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                        std::fs::remove_file(&at)?;
                        continue;
                    }
                    other => other?,
                };
                if let Err(e) = file.lock() {
                    // A file system without locks (some network mounts) downloads as before
                    // locks: alone, or racing another process.
                    let unsupported = e.kind() == std::io::ErrorKind::Unsupported
                        || matches!(e.raw_os_error(), Some(libc::ENOLCK | libc::EOPNOTSUPP));
                    if !unsupported {
                        return Err(e);
                    }
                    tracing::warn!(path = %at.display(), %e, "cannot lock the destination: downloading without taking turns");
                    return Ok(Acquired::Owned(DestLock {
                        file,
                        path: at.clone(),
                    }));
                }
                if same_file(&file, &at) {
                    return Ok(Acquired::Owned(DestLock {
                        file,
                        path: at.clone(),
                    }));
                }
                // The owner let go of a lock file it had unlinked: its record says what it did.
                if let (Some(wanted), Some(done)) = (&wanted, record(file)) {
                    let whole = std::fs::metadata(&dest).is_ok_and(|m| m.len() == wanted.size);
                    if *wanted == done && whole {
                        return Ok(Acquired::Done);
                    }
                }
            }
        })
        .await
    }

    /// The download is complete and in place: records it as `done` for the processes waiting,
    /// and lets go.
    pub(crate) fn finish(mut self, done: Option<&Pinned>) {
        if let Some(done) = done
            && let Ok(json) = serde_json::to_vec(done)
        {
            // Best effort: a waiter that cannot read it fetches the object again.
            let _ = self.file.set_len(0);
            let _ = self.file.write_all(&json);
        }
    }
}

impl Drop for DestLock {
    fn drop(&mut self) {
        // Unlinked before the lock goes (with the file), so a waiter can tell that this lock
        // file is finished with; a failed download's `.part` stays for whoever comes next.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the open `file` is still the one at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What the file's owner recorded, if it completed a download.
fn record(mut file: File) -> Option<Pinned> {
    let mut raw = Vec::new();
    file.rewind().ok()?;
    file.read_to_end(&mut raw).ok()?;
    serde_json::from_slice(&raw).ok()
}
