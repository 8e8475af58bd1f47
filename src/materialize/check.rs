//! Reading tensors to check them, keeping nothing: each tensor's stored bytes are read (a
//! batch at a time, within the budget), compared with their checksums and measured against
//! the layout that reads them, but never laid out. A tensor that shows one stored element
//! a billion times costs the element, not the gigabytes it shows.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::{
    Batch, MaterializeOptions, PIECES_AT_ONCE, batches, fits, one_batch_ahead, range_of,
    read_range, stored_bytes,
};
use crate::error::{Error, Result, TensorError};
use crate::tree::{LazyTensor, Pieces, TensorData};

/// The given tensors' stored bytes, read and checked in file order, a batch ahead: each
/// tensor's path with the number of stored bytes read for it. The stream ends after the first
/// error.
pub(crate) fn check(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> BoxStream<'static, Result<(String, u64)>> {
    let batches = batches(tensors, options.memory_budget, false);
    one_batch_ahead(batches, options.memory_budget, move |batch| {
        check_batch(batch, options)
    })
}

async fn check_batch(batch: Batch, options: MaterializeOptions) -> Result<Vec<(String, u64)>> {
    match batch {
        Batch::Read(batch) => check_reads(batch).await,
        Batch::Assemble(tensors) => {
            let mut out = Vec::with_capacity(tensors.len());
            for (path, t, pieces) in tensors {
                let bytes = check_pieces(&path, &t, &pieces, options).await?;
                out.push((path, bytes));
            }
            Ok(out)
        }
    }
}

/// One batch: all of one object, or all held already.
async fn check_reads(batch: Vec<(String, LazyTensor)>) -> Result<Vec<(String, u64)>> {
    let source = match batch.first().map(|(_, t)| &t.data) {
        Some(TensorData::Range(r)) => Arc::clone(&r.source),
        _ => {
            return batch
                .into_iter()
                .map(|(path, t)| {
                    let TensorData::Inline(inline) = &t.data else {
                        unreachable!("a batch without a source holds inline tensors")
                    };
                    let len = inline.bytes.len() as u64;
                    layout_fits(&inline.origin, &path, &t, len)?;
                    Ok((path, len))
                })
                .collect();
        }
    };
    let ranges = batch.iter().map(|(_, t)| read_range(range_of(t))).collect();
    let raw = source.read_ranges(ranges).await?;
    let mut out = Vec::with_capacity(batch.len());
    for ((path, t), read) in batch.into_iter().zip(raw) {
        let r = range_of(&t);
        let stored = stored_bytes(r, &path, read).await?;
        layout_fits(&r.source.uri(), &path, &t, stored.len() as u64)?;
        out.push((path, stored.len() as u64));
    }
    Ok(out)
}

/// A tensor in pieces: each piece located and its stored bytes checked, a few at a time.
async fn check_pieces(
    path: &str,
    t: &LazyTensor,
    pieces: &Pieces,
    options: MaterializeOptions,
) -> Result<u64> {
    let mut bytes = 0;
    for chunk in pieces.boxes.chunks(PIECES_AT_ONCE) {
        let located: Vec<(String, LazyTensor)> = stream::iter(chunk.iter().cloned().enumerate())
            .map(|(i, b)| async move {
                let part = b.locate.locate().await?;
                if part.dtype != t.dtype || part.shape != b.sizes {
                    return Err(Error::corrupt(
                        b.locate.describe(),
                        TensorError {
                            path: path.to_owned(),
                            reason: format!(
                                "its chunk at {:?} holds {} × {:?}, not {} × {:?}",
                                b.offsets, part.dtype, part.shape, t.dtype, b.sizes
                            ),
                        },
                    ));
                }
                Ok((format!("{path} (chunk {i})"), part))
            })
            .buffer_unordered(PIECES_AT_ONCE)
            .try_collect()
            .await?;
        bytes += check(located, options)
            .try_fold(0, |n, (_, len)| async move { Ok(n + len) })
            .await?;
    }
    Ok(bytes)
}

fn layout_fits(uri: &str, path: &str, t: &LazyTensor, stored: u64) -> Result<()> {
    fits(t, stored).map_err(|reason| {
        Error::corrupt(
            uri,
            TensorError {
                path: path.to_owned(),
                reason,
            },
        )
    })
}
