//! safetensors, both ways: single files and Hugging Face shard indexes.
//!
//! - [`header`]: the header codec (parse, never trusting; render), pure; `entries` reads its
//!   JSON object one entry at a time, without building a JSON tree.
//! - [`index`]: the shard index codec, pure.
//! - `reader`: the lazy reader (one GET opens a file); shard indexes are read by
//!   `format::sharded`, whose shards may be safetensors or torch files.
//! - `writer`: one file from a stream of tensors.

mod entries;
pub mod header;
pub mod index;
mod reader;
mod writer;

pub(crate) use reader::{SPECULATIVE_READ, SafetensorsFile, from_bytes};
pub(crate) use writer::{Entry, FileLayout, write_file};

pub use reader::Invalid;
