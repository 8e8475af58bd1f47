//! Tensors stored in pieces (DCP chunks, Orbax chunks): each piece located, read like any
//! tensor, and copied into place.

use std::ops::Range;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::batch::source_id;
use super::finish::{too_large, widened};
use super::{MaterializeOptions, layout, materialize, pack};
use crate::dtype::DType;
use crate::error::{Error, Result, TensorError};
use crate::streams::spawn;
use crate::tree::{LazyTensor, Piece, Pieces, Source, Tensor};

/// Pieces of one tensor located at once: each costs a small read of its own header.
pub(super) const PIECES_AT_ONCE: usize = 16;

/// A tensor stored in pieces: each piece located (its own small header read), read like any
/// tensor, and copied into place; only the pieces overlapping the tensor's rows are read.
///
/// `located` holds pieces located already, by their index in `pieces` (see [`assemble_many`]).
pub(super) fn assemble(
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
        if !t.dtype.bits().is_multiple_of(8) {
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
pub(super) async fn assemble_many(
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
pub(super) async fn stored_together(
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
pub(super) async fn locate(
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

/// `len` zero bytes, or `None` if the memory cannot be had.
fn zeroed(len: usize) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    data.try_reserve_exact(len).ok()?;
    data.resize(len, 0);
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Inline, TensorData};

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
