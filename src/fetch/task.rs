//! Blocking file I/O off the async workers, its errors named by path.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// How much of a local file one positional read takes.
pub(crate) const LOCAL_BLOCK: usize = 4 << 20;

/// Maps an I/O error on `path` while doing `action` to ckptio's error.
pub(crate) fn local_io<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::LocalIo {
        path: path.display().to_string(),
        action,
        source,
    }
}

/// Runs blocking file I/O off the async workers; `path` and `action` name it in errors.
pub(crate) async fn blocking<T: Send + 'static>(
    path: &Path,
    action: &'static str,
    io: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(io)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
        .map_err(local_io(path, action))
}

/// Fills `buf` with the bytes of the open local `file` (at `path`) from `offset` on, by
/// positional reads of at most [`LOCAL_BLOCK`] straight into it (one copy out of the page
/// cache), on the blocking pool; `read` is told the length of each read as it lands.
pub(crate) async fn read_at<B: AsMut<[u8]> + Send + 'static>(
    file: Arc<File>,
    path: PathBuf,
    mut buf: B,
    offset: u64,
    mut read: impl FnMut(u64) + Send + 'static,
) -> Result<B> {
    blocking(&path, "read", move || {
        let mut at = offset;
        for block in buf.as_mut().chunks_mut(LOCAL_BLOCK) {
            file.read_exact_at(block, at)?;
            at += block.len() as u64;
            read(block.len() as u64);
        }
        Ok(buf)
    })
    .await
}
