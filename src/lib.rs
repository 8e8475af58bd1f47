//! ckptio reads and writes ML checkpoints and model weights wherever they live — a local path,
//! `file://`, `s3://`, `gs://`, `az://`, `http(s)://` — without downloading what the caller does
//! not need.
//!
//! The pipeline runs one way: a URI is [resolved](resolve) to a [`Location`] (a store, a path,
//! and what the store can do); bytes are fetched by pinned, parallel, retried range requests
//! ([`Object`]); a format's reader turns the few bytes it needs into a lazy [`StateTree`]
//! ([`open`]); selected tensors are [materialized](materialize()) into contiguous bytes. Saving
//! runs the other way: a tree's tensors stream into a format's writer, then into multipart
//! uploads, and a commit marker is put last ([`save()`]). The storage engine is the
//! [`object_store`] crate; ckptio never speaks S3, GCS or HTTP itself.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ckptio::Result<()> {
//! let loc = ckptio::resolve("fixtures/tiny.safetensors", &Default::default())?;
//! let checkpoint = ckptio::open(&loc, Default::default()).await?; // the header only
//! let bias = checkpoint.tree.select(&["head.*"]).expect("a valid glob");
//! let tensors = ckptio::materialize_tree(&bias, Default::default()).await?; // one range
//! assert_eq!(tensors[0].1.shape, [3]);
//! # Ok(()) }
//! ```
//!
//! The library never prints: it returns [`enum@Error`]s that name the URI (with secrets
//! redacted) and emits [`tracing`] events and [`Progress`] callbacks.

#![deny(missing_docs)]
// Unsafe code is allowed in two places only: mapping a local file (`fetch/mapped.rs`) and the
// unit tests' counting allocator.
#![deny(unsafe_code)]

mod checkpointer;
mod copy;
mod dtype;
mod error;
mod fetch;
mod format;
mod location;
mod materialize;
mod save;
mod streams;
#[cfg(test)]
mod testing;

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: testing::alloc::Counting = testing::alloc::Counting;
mod tree;
mod upload;
mod verify;

pub use crate::checkpointer::{
    Checkpointer, CheckpointerOptions, Entry, Form, Kind, remove, remove_any,
};
pub use crate::copy::{Copied, copy_dir, copy_object};
pub use crate::dtype::{DType, UnknownDType};
pub use crate::error::{BoxError, ChecksumMismatch, Error, Result, TensorError, TransportKind};
pub use crate::fetch::{
    FetchOptions, Listing, NoProgress, Object, ObjectInfo, Progress, RetryPolicy, list, stat, walk,
};
pub use crate::format::{Checkpoint, Format, OpenOptions, ReadOptions, open, open_bytes};
pub use crate::location::{
    Capabilities, ClientSettings, Counts, CreateOnly, Env, Location, PairOptions, Resolver, Scheme,
    StorageOptions, redact, redact_uri, resolve, resolve_pair,
};
pub use crate::materialize::{
    MaterializeOptions, materialize, materialize_tree, stream as materialize_stream, to_f32, widens,
};
pub use crate::save::{
    DcpItem, SaveFormat, SaveOptions, Saved, WriteOptions, Written, put_object, save,
    write_dcp_file, write_safetensors, write_torch,
};
pub use crate::tree::{
    Anchor, BlockScheme, ByteRange, Check, Checksum, Dict, GlobError, Inline, Int, KeyKind,
    LazyTensor, Leaf, List, Locate, Mismatch, Node, Opaque, PathError, Piece, Pieces, Quantized,
    Report, Source, StateTree, Tensor, TensorData, Unreadable, View, contiguous_strides, path,
};
pub use crate::verify::{Verified, verify};

/// The formats' own errors: the `source` of an [`Error::Corrupt`] or [`Error::Unsafe`], for
/// callers that want the details (a header problem, a pickle refused at a byte offset).
pub mod sources {
    pub use crate::error::Escape;
    pub use crate::format::TooLargeFile;
    pub use crate::format::ckptio::CheckpointError;
    pub use crate::format::ckptio::manifest::ManifestError;
    pub use crate::format::dcp::DcpError;
    pub use crate::format::gguf::GgufError;
    pub use crate::format::pickle::{Global, InRecord, PickleError, PickleErrorKind};
    pub use crate::format::safetensors::Invalid;
    pub use crate::format::safetensors::header::HeaderError;
    pub use crate::format::safetensors::index::IndexError;
    pub use crate::format::sharded::ShardError;
    pub use crate::format::torch::TorchError;
    pub use crate::format::zip::ZipError;
}

/// The pure codecs, for the fuzz targets: any bytes in, an answer out, never a panic, a hang,
/// or an allocation sized by a claim in the bytes. Not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    use crate::format::{ckptio, dcp, gguf, orbax, pickle, safetensors, torch, zip};

    /// A whole safetensors file.
    pub fn safetensors_header(data: &[u8]) {
        let _ = safetensors::header::parse(data, data.len() as u64);
    }

    /// A shard index.
    pub fn safetensors_index(data: &[u8]) {
        let _ = safetensors::index::parse(data);
    }

    /// A whole zip: its directory, and every entry's local header.
    pub fn zip_directory(data: &[u8]) {
        let Ok(directory) = zip::read_directory(data) else {
            return;
        };
        for entry in directory.entries() {
            let _ = entry.torch_payload_offset(64);
            let header = usize::try_from(entry.header_offset)
                .ok()
                .and_then(|at| data.get(at..))
                .unwrap_or_default();
            let _ = zip::payload_offset(entry, header);
        }
    }

    /// A pickle, through the VM and the generic conversion into a tree.
    pub fn pickle(data: &[u8]) {
        if let Ok(heap) = pickle::parse(data, &pickle::Policy::permissive()) {
            let _ = pickle::convert::to_node(&heap, &mut pickle::convert::NoHooks, "fuzz");
        }
    }

    /// A whole legacy `torch.save` file: its pickles (also as a prefix cut in half), and the
    /// storages laid out from them.
    pub fn torch_legacy(data: &[u8]) {
        let policy = pickle::Policy::permissive();
        let size = data.len() as u64;
        let _ = torch::legacy::parse(&data[..data.len() / 2], size, &policy);
        let _ = torch::legacy::parse(data, size, &policy);
    }

    /// Any bytes as an OCDBT manifest, as a B+tree leaf and interior node, and as a `.zarray`.
    pub fn orbax(data: &[u8]) {
        let _ = orbax::ocdbt::manifest_root(data);
        for height in [0, 1] {
            let at = orbax::ocdbt::NodeRef {
                file: String::new(),
                transitive: String::new(),
                offset: 0,
                length: data.len() as u64,
                height,
                prefix: b"p/".to_vec(),
            };
            let _ = orbax::ocdbt::node(data, &at);
        }
        let _ = orbax::zarr::parse(data);
    }

    /// A whole GGUF file: the header on every prefix the reader might hold, then every tensor
    /// whose blocks ckptio decodes, dequantized.
    pub fn gguf(data: &[u8]) {
        use crate::tree::BlockScheme;
        let size = data.len() as u64;
        let Ok(header) = gguf::header::parse(data, size) else {
            let _ = gguf::header::parse(&data[..data.len() / 2], size);
            return;
        };
        for t in &header.tensors {
            let (Some(kind), Some(n)) = (gguf::ggml::by_id(t.ggml_type), t.nbytes) else {
                continue;
            };
            let start = (header.data_start + t.offset) as usize;
            if n <= 1 << 20 {
                let _ = kind.dequantize(&data[start..start + n as usize]);
            }
        }
    }

    /// Any bytes as a checkpoint held in memory ([`open_bytes`](crate::open_bytes)): a
    /// `torch.save` zip or a safetensors file, then every tensor of up to 1 MiB read.
    pub fn open_bytes(data: &[u8]) {
        use std::sync::OnceLock;
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        let data = bytes::Bytes::copy_from_slice(data);
        let Ok(checkpoint) = crate::open_bytes(data, "fuzz", Default::default()) else {
            return;
        };
        let small = checkpoint
            .tree
            .tensors()
            .filter(|(_, t)| t.nbytes() <= 1 << 20)
            .map(|(p, t)| (p, t.clone()))
            .collect();
        let runtime = RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
        });
        let _ = runtime.block_on(crate::materialize(small, Default::default()));
    }

    /// A ckptio manifest.
    pub fn manifest(data: &[u8]) {
        let _ = ckptio::manifest::Manifest::from_json(data);
    }

    /// A pickle as torch's `data.pkl`: the VM, then the conversion with torch's rebuild rules
    /// (tensors, parameters, subclasses, quantized and sparse tensors) over storages of any
    /// name up to 1 MiB.
    pub fn torch_pickle(data: &[u8]) {
        if let Ok(heap) = pickle::parse(data, &pickle::Policy::permissive()) {
            let _ = torch::codec::to_node(&heap, &AnyStorage, "fuzz");
        }
    }

    /// A pickle as a DCP `.metadata`: the VM, the metadata reader, and what the reader checks
    /// before it reads anything (every tensor's chunks tile it; key paths rebuild a tree).
    pub fn dcp_metadata(data: &[u8]) {
        let Ok(heap) = pickle::parse(data, &pickle::Policy::permissive()) else {
            return;
        };
        let Ok(meta) = dcp::metadata::Metadata::read(&heap) else {
            return;
        };
        let mut root = crate::tree::Dict::new();
        for (fqn, item) in &meta.items {
            if let dcp::metadata::Item::Tensor(t) = item {
                let chunks = t.chunks.iter().map(|(o, s)| (o.as_slice(), s.as_slice()));
                let _ = crate::tree::cover::check(&t.size, chunks);
            }
            let keys = meta
                .planner
                .get(fqn)
                .cloned()
                .unwrap_or_else(|| vec![dcp::metadata::Key::Str(fqn.clone())]);
            let leaf = crate::tree::Node::Leaf(crate::tree::Leaf::None);
            let _ = dcp::metadata::insert(&mut root, &keys, leaf, meta.items.len());
        }
    }

    /// Storages of any name, each 1 MiB: every tensor whose bytes fit is abstract.
    struct AnyStorage;

    impl torch::codec::Storages for AnyStorage {
        fn data(
            &self,
            _: &str,
            bytes: std::ops::Range<u64>,
        ) -> Result<crate::tree::TensorData, String> {
            if bytes.end > 1 << 20 {
                return Err(String::new());
            }
            Ok(crate::tree::TensorData::Abstract)
        }

        fn origin(&self) -> std::sync::Arc<str> {
            std::sync::Arc::from("fuzz")
        }
    }
}

#[cfg(test)]
mod send {
    fn send<T: Send>(_: T) {}

    /// A caller may spawn any of the library's futures on a multi-threaded runtime (the Python
    /// bindings wait on them from another thread).
    #[test]
    fn every_public_future_is_send() {
        let loc = crate::resolve("memory://send/x", &Default::default()).unwrap();
        let tree = crate::StateTree::new();
        let save = crate::SaveOptions::default();
        let write = crate::WriteOptions::default();
        send(crate::open(&loc, Default::default()));
        send(crate::verify(&loc, Default::default()));
        send(crate::save(&loc, &tree, &save));
        send(crate::write_safetensors(Vec::new(), &loc, &write));
        send(crate::materialize(Vec::new(), Default::default()));
        send(crate::copy_dir(&loc, &loc, Default::default(), 1));
        send(crate::copy_object(&loc, &loc, Default::default()));
        send(crate::stat(&loc));
        send(crate::remove(&loc));
        send(crate::remove_any(&loc));
        send(crate::list(&loc));
    }
}
