//! One safetensors file, read lazily: opening it costs one ranged GET when its header fits the
//! speculative first read, and each tensor is then one more range.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::header::{Header, HeaderError, header_end, parse};
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::format::object::source;
use crate::tree::{LazyTensor, Node, Source, StateTree};

/// Bytes read from the start of a file when opening it: most headers fit, so opening costs one
/// request; a longer header costs exactly one more.
pub(crate) const SPECULATIVE_READ: u64 = 1 << 20;

/// A header that is not valid: the source of an [`Error::Corrupt`].
#[derive(Debug, thiserror::Error)]
#[error("not a valid safetensors file: {0}")]
pub struct Invalid(#[from] pub HeaderError);

/// An open safetensors file: its validated header, and the pinned object its tensors are read
/// from.
#[derive(Debug, Clone)]
pub(crate) struct SafetensorsFile {
    source: Arc<dyn Source>,
    header: Header,
    /// Tensors by name, made when a tensor is first asked for by name.
    by_name: OnceLock<HashMap<String, usize>>,
}

/// A safetensors file held whole in `data` (named `name` in messages), as its metadata and a
/// tree whose tensors are slices of `data`.
///
/// # Errors
///
/// [`Error::Corrupt`] naming what is wrong with the header.
pub(crate) fn from_bytes(
    data: &Bytes,
    name: &str,
) -> Result<(BTreeMap<String, String>, StateTree)> {
    let header = parse(data, data.len() as u64).map_err(|e| Error::corrupt(name, Invalid(e)))?;
    let origin: Arc<str> = Arc::from(name);
    let root = header
        .tensors
        .into_iter()
        .map(|t| {
            // The header was checked against `data.len()`: every range lies inside it.
            let bytes = data.slice(t.range.start as usize..t.range.end as usize);
            let lazy = LazyTensor::inline(t.dtype, t.shape, bytes, Arc::clone(&origin));
            (t.name, Node::from(lazy))
        })
        .collect();
    Ok((header.metadata, StateTree::from_dict(root)))
}

impl SafetensorsFile {
    /// Opens and validates the file at `location`: one ranged GET of the first
    /// [`SPECULATIVE_READ`] bytes, and one more only if the header is longer.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming what is wrong with the header; otherwise as a range read.
    pub(crate) async fn open(
        location: &crate::location::Location,
        options: FetchOptions,
    ) -> Result<Self> {
        let (object, first) = Object::open_prefix(location, SPECULATIVE_READ, options).await?;
        Self::from_prefix(object, first).await
    }

    /// The file `object`, whose first bytes `first` were read already.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub(crate) async fn from_prefix(object: Object, first: Bytes) -> Result<Self> {
        let size = object.info().size;
        let invalid =
            |problem: HeaderError| Error::corrupt(object.location().uri(), Invalid(problem));
        let end = header_end(&first, size).map_err(invalid)?;
        let bytes = object.extend_prefix(first, end).await?;
        let header = parse(&bytes, size).map_err(invalid)?;
        Ok(Self {
            source: source(&object),
            header,
            by_name: OnceLock::new(),
        })
    }

    /// The file as its metadata and a tree: one top-level key per tensor (names are kept
    /// whole, dots and all), each a [`LazyTensor`] reading its range of this file.
    pub(crate) fn into_tree(self) -> (BTreeMap<String, String>, StateTree) {
        let source = self.source;
        let root = self
            .header
            .tensors
            .into_iter()
            .map(|t| {
                let lazy = LazyTensor::contiguous(t.dtype, t.shape, Arc::clone(&source), t.range);
                (t.name, Node::from(lazy))
            })
            .collect();
        (self.header.metadata, StateTree::from_dict(root))
    }

    /// Tensor `name` as a [`LazyTensor`] reading its range of this file.
    pub(crate) fn lazy_tensor(&self, name: &str) -> Option<LazyTensor> {
        let by_name = self.by_name.get_or_init(|| {
            let names = self.header.tensors.iter().map(|t| t.name.clone());
            names.zip(0..).collect()
        });
        let t = &self.header.tensors[*by_name.get(name)?];
        Some(LazyTensor::contiguous(
            t.dtype,
            t.shape.clone(),
            Arc::clone(&self.source),
            t.range.clone(),
        ))
    }
}
