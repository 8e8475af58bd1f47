//! An object pinned at one version, read by parallel range requests into memory, as a stream,
//! or as a list of ranges.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use object_store::{GetOptions, GetRange};
use tokio::sync::mpsc;

use super::mapped;
use super::options::FetchOptions;
use super::plan;
use super::pool::{Lease, Pool};
use super::sink::{FrameSender, Region};
use super::source::Source;
use super::stat::{ObjectInfo, stat};
use super::task::{blocking, read_at};
use crate::error::{Class, Error, Result, TransportKind, classify};
use crate::location::Location;
use crate::streams::spawn;

/// Frames queued per concurrent request before fetching pauses: what a read holds beyond its
/// destination when copying falls behind (a frame is what one socket read gave, up to hyper's
/// read buffer of some hundred KiB).
const FRAMES_IN_FLIGHT: usize = 4;

/// The largest piece of a local file's stream: longer reads gain a local file nothing (a
/// server's cost per request is what long ranges save), and the pieces in flight are the
/// stream's memory.
const LOCAL_STREAM_CHUNK: u64 = 8 << 20;

/// An object pinned to the ETag and version its HEAD reported: every read of it asks for that
/// version, and fails with [`Error::ObjectChanged`] if the object was replaced meanwhile.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// use ckptio::{FetchOptions, Object};
///
/// let loc = ckptio::resolve("memory://doc-object/weights.bin", &Default::default())?;
/// # use object_store::ObjectStoreExt;
/// # loc.store().put(loc.path(), (0..=255u8).collect::<Vec<_>>().into()).await.unwrap();
/// let object = Object::open(&loc, FetchOptions::default()).await?;
/// let all = object.bytes().await?;
/// let parts = object.read_ranges(&[0..4, 250..256]).await?;
/// assert_eq!(parts[1], all.slice(250..256));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Object {
    source: Arc<Source>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("info", &self.source.info)
            .finish_non_exhaustive()
    }
}

impl Object {
    /// The object at `location`, pinned by one HEAD.
    ///
    /// # Errors
    ///
    /// As [`stat`](super::stat()).
    pub async fn open(location: &Location, options: FetchOptions) -> Result<Self> {
        let info = stat(location).await?;
        Ok(Self::with_info(location, info, options))
    }

    /// The object at `location`, pinned by one ranged GET of its first `len` bytes (or all of
    /// it, if smaller), which are returned too: a reader that needs a header costs one
    /// request, not a HEAD and a GET.
    ///
    /// # Errors
    ///
    /// As [`stat`](super::stat()), and as a range read.
    pub async fn open_prefix(
        location: &Location,
        len: u64,
        options: FetchOptions,
    ) -> Result<(Self, Bytes)> {
        let (object, _, prefix) =
            Self::open_range(location, GetRange::Bounded(0..len.max(1)), options).await?;
        Ok((object, prefix))
    }

    /// The object at `location`, pinned by one ranged GET of its last `len` bytes (or all of
    /// it, if smaller), which are returned with their offset: how a zip's directory is found
    /// in one request.
    ///
    /// # Errors
    ///
    /// As [`open_prefix`](Self::open_prefix).
    pub async fn open_suffix(
        location: &Location,
        len: u64,
        options: FetchOptions,
    ) -> Result<(Self, u64, Bytes)> {
        let len = len.max(1);
        if !location.capabilities().suffix_ranges {
            let object = Self::open(location, options).await?;
            return object.tail(len).await;
        }
        Self::open_range(location, GetRange::Suffix(len), options).await
    }

    /// The object pinned by one ranged GET, with the range the server sent and its bytes (a
    /// body that breaks off is finished by the retrying range reader).
    async fn open_range(
        location: &Location,
        range: GetRange,
        options: FetchOptions,
    ) -> Result<(Self, u64, Bytes)> {
        let suffix = match range {
            GetRange::Suffix(n) => Some(n),
            _ => None,
        };
        let get = GetOptions {
            range: Some(range),
            ..GetOptions::default()
        };
        let result = match location.store().get_opts(location.path(), get).await {
            Ok(result) => result,
            // An empty object has no byte to ask for, and its store refuses the range; some
            // servers (s3s-fs) refuse a suffix longer than the object instead of sending all of
            // it, and some stores any suffix (Azure, in a store built elsewhere). A HEAD tells.
            // Any other failure (no object, a server error) is the GET's own.
            Err(other) if !(may_be_empty(&other) || suffix.is_some() && suffix_refused(&other)) => {
                return Err(location.error("get", other));
            }
            Err(first) => {
                let info = match stat(location).await {
                    Ok(info) => info,
                    Err(_) => return Err(location.error("get", first)),
                };
                let object = Self::with_info(location, info, options);
                return match suffix {
                    Some(n) => object.tail(n).await,
                    None if object.info().size == 0 => Ok((object, 0, Bytes::new())),
                    None => Err(location.error("get", first)),
                };
            }
        };
        let object = Self::with_info(
            location,
            ObjectInfo::new(location, result.meta.clone()),
            options,
        );
        let sent = result.range.clone();
        let first = result.bytes().await.unwrap_or_default();
        let got = sent.start + first.len() as u64;
        let bytes = if got >= sent.end {
            first.slice(..(sent.end - sent.start) as usize)
        } else {
            let rest = object.read_range(got..sent.end).await?;
            [first, rest].concat().into()
        };
        Ok((object, sent.start, bytes))
    }

    /// This object with its last `len` bytes (all of it, if smaller) and their offset, read as
    /// a bounded range of the size it was pinned at.
    async fn tail(self, len: u64) -> Result<(Self, u64, Bytes)> {
        let size = self.info().size;
        let start = size.saturating_sub(len);
        let bytes = if size == 0 {
            Bytes::new()
        } else {
            self.read_range(start..size).await?
        };
        Ok((self, start, bytes))
    }

    /// The first `end` bytes of the object, given its first `have.len()` bytes: what is
    /// missing is read (one range request, retried), what is beyond `end` dropped.
    ///
    /// # Errors
    ///
    /// As a range read.
    pub async fn extend_prefix(&self, have: Bytes, end: u64) -> Result<Bytes> {
        let got = have.len() as u64;
        if got >= end {
            return Ok(have.slice(..end as usize));
        }
        let rest = self.read_range(got..end).await?;
        Ok(if have.is_empty() {
            rest
        } else {
            [have, rest].concat().into()
        })
    }

    /// The object at `location` as `info` describes it (from an earlier [`stat`](super::stat())).
    pub fn with_info(location: &Location, info: ObjectInfo, options: FetchOptions) -> Self {
        Self {
            source: Arc::new(Source::new(location.clone(), info, options)),
        }
    }

    /// Size, ETag and version the object is pinned to.
    pub fn info(&self) -> &ObjectInfo {
        &self.source.info
    }

    /// Where the object is.
    pub fn location(&self) -> &Location {
        &self.source.location
    }

    /// Whether both handles read the same pinned object (clones of one [`Object`]).
    pub fn same_as(&self, other: &Object) -> bool {
        Arc::ptr_eq(&self.source, &other.source)
    }

    pub(crate) fn source(&self) -> &Arc<Source> {
        &self.source
    }

    /// The whole object, in one buffer allocated up front: each frame is written at its
    /// offset as it arrives, and no byte is copied a second time.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the buffer cannot be allocated; otherwise as a range read.
    pub async fn bytes(&self) -> Result<Bytes> {
        let progress = &self.source.options.progress;
        progress.started(&self.source.location.uri(), self.info().size);
        let whole = std::iter::once(0..self.info().size).collect();
        let mut whole = collect(1, self.ready(whole, false)).await?;
        progress.finished();
        Ok(whole.pop().unwrap_or_default())
    }

    /// One range of the object.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRange`] for a range beyond the object; otherwise as a range read.
    pub async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        let mut parts = self.read_ranges(std::slice::from_ref(&range)).await?;
        Ok(parts.pop().unwrap_or_default())
    }

    /// The given ranges, in the order given. Ranges closer than
    /// [`coalesce_gap`](FetchOptions::coalesce_gap) are read by one request, and large ones by
    /// several in parallel; each range lands in a buffer of its own (a local file's ranges are
    /// views of one mapping, when [`map_local`](FetchOptions::map_local) is on).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRange`] for a range beyond the object; [`Error::ObjectChanged`],
    /// [`Error::RangeFailed`] or the store's error for a failed read.
    pub async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        collect(ranges.len(), self.ready(ranges.to_vec(), true)).await
    }

    /// The given ranges read as [`read_ranges`](Self::read_ranges) reads them, each yielded as
    /// `(index, bytes)` as soon as all its bytes have landed, in the order they finish: the
    /// consumer works on the first ranges while the rest are on the wire. The stream ends
    /// after the first error; dropping it cancels every request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ckptio::Result<()> {
    /// use ckptio::{FetchOptions, Object};
    /// use futures::TryStreamExt;
    ///
    /// let loc = ckptio::resolve("memory://doc-ready/weights.bin", &Default::default())?;
    /// # use object_store::ObjectStoreExt;
    /// # loc.store().put(loc.path(), (0..=255u8).collect::<Vec<_>>().into()).await.unwrap();
    /// let object = Object::open(&loc, FetchOptions::default()).await?;
    /// let mut ready = object.ranges_as_ready(vec![0..4, 250..256]);
    /// while let Some((index, bytes)) = ready.try_next().await? {
    ///     assert_eq!(bytes.len(), [4, 6][index]);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ranges_as_ready(
        &self,
        ranges: Vec<Range<u64>>,
    ) -> BoxStream<'static, Result<(usize, Bytes)>> {
        self.ready(ranges, true)
    }

    /// `ranges` as they land, read on a task of their own (mapped, for a local file, if `map`
    /// and the options allow). A panic in that task resumes in the consumer.
    fn ready(
        &self,
        ranges: Vec<Range<u64>>,
        map: bool,
    ) -> BoxStream<'static, Result<(usize, Bytes)>> {
        let object = self.clone();
        let (done, landed) = mpsc::unbounded_channel();
        let reader = spawn(async move {
            if let Err(err) = object.deliver(ranges, map, &done).await {
                let _ = done.send(Err(err));
            }
        });
        stream::unfold((landed, reader), |(mut landed, mut reader)| async move {
            match landed.recv().await {
                Some(next) => Some((next, (landed, reader))),
                None => {
                    (&mut reader).await;
                    None
                }
            }
        })
        .boxed()
    }

    /// Reads `ranges` and sends each to `done` once complete. A local file is read by
    /// [`local`](Self::local); otherwise fetch tasks on every worker thread send their frames
    /// to one copier, which writes each into the ranges that hold its bytes: memory in flight
    /// stays bounded by the channel, and nothing is copied twice.
    async fn deliver(
        &self,
        ranges: Vec<Range<u64>>,
        map: bool,
        done: &mpsc::UnboundedSender<Result<(usize, Bytes)>>,
    ) -> Result<()> {
        let size = self.info().size;
        if let Some(bad) = ranges.iter().find(|r| r.start > r.end || r.end > size) {
            return Err(Error::InvalidRange {
                uri: self.source.location.uri(),
                start: bad.start,
                end: bad.end,
                size,
            });
        }
        if self.local(&ranges, map, done).await? {
            return Ok(());
        }
        let mut regions = ranges
            .iter()
            .map(|r| region(&self.source, r).map(Some))
            .collect::<Result<Vec<Option<Region>>>>()?;
        let mut missing: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
        for (index, region) in regions.iter_mut().enumerate() {
            if missing[index] == 0 {
                *region = None;
                let _ = done.send(Ok((index, Bytes::new())));
            }
        }
        let destinations = plan::Destinations::new(&ranges);
        let chunk = self.source.options.chunk_size;
        let concurrency = self.source.options.in_flight();
        let (tx, mut rx) = mpsc::channel::<(u64, Bytes)>(FRAMES_IN_FLIGHT * concurrency);
        let pieces: Vec<Range<u64>> = plan::coalesce(&ranges, self.source.options.coalesce_gap)
            .into_iter()
            .flat_map(|span| plan::split(span, chunk))
            .collect();

        let fetch = async move {
            // The closure owns the last sender: once every piece is fetched and the stream is
            // gone, the copier sees the channel close.
            stream::iter(pieces)
                .map(move |piece| {
                    let source = Arc::clone(&self.source);
                    let mut sink = FrameSender {
                        tx: tx.clone(),
                        offset: piece.start,
                        received: 0,
                    };
                    spawn(async move { source.fill(piece, &mut sink).await })
                })
                .buffer_unordered(concurrency)
                .try_for_each(|()| std::future::ready(Ok(())))
                .await
        };
        let copy = async {
            while let Some((at, frame)) = rx.recv().await {
                let bytes = at..at + frame.len() as u64;
                for index in destinations.of(bytes.clone()) {
                    let range = &ranges[index];
                    let (lo, hi) = (bytes.start.max(range.start), bytes.end.min(range.end));
                    let Some(region) = regions[index].as_mut() else {
                        continue;
                    };
                    region.as_mut()[(lo - range.start) as usize..(hi - range.start) as usize]
                        .copy_from_slice(&frame[(lo - at) as usize..(hi - at) as usize]);
                    missing[index] = missing[index].saturating_sub(hi - lo);
                    if missing[index] == 0
                        && let Some(full) = regions[index].take()
                    {
                        let _ = done.send(Ok((index, full.freeze())));
                    }
                }
            }
            Ok(())
        };
        tokio::try_join!(fetch, copy)?;
        // Every piece was filled whole, so every range was sent; a range left over would
        // otherwise reach the caller as nothing at all.
        if let Some(index) = regions.iter().position(Option::is_some) {
            let range = &ranges[index];
            return Err(Error::RangeFailed {
                uri: self.source.location.uri(),
                start: range.start,
                end: range.end,
                attempts: 1,
                detail: format!("{} of its bytes never arrived", missing[index]),
            });
        }
        Ok(())
    }

    /// Reads `ranges` of a local file, if the object is one: views of one private mapping of
    /// the span that covers them when `map` and the options allow, otherwise positional reads
    /// straight into each range's buffer, a few ranges at a time on the blocking pool (one copy
    /// out of the page cache, and nothing held but the buffers), then the file checked again
    /// against the pinned version. `false` when the object is not a local file, or no range
    /// has bytes.
    async fn local(
        &self,
        ranges: &[Range<u64>],
        map: bool,
        done: &mpsc::UnboundedSender<Result<(usize, Bytes)>>,
    ) -> Result<bool> {
        let source = &self.source;
        if source.location.local_path().is_none() {
            return Ok(false);
        }
        let Some(start) = ranges
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| r.start)
            .min()
        else {
            return Ok(false);
        };
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(start);
        let Some((file, path)) = source.open_file(start..end).await? else {
            return Ok(false);
        };
        let file = Arc::new(file);
        if map && source.options.map_local {
            let mapping = Arc::clone(&file);
            let span =
                blocking(&path, "map", move || Ok(mapped::map(&mapping, start..end))).await?;
            if let Some(span) = span {
                source
                    .options
                    .progress
                    .advanced(ranges.iter().map(|r| r.end - r.start).sum());
                for (index, r) in ranges.iter().enumerate() {
                    let at = r.start.saturating_sub(start) as usize;
                    let _ = done.send(Ok((index, span.slice(at..at + (r.end - r.start) as usize))));
                }
                return Ok(true);
            }
        }
        let read = stream::iter(ranges.iter().cloned().enumerate())
            .map(|(index, range)| {
                let (file, path) = (Arc::clone(&file), path.clone());
                let region = region(source, &range);
                async move {
                    let region = read_at(file, path, region?, range.start, advance(source)).await?;
                    Ok::<_, Error>((index, region.freeze()))
                }
            })
            .buffer_unordered(source.options.in_flight())
            .try_for_each(|landed| {
                let _ = done.send(Ok(landed));
                std::future::ready(Ok(()))
            })
            .await;
        // The reads went to the file opened at the pinned version. One rewritten or cut short
        // meanwhile is no longer that version, as a remote object's next request would find:
        // that is the error to report, rather than the short read it caused.
        source.open_file(start..end).await?;
        read.map(|()| true)
    }

    /// The whole object as `(offset, bytes)` pieces in order, read `concurrency` chunks ahead:
    /// at most `concurrency × chunk_size` bytes are held, and a piece's buffer takes a later
    /// chunk once every view of it is dropped. A local file is read straight into the pieces,
    /// of at most 8 MiB. The stream ends after the first error.
    pub fn stream(&self) -> BoxStream<'static, Result<(u64, Bytes)>> {
        let source = Arc::clone(&self.source);
        let concurrency = source.options.in_flight();
        source
            .options
            .progress
            .started(&source.location.uri(), source.info.size);
        let chunk_size = match source.location.local_path() {
            Some(_) => source.options.chunk_size.min(LOCAL_STREAM_CHUNK),
            None => source.options.chunk_size,
        };
        let chunks = plan::chunks(source.info.size, chunk_size);
        let largest = chunks.first().map_or(0, |r| r.end - r.start);
        let pool = Pool::new(usize::try_from(largest).unwrap_or(usize::MAX));
        let done = Arc::clone(&source);
        let whole = Arc::clone(&source);
        let chunked = crate::streams::end_at_first_error(
            stream::iter(chunks)
                .map(move |range| {
                    let (source, pool) = (Arc::clone(&source), Arc::clone(&pool));
                    spawn(async move {
                        let bytes = chunk(&source, &pool, range.clone()).await?;
                        Ok::<_, Error>((range.start, bytes))
                    })
                })
                .buffered(concurrency)
                // Reached only when every chunk arrived: the stream ends at an error.
                .chain(
                    stream::once(async move {
                        done.options.progress.finished();
                        None
                    })
                    .filter_map(std::future::ready),
                ),
        );
        // The first chunk refused because the server ignores ranges (no chunk has delivered a
        // byte): the whole object, in one range.
        chunked
            .boxed()
            .into_future()
            .map(move |(first, rest)| match first {
                Some(Err(err)) if err.is_ranges_ignored() => in_one_range(whole),
                first => stream::iter(first).chain(rest).boxed(),
            })
            .flatten_stream()
            .boxed()
    }
}

/// The whole object read as one range, its frames as they arrive with their offsets: how an
/// object streams from a server that ignores Range requests (see `Source::fill`).
fn in_one_range(source: Arc<Source>) -> BoxStream<'static, Result<(u64, Bytes)>> {
    let (tx, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
    let fill = spawn(async move {
        let mut sink = FrameSender {
            tx,
            offset: 0,
            received: 0,
        };
        source.fill(0..source.info.size, &mut sink).await?;
        source.options.progress.finished();
        Ok::<_, Error>(())
    });
    let frames = stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        Some((Ok(frame), rx))
    });
    // The sender goes with the fill: once its frames are through, its error, if it failed.
    let end = stream::once(fill).filter_map(|done| std::future::ready(done.err().map(Err)));
    crate::streams::end_at_first_error(frames.chain(end)).boxed()
}

/// A zeroed buffer for `range` of the source's object, or [`Error::TooLarge`] if the memory
/// cannot be had.
fn region(source: &Source, range: &Range<u64>) -> Result<Region> {
    let len = range.end - range.start;
    usize::try_from(len)
        .ok()
        .and_then(|len| Region::new(len, source.options.huge_pages))
        .ok_or_else(|| source.too_large(len, true))
}

/// Reports read bytes to the source's progress.
fn advance(source: &Source) -> impl FnMut(u64) + Send + 'static {
    let progress = Arc::clone(&source.options.progress);
    move |len| progress.advanced(len)
}

/// One chunk of a stream, into a buffer of `pool`: for a local file, read straight into it
/// (one copy out of the page cache), then the file checked against the pinned version, so
/// that a file rewritten or cut short meanwhile is [`Error::ObjectChanged`]; otherwise filled
/// by range requests, frame by frame.
async fn chunk(source: &Source, pool: &Arc<Pool>, range: Range<u64>) -> Result<Bytes> {
    let len = range.end - range.start;
    let mut lease = usize::try_from(len)
        .ok()
        .and_then(|len| pool.lend(len))
        // Already streaming: a smaller chunk size is what would help.
        .ok_or_else(|| source.too_large(len, false))?;
    if source.location.local_path().is_some()
        && let Some((file, path)) = source.open_file(range.clone()).await?
    {
        let read = read_at(Arc::new(file), path, lease, range.start, advance(source)).await;
        source.open_file(range).await?;
        return read.map(Lease::freeze);
    }
    source.fill(range, &mut lease).await?;
    Ok(lease.freeze())
}

/// Whether a suffix range was refused: by the store (Azure's cannot be asked for one) or by a
/// server answering with an error of its own (a 5xx).
fn suffix_refused(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotSupported { .. })
        || matches!(classify(err), Class::Transport(TransportKind::ServerBusy))
}

/// Whether a range GET that failed so may have asked an empty object for its first byte.
fn may_be_empty(err: &object_store::Error) -> bool {
    matches!(
        classify(err),
        Class::Transport(TransportKind::Rejected | TransportKind::Other)
    )
}

/// The `count` ranges `ready` yields, in the order they were asked for.
async fn collect(
    count: usize,
    mut ready: BoxStream<'static, Result<(usize, Bytes)>>,
) -> Result<Vec<Bytes>> {
    let mut parts = vec![Bytes::new(); count];
    while let Some((index, bytes)) = ready.try_next().await? {
        parts[index] = bytes;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::task::LOCAL_BLOCK;
    use object_store::ObjectStoreExt;

    async fn object(name: &str, data: &[u8], chunk: u64) -> Object {
        let options = FetchOptions {
            chunk_size: chunk,
            concurrency: 3,
            coalesce_gap: 4,
            ..FetchOptions::default()
        };
        crate::testing::memory_object(&format!("object/{name}"), data.to_vec(), options).await
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn bytes_equal_the_object_for_sizes_around_the_chunk_and_the_mapping_threshold() {
        for len in [0, 1, 1000, 40 << 20] {
            let d = data(len);
            let object = object(&format!("whole-{len}"), &d, 64 << 10).await;
            let got = object.bytes().await.unwrap();
            assert!(got == d, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn a_prefix_is_extended_or_cut_to_the_length_asked() {
        let d = data(100);
        let object = object("extend", &d, 16).await;
        let have = Bytes::copy_from_slice(&d[..10]);
        assert_eq!(
            object.extend_prefix(have.clone(), 40).await.unwrap(),
            d[..40]
        );
        assert_eq!(object.extend_prefix(have, 4).await.unwrap(), d[..4]);
        assert_eq!(object.extend_prefix(Bytes::new(), 100).await.unwrap(), d);
    }

    #[tokio::test]
    async fn open_prefix_of_an_empty_object_is_empty_and_pinned() {
        let object = object("empty-prefix", &[], 4).await;
        let (pinned, prefix) =
            Object::open_prefix(object.location(), 1 << 20, FetchOptions::default())
                .await
                .unwrap();
        assert!(prefix.is_empty());
        assert_eq!(pinned.info().size, 0);
        assert!(pinned.info().etag.is_some());
    }

    #[tokio::test]
    async fn an_impossible_size_is_too_large_not_an_abort() {
        let object = object("huge", &data(10), 4).await;
        let fake = ObjectInfo {
            size: u64::MAX / 2,
            ..object.info().clone()
        };
        let huge = Object::with_info(object.location(), fake, FetchOptions::default());
        let err = huge.bytes().await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn ranges_come_back_in_the_order_asked() {
        let d = data(500);
        let object = object("ranges", &d, 16).await;
        let ranges = [400..450, 0..3, 5..9, 9..9, 100..300, 2..4, 499..500];
        let got = object.read_ranges(&ranges).await.unwrap();
        for (r, bytes) in ranges.iter().zip(&got) {
            assert_eq!(bytes, &d[r.start as usize..r.end as usize], "{r:?}");
        }
    }

    #[tokio::test]
    async fn ranges_as_ready_yields_each_range_once_with_its_bytes() {
        let d = data(5000);
        let object = object("ready", &d, 16).await;
        let ranges = vec![
            4000..4900,
            0..3,
            2..40,
            2..40,
            77..77,
            100..3000,
            3000..3001,
        ];
        let mut seen = vec![0; ranges.len()];
        let mut ready = object.ranges_as_ready(ranges.clone());
        while let Some((index, bytes)) = ready.try_next().await.unwrap() {
            let r = &ranges[index];
            assert_eq!(bytes, &d[r.start as usize..r.end as usize], "{r:?}");
            seen[index] += 1;
        }
        assert_eq!(seen, vec![1; ranges.len()]);
    }

    #[tokio::test]
    async fn ranges_as_ready_ends_at_its_error() {
        let object = object("ready-beyond", &data(10), 4).await;
        let got: Vec<Result<(usize, Bytes)>> =
            object.ranges_as_ready(vec![0..4, 5..11]).collect().await;
        assert!(
            matches!(got[..], [Err(Error::InvalidRange { start: 5, .. })]),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_range_beyond_the_object_is_invalid() {
        let object = object("beyond", &data(10), 4).await;
        let err = object.read_range(5..11).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidRange {
                    start: 5,
                    end: 11,
                    size: 10,
                    ..
                }
            ),
            "{err}"
        );
        #[allow(clippy::reversed_empty_ranges)]
        let err = object.read_range(6..5).await.unwrap_err();
        assert!(matches!(err, Error::InvalidRange { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("bytes 6..5 end before they start"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stream_yields_every_byte_in_order() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let d = data(len);
            let object = object(&format!("stream-{len}"), &d, 64).await;
            let pieces: Vec<(u64, Bytes)> = object.stream().try_collect().await.unwrap();
            let mut expected_offset = 0;
            let mut all = Vec::new();
            for (offset, bytes) in pieces {
                assert_eq!(offset, expected_offset);
                expected_offset += bytes.len() as u64;
                all.extend_from_slice(&bytes);
            }
            assert_eq!(all, d, "len {len}");
        }
    }

    #[tokio::test]
    async fn a_replaced_object_is_an_object_changed_error() {
        let object = object("replaced", &data(100), 10).await;
        let loc = object.location().clone();
        loc.store().put(loc.path(), data(101).into()).await.unwrap();
        let err = object.bytes().await.unwrap_err();
        assert!(matches!(err, Error::ObjectChanged { .. }), "{err}");
    }

    async fn local_object(dir: &std::path::Path, d: &[u8], map_local: bool) -> Object {
        let path = dir.join("weights.bin");
        std::fs::write(&path, d).unwrap();
        let loc = crate::location::resolve(path.to_str().unwrap(), &Default::default()).unwrap();
        let options = FetchOptions {
            map_local,
            ..FetchOptions::default()
        };
        Object::open(&loc, options).await.unwrap()
    }

    #[tokio::test]
    async fn a_local_file_is_read_through_a_mapping_unless_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        // The middle range spans several positional reads when it is not mapped.
        let d = data(3 * LOCAL_BLOCK + 7);
        for map_local in [true, false] {
            let object = local_object(dir.path(), &d, map_local).await;
            let ranges = [0..10, 3..(2 * LOCAL_BLOCK as u64 + 5), 5..5];
            let got = object.read_ranges(&ranges).await.unwrap();
            for (r, bytes) in ranges.iter().zip(&got) {
                assert_eq!(bytes, &d[r.start as usize..r.end as usize], "{r:?}");
            }
            // Views of one mapping sit as far apart as their bytes do in the file.
            let apart = (got[1].as_ptr() as usize).wrapping_sub(got[0].as_ptr() as usize);
            assert_eq!(apart == 3, map_local, "map_local {map_local}");
        }
    }

    #[tokio::test]
    async fn a_local_file_replaced_before_it_is_read_is_an_object_changed_error() {
        let dir = tempfile::tempdir().unwrap();
        for map_local in [true, false] {
            let object = local_object(dir.path(), &data(4096), map_local).await;
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::write(dir.path().join("weights.bin"), data(4097)).unwrap();
            let err = object.read_ranges(&[0..10, 20..30]).await.unwrap_err();
            assert!(matches!(err, Error::ObjectChanged { .. }), "{err}");
        }
    }

    /// Cuts the file short once the first block of it has been read.
    struct CutShort {
        path: std::path::PathBuf,
        done: std::sync::atomic::AtomicBool,
    }

    impl crate::fetch::Progress for CutShort {
        fn advanced(&self, _: u64) {
            if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let file = std::fs::File::options().write(true).open(&self.path);
                file.unwrap().set_len(100).unwrap();
            }
        }
    }

    /// A local file of two blocks and ten bytes, opened to be read without a mapping, one
    /// chunk of `chunk_size` at a time, and cut short once its first block has been read.
    async fn cut_short_while_read(dir: &std::path::Path, chunk_size: u64) -> Object {
        let path = dir.join("weights.bin");
        std::fs::write(&path, data(2 * LOCAL_BLOCK + 10)).unwrap();
        let loc = crate::location::resolve(path.to_str().unwrap(), &Default::default()).unwrap();
        let progress = Arc::new(CutShort {
            path,
            done: false.into(),
        });
        Object::open(&loc, streaming(false, chunk_size, progress))
            .await
            .unwrap()
    }

    fn assert_changed_naming_the_file(err: &Error) {
        let message = err.to_string();
        assert!(matches!(err, Error::ObjectChanged { .. }), "{message}");
        assert!(message.contains("weights.bin"), "{message}");
    }

    #[tokio::test]
    async fn a_local_file_cut_short_while_read_is_an_object_changed_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let chunk_size = FetchOptions::default().chunk_size;
        let object = cut_short_while_read(dir.path(), chunk_size).await;
        let err = object
            .read_range(0..(2 * LOCAL_BLOCK as u64 + 10))
            .await
            .unwrap_err();
        assert_changed_naming_the_file(&err);
    }

    #[tokio::test]
    async fn a_local_file_cut_short_while_downloaded_is_an_object_changed_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let chunk_size = FetchOptions::default().chunk_size;
        let object = cut_short_while_read(dir.path(), chunk_size).await;
        let dest = dir.path().join("copy.bin");
        let err = object.download_to(&dest).await.unwrap_err();
        assert_changed_naming_the_file(&err);
        assert!(!dest.exists());
    }

    /// Options that read one chunk of `chunk_size` at a time.
    fn streaming(
        map_local: bool,
        chunk_size: u64,
        progress: Arc<dyn crate::fetch::Progress>,
    ) -> FetchOptions {
        FetchOptions {
            map_local,
            chunk_size,
            concurrency: 1,
            progress,
            ..FetchOptions::default()
        }
    }

    #[tokio::test]
    async fn a_local_file_streams_every_byte_in_order_from_chunks_that_reuse_their_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.bin");
        // Chunks of two positional reads and a short last one.
        let d = data(5 * LOCAL_BLOCK + 7);
        std::fs::write(&path, &d).unwrap();
        let loc = crate::location::resolve(path.to_str().unwrap(), &Default::default()).unwrap();
        let options = streaming(
            true,
            2 * LOCAL_BLOCK as u64,
            Arc::new(crate::fetch::NoProgress),
        );
        let object = Object::open(&loc, options).await.unwrap();
        let mut pieces = object.stream();
        let (mut all, mut buffers) = (Vec::new(), std::collections::BTreeSet::new());
        while let Some((offset, bytes)) = pieces.try_next().await.unwrap() {
            assert_eq!(offset, all.len() as u64);
            all.extend_from_slice(&bytes);
            buffers.insert(bytes.as_ptr() as usize);
        }
        assert!(all == d);
        // Each chunk was dropped before the next was asked for.
        assert!(buffers.len() < 3, "{} buffers for 3 chunks", buffers.len());
    }

    #[tokio::test]
    async fn a_local_files_stream_comes_in_pieces_no_longer_than_the_local_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(2 * LOCAL_STREAM_CHUNK as usize + 3);
        let object = local_object(dir.path(), &d, true).await;
        assert!(object.source.options.chunk_size > LOCAL_STREAM_CHUNK);
        let pieces: Vec<(u64, Bytes)> = object.stream().try_collect().await.unwrap();
        let lens: Vec<usize> = pieces.iter().map(|(_, b)| b.len()).collect();
        let chunk = LOCAL_STREAM_CHUNK as usize;
        assert_eq!(lens, [chunk, chunk, 3]);
        assert!(pieces.iter().flat_map(|(_, b)| b.iter().copied()).eq(d));
    }

    #[tokio::test]
    async fn a_local_file_cut_short_while_streamed_is_an_object_changed_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let object = cut_short_while_read(dir.path(), 4 * LOCAL_BLOCK as u64).await;
        let err = object.stream().try_collect::<Vec<_>>().await.unwrap_err();
        assert_changed_naming_the_file(&err);
    }
}
