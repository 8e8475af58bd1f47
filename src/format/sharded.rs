//! Sharded checkpoints in the Hugging Face convention: an index (`model.safetensors.index.json`,
//! `pytorch_model.bin.index.json`, or a variant such as `model.safetensors.index.fp16.json`)
//! maps each tensor to the shard holding it; shards are safetensors files, or `torch.save`
//! zips (`pytorch_model-00001-of-00003.bin`). Opening reads the index (one GET); a shard is
//! opened only when one of its tensors is wanted, and the wanted shards concurrently.

use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::ReadOptions;
use super::object::read_whole;
use super::safetensors::SafetensorsFile;
use super::safetensors::index::{self, Index};
use super::torch;
use crate::error::{Error, Result};
use crate::fetch::FetchOptions;
use crate::location::Location;
use crate::tree::{Dict, LazyTensor, Leaf, Node, StateTree, path};

/// Whether `name` is a Hugging Face shard index: `<weights>.index.json` or
/// `<weights>.index.<variant>.json`, where the weights are `*.safetensors` or `*.bin`.
///
/// ```text
/// model.safetensors.index.json   pytorch_model.bin.index.json   model.safetensors.index.fp16.json
/// ```
pub(crate) fn is_index(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(".json") else {
        return false;
    };
    let weights = match rest.strip_suffix(".index") {
        Some(weights) => weights,
        None => match rest.rsplit_once('.') {
            Some((head, variant)) if !variant.is_empty() => match head.strip_suffix(".index") {
                Some(weights) => weights,
                None => return false,
            },
            _ => return false,
        },
    };
    weights.ends_with(".safetensors") || weights.ends_with(".bin")
}

/// An open shard.
enum Shard {
    Safetensors(SafetensorsFile),
    /// A `torch.save` zip of a flat state dict: its tree, keyed by tensor name.
    Torch(StateTree),
}

impl Shard {
    fn tensor(&self, name: &str) -> Option<LazyTensor> {
        match self {
            Self::Safetensors(file) => file.lazy_tensor(name),
            Self::Torch(tree) => match tree.root().get(name) {
                Some(Node::Leaf(Leaf::Tensor(t))) => Some((**t).clone()),
                _ => None,
            },
        }
    }
}

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
pub(crate) struct Sharded {
    index_uri: String,
    dir: Location,
    index: Index,
    options: FetchOptions,
    read: ReadOptions,
}

impl Sharded {
    /// Reads and checks the index at `location`; no shard is touched yet.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the index for an index that is too large, not JSON, or names
    /// a shard outside its directory; the read's errors.
    pub(crate) async fn open(
        location: &Location,
        options: FetchOptions,
        read: ReadOptions,
    ) -> Result<Self> {
        let (_, raw) = read_whole(location, index::MAX_INDEX_SIZE, "index", &options).await?;
        let index = index::parse(&raw).map_err(|e| Error::corrupt(location.uri(), e))?;
        Ok(Self {
            index_uri: location.uri(),
            dir: location.parent(),
            index,
            options,
            read,
        })
    }

    /// Whether the shards are `torch.save` zips (any shard not named `*.safetensors`).
    pub(crate) fn is_torch(&self) -> bool {
        self.index
            .shards
            .iter()
            .any(|s| !s.ends_with(".safetensors"))
    }

    /// The index's `metadata` but `total_size`.
    pub(crate) fn metadata(&self) -> &std::collections::BTreeMap<String, String> {
        &self.index.metadata
    }

    /// The tensors' names, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.index.weight_map.keys().map(String::as_str)
    }

    /// How many tensors the index names.
    pub(crate) fn tensor_count(&self) -> usize {
        self.index.weight_map.len()
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
    pub(crate) async fn tree(&self, wanted: &(dyn Fn(&str) -> bool + Sync)) -> Result<StateTree> {
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
        let files: Vec<(usize, Arc<Shard>)> = stream::iter(needed)
            .map(|i| async move { self.open_shard(i).await.map(|f| (i, f)) })
            .buffered(SHARDS_AT_ONCE)
            .try_collect()
            .await?;
        let mut root = Dict::new();
        for (name, shard) in tensors {
            let file = &files[files.partition_point(|(i, _)| *i < shard)].1;
            let lazy = file.tensor(name).ok_or_else(|| {
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

    async fn open_shard(&self, i: usize) -> Result<Arc<Shard>> {
        let name = &self.index.shards[i];
        let location = self.dir.join(name);
        let shard = if name.ends_with(".safetensors") {
            SafetensorsFile::open(&location, self.options.clone())
                .await
                .map(Shard::Safetensors)
        } else {
            torch::open(&location, self.options.clone(), self.read)
                .await
                .map(|(_, tree)| Shard::Torch(tree))
        };
        shard.map(Arc::new).map_err(|e| match e {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_known_by_their_names_variants_included() {
        for name in [
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
            "model.safetensors.index.fp16.json",
            "pytorch_model.bin.index.fp16.json",
            "diffusion_pytorch_model.safetensors.index.json",
        ] {
            assert!(is_index(name), "{name}");
        }
        for name in [
            "model.safetensors",
            "config.json",
            "index.json",
            "model.index.json",
            "model.safetensors.index.fp16.json.bak",
            "model.safetensors.index..json",
        ] {
            assert!(!is_index(name), "{name}");
        }
    }
}
