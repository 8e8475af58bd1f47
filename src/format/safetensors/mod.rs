//! safetensors, read lazily: opening a file costs one ranged GET when its header fits the
//! speculative first read, and each tensor is then one more range.

mod header;
mod sharded;

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;

pub use header::{Header, HeaderError, MAX_HEADER_SIZE, TensorInfo, header_end, parse};
pub use sharded::{MAX_INDEX_SIZE, ShardedSafetensors, is_index};

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::location::Location;
use crate::tree::{LazyTensor, Leaf, Node, StateTree};

/// Bytes read from the start of a file when opening it: most headers fit, so opening costs one
/// request; a longer header costs exactly one more.
pub const SPECULATIVE_READ: u64 = 1 << 20;

/// An open safetensors file: its validated header, and the pinned object to read tensors from.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// use ckptio::format::safetensors::SafetensorsFile;
///
/// let loc = ckptio::location::resolve("fixtures/tiny.safetensors", &Default::default())?;
/// let file = SafetensorsFile::open(&loc, Default::default()).await?;
/// let bias = file.info("head.bias").unwrap();
/// assert_eq!((bias.dtype.name(), bias.shape.as_slice()), ("F32", &[3][..]));
/// let bytes = file.read("head.bias").await?;
/// assert_eq!(bytes.len(), 12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    object: Object,
    header: Header,
    by_name: HashMap<String, usize>,
}

impl SafetensorsFile {
    /// Opens and validates the file at `location`: one ranged GET of the first
    /// [`SPECULATIVE_READ`] bytes, and one more only if the header is longer.
    ///
    /// # Errors
    ///
    /// [`Error::Safetensors`] naming what is wrong with the header; otherwise as a range read.
    pub async fn open(location: &Location, options: FetchOptions) -> Result<Self> {
        let (object, first) = Object::open_prefix(location, SPECULATIVE_READ, options).await?;
        let size = object.info().size;
        let looks_like = super::sniff(&first);
        let invalid = |problem| match looks_like {
            Some(what) => Error::UnsupportedFormat {
                uri: location.uri(),
                what,
            },
            None => Error::Safetensors {
                uri: location.uri(),
                problem,
            },
        };
        let end = header_end(&first, size).map_err(invalid)?;
        let bytes = object.extend_prefix(first, end).await?;
        let header = parse(&bytes, size).map_err(invalid)?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            object,
            header,
            by_name,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The pinned object the tensors are read from.
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// The file as a tree: one top-level key per tensor (names are kept whole, dots and all),
    /// each a [`LazyTensor`] reading its range of this file.
    pub fn tree(&self) -> StateTree {
        let root = self
            .header
            .tensors
            .iter()
            .map(|t| (t.name.clone(), Node::Leaf(Leaf::Tensor(self.lazy(t)))))
            .collect();
        StateTree::from_dict(root)
    }

    /// Tensor `name` as a [`LazyTensor`] reading its range of this file.
    pub fn lazy_tensor(&self, name: &str) -> Option<LazyTensor> {
        self.info(name).map(|t| self.lazy(t))
    }

    fn lazy(&self, t: &TensorInfo) -> LazyTensor {
        LazyTensor::contiguous(
            t.dtype,
            t.shape.clone(),
            self.object.clone(),
            t.range.clone(),
        )
    }

    /// The entry of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The bytes of tensor `name`: one range request.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTensor`]; otherwise as a range read.
    pub async fn read(&self, name: &str) -> Result<Bytes> {
        let mut all = self.read_many(&[name]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// The bytes of several tensors, in the order named; neighbours share requests.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTensor`] for a name not in the file; otherwise as a range read.
    pub async fn read_many(&self, names: &[&str]) -> Result<Vec<Bytes>> {
        let ranges = names
            .iter()
            .map(|name| {
                self.info(name)
                    .map(|t| t.range.clone())
                    .ok_or_else(|| Error::NoSuchTensor {
                        uri: self.object.location().uri(),
                        name: (*name).to_owned(),
                    })
            })
            .collect::<Result<Vec<Range<u64>>>>()?;
        self.object.read_ranges(&ranges).await
    }
}
