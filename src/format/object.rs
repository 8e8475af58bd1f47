//! Objects as the readers use them: a [`fetch::Object`](Object) is the [`Source`] of the
//! byte ranges a reader puts in its tree, and a small metadata file is read whole in one GET.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::location::Location;
use crate::tree::Source;

impl Source for Object {
    fn uri(&self) -> String {
        self.location().uri()
    }

    fn read_ranges(&self, ranges: Vec<Range<u64>>) -> BoxFuture<'static, Result<Vec<Bytes>>> {
        let object = self.clone();
        Box::pin(async move { object.read_ranges(&ranges).await })
    }

    fn ranges_as_ready(
        &self,
        ranges: Vec<Range<u64>>,
    ) -> BoxStream<'static, Result<(usize, Bytes)>> {
        Object::ranges_as_ready(self, ranges)
    }
}

/// A metadata file (a manifest, a `.metadata`, an index) larger than its reader's limit: the
/// source of an [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{size} bytes of {what} is more than the {limit}-byte limit")]
pub struct TooLargeFile {
    /// What the file is (`manifest`).
    pub what: &'static str,
    /// Its size.
    pub size: u64,
    /// The limit.
    pub limit: u64,
}

/// Bytes of a metadata file read by the first GET: typical manifests, metadata and indexes fit,
/// and a file over its limit is refused after moving at most this much.
const FIRST_READ: u64 = 16 << 20;

/// The whole file at `location`, pinned by the ranged GET that reads it (one, unless it is over
/// 16 MiB), when it holds at most `limit` bytes.
///
/// # Errors
///
/// [`Error::Corrupt`] with [`TooLargeFile`] over the limit; the read's errors.
pub(crate) async fn read_whole(
    location: &Location,
    limit: u64,
    what: &'static str,
    fetch: &FetchOptions,
) -> Result<(Object, Bytes)> {
    let first = limit.min(FIRST_READ);
    let (object, bytes) = Object::open_prefix(location, first, fetch.clone()).await?;
    let size = object.info().size;
    if size > limit {
        return Err(Error::corrupt(
            location.uri(),
            TooLargeFile { what, size, limit },
        ));
    }
    let whole = object.extend_prefix(bytes, size).await?;
    Ok((object, whole))
}

/// `object` as the one source every tensor of it shares.
pub(crate) fn source(object: &Object) -> Arc<dyn Source> {
    Arc::new(object.clone())
}
