//! Tensors in a tree: [`LazyTensor`] knows its type, shape and where its bytes are
//! ([`TensorData`]); [`Tensor`] is what it becomes once materialized.
//!
//! The tree does no I/O and knows no format. A tensor's bytes are reached through traits the
//! formats implement: [`Source`] (a pinned object that reads byte ranges), [`Anchor`] (a payload
//! offset that was predicted and is confirmed when read) and [`Locate`] (a piece of a tensor
//! whose own header is read on first use). Implementations carry whatever options the caller
//! opened the checkpoint with.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, TryFutureExt};
use futures::stream::{self, BoxStream, StreamExt};

use crate::dtype::{self, DType};
use crate::error::Result;

/// A tensor's type and shape, and where its bytes are; nothing is fetched until asked.
#[derive(Debug, Clone)]
pub struct LazyTensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// Element strides; empty means contiguous, row-major.
    pub strides: Vec<u64>,
    /// Where the bytes are.
    pub data: TensorData,
    /// How the stored elements are seen: a negative or conjugate view (torch's `x.neg()` views,
    /// `x.conj()`), applied when materialized.
    pub view: View,
    /// Set when the stored bytes are blocks of a quantization scheme (GGUF's `Q4_K`). A
    /// reader gives such a tensor as its raw blocks: `U8`, one row of blocks per innermost row
    /// of values, which is what materializes (dequantized with
    /// [`MaterializeOptions::to_f32`](crate::MaterializeOptions)).
    /// [`dequantized`](LazyTensor::dequantized) turns it into F32 values, decoded when read.
    pub quantized: Option<Quantized>,
}

/// Values stored as blocks of a quantization scheme: each innermost row of `row` values is
/// `row / scheme.block_values()` blocks of `scheme.block_bytes()` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Quantized {
    /// The scheme the blocks are in.
    pub scheme: &'static dyn BlockScheme,
    /// Values in one innermost row.
    pub row: u64,
    /// Whether the tensor's type and shape are its values' (F32, decoded when read) rather
    /// than its raw blocks'.
    pub decoded: bool,
}

impl Quantized {
    /// Bytes of one innermost row of blocks.
    pub fn row_bytes(&self) -> u64 {
        self.row / self.scheme.block_values().max(1) * self.scheme.block_bytes()
    }

    /// The shape of the values encoded by blocks whose raw shape is `raw` (its last dimension,
    /// bytes, replaced by the row's values).
    pub fn values_shape(&self, raw: &[u64]) -> Vec<u64> {
        let mut shape = raw.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.row;
        }
        shape
    }

    /// Stored bytes of `values` values (whole rows), or `None` when they are not whole rows.
    pub(crate) fn stored_bytes(&self, values: u64) -> Option<u64> {
        (self.row > 0 && values.is_multiple_of(self.row))
            .then_some(values / self.row * self.row_bytes())
    }
}

/// A block quantization scheme, named as its format names it, which may know how to turn its
/// blocks back into values.
pub trait BlockScheme: Send + Sync + fmt::Debug {
    /// The scheme's name (`Q4_K`).
    fn name(&self) -> &'static str;

    /// Values per block.
    fn block_values(&self) -> u64;

    /// Bytes per block.
    fn block_bytes(&self) -> u64;

    /// Whether [`dequantize`](BlockScheme::dequantize) decodes this scheme.
    fn decodes(&self) -> bool;

    /// The values of whole blocks, or why they cannot be had (a scheme ckptio does not decode).
    ///
    /// # Errors
    ///
    /// A sentence saying what is missing, for an [`Error::Unsupported`](crate::Error).
    fn dequantize(&self, blocks: &[u8]) -> std::result::Result<Vec<f32>, String>;
}

/// A sign a tensor's stored elements are seen with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    /// Every element is negated (torch's negative bit).
    pub neg: bool,
    /// Every complex element is conjugated (torch's conjugate bit).
    pub conj: bool,
}

impl View {
    /// Whether the stored elements are seen as they are.
    pub fn is_identity(self) -> bool {
        self == Self::default()
    }
}

/// Where a tensor's bytes are: exactly one of these.
#[derive(Debug, Clone)]
pub enum TensorData {
    /// Nowhere: a type and shape only (what a load expects).
    Abstract,
    /// A byte range of an object.
    Range(ByteRange),
    /// Bytes already in memory (an array inside a pickle, a small record read with its
    /// metadata).
    Inline(Inline),
    /// Boxes of the tensor, assembled when read (the chunks of a distributed checkpoint).
    Pieces(Arc<Pieces>),
    /// A tensor ckptio knows is there but does not read (quantized, sparse, nested, or a
    /// subclass without storage): its dtype and shape are shown, reading it is an error that
    /// says what it is.
    Unreadable(Unreadable),
}

/// What a tensor ckptio does not read is, and where it is.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// What it is (`a quantized tensor (torch.qint8, per_tensor_affine)`).
    pub what: Arc<str>,
    /// The file holding it, for messages.
    pub origin: Arc<str>,
}

/// A byte range of an object holding a tensor's elements.
#[derive(Debug, Clone)]
pub struct ByteRange {
    /// The object, pinned to the version it was opened at.
    pub source: Arc<dyn Source>,
    /// The bytes from the tensor's first element to its last.
    pub range: Range<u64>,
    /// Elements are stored big-endian (swapped when materialized).
    pub big_endian: bool,
    /// A checksum the stored bytes must match.
    pub check: Option<Check>,
    /// Set when `range` was predicted rather than read: the materializer reads from the
    /// anchor's header too, and moves the range if the header says otherwise.
    pub anchor: Option<Arc<dyn Anchor>>,
}

impl ByteRange {
    /// The bytes at `range` of `source`, unchecked, little-endian.
    pub fn new(source: Arc<dyn Source>, range: Range<u64>) -> Self {
        Self {
            source,
            range,
            big_endian: false,
            check: None,
            anchor: None,
        }
    }
}

/// Elements held in memory.
#[derive(Debug, Clone)]
pub struct Inline {
    /// The stored bytes, from the tensor's first element to its last.
    pub bytes: Bytes,
    /// Elements are stored big-endian (swapped when materialized).
    pub big_endian: bool,
    /// Where the bytes came from, for messages (`model.pt: data.pkl`).
    pub origin: Arc<str>,
    /// The bytes were compared with a checksum stored in the checkpoint when they were read
    /// (a torch storage in an archive held in memory, against its CRC-32).
    pub checked: bool,
}

/// A tensor stored as boxes of its elements, each of which is located (its own small header
/// read) only when it is needed.
#[derive(Debug)]
pub struct Pieces {
    /// The boxes, in no particular order; together they cover the tensor.
    pub boxes: Vec<Arc<Piece>>,
    /// The rows (first dimension) of the full tensor this lazy tensor shows: narrowing a
    /// tensor to rows keeps only the pieces that overlap them.
    pub rows: Range<u64>,
}

/// One box of a [`Pieces`] tensor.
#[derive(Debug)]
pub struct Piece {
    /// Where the box starts in each dimension of the full tensor.
    pub offsets: Vec<u64>,
    /// Its extent in each dimension.
    pub sizes: Vec<u64>,
    /// How to find its bytes.
    pub locate: Arc<dyn Locate>,
}

/// A pinned object whose byte ranges can be read: what a [`ByteRange`] points into.
///
/// Tensors of one object share one `Arc<dyn Source>`, which is how the materializer groups
/// their reads.
pub trait Source: Send + Sync + fmt::Debug {
    /// The object's URI, redacted, for messages.
    fn uri(&self) -> String;

    /// The bytes of `ranges`, in the order given; near ranges may share a request.
    ///
    /// # Errors
    ///
    /// The read's error, naming the object.
    fn read_ranges(&self, ranges: Vec<Range<u64>>) -> BoxFuture<'static, Result<Vec<Bytes>>>;

    /// The bytes of `ranges` as `(index, bytes)`, each as soon as it has landed, so the
    /// consumer works while the rest are on the wire; all at once when the read ends, unless
    /// the source does better.
    ///
    /// # Errors
    ///
    /// As [`read_ranges`](Self::read_ranges); the stream ends after the error.
    fn ranges_as_ready(
        &self,
        ranges: Vec<Range<u64>>,
    ) -> BoxStream<'static, Result<(usize, Bytes)>> {
        self.read_ranges(ranges)
            .map_ok(|parts| stream::iter(parts.into_iter().enumerate().map(Ok)))
            .try_flatten_stream()
            .boxed()
    }
}

/// A payload offset that was predicted from a directory rather than read: torch aligns zip
/// payloads, so no request per local header is needed. The materializer reads from
/// [`header_start`](Anchor::header_start) and asks where the payload really starts.
pub trait Anchor: Send + Sync + fmt::Debug {
    /// Where the record's header starts (at or before the predicted payload).
    fn header_start(&self) -> u64;

    /// Where the payload was predicted to start.
    fn predicted(&self) -> u64;

    /// Where the payload starts, given the bytes from `header_start` on.
    ///
    /// # Errors
    ///
    /// A corrupt-file error when the header does not belong to the record.
    fn payload_start(&self, uri: &str, header: &[u8]) -> Result<u64>;
}

/// A piece of a tensor whose own small header must be read before its bytes can be.
pub trait Locate: Send + Sync + fmt::Debug {
    /// What the piece is, for messages (`__1_0.distcp`, bytes 4096..9000).
    fn describe(&self) -> String;

    /// The piece as a lazy tensor of its own (read once; later calls reuse it).
    ///
    /// # Errors
    ///
    /// The read's or the header's error.
    fn locate(&self) -> BoxFuture<'_, Result<LazyTensor>>;

    /// `group` (pieces of this piece's tensor, in any order) located together, in as few reads
    /// as the format allows, in `group`'s order; `None`, the default, when each piece is
    /// located on its own.
    fn locate_group<'a>(
        &'a self,
        group: &'a [Arc<Piece>],
    ) -> Option<BoxFuture<'a, Result<Vec<LazyTensor>>>> {
        let _ = group;
        None
    }

    /// Where the piece lies whole, when [`parse`](Self::parse) locates it from exactly those
    /// bytes with no other read: pieces stored side by side, of one tensor or of many, then
    /// come in one request. `None`, the default, when the piece is located on its own.
    fn stored(&self) -> Option<(Arc<dyn Source>, Range<u64>)> {
        None
    }

    /// The piece located from `data`, its bytes where [`stored`](Self::stored) says they lie.
    ///
    /// # Errors
    ///
    /// What the bytes do not hold;
    /// [`Error::Unsupported`](crate::error::Error::Unsupported) from a piece that has no
    /// [`stored`](Self::stored) place.
    fn parse(&self, data: Bytes) -> Result<LazyTensor> {
        let _ = data;
        Err(crate::error::Error::Unsupported {
            uri: self.describe(),
            what: "a piece located from its bytes alone".into(),
        })
    }
}

/// A checksum over a record that holds a tensor's bytes (a zip entry, a data file).
///
/// It is verified whenever a tensor's range covers the whole span: a view of part of a
/// storage cannot be checked without reading the rest, and is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The checksummed bytes of the object.
    pub span: Range<u64>,
    /// The expected value.
    pub checksum: Checksum,
    /// The record's name, for errors (`archive/data/3`).
    pub record: Arc<str>,
}

/// A checksum algorithm and value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checksum {
    /// CRC-32 (IEEE), as zip stores.
    Crc32(u32),
    /// CRC-32C (Castagnoli), as ckptio's manifests store.
    Crc32c(u32),
    /// SHA-256, which ckptio's manifests store on request (boxed: tree nodes stay small,
    /// which keeps recursion over deep trees cheap).
    Sha256(Box<[u8; 32]>),
}

impl Checksum {
    /// The same algorithm's value for `data`.
    pub fn compute(&self, data: &[u8]) -> Self {
        match self {
            Self::Crc32(_) => Self::Crc32(crc32fast::hash(data)),
            Self::Crc32c(_) => Self::Crc32c(crc32c::crc32c(data)),
            Self::Sha256(_) => Self::Sha256(Box::new(
                <sha2::Sha256 as sha2::Digest>::digest(data).into(),
            )),
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crc32(v) => write!(f, "CRC-32 {v:08x}"),
            Self::Crc32c(v) => write!(f, "CRC-32C {v:08x}"),
            Self::Sha256(v) => {
                f.write_str("SHA-256 ")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

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

impl LazyTensor {
    /// A contiguous tensor stored at `range` of `source`.
    pub fn contiguous(
        dtype: DType,
        shape: Vec<u64>,
        source: Arc<dyn Source>,
        range: Range<u64>,
    ) -> Self {
        Self {
            dtype,
            shape,
            strides: Vec::new(),
            data: TensorData::Range(ByteRange::new(source, range)),
            view: View::default(),
            quantized: None,
        }
    }

    /// A contiguous little-endian tensor whose elements are `bytes`, already in memory;
    /// `origin` names where they came from, for messages.
    pub fn inline(dtype: DType, shape: Vec<u64>, bytes: Bytes, origin: Arc<str>) -> Self {
        Self {
            dtype,
            shape,
            strides: Vec::new(),
            data: TensorData::Inline(Inline {
                bytes,
                big_endian: false,
                origin,
                checked: false,
            }),
            view: View::default(),
            quantized: None,
        }
    }

    /// A type and shape with no data: what a load expects.
    pub fn abstract_(dtype: DType, shape: Vec<u64>) -> Self {
        Self {
            dtype,
            shape,
            strides: Vec::new(),
            data: TensorData::Abstract,
            view: View::default(),
            quantized: None,
        }
    }

    /// The tensor's values as F32, decoded from its blocks when it is read: `None` unless it
    /// is quantized in raw form with a scheme ckptio decodes.
    pub fn dequantized(&self) -> Option<LazyTensor> {
        let q = self
            .quantized
            .filter(|q| !q.decoded && q.scheme.decodes())?;
        Some(LazyTensor {
            dtype: DType::F32,
            shape: q.values_shape(&self.shape),
            quantized: Some(Quantized { decoded: true, ..q }),
            ..self.clone()
        })
    }

    /// Whether the tensor has no data (a type and shape only).
    pub fn is_abstract(&self) -> bool {
        matches!(self.data, TensorData::Abstract)
    }

    /// The rows `rows` of the tensor (its first dimension), still lazy: a contiguous tensor
    /// narrows its bytes, a tensor in pieces keeps only the pieces that overlap. `None` when
    /// the rows are out of bounds or the layout cannot be narrowed this way.
    pub fn rows(&self, rows: Range<u64>) -> Option<LazyTensor> {
        let &first = self.shape.first()?;
        if rows.start > rows.end || rows.end > first {
            return None;
        }
        // The one dimension of quantized blocks is bytes, which cut blocks apart.
        if self.quantized.is_some() && self.shape.len() == 1 {
            return None;
        }
        let mut shape = self.shape.clone();
        shape[0] = rows.end - rows.start;
        if let TensorData::Pieces(pieces) = &self.data {
            let start = pieces.rows.start + rows.start;
            let window = start..start + (rows.end - rows.start);
            let boxes = pieces
                .boxes
                .iter()
                .filter(|p| match (p.offsets.first(), p.sizes.first()) {
                    (Some(&o), Some(&n)) => o < window.end && window.start < o.saturating_add(n),
                    _ => false,
                })
                .cloned()
                .collect();
            return Some(LazyTensor {
                shape,
                data: TensorData::Pieces(Arc::new(Pieces {
                    boxes,
                    rows: window,
                })),
                ..self.clone()
            });
        }
        // A strided tensor keeps its strides: its rows start `stride[0]` elements apart and
        // span what the strides reach.
        let (skip, len, strides) = if self.is_contiguous() {
            let inner = dtype::numel(&self.shape[1..])?;
            let row = match self.quantized {
                Some(q) if q.decoded => q.stored_bytes(inner)?,
                _ => self.dtype.byte_len(inner)?,
            };
            let len = (rows.end - rows.start).checked_mul(row)?;
            (rows.start.checked_mul(row)?, len, Vec::new())
        } else {
            let elem = self.dtype.byte_len(1)?;
            let skip = rows.start.checked_mul(self.strides[0])?.checked_mul(elem)?;
            let len = strided_extent(self.dtype, &shape, &self.strides)?;
            (skip, len, self.strides.clone())
        };
        let data = match &self.data {
            TensorData::Abstract => TensorData::Abstract,
            TensorData::Unreadable(u) => TensorData::Unreadable(u.clone()),
            TensorData::Range(r) => {
                let start = r.range.start.checked_add(skip)?;
                TensorData::Range(ByteRange {
                    range: start..start.checked_add(len)?,
                    ..r.clone()
                })
            }
            TensorData::Inline(i) => {
                let start = usize::try_from(skip).ok()?;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                TensorData::Inline(Inline {
                    bytes: i.bytes.get(start..end).map(|_| i.bytes.slice(start..end))?,
                    ..i.clone()
                })
            }
            TensorData::Pieces(_) => unreachable!("handled above"),
        };
        Some(LazyTensor {
            shape,
            strides,
            data,
            ..self.clone()
        })
    }

    /// The tensor without its first dimension when that has one element (`[1, n]` as `[n]`):
    /// the same elements in the same order. `None` for a tensor in pieces, whose boxes keep
    /// every dimension.
    pub(crate) fn squeeze_first(&self) -> Option<LazyTensor> {
        if self.shape.first() != Some(&1) || matches!(self.data, TensorData::Pieces(_)) {
            return None;
        }
        Some(LazyTensor {
            shape: self.shape[1..].to_vec(),
            strides: self
                .strides
                .get(1..)
                .map(<[u64]>::to_vec)
                .unwrap_or_default(),
            ..self.clone()
        })
    }

    /// Number of elements (saturating at `u64::MAX` for an absurd shape).
    pub fn numel(&self) -> u64 {
        dtype::numel(&self.shape).unwrap_or(u64::MAX)
    }

    /// Bytes of the tensor once contiguous (saturating at `u64::MAX`).
    pub fn nbytes(&self) -> u64 {
        self.dtype.byte_len(self.numel()).unwrap_or(u64::MAX)
    }

    /// Whether the elements are stored contiguously in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.strides.is_empty() || self.strides == contiguous_strides(&self.shape)
    }
}

/// The most dimensions a tensor may have (numpy's limit); readers refuse a shape with more
/// before they build it.
pub const MAX_DIMS: usize = 64;

/// Row-major strides of `shape`, in elements.
pub fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Bytes from the first stored element to the last, for `shape` and element `strides`
/// (`None` on overflow or a partial-byte dtype; 0 for an empty tensor).
pub fn strided_extent(dtype: DType, shape: &[u64], strides: &[u64]) -> Option<u64> {
    if !dtype.bits().is_multiple_of(8) || strides.len() != shape.len() {
        return None;
    }
    if shape.contains(&0) {
        return Some(0);
    }
    let elem = dtype.bits() / 8;
    let last = shape.iter().zip(strides).try_fold(0u64, |acc, (&d, &s)| {
        acc.checked_add((d - 1).checked_mul(s)?)
    })?;
    last.checked_add(1)?.checked_mul(elem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity_is_decided_by_strides() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
        let mut t = LazyTensor::abstract_(DType::F32, vec![2, 3]);
        assert!(t.is_contiguous());
        t.strides = vec![1, 2];
        assert!(!t.is_contiguous());
        assert_eq!(t.nbytes(), 24);
    }

    #[test]
    fn extents_follow_strides_and_refuse_overflow() {
        // A 3×2 view of a row-major 2×3 matrix (its transpose).
        assert_eq!(strided_extent(DType::U8, &[3, 2], &[1, 3]), Some(6));
        assert_eq!(strided_extent(DType::U16, &[3], &[2]), Some(10));
        assert_eq!(strided_extent(DType::F32, &[], &[]), Some(4));
        assert_eq!(strided_extent(DType::F32, &[0, 5], &[5, 1]), Some(0));
        assert_eq!(
            strided_extent(DType::F32, &[u64::MAX, 2], &[u64::MAX, 1]),
            None
        );
        assert_eq!(strided_extent(DType::F4, &[2], &[1]), None, "packed");
        assert_eq!(strided_extent(DType::F32, &[2], &[]), None, "mismatched");
    }

    #[test]
    fn rows_of_inline_and_abstract_tensors_narrow_without_io() {
        let t = LazyTensor {
            dtype: DType::U8,
            shape: vec![3, 2],
            strides: Vec::new(),
            data: TensorData::Inline(Inline {
                bytes: Bytes::from_static(&[1, 2, 3, 4, 5, 6]),
                big_endian: false,
                origin: Arc::from("test"),
                checked: false,
            }),
            view: View::default(),
            quantized: None,
        };
        let TensorData::Inline(i) = t.rows(1..3).unwrap().data else {
            panic!("still inline")
        };
        assert_eq!(i.bytes, [3, 4, 5, 6].as_slice());
        assert!(t.rows(2..4).is_none(), "out of bounds");
        let a = LazyTensor::abstract_(DType::F32, vec![4, 2]);
        assert_eq!(a.rows(0..1).unwrap().shape, [1, 2]);
    }
}
