//! How a DCP item's bytes are stored, and read back. torch's writer has three ways:
//!
//! - a complete `torch.save` zip at the item's range (the default): its tail, then its
//!   pickle, are read, and the tensor is a range of the data file;
//! - the same zip through stream transforms (`stream.zstd/1`, torch's `ZStandard`
//!   extension): the range is read whole and decompressed, never past what the item can hold;
//! - tensors in one safetensors blob at the end of the file (`SerializationFormat.SAFETENSORS`):
//!   every tensor item's range starts at the blob and is as long as the tensor, and the blob's
//!   header, read once per file, says where each tensor (named by its fully qualified name) is.
//!
//! Messages name the data file and the byte range, never anything internal.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::DcpError;
use crate::error::{Error, Result};
use crate::fetch::Object;
use crate::format::ReadOptions;
use crate::format::object::source;
use crate::format::safetensors::header::{self, Header};
use crate::format::torch::archive;
use crate::format::zip::TAIL_READ;
use crate::format::zstd::decompress;
use crate::tree::{LazyTensor, Source, StateTree};

/// The transform torch's `ZStandard` extension records, up to its version.
const ZSTD: &str = "stream.zstd/";

/// Bytes read at a safetensors blob's start: its header, usually whole.
const BLOB_READ: u64 = 1 << 20;

/// The key of the safetensors metadata where torch records each tensor's chunk offsets.
const SHARDING_INFO: &str = "DCP_SHARDING_INFO";

/// A data file, with the header of its safetensors blob once read.
#[derive(Debug)]
pub(crate) struct DataFile {
    pub object: Object,
    /// The object as the one source its chunks share.
    pub source: Arc<dyn Source>,
    blob: OnceCell<Arc<Header>>,
}

impl DataFile {
    pub(crate) fn new(object: Object) -> Arc<Self> {
        Arc::new(Self {
            source: source(&object),
            object,
            blob: OnceCell::new(),
        })
    }

    /// `range` of the file, named for messages.
    pub(crate) fn describe(&self, range: &Range<u64>) -> String {
        format!(
            "{} (bytes {}..{})",
            self.object.location().uri(),
            range.start,
            range.end
        )
    }

    fn corrupt(&self, range: &Range<u64>, problem: String) -> Error {
        Error::corrupt(self.describe(range), DcpError(problem))
    }

    /// The tensor `fqn`, a chunk of `dtype` × `sizes` at `offsets` of the whole, stored at
    /// `range` through `transforms`.
    pub(crate) async fn chunk(
        &self,
        fqn: &str,
        chunk: (&[u64], &[u64]),
        range: &Range<u64>,
        transforms: &[String],
        nbytes: u64,
        options: ReadOptions,
    ) -> Result<LazyTensor> {
        if !transforms.is_empty() {
            let data = self
                .decompressed(range, transforms, nbytes + (1 << 20))
                .await?;
            return self.chunk_in(&data, range, options);
        }
        if in_blob(range, nbytes) {
            return self.in_blob(fqn, chunk, range).await;
        }
        let tail = range.end.saturating_sub(TAIL_READ).max(range.start)..range.end;
        let bytes = self.object.read_range(tail.clone()).await?;
        let tree = archive::read(
            &self.object,
            range.clone(),
            vec![(tail.start, bytes)],
            options,
        )
        .await?;
        first_tensor(tree).ok_or_else(|| self.corrupt(range, "the chunk holds no tensor".into()))
    }

    /// The tensor of the `torch.save` zip `data`, read whole from `range` (and decompressed
    /// where it was stored through transforms): a view of `data`, its CRC-32 checked (with
    /// `verify`) when it is read.
    pub(crate) fn chunk_in(
        &self,
        data: &Bytes,
        range: &Range<u64>,
        options: ReadOptions,
    ) -> Result<LazyTensor> {
        let tree = archive::read_bytes(data, &self.describe(range), options)?;
        first_tensor(tree).ok_or_else(|| self.corrupt(range, "the chunk holds no tensor".into()))
    }

    /// A non-tensor item stored at `range` through `transforms`: its object, as a tree.
    pub(crate) fn item(
        &self,
        data: &Bytes,
        range: &Range<u64>,
        transforms: &[String],
        limit: u64,
        options: ReadOptions,
    ) -> Result<StateTree> {
        let name = self.describe(range);
        if transforms.is_empty() {
            return archive::read_bytes(data, &name, options);
        }
        check_transforms(&name, transforms)?;
        let plain = decompress(data, limit).map_err(|e| self.corrupt(range, e))?;
        archive::read_bytes(&plain, &name, options)
    }

    async fn decompressed(
        &self,
        range: &Range<u64>,
        transforms: &[String],
        limit: u64,
    ) -> Result<Bytes> {
        check_transforms(&self.describe(range), transforms)?;
        let data = self.object.read_range(range.clone()).await?;
        decompress(&data, limit).map_err(|e| self.corrupt(range, e))
    }

    /// Tensor `fqn` in the safetensors blob that starts at `range.start`.
    async fn in_blob(
        &self,
        fqn: &str,
        (offsets, sizes): (&[u64], &[u64]),
        range: &Range<u64>,
    ) -> Result<LazyTensor> {
        let start = range.start;
        let header = self
            .blob
            .get_or_try_init(|| async {
                let size = self.object.info().size - start;
                let first = self
                    .object
                    .read_range(start..start + BLOB_READ.min(size))
                    .await?;
                let bad = |e: header::HeaderError| {
                    self.corrupt(range, format!("not a safetensors blob: {e}"))
                };
                let end = header::header_end(&first, size).map_err(bad)?;
                let bytes = if (first.len() as u64) < end {
                    let rest = self
                        .object
                        .read_range(start + first.len() as u64..start + end)
                        .await?;
                    [first, rest].concat().into()
                } else {
                    first
                };
                header::parse(&bytes, size).map(Arc::new).map_err(bad)
            })
            .await?;
        let bad = |problem: String| self.corrupt(range, problem);
        let t = header
            .tensors
            .iter()
            .find(|t| t.name == fqn)
            .ok_or_else(|| bad(format!("the safetensors blob has no tensor `{fqn}`")))?;
        let (dtype, shape) = (t.dtype, &t.shape);
        if shape != sizes {
            return Err(bad(format!(
                "tensor `{fqn}` is {dtype} × {shape:?} in the blob, its chunk {sizes:?}"
            )));
        }
        if let Some(saved) = saved_offsets(header, fqn)
            && saved != offsets
        {
            return Err(bad(format!(
                "tensor `{fqn}` was saved at {saved:?}, its chunk is at {offsets:?}"
            )));
        }
        let bytes = start + t.range.start..start + t.range.end;
        Ok(LazyTensor::contiguous(
            dtype,
            shape.clone(),
            Arc::clone(&self.source),
            bytes,
        ))
    }
}

/// Whether an item of `nbytes` of tensor stored at `range` is the tensor's place in a
/// safetensors blob: a zip is longer than the data it holds, a blob entry exactly as long.
pub(crate) fn in_blob(range: &Range<u64>, nbytes: u64) -> bool {
    range.end - range.start == nbytes
}

/// Refuses transforms other than torch's ZStandard.
fn check_transforms(name: &str, transforms: &[String]) -> Result<()> {
    for t in transforms {
        let major = t.strip_prefix(ZSTD).and_then(|v| v.split('.').next());
        if major != Some("1") {
            return Err(Error::Unsupported {
                uri: name.to_owned(),
                what: format!("an item stored through the stream transform `{t}`"),
            });
        }
    }
    Ok(())
}

/// The chunk offsets torch recorded for `fqn` in the blob's metadata.
fn saved_offsets(header: &Header, fqn: &str) -> Option<Vec<u64>> {
    let info: serde_json::Value = serde_json::from_str(header.metadata.get(SHARDING_INFO)?).ok()?;
    serde_json::from_value(info.get(fqn)?.get("saved_offsets")?.clone()).ok()
}

fn first_tensor(tree: StateTree) -> Option<LazyTensor> {
    tree.into_tensors().into_iter().next().map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_torchs_zstandard_transform_is_read() {
        assert!(check_transforms("x", &["stream.zstd/1".into()]).is_ok());
        assert!(check_transforms("x", &["stream.zstd/1.2".into()]).is_ok());
        let err = check_transforms("x", &["stream.zstd/2".into()]).unwrap_err();
        assert!(err.to_string().contains("stream.zstd/2"), "{err}");
        assert!(check_transforms("x", &["stream.aes/1".into()]).is_err());
    }
}
