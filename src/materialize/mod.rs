//! Turning lazy tensors into bytes: reads grouped per object and coalesced, payload offsets
//! confirmed and checksums verified, elements made contiguous and little-endian, optionally
//! widened to F32; all at once, or streamed in file order within a memory budget.
//!
//! It knows no format: bytes come through the tree's [`Source`], [`Anchor`](crate::tree::Anchor) and
//! [`Locate`](crate::tree::Locate) traits.

mod check;
mod convert;
mod layout;
mod pack;
mod split;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

pub(crate) use check::{Tally, tally};
pub use convert::{to_f32, widens};
pub(crate) use pack::pack;

use crate::dtype::DType;
use crate::error::{ChecksumMismatch, Error, Result, TensorError};
use crate::streams::spawn;
use crate::tree::{
    ByteRange, Check, LazyTensor, Piece, Pieces, Quantized, Source, StateTree, Tensor, TensorData,
};

/// How tensors are materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaterializeOptions {
    /// Widen F16, BF16 and FP8 tensors to F32 and dequantize block-quantized ones (GGUF's
    /// `Q4_K`…) to F32 values; other dtypes are left as they are.
    pub to_f32: bool,
    /// What the streaming API may hold at once (two batches of this size, or one tensor
    /// larger than it).
    pub memory_budget: u64,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        Self {
            to_f32: false,
            memory_budget: 64 << 20,
        }
    }
}

/// Pieces of one tensor located at once: each costs a small read of its own header.
const PIECES_AT_ONCE: usize = 16;

/// The given tensors, materialized, in file order. Tensors of one object are read with
/// coalesced range requests in parallel.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an abstract tensor; [`Error::Corrupt`] for a stored layout
/// that does not fit its bytes or a checksum that does not match; otherwise the read's error.
pub async fn materialize(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(tensors.len());
    let mut read = stream::iter(batches(tensors, u64::MAX, false)?)
        .map(|batch| spawn(read_batch(batch, options)))
        .buffered(MAX_AHEAD);
    while let Some(batch) = read.next().await {
        out.extend(batch?);
    }
    Ok(out)
}

/// Every tensor of `tree`, materialized.
///
/// # Errors
///
/// As [`materialize`].
pub async fn materialize_tree(
    tree: &StateTree,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    materialize(
        tree.tensors().map(|(p, t)| (p, t.clone())).collect(),
        options,
    )
    .await
}

/// The given tensors as a stream in file order, read a batch ahead: at most two batches of
/// [`memory_budget`](MaterializeOptions::memory_budget) bytes are held at once (small batches,
/// tensors in chunks, several at a time within one budget). The stream
/// ends after the first error.
pub fn stream(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> BoxStream<'static, Result<(String, Tensor)>> {
    stream_batches(tensors, options, false)
}

/// As [`stream()`], but a tensor whose contiguous bytes exceed the budget arrives in several
/// consecutive row-major runs under its name (each a tensor of some of its rows), so that no
/// tensor, however large it expands, is held whole: what writers consume.
pub(crate) fn stream_runs(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> BoxStream<'static, Result<(String, Tensor)>> {
    stream_batches(tensors, options, true)
}

fn stream_batches(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
    runs: bool,
) -> BoxStream<'static, Result<(String, Tensor)>> {
    let batches = batches(tensors, options.memory_budget, runs);
    one_batch_ahead(batches, options.memory_budget, move |batch| {
        read_batch(batch, options)
    })
}

/// Most batches worked on at once.
const MAX_AHEAD: usize = 16;

/// What `work` makes of each batch, in order, the next batches worked on while the last is
/// consumed: two, or as many as fit in the budget together when batches are small (tensors in
/// pieces, each a batch of its own: one chunk per Orbax array), up to [`MAX_AHEAD`]. The stream
/// ends after the first error.
fn one_batch_ahead<T, F, Fut>(
    batches: Result<Vec<Batch>>,
    budget: u64,
    mut work: F,
) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    F: FnMut(Batch) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<T>>> + Send + 'static,
{
    let batches = match batches {
        Ok(b) => b,
        Err(e) => return stream::once(async { Err(e) }).boxed(),
    };
    let largest = batches.iter().map(Batch::held).max().unwrap_or(0).max(1);
    let ahead = usize::try_from(budget / largest)
        .unwrap_or(MAX_AHEAD)
        .clamp(2, MAX_AHEAD);
    // Each batch is a task of its own, so decoding and copying use every worker thread
    // rather than the consumer's.
    let items = stream::iter(batches)
        .map(move |batch| spawn(work(batch)))
        .buffered(ahead)
        .flat_map(|result| match result {
            Ok(items) => stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async { Err(e) }).right_stream(),
        });
    crate::streams::end_at_first_error(items).boxed()
}

/// The identity of a tensor's object: tensors of one object share one `Arc<dyn Source>`.
fn source_id(source: &Arc<dyn Source>) -> *const () {
    Arc::as_ptr(source).cast()
}

/// Where a tensor comes in file order: its object (in first-seen order), then its offset;
/// bytes already in memory first, tensors in pieces last.
fn order_key(t: &LazyTensor, objects: &mut Vec<*const ()>) -> (usize, u64) {
    match &t.data {
        TensorData::Inline(_) | TensorData::Abstract | TensorData::Unreadable(_) => (0, 0),
        TensorData::Range(r) => {
            let id = source_id(&r.source);
            let group = objects.iter().position(|o| *o == id).unwrap_or_else(|| {
                objects.push(id);
                objects.len() - 1
            });
            (group + 1, r.range.start)
        }
        TensorData::Pieces(_) => (usize::MAX, 0),
    }
}

/// Sorts tensors into file order: grouped by object in first-seen order, then by offset.
/// Streaming and writing use this one order, so each tensor arrives when it is next needed.
pub(crate) fn file_order(tensors: &mut [(String, LazyTensor)]) {
    let mut objects = Vec::new();
    // Keys are computed once each, in order, so objects are numbered as first seen.
    tensors.sort_by_cached_key(|(_, t)| order_key(t, &mut objects));
}

/// A unit of reading: tensors of one object within the budget (or bytes already held), or
/// tensors assembled from pieces (within the budget, or one larger tensor).
enum Batch {
    Read(Vec<(String, LazyTensor)>),
    Assemble(Vec<(String, LazyTensor, Arc<Pieces>)>),
}

impl Batch {
    /// The bytes working on it holds.
    fn held(&self) -> u64 {
        match self {
            Self::Read(tensors) => tensors.iter().map(|(_, t)| held(t)).sum(),
            Self::Assemble(tensors) => tensors.iter().map(|(_, t, _)| t.nbytes()).sum(),
        }
    }
}

/// The number of bytes a batch reads for a tensor.
fn read_len(t: &LazyTensor) -> u64 {
    match &t.data {
        TensorData::Range(r) => r.range.end - r.range.start,
        TensorData::Inline(i) => i.bytes.len() as u64,
        TensorData::Abstract | TensorData::Pieces(_) | TensorData::Unreadable(_) => 0,
    }
}

/// The bytes a batch holds for a tensor: what it reads, or what that becomes once laid out
/// (a strided tensor's elements gathered), whichever is more.
fn held(t: &LazyTensor) -> u64 {
    read_len(t).max(t.nbytes())
}

/// Whether two tensors may not be read in one batch: they live in different objects, or
/// one of them needs no read.
fn apart(a: &(String, LazyTensor), b: &(String, LazyTensor)) -> bool {
    match (&a.1.data, &b.1.data) {
        (TensorData::Range(x), TensorData::Range(y)) => {
            source_id(&x.source) != source_id(&y.source)
        }
        (TensorData::Inline(_), TensorData::Inline(_)) => false,
        _ => true,
    }
}

/// Tensors in [`file_order`] (each cut into runs of at most `budget` contiguous bytes when
/// `runs`), cut into batches of one object and at most `budget` bytes (a larger tensor is a
/// batch of its own); tensors in pieces come last, in batches of their own of at most
/// `budget` bytes.
fn batches(mut tensors: Vec<(String, LazyTensor)>, budget: u64, runs: bool) -> Result<Vec<Batch>> {
    for (path, t) in &tensors {
        match &t.data {
            TensorData::Abstract => {
                return Err(Error::InvalidArgument {
                    what: format!("tensor `{path}`"),
                    reason: "is abstract (a type and shape, no data)".into(),
                });
            }
            TensorData::Unreadable(u) => {
                return Err(Error::Unsupported {
                    uri: u.origin.to_string(),
                    what: format!("tensor `{path}` is {}, which ckptio does not read", u.what),
                });
            }
            _ => {}
        }
    }
    file_order(&mut tensors);
    if runs {
        tensors = tensors
            .into_iter()
            .flat_map(|(path, t)| {
                split::split(t, budget)
                    .into_iter()
                    .map(move |run| (path.clone(), run))
            })
            .collect();
    }
    // File order puts tensors in pieces last.
    let first_piece = tensors.partition_point(|(_, t)| !matches!(t.data, TensorData::Pieces(_)));
    let pieces = tensors.split_off(first_piece);
    let reads = tensors;
    let mut out: Vec<Batch> = pack(reads, budget, |(_, t)| held(t), apart)
        .into_iter()
        .map(Batch::Read)
        .collect();
    let pieces = pieces.into_iter().map(|(path, t)| match &t.data {
        TensorData::Pieces(p) => {
            let p = Arc::clone(p);
            (path, t, p)
        }
        _ => unreachable!("partitioned above"),
    });
    let assembled = pack(
        pieces.collect(),
        budget,
        |(_, t, _)| t.nbytes(),
        |_, _| false,
    );
    out.extend(assembled.into_iter().map(Batch::Assemble));
    Ok(out)
}

async fn read_batch(batch: Batch, options: MaterializeOptions) -> Result<Vec<(String, Tensor)>> {
    match batch {
        Batch::Read(batch) => read_tensors(batch, options).await,
        Batch::Assemble(mut tensors) if tensors.len() == 1 => {
            let (path, t, pieces) = tensors.pop().expect("one tensor");
            Ok(vec![assemble(path, t, pieces, options, None).await?])
        }
        Batch::Assemble(tensors) => assemble_many(tensors, options).await,
    }
}

/// Reads one batch (all from one object, or all held already) and finishes its tensors.
async fn read_tensors(
    batch: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    let source = match batch.first().map(|(_, t)| &t.data) {
        Some(TensorData::Range(r)) => Arc::clone(&r.source),
        _ => {
            return batch
                .into_iter()
                .map(|(path, t)| {
                    let TensorData::Inline(inline) = &t.data else {
                        unreachable!("a batch without a source holds inline tensors")
                    };
                    let (bytes, big_endian) = (inline.bytes.clone(), inline.big_endian);
                    let origin = inline.origin.to_string();
                    finish(&origin, path, &t, bytes, big_endian, options)
                })
                .collect();
        }
    };
    let ranges: Vec<Range<u64>> = batch.iter().map(|(_, t)| read_range(range_of(t))).collect();
    let raw = source.read_ranges(ranges).await?;
    on_workers(batch, raw, move |path, t, read| async move {
        let r = range_of(&t);
        let stored = stored_bytes(r, &path, read).await?;
        finish(&r.source.uri(), path, &t, stored, r.big_endian, options)
    })
    .await
}

/// Bytes of a batch one task checks and finishes at a time.
const WORK_BYTES: u64 = 8 << 20;

/// `work` on each tensor of a batch with the bytes read for it, on every worker thread (a
/// CRC-32 pass over a gigabyte takes 0.15 s of one core): tensors in groups of about
/// [`WORK_BYTES`], a task each; the results in the batch's order.
async fn on_workers<T, F, Fut>(
    batch: Vec<(String, LazyTensor)>,
    read: Vec<Bytes>,
    work: F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(String, LazyTensor, Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send,
{
    let items: Vec<_> = batch.into_iter().zip(read).collect();
    let groups = pack(items, WORK_BYTES, |(_, b)| b.len() as u64, |_, _| false);
    let done: Vec<Vec<T>> = stream::iter(groups)
        .map(|group| {
            let work = work.clone();
            spawn(async move {
                let mut out = Vec::with_capacity(group.len());
                for ((path, t), bytes) in group {
                    out.push(work(path, t, bytes).await?);
                }
                Ok::<_, Error>(out)
            })
        })
        .buffered(MAX_AHEAD)
        .try_collect()
        .await?;
    Ok(done.into_iter().flatten().collect())
}

fn range_of(t: &LazyTensor) -> &ByteRange {
    match &t.data {
        TensorData::Range(r) => r,
        _ => unreachable!("a batch with a source holds byte ranges"),
    }
}

/// What to read for a tensor: its range, and the record's header before it when its offset
/// was predicted.
fn read_range(r: &ByteRange) -> Range<u64> {
    match &r.anchor {
        Some(anchor) => anchor.header_start().min(r.range.start)..r.range.end,
        None => r.range.clone(),
    }
}

/// The tensor's stored bytes out of what [`read_range`] read: a predicted offset confirmed by
/// the header (or the bytes read again where the header says they are), and the checksum
/// verified when the range covers what it sums.
async fn stored_bytes(r: &ByteRange, path: &str, read: Bytes) -> Result<Bytes> {
    let uri = || r.source.uri();
    let mut range = r.range.clone();
    let mut span = r.check.as_ref().map(|c| c.span.clone());
    let data = match &r.anchor {
        None => read,
        Some(anchor) => {
            let start = read_range(r).start;
            let actual = anchor.payload_start(&uri(), &read)?;
            if actual == anchor.predicted() {
                read.slice((range.start - start) as usize..)
            } else {
                let moved = |x: &Range<u64>| {
                    let start = (x.start - anchor.predicted()).checked_add(actual)?;
                    Some(start..start.checked_add(x.end - x.start)?)
                };
                range = moved(&range).ok_or_else(|| {
                    Error::corrupt(
                        uri(),
                        TensorError {
                            path: path.to_owned(),
                            reason: "lies beyond any offset".into(),
                        },
                    )
                })?;
                span = span.and_then(|s| moved(&s));
                let mut again = r.source.read_ranges(vec![range.clone()]).await?;
                again.pop().unwrap_or_default()
            }
        }
    };
    if let (Some(check), Some(span)) = (&r.check, span) {
        verify(check, span == range, &data, path, &uri)?;
    }
    Ok(data)
}

/// Checks `data` against `check` when it covers the checksummed span.
fn verify(
    check: &Check,
    covers: bool,
    data: &[u8],
    path: &str,
    uri: &dyn Fn() -> String,
) -> Result<()> {
    if !covers {
        return Ok(());
    }
    let found = check.checksum.compute(data);
    if found == check.checksum {
        return Ok(());
    }
    Err(Error::corrupt(
        uri(),
        ChecksumMismatch {
            path: path.to_owned(),
            record: check.record.to_string(),
            expected: check.checksum.to_string(),
            found: found.to_string(),
        },
    ))
}

/// A tensor stored in pieces: each piece located (its own small header read), read like any
/// tensor, and copied into place; only the pieces overlapping the tensor's rows are read.
///
/// `located` holds pieces located already, by their index in `pieces` (see [`assemble_many`]).
fn assemble(
    path: String,
    t: LazyTensor,
    pieces: Arc<Pieces>,
    options: MaterializeOptions,
    located: Option<Vec<Option<LazyTensor>>>,
) -> BoxFuture<'static, Result<(String, Tensor)>> {
    Box::pin(async move {
        let mut located = located.unwrap_or_else(|| vec![None; pieces.boxes.len()]);
        let where_ = pieces
            .boxes
            .first()
            .map_or_else(|| "(no pieces)".to_owned(), |b| b.locate.describe());
        let bad = |reason: String| {
            Error::corrupt(
                where_.clone(),
                TensorError {
                    path: path.clone(),
                    reason,
                },
            )
        };
        if t.dtype.bits() % 8 != 0 {
            return Err(bad(format!("{} tensors cannot be assembled", t.dtype)));
        }
        if let Some(whole) = single_piece(&t, &pieces) {
            let only = vec![located[0].take()];
            let (_, part) = read_pieces(&[(0, Arc::clone(whole))], only, t.dtype, options, &bad)
                .await?
                .pop()
                .expect("one piece in, one out");
            let tensor = widened(&where_, &path, &t, part.data, options)?;
            return Ok((path, tensor));
        }
        let elem = (t.dtype.bits() / 8) as usize;
        let nbytes = usize::try_from(t.nbytes()).map_err(|_| too_large(&where_, t.nbytes()))?;
        let mut data = zeroed(nbytes).ok_or_else(|| too_large(&where_, t.nbytes()))?;
        let mut covered = 0u64;
        // A few pieces at a time, up to the budget: the tensor and one group are held.
        let groups = pack(
            pieces.boxes.iter().cloned().enumerate().collect(),
            options.memory_budget,
            |(_, b)| {
                t.dtype
                    .byte_len(crate::dtype::numel(&b.sizes).unwrap_or(0))
                    .unwrap_or(0)
            },
            |_, _| false,
        );
        for group in groups {
            for chunk in group.chunks(PIECES_AT_ONCE) {
                let ready = chunk.iter().map(|(i, _)| located[*i].take()).collect();
                for (i, part) in read_pieces(chunk, ready, t.dtype, options, &bad).await? {
                    let piece = &pieces.boxes[i];
                    covered += layout::place(
                        &mut data,
                        &t.shape,
                        pieces.rows.start,
                        &part.data,
                        &piece.offsets,
                        &piece.sizes,
                        elem,
                    )
                    .ok_or_else(|| bad(format!("its chunk at {:?} does not fit", piece.offsets)))?;
                }
            }
        }
        if covered != t.numel() {
            return Err(bad(format!(
                "its chunks cover {covered} of its {} elements",
                t.numel()
            )));
        }
        let tensor = widened(&where_, &path, &t, data.into(), options)?;
        Ok((path, tensor))
    })
}

/// Tensors in pieces that fit the budget together: the pieces of all of them that lie whole
/// somewhere are read at once (one request per object where they lie side by side), then
/// each tensor is assembled.
async fn assemble_many(
    tensors: Vec<(String, LazyTensor, Arc<Pieces>)>,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    let located = stored_together(&tensors).await?;
    let assembled: Vec<_> = tensors
        .into_iter()
        .zip(located)
        .map(|((path, t, pieces), mine)| assemble(path, t, pieces, options, Some(mine)))
        .collect();
    // Pieces located on their own (an Orbax chunk) cost a request each: several tensors at
    // once, as when each was a batch of its own.
    stream::iter(assembled)
        .buffered(PIECES_AT_ONCE)
        .try_collect()
        .await
}

/// For each tensor of a batch, its pieces that lie whole somewhere, read with those of every
/// other tensor (one request per object where they lie side by side) and parsed; `None` for
/// the others, by their index in their tensor.
async fn stored_together(
    tensors: &[(String, LazyTensor, Arc<Pieces>)],
) -> Result<Vec<Vec<Option<LazyTensor>>>> {
    let all: Vec<&Arc<Piece>> = tensors.iter().flat_map(|(_, _, p)| &p.boxes).collect();
    let mut located = read_stored(&all).await?.into_iter();
    Ok(tensors
        .iter()
        .map(|(_, _, p)| located.by_ref().take(p.boxes.len()).collect())
        .collect())
}

/// `pieces` (indexed as in their tensor) located (those in `ready` are already), read, and
/// checked to hold `dtype` in the piece's sizes.
async fn read_pieces(
    pieces: &[(usize, Arc<Piece>)],
    ready: Vec<Option<LazyTensor>>,
    dtype: DType,
    options: MaterializeOptions,
    bad: &(dyn Fn(String) -> Error + Sync),
) -> Result<Vec<(usize, Tensor)>> {
    let together: Vec<Arc<Piece>> = pieces.iter().map(|(_, b)| Arc::clone(b)).collect();
    // Named by their position in `pieces`.
    let located: Vec<(String, LazyTensor)> = locate(&together, ready)
        .await?
        .into_iter()
        .enumerate()
        .map(|(j, t)| (j.to_string(), t))
        .collect();
    let inner = MaterializeOptions {
        to_f32: false,
        ..options
    };
    let mut out = Vec::with_capacity(pieces.len());
    for (name, part) in materialize(located, inner).await? {
        let j: usize = name.parse().expect("pieces are named by their position");
        let (i, piece) = &pieces[j];
        if part.dtype != dtype || part.shape != piece.sizes {
            return Err(bad(format!(
                "its chunk at {:?} holds {} × {:?}, not {} × {:?}",
                piece.offsets, part.dtype, part.shape, dtype, piece.sizes
            )));
        }
        out.push((*i, part));
    }
    Ok(out)
}

/// `pieces` located, in order: those in `ready` already are; those that lie whole somewhere
/// are read together and parsed; the rest are located as a group where the format can, or
/// each on its own.
async fn locate(
    pieces: &[Arc<Piece>],
    mut located: Vec<Option<LazyTensor>>,
) -> Result<Vec<LazyTensor>> {
    let missing: Vec<&Arc<Piece>> = (0..pieces.len())
        .filter(|&j| located[j].is_none())
        .map(|j| &pieces[j])
        .collect();
    let mut stored = read_stored(&missing).await?.into_iter();
    let mut rest = Vec::new();
    for (j, slot) in located.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = stored.next().flatten();
            if slot.is_none() {
                rest.push(j);
            }
        }
    }
    if !rest.is_empty() {
        let group: Vec<Arc<Piece>> = rest.iter().map(|&j| Arc::clone(&pieces[j])).collect();
        let got: Vec<LazyTensor> = match group[0].locate.locate_group(&group) {
            Some(read) => read.await?,
            None => {
                stream::iter(group.iter().cloned())
                    .map(|b| async move { b.locate.locate().await })
                    .buffered(PIECES_AT_ONCE)
                    .try_collect()
                    .await?
            }
        };
        for (j, t) in rest.into_iter().zip(got) {
            located[j] = Some(t);
        }
    }
    Ok(located
        .into_iter()
        .map(|t| t.expect("every piece is located"))
        .collect())
}

/// The pieces that say where they lie whole ([`Locate::stored`]), read per object (near ones
/// share requests) and parsed each on a task of its own as soon as it lands: checking and
/// decoding spread over the workers while later pieces are still on the wire. `None` for the
/// others.
///
/// [`Locate::stored`]: crate::tree::Locate::stored
async fn read_stored(pieces: &[&Arc<Piece>]) -> Result<Vec<Option<LazyTensor>>> {
    let mut objects: Vec<Stored> = Vec::new();
    {
        let mut index = std::collections::HashMap::new();
        for (j, piece) in pieces.iter().enumerate() {
            let Some((source, range)) = piece.locate.stored() else {
                continue;
            };
            let k = *index.entry(source_id(&source)).or_insert_with(|| {
                objects.push(Stored {
                    source,
                    at: Vec::new(),
                    ranges: Vec::new(),
                });
                objects.len() - 1
            });
            objects[k].at.push(j);
            objects[k].ranges.push(range);
        }
    }
    let mut parsed = stream::iter(objects)
        .map(|o| {
            let at = o.at;
            o.source
                .ranges_as_ready(o.ranges)
                .map_ok(move |(i, data)| (at[i], data))
        })
        .flatten_unordered(PIECES_AT_ONCE)
        .map_ok(|(j, data)| {
            let locate = Arc::clone(&pieces[j].locate);
            spawn(async move { Ok((j, locate.parse(data)?)) })
        })
        .try_buffer_unordered(PARSES_AT_ONCE);
    let mut out = vec![None; pieces.len()];
    while let Some((j, tensor)) = parsed.try_next().await? {
        out[j] = Some(tensor);
    }
    Ok(out)
}

/// Landed pieces parsed at once: enough to keep every worker busy.
const PARSES_AT_ONCE: usize = 16;

/// Pieces that lie whole in one object: their positions in the group, and their ranges.
struct Stored {
    source: Arc<dyn Source>,
    at: Vec<usize>,
    ranges: Vec<Range<u64>>,
}

/// The one piece that is the whole tensor, when there is one: its elements need no placing
/// (the usual case for an Orbax array of one chunk).
fn single_piece<'a>(t: &LazyTensor, pieces: &'a Pieces) -> Option<&'a Arc<crate::tree::Piece>> {
    match pieces.boxes.as_slice() {
        [only]
            if pieces.rows.start == 0
                && only.offsets.iter().all(|&o| o == 0)
                && only.sizes == t.shape =>
        {
            Some(only)
        }
        _ => None,
    }
}

fn too_large(uri: &str, size: u64) -> Error {
    Error::TooLarge {
        uri: uri.to_owned(),
        size,
        streamable: false,
    }
}

/// `len` zero bytes, or `None` if the memory cannot be had.
fn zeroed(len: usize) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    data.try_reserve_exact(len).ok()?;
    data.resize(len, 0);
    Some(data)
}

/// `t`'s contiguous little-endian bytes as a tensor, widened to F32 (or dequantized) when
/// asked and possible.
fn widened(
    uri: &str,
    path: &str,
    t: &LazyTensor,
    data: Bytes,
    options: MaterializeOptions,
) -> Result<Tensor> {
    let (dtype, shape) = (t.dtype, t.shape.clone());
    if !options.to_f32 {
        return Ok(Tensor { dtype, shape, data });
    }
    if let Some(q) = t.quantized {
        return Ok(Tensor {
            dtype: DType::F32,
            shape: q.values_shape(&shape),
            data: dequantize(uri, path, q, &data)?,
        });
    }
    let wide = (dtype != DType::F32)
        .then(|| to_f32(dtype, &data))
        .flatten();
    Ok(match wide {
        Some(wide) => Tensor {
            dtype: DType::F32,
            shape,
            data: wide.into(),
        },
        None => Tensor { dtype, shape, data },
    })
}

/// The F32 values of `blocks`, little-endian.
fn dequantize(uri: &str, path: &str, q: Quantized, blocks: &[u8]) -> Result<Bytes> {
    let values = q
        .scheme
        .dequantize(blocks)
        .map_err(|why| Error::Unsupported {
            uri: uri.to_owned(),
            what: format!("tensor `{path}` is {} blocks: {why}", q.scheme.name()),
        })?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Whether `stored` bytes hold `t`'s layout: exactly its bytes when it is contiguous, at least
/// what its strides reach when it is not.
fn fits(t: &LazyTensor, stored: u64) -> std::result::Result<(), String> {
    let nbytes = t
        .dtype
        .byte_len(t.numel())
        .ok_or_else(|| format!("{} × {:?} is not a whole number of bytes", t.dtype, t.shape))?;
    if t.is_contiguous() {
        if stored != nbytes {
            return Err(format!(
                "{} × {:?} needs {nbytes} bytes, its range holds {stored}",
                t.dtype, t.shape
            ));
        }
        return Ok(());
    }
    let extent = crate::tree::strided_extent(t.dtype, &t.shape, &t.strides).ok_or_else(|| {
        format!(
            "a strided layout {:?} for {} × {:?} is not supported",
            t.strides, t.dtype, t.shape
        )
    })?;
    if stored < extent {
        return Err(format!(
            "strides {:?} reach byte {extent}, its range holds {stored}",
            t.strides
        ));
    }
    Ok(())
}

/// Stored bytes → a contiguous little-endian tensor (widened if asked).
fn finish(
    uri: &str,
    path: String,
    t: &LazyTensor,
    stored: Bytes,
    big_endian: bool,
    options: MaterializeOptions,
) -> Result<(String, Tensor)> {
    let bad = |reason: String| {
        Error::corrupt(
            uri,
            TensorError {
                path: path.clone(),
                reason,
            },
        )
    };
    if let Some(q) = t.quantized.filter(|q| q.decoded) {
        let blocks = q.stored_bytes(t.numel());
        if blocks != Some(stored.len() as u64) {
            return Err(bad(format!(
                "{} × {:?} in {} blocks needs {blocks:?} bytes, its range holds {}",
                t.dtype,
                t.shape,
                q.scheme.name(),
                stored.len()
            )));
        }
        let values = dequantize(uri, &path, q, &stored)?;
        return Ok((
            path,
            Tensor {
                dtype: DType::F32,
                shape: t.shape.clone(),
                data: values,
            },
        ));
    }
    let nbytes = t.dtype.byte_len(t.numel()).ok_or_else(|| {
        bad(format!(
            "{} × {:?} is not a whole number of bytes",
            t.dtype, t.shape
        ))
    })?;
    let elem = (t.dtype.bits() / 8) as usize;
    fits(t, stored.len() as u64).map_err(bad)?;
    let mut data = if t.is_contiguous() {
        stored
    } else {
        layout::gather(&stored, elem, &t.shape, &t.strides)
            .ok_or_else(|| too_large(uri, nbytes))?
            .into()
    };
    if (big_endian && elem > 1) || !t.view.is_identity() {
        let mut owned = data.to_vec();
        if big_endian {
            layout::swap_bytes(&mut owned, elem);
        }
        layout::apply_view(&mut owned, t.dtype, t.view).ok_or_else(|| Error::Unsupported {
            uri: uri.to_owned(),
            what: format!(
                "tensor `{path}` is a {} view of {} elements, which ckptio cannot apply",
                if t.view.neg { "negative" } else { "conjugate" },
                t.dtype
            ),
        })?;
        data = owned.into();
    }
    let tensor = widened(uri, &path, t, data, options)?;
    Ok((path, tensor))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::tree::Inline;

    fn source(name: &str, data: Vec<u8>) -> Arc<dyn Source> {
        crate::testing::memory_source(&format!("materialize/{name}"), data)
    }

    fn lazy(
        source: &Arc<dyn Source>,
        dtype: DType,
        shape: &[u64],
        range: std::ops::Range<u64>,
    ) -> LazyTensor {
        LazyTensor::contiguous(dtype, shape.to_vec(), Arc::clone(source), range)
    }

    #[tokio::test]
    async fn tensors_come_back_with_their_bytes() {
        let data: Vec<u8> = (0..64).collect();
        let o = source("plain", data.clone());
        let ts = vec![
            ("b".to_owned(), lazy(&o, DType::U16, &[4], 8..16)),
            ("a".to_owned(), lazy(&o, DType::U8, &[2, 2], 0..4)),
        ];
        let got = materialize(ts, MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(got[0].0, "a", "file order");
        assert_eq!(got[0].1.data, data[0..4]);
        assert_eq!(
            got[1].1,
            Tensor {
                dtype: DType::U16,
                shape: vec![4],
                data: Bytes::copy_from_slice(&data[8..16])
            }
        );
    }

    #[tokio::test]
    async fn strided_big_endian_tensors_become_contiguous_little_endian() {
        // A 2×2 big-endian U16 matrix stored row-major, read as its transpose.
        let o = source("strided", vec![0, 1, 0, 2, 0, 3, 0, 4]);
        let mut t = lazy(&o, DType::U16, &[2, 2], 0..8);
        t.strides = vec![1, 2];
        if let TensorData::Range(r) = &mut t.data {
            r.big_endian = true;
        }
        let got = materialize(vec![("t".into(), t)], MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(got[0].1.data, [1, 0, 3, 0, 2, 0, 4, 0].as_slice());
    }

    #[tokio::test]
    async fn inline_tensors_need_no_read() {
        let t = LazyTensor {
            dtype: DType::U16,
            shape: vec![2],
            strides: Vec::new(),
            data: TensorData::Inline(Inline {
                bytes: Bytes::from_static(&[0, 1, 0, 2]),
                big_endian: true,
                origin: Arc::from("inline test"),
                checked: false,
            }),
            view: Default::default(),
            quantized: None,
        };
        let got = materialize(vec![("i".into(), t)], MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(got[0].1.data, [1, 0, 2, 0].as_slice());
    }

    #[tokio::test]
    async fn a_range_that_does_not_fit_the_shape_names_the_tensor() {
        let o = source("short", vec![0; 8]);
        let err = materialize(
            vec![("w".into(), lazy(&o, DType::F32, &[3], 0..8))],
            MaterializeOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("tensor `w`") && err.to_string().contains("needs 12 bytes"),
            "{err}"
        );
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        let err = materialize(
            vec![("x".into(), LazyTensor::abstract_(DType::F32, vec![1]))],
            MaterializeOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("abstract"), "{err}");
        assert!(err.to_string().starts_with("tensor `x`"), "{err}");
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn bf16_widens_to_f32_on_request() {
        let bytes: Vec<u8> = [1.0f32, -3.5]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let o = source("bf16", bytes);
        let options = MaterializeOptions {
            to_f32: true,
            ..MaterializeOptions::default()
        };
        let got = materialize(
            vec![("w".into(), lazy(&o, DType::BF16, &[2], 0..4))],
            options,
        )
        .await
        .unwrap();
        assert_eq!(got[0].1.dtype, DType::F32);
        assert_eq!(
            got[0].1.data,
            [1.0f32.to_le_bytes(), (-3.5f32).to_le_bytes()].concat()
        );
    }

    #[tokio::test]
    async fn streaming_yields_file_order_in_budgeted_batches() {
        let data: Vec<u8> = (0..100).collect();
        let o = source("stream", data.clone());
        let ts: Vec<_> = (0..10)
            .rev()
            .map(|i| {
                (
                    format!("t{i}"),
                    lazy(&o, DType::U8, &[10], i * 10..i * 10 + 10),
                )
            })
            .collect();
        let planned = batches(ts.clone(), 25, false).unwrap();
        assert_eq!(
            planned
                .iter()
                .map(|b| match b {
                    Batch::Read(b) => b.len(),
                    Batch::Assemble(_) => 0,
                })
                .collect::<Vec<_>>(),
            [2, 2, 2, 2, 2],
            "25-byte budget: two 10-byte tensors a batch"
        );
        let options = MaterializeOptions {
            memory_budget: 25,
            ..MaterializeOptions::default()
        };
        let got: Vec<(String, Tensor)> = stream(ts, options).try_collect().await.unwrap();
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]
        );
        assert_eq!(got[3].1.data, data[30..40]);
    }

    #[tokio::test]
    async fn tensors_of_two_objects_never_share_a_batch() {
        let a = source("two-a", vec![1; 8]);
        let b = source("two-b", vec![2; 8]);
        let ts = vec![
            ("a".to_owned(), lazy(&a, DType::U8, &[8], 0..8)),
            ("b".to_owned(), lazy(&b, DType::U8, &[8], 0..8)),
        ];
        assert_eq!(batches(ts.clone(), u64::MAX, false).unwrap().len(), 2);
        let got = materialize(ts, MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!((got[0].1.data[0], got[1].1.data[0]), (1, 2));
    }

    /// One stored F32 shown `n` times (stride 0): a few bytes that lay out to `4 n`.
    fn expanded(n: u64) -> LazyTensor {
        LazyTensor {
            dtype: DType::F32,
            shape: vec![n],
            strides: vec![0],
            data: TensorData::Inline(Inline {
                bytes: Bytes::from_static(&[0, 0, 96, 64]),
                big_endian: false,
                origin: "test".into(),
                checked: false,
            }),
            view: Default::default(),
            quantized: None,
        }
    }

    fn on_this_thread<R>(f: impl std::future::Future<Output = R>) -> R {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn an_expanded_tensor_streams_in_runs_within_the_budget() {
        let n = 1 << 24; // 64 MiB laid out
        let options = MaterializeOptions {
            to_f32: false,
            memory_budget: 1 << 20,
        };
        let ((runs, bytes), most) = crate::testing::alloc::peak(|| {
            on_this_thread(
                stream_runs(vec![("e".into(), expanded(n))], options).try_fold(
                    (0, 0u64),
                    |(runs, bytes), (name, t)| async move {
                        assert_eq!(name, "e");
                        assert!(t.data.chunks(4).all(|x| x == [0, 0, 96, 64]));
                        Ok((runs + 1, bytes + t.data.len() as u64))
                    },
                ),
            )
            .unwrap()
        });
        assert_eq!((runs, bytes), (64, 4 * n));
        assert!(most < 4 << 20, "{most} bytes held at once");
    }

    #[test]
    fn checking_an_expanded_tensor_reads_its_stored_bytes_only() {
        let (found, most) = crate::testing::alloc::peak(|| {
            on_this_thread(tally(
                vec![("e".into(), expanded(1 << 30))],
                MaterializeOptions::default(),
            ))
            .unwrap()
        });
        assert_eq!((found.tensors, found.bytes), (1, 4));
        assert!(most < 1 << 20, "{most} bytes held at once");
    }

    /// A piece that locates to a fixed tensor, as a format's chunk would.
    #[derive(Debug)]
    struct Fixed(LazyTensor);

    impl crate::tree::Locate for Fixed {
        fn describe(&self) -> String {
            "fixed piece".into()
        }
        fn locate(&self) -> futures::future::BoxFuture<'_, Result<LazyTensor>> {
            Box::pin(std::future::ready(Ok(self.0.clone())))
        }
    }

    fn in_one_piece(shape: &[u64], stored: &[u64], values: &[f32]) -> LazyTensor {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let part = LazyTensor {
            dtype: DType::F32,
            shape: stored.to_vec(),
            strides: Vec::new(),
            data: TensorData::Inline(Inline {
                bytes: bytes.into(),
                big_endian: false,
                origin: "fixed".into(),
                checked: false,
            }),
            view: Default::default(),
            quantized: None,
        };
        LazyTensor {
            dtype: DType::F32,
            shape: shape.to_vec(),
            strides: Vec::new(),
            data: TensorData::Pieces(Arc::new(Pieces {
                boxes: vec![Arc::new(crate::tree::Piece {
                    offsets: vec![0; shape.len()],
                    sizes: shape.to_vec(),
                    locate: Arc::new(Fixed(part)),
                })],
                rows: 0..shape[0],
            })),
            view: Default::default(),
            quantized: None,
        }
    }

    #[tokio::test]
    async fn a_tensor_in_one_whole_piece_is_its_piece() {
        let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let t = in_one_piece(&[2, 3], &[2, 3], &values);
        let got = materialize(vec![("w".into(), t)], MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(got[0].1.shape, [2, 3]);
        let want: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(got[0].1.data, want);
    }

    #[tokio::test]
    async fn a_piece_that_locates_to_another_shape_is_refused() {
        let t = in_one_piece(&[2, 3], &[3, 2], &[0.0; 6]);
        let err = materialize(vec![("w".into(), t)], MaterializeOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("fixed piece") && err.contains("`w`"), "{err}");
        assert!(
            err.contains("holds F32 × [3, 2], not F32 × [2, 3]"),
            "{err}"
        );
    }
}
