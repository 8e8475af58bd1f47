//! Sharded safetensors in the Hugging Face convention: `model.safetensors.index.json` maps
//! each tensor to the shard holding it. Opening reads the index (one GET); a shard's header is
//! read only when one of its tensors is wanted, and the wanted shards are opened concurrently.

use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::index::{self, Index};
use super::reader::SafetensorsFile;
use crate::error::{Error, Result};
use crate::fetch::FetchOptions;
use crate::format::object::read_whole;
use crate::location::Location;
use crate::tree::{Dict, Node, StateTree, path};

/// Shard headers opened at once.
const SHARDS_AT_ONCE: usize = 16;

/// A shard that does not hold what its index says: the source of an [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The shard is not there.
    #[error("shard `{shard}` listed in {index} is missing")]
    Missing {
        /// The shard's name.
        shard: String,
        /// The index's URI.
        index: String,
    },
    /// The shard lacks a tensor the index puts in it.
    #[error("tensor `{tensor}` is listed in {index} but not in this shard")]
    NotInShard {
        /// The tensor.
        tensor: String,
        /// The index's URI.
        index: String,
    },
}

/// A sharded checkpoint: its index, and where the shards are.
#[derive(Debug)]
pub(crate) struct ShardedSafetensors {
    index_uri: String,
    dir: Location,
    index: Index,
    options: FetchOptions,
}

impl ShardedSafetensors {
    /// Reads and checks the index at `location`; no shard is touched yet.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the index for an index that is too large, not JSON, or names
    /// a shard outside its directory; the read's errors.
    pub(crate) async fn open(location: &Location, options: FetchOptions) -> Result<Self> {
        let (_, raw) = read_whole(location, index::MAX_INDEX_SIZE, "index", &options).await?;
        let index = index::parse(&raw).map_err(|e| Error::corrupt(location.uri(), e))?;
        Ok(Self {
            index_uri: location.uri(),
            dir: location.parent(),
            index,
            options,
        })
    }

    /// The index's `metadata` but `total_size`.
    pub(crate) fn metadata(&self) -> &std::collections::BTreeMap<String, String> {
        &self.index.metadata
    }

    /// How many shards the index names.
    pub(crate) fn shard_count(&self) -> usize {
        self.index.shards.len()
    }

    /// The tensors whose tree path `wanted` accepts, as a tree (one top-level key per
    /// tensor), opening only the shards that hold them, concurrently.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a missing shard or one that lacks a tensor the index puts in
    /// it; the shards' own errors.
    pub(crate) async fn tree(&self, wanted: &dyn Fn(&str) -> bool) -> Result<StateTree> {
        let tensors: Vec<(&String, usize)> = self
            .index
            .weight_map
            .iter()
            .filter(|(name, _)| wanted(&path::escape(name)))
            .map(|(name, &shard)| (name, shard))
            .collect();
        let mut needed: Vec<usize> = tensors.iter().map(|&(_, shard)| shard).collect();
        needed.sort_unstable();
        needed.dedup();
        let files: Vec<(usize, Arc<SafetensorsFile>)> = stream::iter(needed)
            .map(|i| async move { self.open_shard(i).await.map(|f| (i, f)) })
            .buffered(SHARDS_AT_ONCE)
            .try_collect()
            .await?;
        let mut root = Dict::new();
        for (name, shard) in tensors {
            let file = &files[files.partition_point(|(i, _)| *i < shard)].1;
            let lazy = file.lazy_tensor(name).ok_or_else(|| {
                Error::corrupt(
                    self.dir.join(&self.index.shards[shard]).uri(),
                    ShardError::NotInShard {
                        tensor: name.clone(),
                        index: self.index_uri.clone(),
                    },
                )
            })?;
            root.insert(name.clone(), Node::from(lazy));
        }
        Ok(StateTree::from_dict(root))
    }

    async fn open_shard(&self, i: usize) -> Result<Arc<SafetensorsFile>> {
        let name = &self.index.shards[i];
        let location = self.dir.join(name);
        SafetensorsFile::open(&location, self.options.clone())
            .await
            .map(Arc::new)
            .map_err(|e| match e {
                Error::NotFound { uri } => Error::corrupt(
                    uri,
                    ShardError::Missing {
                        shard: name.clone(),
                        index: self.index_uri.clone(),
                    },
                ),
                other => other,
            })
    }
}
