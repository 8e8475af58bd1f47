//! The ckptio checkpoint layout, written: a directory (prefix) of safetensors data files and a
//! `manifest.json` put last, create-only where the store supports it. A checkpoint without its
//! manifest does not exist; a failed save deletes what it wrote and leaves no manifest.
//!
//! Data files are named `data-{writer}-{i:05}-of-{n:05}.safetensors`, where `writer` is unique
//! to one save: two writers of the same checkpoint never overwrite each other's data, and the
//! one whose manifest lands second cleans up after itself.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions};

use super::manifest::{DataFile, MANIFEST, Manifest, Stored, node_of};
use super::safetensors::{WriteOptions, write_file};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fetch::{NoProgress, Progress};
use crate::location::{Location, Scheme};
use crate::materialize::{self, MaterializeOptions};
use crate::tree::{LazyTensor, Node, StateTree};

/// How a checkpoint is saved.
#[derive(Clone)]
pub struct SaveOptions {
    /// Data files hold at most this many tensor bytes (a larger tensor gets a file of its own).
    pub max_file_size: u64,
    /// Data files uploaded at once.
    pub concurrency: usize,
    /// Strings stored in the manifest.
    pub metadata: BTreeMap<String, String>,
    /// How the tensors are read (the memory budget of each file's stream).
    pub materialize: MaterializeOptions,
    /// Also store each tensor's SHA-256, which loads then check instead of the CRC-32C.
    pub sha256: bool,
    /// Told when the save starts (the tensor bytes to write), of each tensor's bytes handed
    /// to an upload, and when the manifest is committed.
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for SaveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveOptions")
            .field("max_file_size", &self.max_file_size)
            .field("concurrency", &self.concurrency)
            .field("metadata", &self.metadata)
            .field("materialize", &self.materialize)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            max_file_size: 4 << 30,
            concurrency: 4,
            metadata: BTreeMap::new(),
            materialize: MaterializeOptions::default(),
            sha256: false,
            progress: Arc::new(NoProgress),
        }
    }
}

/// Saves `tree` as a ckptio checkpoint in the directory `dir`: data files in parallel
/// (multipart uploads), then the manifest, create-only.
///
/// # Errors
///
/// [`Error::AlreadyCommitted`] when the checkpoint exists (or another writer committed it
/// first); the reads' and uploads' errors otherwise. Whatever fails, the data files this save
/// wrote are deleted (best effort) and no manifest is written.
pub async fn save(dir: &Location, tree: &StateTree, options: &SaveOptions) -> Result<Manifest> {
    let manifest_loc = dir.join(MANIFEST);
    if crate::fetch::stat(&manifest_loc).await.is_ok() {
        return Err(Error::AlreadyCommitted { uri: dir.uri() });
    }
    let mut tensors: Vec<(String, LazyTensor)> =
        tree.tensors().map(|(p, t)| (p, t.clone())).collect();
    materialize::file_order(&mut tensors);
    let groups = plan_files(tensors, options.max_file_size);
    let writer = writer_id();
    let n = groups.len();
    let names: Vec<String> = (1..=n)
        .map(|i| format!("data-{writer}-{i:05}-of-{n:05}.safetensors"))
        .collect();
    let write = WriteOptions {
        max_shard_size: None,
        metadata: BTreeMap::from([("format".to_owned(), "ckptio".to_owned())]),
        materialize: options.materialize,
        sha256: options.sha256,
        progress: options.progress.clone(),
    };
    let total = tensors_bytes(&groups);
    options.progress.started(&dir.uri(), total);
    let uploads = futures::stream::iter(groups.into_iter().zip(&names))
        .map(|(group, name)| {
            let loc = dir.join(name);
            let write = &write;
            async move { write_file(group, &loc, write).await }
        })
        .buffered(options.concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await;
    let layouts = match uploads {
        Ok(layouts) => layouts,
        Err(e) => {
            remove_files(dir, &names).await;
            return Err(e);
        }
    };

    let shapes: HashMap<String, (crate::dtype::DType, Vec<u64>)> = tree
        .tensors()
        .map(|(p, t)| (p, (t.dtype, t.shape.clone())))
        .collect();
    let mut stored: HashMap<String, Stored> = HashMap::new();
    let mut files = Vec::with_capacity(n);
    for (i, (layout, name)) in layouts.into_iter().zip(&names).enumerate() {
        files.push(DataFile {
            name: name.clone(),
            size: layout.size,
        });
        for t in layout.tensors {
            let (dtype, shape) = shapes[&t.name].clone();
            stored.insert(
                t.name,
                Stored {
                    file: i,
                    dtype,
                    shape,
                    range: t.range,
                    crc32c: t.crc32c,
                    sha256: t.sha256,
                },
            );
        }
    }
    let root = Node::Dict(tree.root().clone());
    let tree_node =
        node_of(&root, "", &mut |path| stored.remove(path)).map_err(|e| Error::Checkpoint {
            uri: dir.uri(),
            problem: e.to_string(),
        })?;
    let manifest = Manifest {
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        metadata: options.metadata.clone(),
        files,
        tree: tree_node,
    };
    if let Err(e) = commit(&manifest_loc, manifest.to_json()).await {
        remove_files(dir, &names).await;
        return Err(match e {
            Commit::Exists => Error::AlreadyCommitted { uri: dir.uri() },
            Commit::Failed(e) => e,
        });
    }
    options.progress.finished();
    Ok(manifest)
}

fn tensors_bytes(groups: &[Vec<(String, LazyTensor)>]) -> u64 {
    groups.iter().flatten().map(|(_, t)| t.nbytes()).sum()
}

enum Commit {
    Exists,
    Failed(Error),
}

/// Puts the manifest create-only; on stores without conditional puts (HTTP), after checking
/// it is absent.
async fn commit(loc: &Location, body: Vec<u8>) -> std::result::Result<(), Commit> {
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match loc
        .store()
        .put_opts(loc.path(), body.clone().into(), create)
        .await
    {
        // Some S3 servers (Garage, s3s-fs) accept the create-only header and ignore it: there
        // the manifest is read back, and whoever finds another writer's has lost. Local disks,
        // memory, GCS and Azure create atomically; no read-back.
        Ok(_) if loc.scheme() != Scheme::S3 => Ok(()),
        Ok(_) => read_back(loc, &body).await,
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Err(Commit::Exists),
        Err(object_store::Error::NotImplemented { .. }) => {
            if crate::fetch::stat(loc).await.is_ok() {
                return Err(Commit::Exists);
            }
            loc.store()
                .put(loc.path(), body.into())
                .await
                .map(drop)
                .map_err(|e| Commit::Failed(loc.error("put", e)))
        }
        Err(e) => Err(Commit::Failed(loc.error("put", e))),
    }
}

/// Whether the manifest at `loc` is `body` (ours) or another writer's.
async fn read_back(loc: &Location, body: &[u8]) -> std::result::Result<(), Commit> {
    let stored = match loc.store().get(loc.path()).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(stored) if stored[..] == body[..] => Ok(()),
        Ok(_) => {
            tracing::warn!(uri = %loc, "the store ignored a create-only put; another writer's manifest won");
            Err(Commit::Exists)
        }
        Err(e) => Err(Commit::Failed(loc.error("get", e))),
    }
}

/// Deletes `names` in `dir`, best effort (a failed save's data files).
async fn remove_files(dir: &Location, names: &[String]) {
    for name in names {
        let loc = dir.join(name);
        let _ = loc.store().delete(loc.path()).await;
    }
}

/// Tensors grouped into data files of at most `max` bytes, in order (one file at least).
fn plan_files(tensors: Vec<(String, LazyTensor)>, max: u64) -> Vec<Vec<(String, LazyTensor)>> {
    let mut files: Vec<Vec<(String, LazyTensor)>> = vec![Vec::new()];
    let mut bytes = 0u64;
    for (path, t) in tensors {
        let len = t.nbytes();
        let last = files.last_mut().expect("never empty");
        if !last.is_empty() && bytes.saturating_add(len) > max {
            files.push(vec![(path, t)]);
            bytes = len;
        } else {
            last.push((path, t));
            bytes = bytes.saturating_add(len);
        }
    }
    files
}

/// A name unique to one save: time, process and a counter, hashed to 8 hex digits.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn files_close_before_they_overflow_and_there_is_always_one() {
        let t = |n: u64| ("t".to_owned(), LazyTensor::abstract_(DType::U8, vec![n]));
        let sizes =
            |files: Vec<Vec<(String, LazyTensor)>>| files.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            sizes(plan_files(vec![t(4), t(4), t(4), t(10)], 8)),
            [2, 1, 1]
        );
        assert_eq!(sizes(plan_files(vec![], 8)), [0]);
    }

    #[test]
    fn writer_ids_differ() {
        assert_ne!(writer_id(), writer_id());
    }
}
