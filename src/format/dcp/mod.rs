//! torch.distributed.checkpoint (DCP) directories, read lazily.
//!
//! A DCP checkpoint is a directory: `.metadata` (a pickle of `Metadata`: every item's type,
//! and for tensors their dtype, size and chunks; where each chunk or item is stored; and the
//! planner's flattening map) and `__<rank>_<n>.distcp` files, which concatenate complete
//! `torch.save` files, one per tensor chunk or non-tensor item (written with torch's other
//! options, compressed, or with the tensors in one safetensors blob: `stored` reads all
//! three). [`metadata`] reads the pickle (pure); the reader pins the data files and hands
//! each tensor its chunks, located only when read. [`LazyTensor::rows`](crate::tree::LazyTensor::rows) narrows a sharded tensor to the
//! chunks a reader needs. Paths are those of the state dict that was saved (`model/0.weight`).

pub(crate) mod metadata;
mod reader;
mod stored;

pub(crate) use reader::open;

/// The name of the metadata file, which commits a DCP checkpoint.
pub const METADATA: &str = ".metadata";

/// The largest `.metadata` read.
pub const MAX_METADATA: u64 = 256 << 20;

/// A DCP checkpoint whose metadata and files do not fit together: the source of an
/// [`Error::Corrupt`](crate::Error::Corrupt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DcpError(pub String);
