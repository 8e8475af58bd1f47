//! Reading tensors to check them, keeping nothing: each tensor's stored bytes are read (a
//! batch at a time, within the budget), compared with their checksums and measured against
//! the layout that reads them, but never laid out. A tensor that shows one stored element
//! a billion times costs the element, not the gigabytes it shows.

use futures::stream::{BoxStream, TryStreamExt};

use super::assemble::{PIECES_AT_ONCE, locate, stored_together};
use super::batch::{Batch, batches};
use super::finish::fits;
use super::read::each_stored;
use super::{MaterializeOptions, one_batch_ahead};
use crate::error::{Error, Result, TensorError};
use crate::tree::{LazyTensor, Pieces};

/// What reading one tensor to check it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Stored bytes read.
    pub bytes: u64,
    /// Whether every byte read was compared with a checksum stored in the checkpoint.
    pub summed: bool,
}

/// The given tensors' stored bytes, read and checked in file order, a batch ahead: each
/// tensor's path with what was read for it. The stream ends after the first error.
pub(crate) fn check(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> BoxStream<'static, Result<(String, Checked)>> {
    let batches = batches(tensors, options.memory_budget, false);
    one_batch_ahead(batches, options.memory_budget, move |batch| {
        check_batch(batch, options)
    })
}

/// What [`check`] found over many tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Tensors read.
    pub tensors: usize,
    /// Stored bytes read.
    pub bytes: u64,
    /// Tensors whose every byte was compared with a stored checksum.
    pub summed: usize,
}

/// The given tensors read and checked as [`check`] does, and what it found, summed.
pub(crate) async fn tally(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> Result<Tally> {
    check(tensors, options)
        .try_fold(Tally::default(), |t, (_, c)| async move {
            Ok(Tally {
                tensors: t.tensors + 1,
                bytes: t.bytes + c.bytes,
                summed: t.summed + usize::from(c.summed),
            })
        })
        .await
}

async fn check_batch(batch: Batch, options: MaterializeOptions) -> Result<Vec<(String, Checked)>> {
    match batch {
        Batch::Read(batch) => check_reads(batch).await,
        Batch::Assemble(tensors) => {
            // A tensor alone in its batch may exceed the budget: its pieces are read a few at a
            // time by `check_pieces`.
            let located = if tensors.len() > 1 {
                stored_together(&tensors).await?
            } else {
                tensors
                    .iter()
                    .map(|(_, _, p)| vec![None; p.boxes.len()])
                    .collect()
            };
            let mut out = Vec::with_capacity(tensors.len());
            for ((path, t, pieces), ready) in tensors.into_iter().zip(located) {
                let checked = check_pieces(&path, &t, &pieces, ready, options).await?;
                out.push((path, checked));
            }
            Ok(out)
        }
    }
}

/// One batch: all of one object, or all held already.
async fn check_reads(batch: Vec<(String, LazyTensor)>) -> Result<Vec<(String, Checked)>> {
    each_stored(batch, |path, t, stored| {
        let bytes = stored.bytes.len() as u64;
        layout_fits(&stored.uri, &path, &t, bytes)?;
        let summed = stored.summed;
        Ok((path, Checked { bytes, summed }))
    })
    .await
}

/// A tensor in pieces: the pieces located (those in `ready` already are; those stored whole
/// are read once and parsed) and their stored bytes checked, a few at a time.
async fn check_pieces(
    path: &str,
    t: &LazyTensor,
    pieces: &Pieces,
    mut ready: Vec<Option<LazyTensor>>,
    options: MaterializeOptions,
) -> Result<Checked> {
    let mut checked = Checked {
        bytes: 0,
        summed: !pieces.boxes.is_empty(),
    };
    let mut first = 0;
    for chunk in pieces.boxes.chunks(PIECES_AT_ONCE) {
        let mine = ready.drain(..chunk.len()).collect();
        let parts = locate(chunk, mine).await?;
        let mut located = Vec::with_capacity(parts.len());
        for (i, (b, part)) in chunk.iter().zip(parts).enumerate() {
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
            located.push((format!("{path} (chunk {})", first + i), part));
        }
        first += chunk.len();
        let found = tally(located, options).await?;
        checked.bytes += found.bytes;
        checked.summed &= found.summed == found.tensors;
    }
    Ok(checked)
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
