//! The state tree every reader produces: nested ordered dicts and lists whose leaves are
//! scalars, strings, bytes, inert opaque objects, or [`LazyTensor`]s that know where their
//! bytes are but have not fetched them.
//!
//! Paths join keys with `/` (`state_dict/net.0.weight`, `optimizer_states/0/state/3/exp_avg`);
//! list indices are numbers, and a key holding `/` is escaped (see [`path`]).
//!
//! ```
//! use ckptio::tree::{Leaf, Node, StateTree};
//!
//! let mut tree = StateTree::new();
//! tree.insert("state/model/layer1.weights", Node::Leaf(Leaf::Int(1.into()))).unwrap();
//! tree.insert("state/model/layer2.weights", Node::Leaf(Leaf::Int(2.into()))).unwrap();
//! tree.insert("state/epoch", Node::Leaf(Leaf::Int(3.into()))).unwrap();
//! let kept = tree.ignore(&["state/model/layer1*"]).unwrap();
//! let paths: Vec<String> = kept.leaves().map(|(p, _)| p).collect();
//! assert_eq!(paths, ["state/model/layer2.weights", "state/epoch"]);
//! ```

pub mod path;
mod select;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use indexmap::IndexMap;

pub use select::{GlobError, Mismatch, Report};

use crate::dtype::{self, DType};
use crate::fetch::Object;
use crate::format::zip::ZipEntry;

/// A nested checkpoint: the root is a dict.
#[derive(Debug, Clone, Default)]
pub struct StateTree {
    root: Dict,
}

/// An ordered dict with string keys.
pub type Dict = IndexMap<String, Node>;

/// One node of a tree.
#[derive(Debug, Clone)]
pub enum Node {
    /// Ordered string keys.
    Dict(Dict),
    /// A list (or tuple).
    List(Vec<Node>),
    /// Anything else.
    Leaf(Leaf),
}

/// A value at the end of a path.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// Python's `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer, however large.
    Int(Int),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(bytes::Bytes),
    /// A tensor, not fetched yet.
    Tensor(LazyTensor),
    /// An object ckptio does not interpret, kept inert.
    Opaque(Opaque),
}

/// An integer kept exactly: machine-sized when it fits, decimal digits when it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Int {
    /// Fits in 64 bits.
    Small(i64),
    /// Decimal digits, with a leading `-` when negative.
    Big(String),
}

impl From<i64> for Int {
    fn from(v: i64) -> Self {
        Self::Small(v)
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Small(v) => write!(f, "{v}"),
            Self::Big(digits) => f.write_str(digits),
        }
    }
}

/// An object of a class ckptio does not know (from a pickle, say): its class and the data it
/// was built from, never executed.
#[derive(Debug, Clone)]
pub struct Opaque {
    /// The class's module.
    pub module: String,
    /// The class's name.
    pub name: String,
    /// Constructor arguments.
    pub args: Vec<Node>,
    /// State set after construction, if any.
    pub state: Option<Box<Node>>,
}

/// A tensor's type and shape, and where its bytes are; nothing is fetched until asked.
#[derive(Debug, Clone)]
pub struct LazyTensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// Element strides; empty means contiguous, row-major.
    pub strides: Vec<u64>,
    /// Where the bytes are; `None` for an abstract tensor (an expected type and shape) and for
    /// one assembled from pieces.
    pub source: Option<TensorSource>,
    /// The pieces the tensor is assembled from, when it is stored in pieces (the chunks of a
    /// torch.distributed checkpoint).
    pub pieces: Option<Arc<Pieces>>,
}

/// A tensor stored as boxes of its elements, each a complete `torch.save` file of its own
/// inside a larger object: the chunks a distributed checkpoint writes, one per rank's shard.
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
    /// The object holding it.
    pub object: Object,
    /// The bytes of its `torch.save` file within the object.
    pub range: Range<u64>,
    /// The box as a lazy tensor, once its file's directory and pickle have been read.
    pub resolved: tokio::sync::OnceCell<LazyTensor>,
}

/// Where a tensor's bytes are: a byte range of a pinned object.
#[derive(Debug, Clone)]
pub struct TensorSource {
    /// The object, pinned to the ETag it was opened at.
    pub object: Object,
    /// The bytes from the tensor's first element to its last.
    pub range: Range<u64>,
    /// Elements are stored big-endian (swapped when materialized).
    pub big_endian: bool,
    /// A checksum the stored bytes must match.
    pub check: Option<Check>,
    /// The zip entry holding the bytes, when their offset was predicted rather than read.
    pub anchor: Option<Arc<ZipAnchor>>,
}

impl TensorSource {
    /// The bytes at `range` of `object`, unchecked, little-endian.
    pub fn new(object: Object, range: Range<u64>) -> Self {
        Self {
            object,
            range,
            big_endian: false,
            check: None,
            anchor: None,
        }
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

/// A zip entry whose payload offset was predicted from the central directory (torch's
/// writer aligns payloads, so no request per local header is needed). The materializer reads
/// the local header with the data and, should the prediction be wrong, reads again at the
/// right offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipAnchor {
    /// The entry.
    pub entry: ZipEntry,
    /// Where its payload was predicted to start.
    pub payload: u64,
}

impl LazyTensor {
    /// A contiguous tensor stored at `range` of `object`.
    pub fn contiguous(dtype: DType, shape: Vec<u64>, object: Object, range: Range<u64>) -> Self {
        Self {
            dtype,
            shape,
            strides: Vec::new(),
            source: Some(TensorSource::new(object, range)),
            pieces: None,
        }
    }

    /// A type and shape with no data: what a load expects.
    pub fn abstract_(dtype: DType, shape: Vec<u64>) -> Self {
        Self {
            dtype,
            shape,
            strides: Vec::new(),
            source: None,
            pieces: None,
        }
    }

    /// The rows `rows` of the tensor (its first dimension), still lazy: a contiguous tensor
    /// narrows its byte range, a tensor in pieces keeps only the pieces that overlap. `None`
    /// when the rows are out of bounds or the layout cannot be narrowed this way.
    pub fn rows(&self, rows: Range<u64>) -> Option<LazyTensor> {
        let &first = self.shape.first()?;
        if rows.start > rows.end || rows.end > first {
            return None;
        }
        let mut shape = self.shape.clone();
        shape[0] = rows.end - rows.start;
        if let Some(pieces) = &self.pieces {
            let start = pieces.rows.start + rows.start;
            let window = start..start + (rows.end - rows.start);
            let boxes = pieces
                .boxes
                .iter()
                .filter(|p| match (p.offsets.first(), p.sizes.first()) {
                    (Some(&o), Some(&n)) => o < window.end && window.start < o + n,
                    _ => false,
                })
                .cloned()
                .collect();
            return Some(LazyTensor {
                shape,
                pieces: Some(Arc::new(Pieces {
                    boxes,
                    rows: window,
                })),
                ..self.clone()
            });
        }
        if !self.is_contiguous() {
            return None;
        }
        let row = self.dtype.byte_len(dtype::numel(&self.shape[1..])?)?;
        let source = match &self.source {
            Some(s) => {
                let start = s.range.start.checked_add(rows.start.checked_mul(row)?)?;
                let end = start.checked_add((rows.end - rows.start).checked_mul(row)?)?;
                Some(TensorSource {
                    range: start..end,
                    ..s.clone()
                })
            }
            None => None,
        };
        Some(LazyTensor {
            shape,
            strides: Vec::new(),
            source,
            ..self.clone()
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        dtype::numel(&self.shape).unwrap_or(u64::MAX)
    }

    /// Bytes of the tensor once contiguous.
    pub fn nbytes(&self) -> u64 {
        self.dtype.byte_len(self.numel()).unwrap_or(u64::MAX)
    }

    /// Whether the elements are stored contiguously in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.strides.is_empty() || self.strides == contiguous_strides(&self.shape)
    }
}

/// Row-major strides of `shape`, in elements.
pub fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// A path that does not fit the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path `{path}`: {reason}")]
pub struct PathError {
    /// The path.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl StateTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree whose root is `root`.
    pub fn from_dict(root: Dict) -> Self {
        Self { root }
    }

    /// The root dict.
    pub fn root(&self) -> &Dict {
        &self.root
    }

    /// Puts `node` at `path`, creating the dicts on the way.
    ///
    /// # Errors
    ///
    /// [`PathError`] when the path is empty or runs through a leaf or a list.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), PathError> {
        let bad = |reason: &str| PathError {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let keys: Vec<String> = path::segments(path).map(path::unescape).collect();
        let (last, parents) = keys.split_last().ok_or_else(|| bad("empty path"))?;
        let mut dict = &mut self.root;
        for key in parents {
            let next = dict
                .entry(key.clone())
                .or_insert_with(|| Node::Dict(Dict::new()));
            dict = match next {
                Node::Dict(d) => d,
                _ => return Err(bad(&format!("`{key}` is not a dict"))),
            };
        }
        dict.insert(last.clone(), node);
        Ok(())
    }

    /// The node at `path` (the root dict for an empty path is not a node: `None`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut segments = path::segments(path);
        let first = path::unescape(segments.next()?);
        let mut node = self.root.get(&first)?;
        for segment in segments {
            node = match node {
                Node::Dict(d) => d.get(&path::unescape(segment))?,
                Node::List(items) => items.get(segment.parse::<usize>().ok()?)?,
                Node::Leaf(_) => return None,
            };
        }
        Some(node)
    }

    /// The tree below `path`, as a tree of its own (`state_dict` for the weights alone).
    pub fn subtree(&self, path: &str) -> Option<StateTree> {
        match self.get(path)? {
            Node::Dict(d) => Some(StateTree::from_dict(d.clone())),
            _ => None,
        }
    }

    /// Every leaf with its path, depth first, in order.
    pub fn leaves(&self) -> impl Iterator<Item = (String, &Leaf)> {
        let mut out = Vec::new();
        for (key, node) in &self.root {
            collect_leaves(path::escape(key), node, &mut out);
        }
        out.into_iter()
    }

    /// Every tensor with its path, in tree order.
    pub fn tensors(&self) -> impl Iterator<Item = (String, &LazyTensor)> {
        self.leaves().filter_map(|(p, leaf)| match leaf {
            Leaf::Tensor(t) => Some((p, t)),
            _ => None,
        })
    }
}

fn collect_leaves<'a>(at: String, node: &'a Node, out: &mut Vec<(String, &'a Leaf)>) {
    match node {
        Node::Leaf(leaf) => out.push((at, leaf)),
        Node::Dict(d) => {
            for (key, child) in d {
                collect_leaves(path::join(&at, &path::escape(key)), child, out);
            }
        }
        Node::List(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_leaves(path::join(&at, &i.to_string()), child, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Node {
        Node::Leaf(Leaf::Int(v.into()))
    }

    #[test]
    fn get_walks_dicts_and_lists_with_escaped_keys() {
        let mut tree = StateTree::new();
        tree.insert(
            "optimizer/state",
            Node::List(vec![
                int(0),
                Node::Dict(Dict::from([("exp_avg".into(), int(7))])),
            ]),
        )
        .unwrap();
        tree.insert(&format!("odd/{}", path::escape("a/b")), int(9))
            .unwrap();
        assert!(matches!(
            tree.get("optimizer/state/1/exp_avg"),
            Some(Node::Leaf(Leaf::Int(Int::Small(7))))
        ));
        assert!(matches!(
            tree.get("odd/a%2Fb"),
            Some(Node::Leaf(Leaf::Int(Int::Small(9))))
        ));
        assert!(tree.get("optimizer/state/2").is_none());
        assert!(tree.get("optimizer/state/x").is_none());
        assert!(tree.get("").is_none());
        let paths: Vec<String> = tree.leaves().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "optimizer/state/0",
                "optimizer/state/1/exp_avg",
                "odd/a%2Fb"
            ]
        );
    }

    #[test]
    fn insert_refuses_to_go_through_a_leaf() {
        let mut tree = StateTree::new();
        tree.insert("a", int(1)).unwrap();
        assert!(tree.insert("a/b", int(2)).is_err());
        assert!(tree.insert("", int(2)).is_err());
    }

    #[test]
    fn contiguity_is_decided_by_strides() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
        let mut t = LazyTensor::abstract_(DType::F32, vec![2, 3]);
        assert!(t.is_contiguous());
        t.strides = vec![1, 2];
        assert!(!t.is_contiguous());
        assert_eq!(t.nbytes(), 24);
    }
}
