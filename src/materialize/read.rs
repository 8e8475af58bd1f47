//! A batch of one object read with coalesced ranges, each tensor's offset confirmed and its
//! checksum verified, and finished on every worker thread.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::finish::finish;
use super::{MAX_AHEAD, MaterializeOptions, pack};
use crate::error::{ChecksumMismatch, Error, Result, TensorError};
use crate::streams::spawn;
use crate::tree::{ByteRange, Check, LazyTensor, Tensor, TensorData};

/// Reads one batch (all from one object, or all held already) and finishes its tensors.
pub(super) async fn read_tensors(
    batch: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    each_stored(batch, move |path, t, stored| {
        finish(
            &stored.uri,
            path,
            &t,
            stored.bytes,
            stored.big_endian,
            options,
        )
    })
    .await
}

/// A tensor's stored bytes, as [`each_stored`] hands them over.
pub(super) struct StoredBytes {
    /// Where they come from, for errors.
    pub uri: String,
    /// The bytes, as stored: strided, byte-swapped or quantized as the tensor says.
    pub bytes: Bytes,
    /// Whether its elements are stored big-endian.
    pub big_endian: bool,
    /// Whether every byte was compared with a checksum stored in the checkpoint.
    pub summed: bool,
}

/// `work` on each tensor of a batch (all of one object, or all held already) with its stored
/// bytes: those it holds, or those read for it with the batch's other ranges, its offset
/// confirmed and its checksum verified, on every worker thread. The results in the batch's
/// order.
pub(super) async fn each_stored<T, F>(batch: Vec<(String, LazyTensor)>, work: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(String, LazyTensor, StoredBytes) -> Result<T> + Clone + Send + 'static,
{
    let source = match batch.first().map(|(_, t)| &t.data) {
        Some(TensorData::Range(r)) => Arc::clone(&r.source),
        _ => {
            return batch
                .into_iter()
                .map(|(path, t)| {
                    let TensorData::Inline(inline) = &t.data else {
                        unreachable!("a batch without a source holds inline tensors")
                    };
                    let stored = StoredBytes {
                        uri: inline.origin.to_string(),
                        bytes: inline.bytes.clone(),
                        big_endian: inline.big_endian,
                        summed: inline.checked,
                    };
                    work(path, t, stored)
                })
                .collect();
        }
    };
    let ranges: Vec<Range<u64>> = batch.iter().map(|(_, t)| read_range(range_of(t))).collect();
    let raw = source.read_ranges(ranges).await?;
    // Checking and finishing is CPU work (a CRC-32 pass over a gigabyte takes 0.15 s of one
    // core): tensors in groups of about `WORK_BYTES`, a task each, on every worker thread.
    let items: Vec<_> = batch.into_iter().zip(raw).collect();
    let groups = pack(items, WORK_BYTES, |(_, b)| b.len() as u64, |_, _| false);
    let done: Vec<Vec<T>> = stream::iter(groups)
        .map(|group| {
            let work = work.clone();
            spawn(async move {
                let mut out = Vec::with_capacity(group.len());
                for ((path, t), read) in group {
                    let r = range_of(&t);
                    let stored = StoredBytes {
                        uri: r.source.uri(),
                        bytes: stored_bytes(r, &path, read).await?,
                        big_endian: r.big_endian,
                        summed: r.check.as_ref().is_some_and(|c| c.span == r.range),
                    };
                    out.push(work(path, t, stored)?);
                }
                Ok::<_, Error>(out)
            })
        })
        .buffered(MAX_AHEAD)
        .try_collect()
        .await?;
    Ok(done.into_iter().flatten().collect())
}

/// Bytes of a batch one task checks and finishes at a time.
const WORK_BYTES: u64 = 8 << 20;

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
