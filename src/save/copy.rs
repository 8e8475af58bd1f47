//! Copying objects and whole checkpoints between any two stores: parallel ETag-pinned range
//! reads in, multipart uploads out, streaming (at most the fetch window and one part are held).
//! A directory's commit markers (`manifest.json`, `.metadata`) are copied last, so the copy is
//! committed only once everything it names is there.

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use super::manifest::MANIFEST;
use super::safetensors::part_size_for;
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::format::dcp;
use crate::location::{Location, Scheme};

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
/// # Errors
///
/// The read's errors (including [`Error::ObjectChanged`] if `src` changes mid-copy) and the
/// upload's (which is aborted, leaving nothing at `dst`).
pub async fn copy_object(src: &Location, dst: &Location, fetch: FetchOptions) -> Result<u64> {
    let object = Object::open(src, fetch).await?;
    let size = object.info().size;
    if dst.scheme() == Scheme::Http {
        // object_store's HTTP (WebDAV) store takes no multipart uploads: one PUT.
        let data = object.bytes().await?;
        dst.store()
            .put(dst.path(), data.into())
            .await
            .map_err(|e| dst.error("put", e))?;
        return Ok(size);
    }
    let mut writer =
        BufWriter::with_capacity(dst.store().clone(), dst.path().clone(), part_size_for(size));
    let result = async {
        let mut pieces = object.stream();
        while let Some(piece) = pieces.next().await {
            let (_, bytes) = piece?;
            writer.put(bytes).await.map_err(|e| dst.error("put", e))?;
        }
        writer.shutdown().await.map_err(|e| Error::Storage {
            uri: dst.uri(),
            operation: "put",
            detail: e.to_string(),
        })
    }
    .await;
    if result.is_err() {
        let _ = writer.abort().await;
    }
    result.map(|()| size)
}

/// Copies every object under the directory `src` to the same relative names under `dst`,
/// `concurrency` at a time, commit markers last.
///
/// # Errors
///
/// [`Error::NotFound`] when `src` holds nothing; otherwise as [`copy_object`].
pub async fn copy_dir(
    src: &Location,
    dst: &Location,
    fetch: FetchOptions,
    concurrency: usize,
) -> Result<Copied> {
    let objects: Vec<_> = src
        .store()
        .list(Some(src.path()))
        .try_collect()
        .await
        .map_err(|e| src.error("list", e))?;
    let names: Vec<String> = objects
        .iter()
        .filter_map(|o| {
            let parts: Vec<_> = o.location.prefix_match(src.path())?.collect();
            Some(
                parts
                    .iter()
                    .map(|p| p.as_ref())
                    .collect::<Vec<_>>()
                    .join("/"),
            )
        })
        .collect();
    if names.is_empty() {
        return Err(Error::NotFound { uri: src.uri() });
    }
    let is_marker = |n: &str| n == MANIFEST || n == dcp::METADATA;
    let (markers, data): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| is_marker(n));
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
    for marker in markers {
        copied.bytes += copy(marker).await?;
        copied.objects += 1;
    }
    Ok(copied)
}
