//! Copying objects and whole checkpoints between any two stores: parallel ETag-pinned range
//! reads in, multipart uploads out, streaming (at most the fetch window and one part are held).
//! A directory's commit markers (`manifest.json`, `.metadata`) are copied last, create-only, so
//! the copy is committed only once everything it names is there, and a committed checkpoint at
//! the destination is never replaced.

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::format::marker;
use crate::location::{Location, special_file};
use crate::upload::{CreateError, upload};

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Objects written.
    pub objects: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Copies the object `src` to `dst`.
///
/// A local `dst` that is not a regular file (`/dev/null`, a FIFO) is written through in
/// order instead.
///
/// # Errors
///
/// The read's errors (including [`Error::ObjectChanged`] if `src` changes mid-copy) and the
/// upload's (which is aborted, leaving nothing at `dst`; a store without multipart uploads
/// takes the object as one PUT, held in memory while it is sent).
pub async fn copy_object(src: &Location, dst: &Location, fetch: FetchOptions) -> Result<u64> {
    let object = Object::open(src, fetch).await?;
    let size = object.info().size;
    // `/dev/null` or a FIFO: written through, as `get` writes it, never replaced.
    if let Some(special) = dst.local_path().filter(|p| special_file(p).is_some()) {
        object.download_to(&special).await?;
        return Ok(size);
    }
    let pieces = object.stream().map_ok(|(_, bytes)| bytes);
    upload(dst, size, pieces).await?;
    Ok(size)
}

/// Copies every object under the directory `src` to the same relative names under `dst`,
/// `concurrency` at a time, commit markers last and create-only.
///
/// A checkpoint already committed at the destination (a marker the copy would write is there)
/// is not replaced: the copy refuses before it writes anything, as a save does, and a copy
/// whose marker another writer puts first fails the same way.
///
/// # Errors
///
/// [`Error::NotFound`] when `src` holds nothing; [`Error::AlreadyCommitted`] naming the
/// committed checkpoint at the destination; otherwise as [`copy_object`].
pub async fn copy_dir(
    src: &Location,
    dst: &Location,
    fetch: FetchOptions,
    concurrency: usize,
) -> Result<Copied> {
    let names = crate::fetch::walk(src).await?;
    if names.is_empty() {
        return Err(Error::NotFound { uri: src.uri() });
    }
    // Commit markers anywhere below (a root of several checkpoints) go last.
    let (markers, data): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| marker(n.rsplit('/').next().unwrap_or(n)).is_some());
    for name in &markers {
        if crate::fetch::stat(&dst.join(name)).await.is_ok() {
            return Err(committed_at(dst, name));
        }
    }
    let copy = |name: String| {
        let (from, to, fetch) = (src.join(&name), dst.join(&name), fetch.clone());
        async move { copy_object(&from, &to, fetch).await }
    };
    let sizes: Vec<u64> = futures::stream::iter(data.into_iter().map(copy))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut copied = Copied {
        objects: sizes.len(),
        bytes: sizes.iter().sum(),
    };
    for name in markers {
        let body = Object::open(&src.join(&name), fetch.clone())
            .await?
            .bytes()
            .await?;
        copied.bytes += body.len() as u64;
        match crate::upload::put_create(&dst.join(&name), body.to_vec()).await {
            Ok(()) => copied.objects += 1,
            Err(CreateError::Exists) => return Err(committed_at(dst, &name)),
            Err(CreateError::Failed(e)) => return Err(e),
        }
    }
    Ok(copied)
}

/// The error for a commit marker `name` (relative to `dst`) already there.
fn committed_at(dst: &Location, name: &str) -> Error {
    let uri = match name.rsplit_once('/') {
        Some((dir, _)) => dst.join(dir).uri(),
        None => dst.uri(),
    };
    Error::AlreadyCommitted { uri }
}
