//! Turning lazy tensors into bytes: reads grouped per object and coalesced, elements made
//! contiguous and little-endian, optionally widened to F32; all at once, or streamed in file
//! order within a memory budget.

mod convert;
mod layout;

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

pub use convert::{to_f32, widens};
pub use layout::strided_extent;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fetch::Object;
use crate::format::zip;
use crate::tree::{LazyTensor, StateTree, TensorSource};

/// A tensor's bytes: contiguous, row-major, little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// The elements.
    pub data: Bytes,
}

/// How tensors are materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaterializeOptions {
    /// Widen F16, BF16 and FP8 tensors to F32 (other dtypes are left as they are).
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

/// The given tensors, materialized. Tensors of one object are read with coalesced range
/// requests in parallel.
///
/// # Errors
///
/// [`Error::Tensor`] for an abstract tensor or a stored layout that does not fit its range;
/// otherwise the read's error.
pub async fn materialize(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(tensors.len());
    for batch in batches(tensors, u64::MAX)? {
        out.extend(read_batch(batch, options).await?);
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
/// [`memory_budget`](MaterializeOptions::memory_budget) bytes are held at once. The stream
/// ends after the first error.
pub fn stream(
    tensors: Vec<(String, LazyTensor)>,
    options: MaterializeOptions,
) -> BoxStream<'static, Result<(String, Tensor)>> {
    let batches = match batches(tensors, options.memory_budget) {
        Ok(b) => b,
        Err(e) => return stream::once(async { Err(e) }).boxed(),
    };
    let tensors = stream::iter(batches)
        .map(move |batch| read_batch(batch, options))
        .buffered(2)
        .flat_map(|result| match result {
            Ok(items) => stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async { Err(e) }).right_stream(),
        });
    crate::streams::end_at_first_error(tensors).boxed()
}

/// A tensor that has a source (abstract tensors never get this far).
struct Planned {
    path: String,
    tensor: LazyTensor,
}

impl Planned {
    fn source(&self) -> &TensorSource {
        self.tensor
            .source
            .as_ref()
            .expect("batches() plans only tensors with a source")
    }
}

/// Sorts tensors into file order: grouped by object in first-seen order, then by offset.
/// Streaming and writing use this one order, so each tensor arrives when it is next needed.
pub fn file_order(tensors: &mut Vec<(String, LazyTensor)>) {
    let mut objects: Vec<Object> = Vec::new();
    let mut keyed: Vec<((usize, u64), (String, LazyTensor))> = std::mem::take(tensors)
        .into_iter()
        .map(|(path, t)| {
            let key = match &t.source {
                Some(s) => {
                    let group = objects
                        .iter()
                        .position(|o| o.same_as(&s.object))
                        .unwrap_or_else(|| {
                            objects.push(s.object.clone());
                            objects.len() - 1
                        });
                    (group, s.range.start)
                }
                None => (usize::MAX, 0),
            };
            (key, (path, t))
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    *tensors = keyed.into_iter().map(|(_, t)| t).collect();
}

/// A unit of reading: tensors of one object within the budget, or one tensor assembled from
/// pieces.
enum Batch {
    Read(Vec<Planned>),
    Assemble(Planned),
}

/// Tensors in [`file_order`], cut into batches of one object and at most `budget` bytes (a
/// larger tensor is a batch of its own); a tensor in pieces is a batch of its own.
fn batches(mut tensors: Vec<(String, LazyTensor)>, budget: u64) -> Result<Vec<Batch>> {
    file_order(&mut tensors);
    let mut out: Vec<Batch> = Vec::new();
    let mut bytes = 0u64;
    for (path, tensor) in tensors {
        if tensor.pieces.is_some() {
            out.push(Batch::Assemble(Planned { path, tensor }));
            continue;
        }
        if tensor.source.is_none() {
            return Err(Error::Tensor {
                uri: "(no data source)".into(),
                path,
                reason: "is abstract (a type and shape, no data)".into(),
            });
        };
        let planned = Planned { path, tensor };
        let range = &planned.source().range;
        let len = range.end - range.start;
        match out.last_mut() {
            Some(Batch::Read(batch))
                if batch[0].source().object.same_as(&planned.source().object)
                    && bytes.saturating_add(len) <= budget =>
            {
                bytes = bytes.saturating_add(len);
                batch.push(planned);
            }
            _ => {
                bytes = len;
                out.push(Batch::Read(vec![planned]));
            }
        }
    }
    Ok(out)
}

async fn read_batch(batch: Batch, options: MaterializeOptions) -> Result<Vec<(String, Tensor)>> {
    match batch {
        Batch::Read(batch) => read_tensors(batch, options).await,
        Batch::Assemble(planned) => Ok(vec![assemble(planned, options).await?]),
    }
}

/// Reads one batch (all from one object) and finishes its tensors.
async fn read_tensors(
    batch: Vec<Planned>,
    options: MaterializeOptions,
) -> Result<Vec<(String, Tensor)>> {
    let object = batch[0].source().object.clone();
    let ranges: Vec<_> = batch.iter().map(|p| read_range(p.source())).collect();
    let raw = object.read_ranges(&ranges).await?;
    let mut out = Vec::with_capacity(batch.len());
    for (p, read) in batch.into_iter().zip(raw) {
        let stored = stored_bytes(&object, &p, read).await?;
        out.push(finish(&object, p, stored, options)?);
    }
    Ok(out)
}

/// A tensor stored in pieces: each piece located (its own small file read), read like any
/// tensor, and copied into place; only the pieces overlapping the tensor's rows are read.
fn assemble(
    p: Planned,
    options: MaterializeOptions,
) -> futures::future::BoxFuture<'static, Result<(String, Tensor)>> {
    Box::pin(async move {
        let t = &p.tensor;
        let pieces = t
            .pieces
            .clone()
            .expect("batches() assembles only tensors in pieces");
        let bad = |reason: String| Error::Tensor {
            uri: pieces
                .boxes
                .first()
                .map_or_else(|| "(no pieces)".into(), |b| b.object.location().uri()),
            path: p.path.clone(),
            reason,
        };
        if t.dtype.bits() % 8 != 0 {
            return Err(bad(format!("{} tensors cannot be assembled", t.dtype)));
        }
        let elem = (t.dtype.bits() / 8) as usize;
        let parts = futures::future::try_join_all(
            pieces.boxes.iter().map(|b| crate::format::dcp::resolve(b)),
        )
        .await?;
        let named = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| (i.to_string(), part))
            .collect();
        let read = materialize(
            named,
            MaterializeOptions {
                to_f32: false,
                ..options
            },
        )
        .await?;
        let nbytes = usize::try_from(t.nbytes()).map_err(|_| bad("is too large".into()))?;
        let mut data = Vec::new();
        data.try_reserve_exact(nbytes)
            .map_err(|_| bad(format!("{nbytes} bytes cannot be allocated")))?;
        data.resize(nbytes, 0);
        let mut covered = 0u64;
        for (name, part) in read {
            let i: usize = name.parse().expect("pieces are named by their index");
            let piece = &pieces.boxes[i];
            if part.dtype != t.dtype || part.shape != piece.sizes {
                return Err(bad(format!(
                    "its chunk at {:?} holds {} × {:?}, not {} × {:?}",
                    piece.offsets, part.dtype, part.shape, t.dtype, piece.sizes
                )));
            }
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
        if covered != t.numel() {
            return Err(bad(format!(
                "its chunks cover {covered} of its {} elements",
                t.numel()
            )));
        }
        let tensor = widened(t.dtype, t.shape.clone(), data.into(), options);
        Ok((p.path.clone(), tensor))
    })
}

/// A contiguous little-endian tensor, widened to F32 when asked and possible.
fn widened(dtype: DType, shape: Vec<u64>, data: Bytes, options: MaterializeOptions) -> Tensor {
    let wide = (options.to_f32 && dtype != DType::F32)
        .then(|| to_f32(dtype, &data))
        .flatten();
    match wide {
        Some(wide) => Tensor {
            dtype: DType::F32,
            shape,
            data: wide.into(),
        },
        None => Tensor { dtype, shape, data },
    }
}

/// What to read for a tensor: its range, and the local header before it when its offset was
/// predicted.
fn read_range(source: &TensorSource) -> Range<u64> {
    match &source.anchor {
        Some(anchor) => anchor.entry.header_offset.min(source.range.start)..source.range.end,
        None => source.range.clone(),
    }
}

/// The tensor's stored bytes out of what [`read_range`] read: a predicted offset confirmed by
/// the local header (or the bytes read again where the header says they are), and the
/// checksum verified when the range covers what it sums.
async fn stored_bytes(object: &Object, p: &Planned, read: Bytes) -> Result<Bytes> {
    let source = p.source();
    let uri = || object.location().uri();
    let mut range = source.range.clone();
    let mut span = source.check.as_ref().map(|c| c.span.clone());
    let data = match &source.anchor {
        None => read,
        Some(anchor) => {
            let start = read_range(source).start;
            let actual =
                zip::payload_offset(&anchor.entry, &read).map_err(|problem| Error::Zip {
                    uri: uri(),
                    problem,
                })?;
            if actual == anchor.payload {
                read.slice((range.start - start) as usize..)
            } else {
                let moved = |r: &Range<u64>| {
                    let start = (r.start - anchor.payload).checked_add(actual)?;
                    Some(start..start.checked_add(r.end - r.start)?)
                };
                range = moved(&range).ok_or_else(|| Error::Torch {
                    uri: uri(),
                    problem: format!("entry `{}` lies beyond any offset", anchor.entry.name),
                })?;
                span = span.and_then(|s| moved(&s));
                object.read_range(range.clone()).await?
            }
        }
    };
    if let (Some(check), Some(span)) = (&source.check, span) {
        if span == range {
            let found = check.checksum.compute(&data);
            if found != check.checksum {
                return Err(Error::Checksum {
                    uri: uri(),
                    path: p.path.clone(),
                    record: check.record.to_string(),
                    expected: check.checksum.to_string(),
                    found: found.to_string(),
                });
            }
        }
    }
    Ok(data)
}

/// Stored bytes → a contiguous little-endian tensor (widened if asked).
fn finish(
    object: &Object,
    p: Planned,
    stored: Bytes,
    options: MaterializeOptions,
) -> Result<(String, Tensor)> {
    let t = &p.tensor;
    let bad = |reason: String| Error::Tensor {
        uri: object.location().uri(),
        path: p.path.clone(),
        reason,
    };
    let nbytes = t.dtype.byte_len(t.numel()).ok_or_else(|| {
        bad(format!(
            "{} × {:?} is not a whole number of bytes",
            t.dtype, t.shape
        ))
    })?;
    let elem = (t.dtype.bits() / 8) as usize;
    let mut data = if t.is_contiguous() {
        if stored.len() as u64 != nbytes {
            return Err(bad(format!(
                "{} × {:?} needs {nbytes} bytes, its range holds {}",
                t.dtype,
                t.shape,
                stored.len()
            )));
        }
        stored
    } else {
        if t.dtype.bits() % 8 != 0 || t.strides.len() != t.shape.len() {
            return Err(bad(format!(
                "a strided layout {:?} for {} × {:?} is not supported",
                t.strides, t.dtype, t.shape
            )));
        }
        let extent = layout::strided_extent(t.dtype, &t.shape, &t.strides)
            .ok_or_else(|| bad("its strides overflow".into()))?;
        if (stored.len() as u64) < extent {
            return Err(bad(format!(
                "strides {:?} reach byte {extent}, its range holds {}",
                t.strides,
                stored.len()
            )));
        }
        layout::gather(&stored, elem, &t.shape, &t.strides)
            .ok_or_else(|| {
                bad(format!(
                    "{nbytes} bytes cannot be allocated to make it contiguous"
                ))
            })?
            .into()
    };
    if t.source.as_ref().is_some_and(|s| s.big_endian) && elem > 1 {
        let mut swapped = data.to_vec();
        layout::swap_bytes(&mut swapped, elem);
        data = swapped.into();
    }
    let tensor = widened(t.dtype, t.shape.clone(), data, options);
    Ok((p.path, tensor))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::fetch::FetchOptions;
    use crate::tree::TensorSource;

    async fn object(name: &str, data: Vec<u8>) -> Object {
        crate::fetch::testing::memory_object(
            &format!("materialize/{name}"),
            data,
            FetchOptions::default(),
        )
        .await
    }

    fn lazy(
        object: &Object,
        dtype: DType,
        shape: &[u64],
        range: std::ops::Range<u64>,
    ) -> LazyTensor {
        LazyTensor::contiguous(dtype, shape.to_vec(), object.clone(), range)
    }

    #[tokio::test]
    async fn tensors_come_back_with_their_bytes() {
        let data: Vec<u8> = (0..64).collect();
        let o = object("plain", data.clone()).await;
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
        let o = object("strided", vec![0, 1, 0, 2, 0, 3, 0, 4]).await;
        let mut t = lazy(&o, DType::U16, &[2, 2], 0..8);
        t.strides = vec![1, 2];
        t.source = Some(TensorSource {
            big_endian: true,
            ..t.source.unwrap()
        });
        let got = materialize(vec![("t".into(), t)], MaterializeOptions::default())
            .await
            .unwrap();
        assert_eq!(got[0].1.data, [1, 0, 3, 0, 2, 0, 4, 0].as_slice());
    }

    #[tokio::test]
    async fn a_range_that_does_not_fit_the_shape_names_the_tensor() {
        let o = object("short", vec![0; 8]).await;
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
        let err = materialize(
            vec![("x".into(), LazyTensor::abstract_(DType::F32, vec![1]))],
            MaterializeOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("abstract"), "{err}");
        assert!(
            err.to_string().starts_with("(no data source): tensor `x`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bf16_widens_to_f32_on_request() {
        let bytes: Vec<u8> = [1.0f32, -3.5]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let o = object("bf16", bytes).await;
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
        let o = object("stream", data.clone()).await;
        let ts: Vec<_> = (0..10)
            .rev()
            .map(|i| {
                (
                    format!("t{i}"),
                    lazy(&o, DType::U8, &[10], i * 10..i * 10 + 10),
                )
            })
            .collect();
        let planned = batches(ts.clone(), 25).unwrap();
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
}
