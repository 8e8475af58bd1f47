//! Checkpoint formats: pure, bounded parsers over bytes, and readers that ask
//! [`fetch`](crate::fetch) for exactly the byte ranges they need. [`open`] picks the reader.

pub mod ckptio;
pub mod dcp;
pub mod pickle;
pub mod safetensors;
pub mod torch;
pub mod zip;

use std::collections::BTreeMap;
use std::fmt;

use crate::error::Result;
use crate::fetch::FetchOptions;
use crate::location::Location;
use crate::tree::StateTree;

/// A checkpoint's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One safetensors file.
    Safetensors,
    /// Safetensors shards with a `*.safetensors.index.json`.
    ShardedSafetensors {
        /// How many shards.
        shards: usize,
    },
    /// A `torch.save` zip (`.pt`, `.pth`, `.ckpt`, `pytorch_model.bin`).
    Torch,
    /// A ckptio checkpoint directory (`manifest.json` and safetensors data files).
    Ckptio {
        /// How many data files it has.
        files: usize,
    },
    /// A torch.distributed.checkpoint directory.
    Dcp {
        /// How many data files it has.
        files: usize,
    },
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Safetensors => f.write_str("safetensors"),
            Self::ShardedSafetensors { shards } => {
                write!(f, "sharded safetensors ({shards} shards)")
            }
            Self::Torch => f.write_str("torch (zip + pickle)"),
            Self::Ckptio { files } => write!(f, "ckptio checkpoint ({files} data files)"),
            Self::Dcp { files } => write!(f, "torch.distributed.checkpoint ({files} data files)"),
        }
    }
}

/// A checkpoint opened lazily: its tree of lazy tensors and its metadata.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The format it was read as.
    pub format: Format,
    /// The tree; tensors are fetched only when materialized.
    pub tree: StateTree,
    /// Free-form metadata (safetensors `__metadata__`, the index's `metadata`).
    pub metadata: BTreeMap<String, String>,
}

const ZIP: &str = "a zip archive";

/// What a file that is not safetensors looks like, from its first bytes, for a clear "not
/// supported yet" instead of a header error.
pub fn sniff(first: &[u8]) -> Option<&'static str> {
    if first.starts_with(b"PK\x03\x04") {
        Some(ZIP)
    } else if first.starts_with(b"\x80") && first.get(1).is_some_and(|&p| (2..=5).contains(&p)) {
        Some("a pickle (legacy torch.save before 1.6, or a plain pickle)")
    } else if first.starts_with(b"GGUF") {
        Some("a GGUF file")
    } else {
        None
    }
}

/// How checkpoints are opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// How bytes are fetched.
    pub fetch: FetchOptions,
    /// How torch files are read.
    pub torch: torch::TorchOptions,
}

/// Names torch gives its files (`pytorch_model.bin` is found by its first bytes: `.bin` is
/// anyone's).
fn is_torch_name(name: &str) -> bool {
    [".pt", ".pth", ".ckpt"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Opens the checkpoint at `location`: a `*.safetensors.index.json` as sharded safetensors, a
/// `.pt`/`.pth`/`.ckpt` as a torch file, a DCP `.metadata` (or a directory holding one)
/// as a torch.distributed checkpoint, anything else as safetensors, falling back to torch when
/// the first bytes are a zip's.
///
/// # Errors
///
/// The reader's errors: [`Error::Safetensors`](crate::Error::Safetensors) for a file that is
/// not valid safetensors, [`Error::Zip`](crate::Error::Zip) or
/// [`Error::Pickle`](crate::Error::Pickle) for a broken torch file,
/// [`Error::NotFound`](crate::Error::NotFound), and so on.
pub async fn open(location: &Location, options: OpenOptions) -> Result<Checkpoint> {
    let name = location.path().filename().unwrap_or_default();
    if safetensors::is_index(name) {
        let sharded =
            safetensors::ShardedSafetensors::open(location, options.fetch.clone()).await?;
        let tree = sharded.tree().await?;
        return Ok(Checkpoint {
            format: Format::ShardedSafetensors {
                shards: sharded.shard_count(),
            },
            tree,
            metadata: sharded.metadata().clone(),
        });
    }
    if is_torch_name(name) {
        return open_torch(location, options).await;
    }
    if dcp::is_metadata(location) {
        return open_dcp(location, options).await;
    }
    if ckptio::is_manifest(location) {
        return open_ckptio(location, options).await;
    }
    match safetensors::SafetensorsFile::open(location, options.fetch.clone()).await {
        Ok(file) => Ok(Checkpoint {
            format: Format::Safetensors,
            tree: file.tree(),
            metadata: file.header().metadata.clone(),
        }),
        Err(crate::Error::UnsupportedFormat { what, .. }) if what == ZIP => {
            open_torch(location, options).await
        }
        // Not a file (stores answer a directory's name with 404, or worse): a directory
        // holding a ckptio or DCP checkpoint, perhaps.
        Err(e) if !matches!(e, crate::Error::Safetensors { .. }) => {
            if has(location, crate::save::manifest::MANIFEST).await {
                open_ckptio(location, options).await
            } else if has(location, dcp::METADATA).await {
                open_dcp(location, options).await
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// What [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The format read.
    pub format: Format,
    /// Tensors read (and checked, where the format stores checksums).
    pub tensors: usize,
    /// Tensor bytes read.
    pub bytes: u64,
}

/// Checks a checkpoint by reading every tensor once, keeping none: a ckptio checkpoint's data
/// file sizes and CRC-32C (or SHA-256) of every tensor, a torch file's storage CRC-32s, and
/// for any format that every tensor's bytes are there.
///
/// # Errors
///
/// As [`open`]; [`Error::Checksum`](crate::Error::Checksum) naming the tensor and the file for
/// corrupt data.
pub async fn verify(location: &Location, options: OpenOptions) -> Result<Verified> {
    use futures::TryStreamExt;
    let checkpoint = open(location, options).await?;
    let tensors: Vec<_> = checkpoint
        .tree
        .tensors()
        .map(|(p, t)| (p, t.clone()))
        .collect();
    let count = tensors.len();
    let bytes = crate::materialize::stream(tensors, Default::default())
        .try_fold(0u64, |n, (_, t)| async move { Ok(n + t.data.len() as u64) })
        .await?;
    Ok(Verified {
        format: checkpoint.format,
        tensors: count,
        bytes,
    })
}

/// Whether the directory (prefix) `location` holds `name`.
async fn has(location: &Location, name: &str) -> bool {
    crate::fetch::stat(&location.join(name)).await.is_ok()
}

async fn open_ckptio(location: &Location, options: OpenOptions) -> Result<Checkpoint> {
    let checkpoint = ckptio::CkptioCheckpoint::open(location, options.fetch).await?;
    Ok(Checkpoint {
        format: Format::Ckptio {
            files: checkpoint.manifest().files.len(),
        },
        metadata: checkpoint.metadata(),
        tree: checkpoint.into_tree(),
    })
}

async fn open_dcp(location: &Location, options: OpenOptions) -> Result<Checkpoint> {
    let dcp = dcp::DcpCheckpoint::open(location, options.fetch, options.torch).await?;
    Ok(Checkpoint {
        format: Format::Dcp {
            files: dcp.file_count(),
        },
        metadata: dcp.metadata().clone(),
        tree: dcp.into_tree(),
    })
}

async fn open_torch(location: &Location, options: OpenOptions) -> Result<Checkpoint> {
    let file = torch::TorchFile::open(location, options.fetch, options.torch).await?;
    Ok(Checkpoint {
        format: Format::Torch,
        tree: file.into_tree(),
        metadata: BTreeMap::new(),
    })
}
