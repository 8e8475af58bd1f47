//! Turning lazy tensors into bytes: reads grouped per object and coalesced, payload offsets
//! confirmed and checksums verified, elements made contiguous and little-endian, optionally
//! widened to F32; all at once, or streamed in file order within a memory budget.
//!
//! It knows no format: bytes come through the tree's [`Source`](crate::tree::Source),
//! [`Anchor`](crate::tree::Anchor) and [`Locate`](crate::tree::Locate) traits.

mod assemble;
mod batch;
mod check;
mod convert;
mod finish;
mod layout;
mod pack;
mod read;
mod split;

use futures::stream::{self, BoxStream, StreamExt};

use assemble::{assemble, assemble_many};
pub(crate) use batch::file_order;
use batch::{Batch, batches};
pub(crate) use check::{Tally, tally};
pub use convert::{to_f32, widens};
pub(crate) use pack::pack;

use read::read_tensors;

use crate::error::Result;
use crate::streams::spawn;
use crate::tree::{LazyTensor, StateTree, Tensor};

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

/// The given tensors, materialized, in file order. Tensors of one object are read with
/// coalesced range requests in parallel.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an abstract tensor;
/// [`Error::Corrupt`](crate::Error::Corrupt) for a stored layout that does not fit its bytes
/// or a checksum that does not match; otherwise the read's error.
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

/// A batch's tensors, read and finished, or assembled from their pieces.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::TryStreamExt;

    use super::*;
    use crate::dtype::DType;
    use crate::error::Error;
    use crate::tree::{Inline, Source, TensorData};

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
}
