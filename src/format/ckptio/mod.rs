//! The ckptio checkpoint layout, both ways: a directory (a prefix) of plain safetensors data
//! files and a `manifest.json` put last, create-only. A checkpoint without its manifest does
//! not exist.
//!
//! - [`manifest`]: the manifest codec (the whole tree, each tensor's file, range and checksum),
//!   pure and validated on read; `document` reads its JSON in one pass, without a JSON tree.
//! - `reader`: opening a checkpoint (one GET, and the directory's listing).
//! - `writer`: data-file names unique to one save, and the commit.

mod document;
pub mod manifest;
mod reader;
mod writer;

pub(crate) use reader::open;
pub(crate) use writer::{commit, data_file_names, remove_files};

pub use reader::CheckpointError;
