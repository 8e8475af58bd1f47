//! safetensors, both ways: single files and Hugging Face shard indexes.
//!
//! - [`header`]: the header codec (parse, never trusting; render), pure; `entries` reads its
//!   JSON object one entry at a time, without building a JSON tree.
//! - [`index`]: the shard index codec, pure.
//! - `reader`, `sharded`: lazy readers (one GET opens a file; a shard is opened only when one
//!   of its tensors is wanted).
//! - `writer`: one file from a stream of tensors.

mod entries;
pub mod header;
pub mod index;
mod reader;
mod sharded;
mod writer;

pub(crate) use reader::{SPECULATIVE_READ, SafetensorsFile};
pub(crate) use sharded::ShardedSafetensors;
pub(crate) use writer::{Entry, FileLayout, write_file};

pub use reader::Invalid;
pub use sharded::ShardError;

/// Whether `name` is a safetensors shard index (`*.safetensors.index.json`).
pub(crate) fn is_index(name: &str) -> bool {
    name.ends_with(".safetensors.index.json")
}
