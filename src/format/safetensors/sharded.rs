//! Sharded safetensors in the Hugging Face convention: `model.safetensors.index.json` maps
//! each tensor to the shard holding it. A shard's header is fetched only when one of its
//! tensors is needed; a whole tree opens every shard concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::SafetensorsFile;
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::location::Location;
use crate::tree::{LazyTensor, Leaf, Node, StateTree};

/// The largest index accepted (a 10,000-tensor index is about 1 MB).
pub const MAX_INDEX_SIZE: u64 = 100_000_000;

/// Bytes read when opening an index: typical indexes fit, so it costs one GET.
const FIRST_READ: u64 = 16 << 20;

/// Shard headers opened at once.
const SHARDS_AT_ONCE: usize = 16;

#[derive(Debug, Deserialize)]
struct IndexJson {
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
    weight_map: BTreeMap<String, String>,
}

/// A sharded checkpoint: its index, and each shard opened on first use.
#[derive(Debug)]
pub struct ShardedSafetensors {
    index: Location,
    /// Tensor name → shard number, in the index's (sorted) order.
    weight_map: BTreeMap<String, usize>,
    shards: Vec<Shard>,
    metadata: BTreeMap<String, String>,
    options: FetchOptions,
}

#[derive(Debug)]
struct Shard {
    name: String,
    location: Location,
    file: OnceCell<Arc<SafetensorsFile>>,
}

/// Whether `name` is a safetensors index (`*.safetensors.index.json`).
pub fn is_index(name: &str) -> bool {
    name.ends_with(".safetensors.index.json")
}

impl ShardedSafetensors {
    /// Reads and checks the index at `index`; no shard is touched yet.
    ///
    /// # Errors
    ///
    /// [`Error::Safetensors`]-like [`Error::Storage`] errors naming the index for an index
    /// that is too large, not JSON, or names a shard outside its directory.
    pub async fn open(index: &Location, options: FetchOptions) -> Result<Self> {
        let bad = |detail: String| Error::Storage {
            uri: index.uri(),
            operation: "read the safetensors index",
            detail,
        };
        let (object, first) = Object::open_prefix(index, FIRST_READ, options.clone()).await?;
        let size = object.info().size;
        if size > MAX_INDEX_SIZE {
            return Err(bad(format!(
                "{size} bytes is over the {MAX_INDEX_SIZE}-byte limit for an index"
            )));
        }
        let raw = object.extend_prefix(first, size).await?;
        let parsed: IndexJson = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("not a safetensors index: {e}")))?;

        let dir = index.parent();
        let mut shard_names: Vec<String> = parsed.weight_map.values().cloned().collect();
        shard_names.sort();
        shard_names.dedup();
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            if name.is_empty()
                || name
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return Err(bad(format!(
                    "shard `{name}` is not a file next to the index"
                )));
            }
            shards.push(Shard {
                name: name.clone(),
                location: dir.join(name),
                file: OnceCell::new(),
            });
        }
        let weight_map = parsed
            .weight_map
            .into_iter()
            .map(|(tensor, shard)| {
                let i = shard_names
                    .binary_search(&shard)
                    .expect("every shard name was collected");
                (tensor, i)
            })
            .collect();
        // `total_size` is the index's bookkeeping (derivable from the tensors), not metadata of
        // the checkpoint: carried into converted files, it would be stale.
        let metadata = parsed
            .metadata
            .into_iter()
            .filter(|(k, _)| k != "total_size")
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
        Ok(Self {
            index: index.clone(),
            weight_map,
            shards,
            metadata,
            options,
        })
    }

    /// The index's `metadata` but `total_size` (values that are not strings are shown as JSON).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.weight_map.keys().map(String::as_str)
    }

    /// The shard file holding `name`, opened (one GET) on first use.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTensor`] for a name not in the index; [`Error::NotFound`] naming the
    /// shard when it is missing; [`Error::Tensor`] when the shard lacks the tensor.
    pub async fn shard_of(&self, name: &str) -> Result<Arc<SafetensorsFile>> {
        let &i = self
            .weight_map
            .get(name)
            .ok_or_else(|| Error::NoSuchTensor {
                uri: self.index.uri(),
                name: name.to_owned(),
            })?;
        let file = self.open_shard(i).await?;
        if file.info(name).is_none() {
            return Err(self.not_in_shard(name, i));
        }
        Ok(file)
    }

    async fn open_shard(&self, i: usize) -> Result<Arc<SafetensorsFile>> {
        let shard = &self.shards[i];
        shard
            .file
            .get_or_try_init(|| async {
                SafetensorsFile::open(&shard.location, self.options.clone())
                    .await
                    .map(Arc::new)
                    .map_err(|e| match e {
                        Error::NotFound { uri } => Error::Storage {
                            uri,
                            operation: "open a shard",
                            detail: format!(
                                "shard `{}` listed in {} is missing",
                                shard.name, self.index
                            ),
                        },
                        other => other,
                    })
            })
            .await
            .cloned()
    }

    /// The whole checkpoint as a tree (one top-level key per tensor), opening every shard
    /// concurrently.
    ///
    /// # Errors
    ///
    /// As [`shard_of`](Self::shard_of), for the first shard that fails.
    pub async fn tree(&self) -> Result<StateTree> {
        let files: Vec<Arc<SafetensorsFile>> = stream::iter(0..self.shards.len())
            .map(|i| self.open_shard(i))
            .buffered(SHARDS_AT_ONCE)
            .try_collect()
            .await?;
        let mut root = crate::tree::Dict::new();
        for (name, &i) in &self.weight_map {
            let lazy = files[i]
                .lazy_tensor(name)
                .ok_or_else(|| self.not_in_shard(name, i))?;
            root.insert(name.clone(), Node::Leaf(Leaf::Tensor(lazy)));
        }
        Ok(StateTree::from_dict(root))
    }

    fn not_in_shard(&self, name: &str, i: usize) -> Error {
        Error::Tensor {
            uri: self.shards[i].location.uri(),
            path: name.to_owned(),
            reason: format!("is listed in {} but not in this shard", self.index),
        }
    }

    /// How many shards the index names.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// How many shards have been opened so far.
    pub fn opened_shards(&self) -> usize {
        self.shards.iter().filter(|s| s.file.initialized()).count()
    }

    /// Tensor `name`, opening only its shard.
    ///
    /// # Errors
    ///
    /// As [`shard_of`](Self::shard_of).
    pub async fn tensor(&self, name: &str) -> Result<LazyTensor> {
        let file = self.shard_of(name).await?;
        file.lazy_tensor(name).ok_or_else(|| Error::NoSuchTensor {
            uri: self.index.uri(),
            name: name.to_owned(),
        })
    }
}
