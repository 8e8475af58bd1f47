//! Writing tensors as safetensors, to any store: the header first, then each tensor's bytes as
//! they are materialized, through object_store's buffered writer (one PUT for small files, a
//! multipart upload for large ones). With a shard size, several files and an index in the
//! Hugging Face convention.

use std::collections::BTreeMap;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fetch::{NoProgress, Progress};
use crate::location::{Location, Scheme};
use crate::materialize::{self, MaterializeOptions};
use crate::tree::LazyTensor;

/// How safetensors files are written.
#[derive(Clone)]
pub struct WriteOptions {
    /// Split into shards of at most this many data bytes (a larger tensor gets a shard of its
    /// own), named `{stem}-00001-of-0000N.safetensors`, with `{stem}.safetensors.index.json`.
    pub max_shard_size: Option<u64>,
    /// Strings stored in each file's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
    /// How the tensors are read.
    pub materialize: MaterializeOptions,
    /// Also compute each tensor's SHA-256 (CRC-32C is always computed).
    pub sha256: bool,
    /// Told of every tensor's bytes as they are handed to the upload (`advanced`).
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("max_shard_size", &self.max_shard_size)
            .field("metadata", &self.metadata)
            .field("materialize", &self.materialize)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            max_shard_size: None,
            metadata: BTreeMap::new(),
            materialize: MaterializeOptions::default(),
            sha256: false,
            progress: Arc::new(NoProgress),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// URIs of the files, in order (shards, then the index).
    pub files: Vec<String>,
    /// Tensor data bytes.
    pub data_bytes: u64,
}

/// The smallest multipart part: S3 allows 10,000 parts, so files up to 160 GiB use this size.
const PART_SIZE: usize = 16 << 20;

/// The most parts a file is split into, under S3's limit of 10,000.
const MAX_PARTS: u64 = 9_000;

/// The part size for a file of `size` bytes: 16 MiB, or larger (whole MiB) so that the file
/// takes at most 9,000 parts: a 1 TiB file uploads in parts of 117 MiB.
pub fn part_size_for(size: u64) -> usize {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    usize::try_from(needed).map_or(usize::MAX, |n| n.max(PART_SIZE))
}

/// Where each tensor of a written file is, and the CRC-32C of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    /// The file's size.
    pub size: u64,
    /// Each tensor, in file order.
    pub tensors: Vec<WrittenTensor>,
}

/// One tensor of a written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenTensor {
    /// Its name (tree path).
    pub name: String,
    /// Its bytes in the file.
    pub range: std::ops::Range<u64>,
    /// CRC-32C of those bytes.
    pub crc32c: u32,
    /// SHA-256 of those bytes, when asked for.
    pub sha256: Option<[u8; 32]>,
}

/// The bytes of a safetensors header for `tensors` (name, dtype, shape, nbytes), padded with
/// spaces so the data starts 8-byte aligned.
pub fn header_bytes(
    tensors: &[(String, &LazyTensor)],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if !metadata.is_empty() {
        map.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0u64;
    for (name, t) in tensors {
        let end = offset + t.nbytes();
        map.insert(
            name.clone(),
            json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(map)).expect("a JSON map always serializes");
    while (8 + header.len()) % 8 != 0 {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out
}

/// Writes `tensors` to `dest` as safetensors (or as shards and an index next to it).
///
/// # Errors
///
/// [`Error::InvalidOption`] for a tensor whose bytes are not a whole number; read errors from
/// the sources; the store's error for a failed upload (which is aborted, leaving no file).
pub async fn write_safetensors(
    mut tensors: Vec<(String, LazyTensor)>,
    dest: &Location,
    options: &WriteOptions,
) -> Result<Written> {
    // Written in the sources' file order: each tensor is streamed as it is read, none waits.
    materialize::file_order(&mut tensors);
    for (name, t) in &tensors {
        if t.dtype.byte_len(t.numel()).is_none() {
            return Err(Error::Tensor {
                uri: dest.uri(),
                path: name.clone(),
                reason: format!("{} × {:?} is not a whole number of bytes", t.dtype, t.shape),
            });
        }
    }
    let shards = plan_shards(&tensors, options.max_shard_size);
    let total: u64 = tensors.iter().map(|(_, t)| t.nbytes()).sum();
    if shards.len() <= 1 {
        write_file(tensors, dest, options).await?;
        return Ok(Written {
            files: vec![dest.uri()],
            data_bytes: total,
        });
    }

    let file_name = dest.path().filename().unwrap_or("model.safetensors");
    let stem = file_name
        .strip_suffix(".safetensors")
        .unwrap_or(file_name)
        .to_owned();
    let n = shards.len();
    let mut files = Vec::with_capacity(n + 1);
    let mut weight_map = BTreeMap::new();
    let mut remaining = tensors.into_iter();
    for (i, count) in shards.into_iter().enumerate() {
        let name = format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1);
        let shard: Vec<_> = remaining.by_ref().take(count).collect();
        for (tensor, _) in &shard {
            weight_map.insert(tensor.clone(), name.clone());
        }
        let location = dest.parent().join(&name);
        write_file(shard, &location, options).await?;
        files.push(location.uri());
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let index_location = dest
        .parent()
        .join(&format!("{stem}.safetensors.index.json"));
    let body = serde_json::to_vec_pretty(&index).expect("a JSON value always serializes");
    index_location
        .store()
        .put(index_location.path(), body.into())
        .await
        .map_err(|e| index_location.error("put", e))?;
    files.push(index_location.uri());
    Ok(Written {
        files,
        data_bytes: total,
    })
}

/// How many tensors go in each shard, in order: a shard is closed when the next tensor would
/// take it past `max` (a tensor larger than `max` gets a shard of its own).
fn plan_shards(tensors: &[(String, LazyTensor)], max: Option<u64>) -> Vec<usize> {
    let Some(max) = max else {
        return vec![tensors.len()];
    };
    let mut shards = Vec::new();
    let (mut count, mut bytes) = (0usize, 0u64);
    for (_, t) in tensors {
        if count > 0 && bytes.saturating_add(t.nbytes()) > max {
            shards.push(count);
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes = bytes.saturating_add(t.nbytes());
    }
    if count > 0 || shards.is_empty() {
        shards.push(count);
    }
    shards
}

/// One safetensors file: header, then each tensor streamed in order, its CRC-32C computed on
/// the way. A failed write is aborted, so no partial file appears under the name.
pub(crate) async fn write_file(
    tensors: Vec<(String, LazyTensor)>,
    dest: &Location,
    options: &WriteOptions,
) -> Result<FileLayout> {
    let header = {
        let refs: Vec<(String, &LazyTensor)> =
            tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        header_bytes(&refs, &options.metadata)
    };
    let total = header.len() as u64 + tensors.iter().map(|(_, t)| t.nbytes()).sum::<u64>();
    let mut layout = FileLayout {
        size: header.len() as u64,
        tensors: Vec::with_capacity(tensors.len()),
    };
    let sha256 = options.sha256;
    let mut record = |name: String, data: &[u8]| {
        let start = layout.size;
        layout.size += data.len() as u64;
        layout.tensors.push(WrittenTensor {
            name,
            range: start..layout.size,
            crc32c: crc32c::crc32c(data),
            sha256: sha256.then(|| <sha2::Sha256 as sha2::Digest>::digest(data).into()),
        });
    };
    let progress = options.progress.clone();
    let options = MaterializeOptions {
        to_f32: false,
        ..options.materialize
    };
    if dest.scheme() == Scheme::Http {
        single_put(header, tensors, dest, options, &mut record).await?;
        progress.advanced(layout.size);
        return Ok(layout);
    }
    let mut writer = BufWriter::with_capacity(
        dest.store().clone(),
        dest.path().clone(),
        part_size_for(total),
    );
    let result = async {
        writer
            .put(header.into())
            .await
            .map_err(|e| dest.error("put", e))?;
        // `tensors` is in file order, which is the order the stream yields.
        let mut data = materialize::stream(tensors, options);
        while let Some(item) = data.next().await {
            let (name, tensor) = item?;
            record(name, &tensor.data);
            let len = tensor.data.len() as u64;
            writer
                .put(tensor.data)
                .await
                .map_err(|e| dest.error("put", e))?;
            progress.advanced(len);
        }
        writer.shutdown().await.map_err(|e| Error::Storage {
            uri: dest.uri(),
            operation: "put",
            detail: e.to_string(),
        })
    }
    .await;
    if result.is_err() {
        let _ = writer.abort().await;
    }
    result.map(|()| layout)
}

/// One PUT of the whole file, for stores without multipart uploads (object_store's HTTP
/// store, WebDAV): the file is held in memory, as the tensors' own buffers, never copied.
async fn single_put(
    header: Vec<u8>,
    tensors: Vec<(String, LazyTensor)>,
    dest: &Location,
    options: MaterializeOptions,
    record: &mut impl FnMut(String, &[u8]),
) -> Result<()> {
    let mut payload = vec![bytes::Bytes::from(header)];
    let mut data = materialize::stream(tensors, options);
    while let Some(item) = data.next().await {
        let (name, tensor) = item?;
        record(name, &tensor.data);
        payload.push(tensor.data);
    }
    let size: usize = payload.iter().map(bytes::Bytes::len).sum();
    if size > PART_SIZE {
        tracing::info!(uri = %dest, size, "this store takes no multipart uploads: one PUT of the whole file");
    }
    dest.store()
        .put(
            dest.path(),
            payload.into_iter().collect::<object_store::PutPayload>(),
        )
        .await
        .map(drop)
        .map_err(|e| dest.error("put", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::format::safetensors::parse;

    #[test]
    fn headers_are_valid_and_aligned() {
        let a = LazyTensor::abstract_(DType::F32, vec![2, 3]);
        let b = LazyTensor::abstract_(DType::BF16, vec![]);
        let meta = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let bytes = header_bytes(&[("a".into(), &a), ("b".into(), &b)], &meta);
        assert_eq!(bytes.len() % 8, 0);
        let mut file = bytes.clone();
        file.extend(std::iter::repeat_n(0, 26));
        let header = parse(&file, file.len() as u64).unwrap();
        assert_eq!(header.metadata, meta);
        assert_eq!(
            header.tensors[1].range,
            bytes.len() as u64 + 24..bytes.len() as u64 + 26
        );
    }

    #[test]
    fn parts_grow_so_no_file_needs_more_than_9000() {
        assert_eq!(part_size_for(0), 16 << 20);
        assert_eq!(part_size_for(100 << 30), 16 << 20);
        let tib = 1u64 << 40;
        let part = part_size_for(tib) as u64;
        assert_eq!(part % (1 << 20), 0);
        assert!(tib.div_ceil(part) <= 9_000, "{part}");
        let big = 50u64 << 30;
        assert!(big.div_ceil(part_size_for(big) as u64) <= 10_000);
    }

    #[test]
    fn shards_close_before_they_overflow() {
        let t = |n: u64| ("t".to_owned(), LazyTensor::abstract_(DType::U8, vec![n]));
        let tensors = vec![t(4), t(4), t(4), t(10), t(1)];
        assert_eq!(plan_shards(&tensors, None), [5]);
        assert_eq!(plan_shards(&tensors, Some(8)), [2, 1, 1, 1]);
        assert_eq!(plan_shards(&tensors, Some(100)), [5]);
        assert_eq!(plan_shards(&[], Some(8)), [0]);
    }
}
