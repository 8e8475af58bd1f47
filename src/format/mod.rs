//! Checkpoint formats, one folder each, holding everything about that format's bytes in both
//! directions: a pure codec (what the fuzz targets call), a lazy reader that asks
//! [`fetch`](crate::fetch) for exactly the byte ranges the codec names, and a writer where
//! ckptio writes the format. [`open`] classifies a URI once ([`probe()`]) and picks the reader.
//!
//! | folder | codec | reader | writer |
//! |---|---|---|---|
//! | `safetensors` | header, shard index | single file, shards | one file |
//! | `torch` | rebuild rules, dtype tables, legacy layout | `torch.save` zips and legacy files | torch zips |
//! | `dcp` | `.metadata` | directories, chunks located on first read | — |
//! | `ckptio` | manifest | directories | names, commit |
//! | `gguf` | header, ggml types, dequantizing | one file | — |
//! | `orbax` | OCDBT nodes, zarr v2 metadata, `_METADATA` | step directories, chunks located on first read | — |
//! | `zip`, `pickle` | shared codecs: zip directories by ranges; the restricted pickle VM | — | — |

pub mod ckptio;
pub mod dcp;
pub mod gguf;
mod object;
pub mod orbax;
pub mod pickle;
mod probe;
pub mod safetensors;
pub(crate) mod sharded;
pub mod torch;
pub mod zip;
pub(crate) mod zstd;

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::fetch::FetchOptions;
use crate::location::Location;
use crate::tree::StateTree;

pub use object::TooLargeFile;
pub(crate) use probe::{Layout, committed, marker, no_checkpoint};
use probe::{Probed, Sniffed, probe};

/// A checkpoint's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One safetensors file.
    Safetensors,
    /// Safetensors shards with a `*.safetensors.index.json` (or a variant of it).
    ShardedSafetensors {
        /// How many shards.
        shards: usize,
    },
    /// `torch.save` shards with a `pytorch_model.bin.index.json` (or a variant of it).
    ShardedTorch {
        /// How many shards.
        shards: usize,
    },
    /// A `torch.save` zip (`.pt`, `.pth`, `.ckpt`, `pytorch_model.bin`).
    Torch,
    /// A legacy `torch.save` file: the pickle stream PyTorch wrote before 1.6 (and since, with
    /// `_use_new_zipfile_serialization=False`).
    TorchLegacy,
    /// A plain pickle (`pickle.dump` of plain values and numpy arrays).
    Pickle,
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
    /// A GGUF file (llama.cpp's format).
    Gguf,
    /// An Orbax checkpoint (a step directory or one checkpointable of it).
    Orbax {
        /// How many arrays it has.
        arrays: usize,
    },
    /// A directory of a training run's state files (accelerate's `save_state`): one subtree
    /// per file, named after it (`model`, `optimizer`, `random_states_0`).
    StateFiles {
        /// How many files it has.
        files: usize,
    },
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: usize, noun: &str| match n {
            1 => format!("1 {noun}"),
            n => format!("{n} {noun}s"),
        };
        match self {
            Self::Safetensors => f.write_str("safetensors"),
            Self::ShardedSafetensors { shards } => {
                write!(f, "sharded safetensors ({})", count(*shards, "shard"))
            }
            Self::ShardedTorch { shards } => {
                write!(f, "sharded torch ({})", count(*shards, "shard"))
            }
            Self::Torch => f.write_str("torch (zip + pickle)"),
            Self::TorchLegacy => f.write_str("torch (legacy pickle stream)"),
            Self::Pickle => f.write_str("plain pickle"),
            Self::Ckptio { files } => {
                write!(f, "ckptio checkpoint ({})", count(*files, "data file"))
            }
            Self::Dcp { files } => write!(
                f,
                "torch.distributed.checkpoint ({})",
                count(*files, "data file")
            ),
            Self::Gguf => f.write_str("GGUF"),
            Self::Orbax { arrays } => write!(f, "Orbax ({})", count(*arrays, "array")),
            Self::StateFiles { files } => {
                write!(f, "training state ({})", count(*files, "file"))
            }
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
    /// Free-form metadata (safetensors `__metadata__`, the index's `metadata`, a ckptio
    /// manifest's `metadata` and creation time, a DCP checkpoint's version).
    pub metadata: BTreeMap<String, String>,
}

/// How pickled and checksummed formats are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Refuse any pickled global ckptio does not understand, instead of keeping it as an
    /// inert opaque node.
    pub strict: bool,
    /// Check stored checksums (torch storages' CRC-32, ckptio tensors' CRC-32C or SHA-256)
    /// when tensors are read.
    pub verify: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            strict: false,
            verify: true,
        }
    }
}

/// How checkpoints are opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// How bytes are fetched (also when tensors are materialized later).
    pub fetch: FetchOptions,
    /// How pickles and checksums are treated.
    pub read: ReadOptions,
    /// Only the paths matching one of these globs, and what lies below them (Composer's
    /// meaning: `*` crosses `/`). A sharded checkpoint opens only the shards holding them.
    pub select: Vec<String>,
}

/// Opens the checkpoint at `location`, whatever it is: a safetensors file or shard index, a
/// `torch.save` file, a GGUF file, a ckptio or DCP directory (or its `manifest.json`/`.metadata`), a
/// directory of model weights. Only metadata moves: tensors are fetched when materialized.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// let loc = ckptio::resolve("fixtures/tiny.safetensors", &Default::default())?;
/// let checkpoint = ckptio::open(&loc, Default::default()).await?;
/// assert_eq!(checkpoint.format, ckptio::Format::Safetensors);
/// assert_eq!(checkpoint.tree.tensors().count(), 3);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::NotFound`] when nothing is there; [`Error::NoCheckpoint`] for a directory holding
/// nothing ckptio reads; [`Error::Corrupt`], [`Error::Unsafe`] or [`Error::Unsupported`] from
/// the reader; the requests' errors.
pub async fn open(location: &Location, options: OpenOptions) -> Result<Checkpoint> {
    let wanted = Selection::new(&options.select)?;
    let checkpoint = match probe(location, &options.fetch).await? {
        // Its reader keeps only the selected tensors (opening only their shards), and says
        // what the index holds when a glob matches nothing.
        Probed::Index => return open_index(location, &options, &wanted).await,
        Probed::TorchByName => {
            match torch::open(location, options.fetch.clone(), options.read).await {
                Ok((format, tree)) => Checkpoint {
                    format,
                    tree,
                    metadata: BTreeMap::new(),
                },
                // Lightning's sharded strategies (FSDP, DeepSpeed) save `epoch=3.ckpt` as a
                // directory: one listing tells, and a name with nothing under it keeps its error.
                Err(err) if probe::maybe_directory(&err) => {
                    return match Box::pin(open(&location.join("/"), options)).await {
                        Err(Error::NotFound { .. }) => Err(err),
                        other => other,
                    };
                }
                Err(err) => return Err(err),
            }
        }
        Probed::Marker(layout, dir) => open_dir(layout, &dir, None, &options).await?,
        Probed::Dir(layout, listing) => {
            match open_dir(layout, listing.dir(), Some(&listing), &options).await {
                // A marker the listing could not show (WebDAV hides dot-files) is not there.
                Err(Error::NotFound { .. }) if probe::committed(&listing).is_none() => {
                    return Err(probe::no_checkpoint(&listing));
                }
                other => other?,
            }
        }
        // Opened, selection included, as the file it is.
        Probed::Weights(file) => return Box::pin(open(&file, options)).await,
        Probed::Orbax(listing) => {
            let opened = orbax::open(&listing, options.fetch.clone()).await?;
            Checkpoint {
                format: Format::Orbax {
                    arrays: opened.arrays,
                },
                tree: opened.tree,
                metadata: opened.metadata,
            }
        }
        Probed::StateFiles(listing, files) => open_state_files(&listing, &files, &options).await?,
        Probed::Object {
            object,
            first,
            kind,
        } => match kind {
            Sniffed::Zip => Checkpoint {
                format: Format::Torch,
                tree: torch::open_object(&object, first, options.read).await?,
                metadata: BTreeMap::new(),
            },
            Sniffed::Pickle => {
                let (format, tree) = torch::open_pickle(&object, first, options.read).await?;
                Checkpoint {
                    format,
                    tree,
                    metadata: BTreeMap::new(),
                }
            }
            Sniffed::Gguf => {
                let (metadata, tree) = gguf::open(object, first).await?;
                Checkpoint {
                    format: Format::Gguf,
                    metadata,
                    tree,
                }
            }
            Sniffed::Other => {
                let file = safetensors::SafetensorsFile::from_prefix(object, first).await?;
                let (metadata, tree) = file.into_tree();
                Checkpoint {
                    format: Format::Safetensors,
                    metadata,
                    tree,
                }
            }
        },
    };
    Ok(Checkpoint {
        tree: wanted.apply(checkpoint.tree, location)?,
        ..checkpoint
    })
}

/// Reads a checkpoint held whole in memory: `data` is a `torch.save` zip (a DCP item, an
/// HTTP body) or a safetensors file, named `name` in messages. Nothing is copied: tensors
/// are slices of `data`, checked (CRC-32 of torch storages, with `verify`) when read.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let data = bytes::Bytes::from(std::fs::read("fixtures/tiny.safetensors")?);
/// let checkpoint = ckptio::open_bytes(data, "tiny.safetensors", Default::default())?;
/// assert_eq!(checkpoint.format, ckptio::Format::Safetensors);
/// assert_eq!(checkpoint.tree.tensors().count(), 3);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Corrupt`] or [`Error::Unsafe`] from the reader; [`Error::Unsupported`] for a
/// legacy `torch.save` file or a GGUF file, which are read from a location only.
pub fn open_bytes(data: bytes::Bytes, name: &str, options: ReadOptions) -> Result<Checkpoint> {
    let (format, metadata, tree) = match probe::sniff(&data) {
        Sniffed::Zip => (
            Format::Torch,
            BTreeMap::new(),
            torch::archive::read_bytes(&data, name, options)?,
        ),
        Sniffed::Other => {
            let (metadata, tree) = safetensors::from_bytes(&data, name)?;
            (Format::Safetensors, metadata, tree)
        }
        Sniffed::Pickle | Sniffed::Gguf => {
            return Err(Error::Unsupported {
                uri: name.to_owned(),
                what: "a legacy torch or GGUF file in memory (open it from a file or a store)"
                    .into(),
            });
        }
    };
    Ok(Checkpoint {
        format,
        tree,
        metadata,
    })
}

/// Each state file of a directory as a subtree named after the file (its name up to the first
/// dot), opened as it would be on its own.
async fn open_state_files(
    listing: &crate::fetch::Listing,
    files: &[String],
    options: &OpenOptions,
) -> Result<Checkpoint> {
    let whole = OpenOptions {
        select: Vec::new(),
        ..options.clone()
    };
    let mut root = crate::tree::Dict::new();
    for name in files {
        let file = listing.dir().join(name);
        let opened = Box::pin(open(&file, whole.clone())).await?;
        let stem = name.split('.').next().unwrap_or(name);
        root.insert(
            stem.to_owned(),
            crate::tree::Node::Dict(opened.tree.into_root()),
        );
    }
    Ok(Checkpoint {
        format: Format::StateFiles { files: files.len() },
        tree: StateTree::from_dict(root),
        metadata: BTreeMap::new(),
    })
}

async fn open_index(
    location: &Location,
    options: &OpenOptions,
    wanted: &Selection,
) -> Result<Checkpoint> {
    let sharded = sharded::Sharded::open(location, options.fetch.clone(), options.read).await?;
    let tree = sharded.tree(&|path| wanted.keeps(path)).await?;
    // The tree holds only what was selected: the index's names say what there is.
    wanted.check(&tree, location, || {
        top_level(
            sharded.tensor_count(),
            sharded.names().map(crate::tree::path::escape),
        )
    })?;
    let shards = sharded.shard_count();
    Ok(Checkpoint {
        format: if sharded.is_torch() {
            Format::ShardedTorch { shards }
        } else {
            Format::ShardedSafetensors { shards }
        },
        tree,
        metadata: sharded.metadata().clone(),
    })
}

async fn open_dir(
    layout: Layout,
    dir: &Location,
    listing: Option<&crate::fetch::Listing>,
    options: &OpenOptions,
) -> Result<Checkpoint> {
    let fetch = options.fetch.clone();
    let listing = match listing {
        Some(listing) => std::borrow::Cow::Borrowed(listing),
        None => std::borrow::Cow::Owned(crate::fetch::list(dir).await?),
    };
    Ok(match layout {
        Layout::Ckptio => {
            let checkpoint = ckptio::open(dir, &listing, fetch, options.read).await?;
            Checkpoint {
                format: Format::Ckptio {
                    files: checkpoint.files,
                },
                metadata: checkpoint.metadata,
                tree: checkpoint.tree,
            }
        }
        Layout::Dcp => {
            let checkpoint = dcp::open(dir, &listing, fetch, options.read).await?;
            Checkpoint {
                format: Format::Dcp {
                    files: checkpoint.files,
                },
                metadata: checkpoint.metadata,
                tree: checkpoint.tree,
            }
        }
    })
}

/// What a tree's top level holds, for a message: `; its top level: a, b/, …`.
fn holding(tree: &StateTree) -> String {
    let root = tree.root();
    top_level(
        root.len(),
        root.iter().map(|(k, node)| match node {
            crate::tree::Node::Leaf(_) => crate::tree::path::escape(k),
            _ => format!("{}/", crate::tree::path::escape(k)),
        }),
    )
}

/// `; its top level: a, b/, …` for the `count` names `shown` yields, the first few of them.
fn top_level(count: usize, shown: impl Iterator<Item = String>) -> String {
    const SHOWN: usize = 8;
    if count == 0 {
        return String::new();
    }
    let mut names: Vec<String> = shown.take(SHOWN).collect();
    if count > SHOWN {
        names.push(format!("and {} more", count - SHOWN));
    }
    format!("; its top level: {}", names.join(", "))
}

/// The paths an open keeps.
struct Selection {
    globs: Vec<String>,
    set: Option<globset::GlobSet>,
}

impl Selection {
    fn new(globs: &[String]) -> Result<Self> {
        if globs.is_empty() {
            return Ok(Self {
                globs: Vec::new(),
                set: None,
            });
        }
        let refs: Vec<&str> = globs.iter().map(String::as_str).collect();
        let set = crate::tree::globset(&refs).map_err(|e| Error::InvalidArgument {
            what: "select".into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            globs: globs.to_vec(),
            set: Some(set),
        })
    }

    /// Whether a top-level path (a sharded checkpoint's tensor) is kept.
    fn keeps(&self, path: &str) -> bool {
        self.set.as_ref().is_none_or(|set| set.is_match(path))
    }

    /// `tree` (of the checkpoint at `location`) with only the selected paths; a glob that
    /// matches nothing is an error naming what the checkpoint holds, as a typo would otherwise
    /// select nothing in silence.
    fn apply(&self, tree: StateTree, location: &Location) -> Result<StateTree> {
        let Some(set) = &self.set else {
            return Ok(tree);
        };
        self.check(&tree, location, || holding(&tree))?;
        Ok(tree.filtered_by(set, true))
    }

    /// An error for the first glob that matches nothing in `tree`, naming what the checkpoint
    /// holds as `holds` says.
    fn check(
        &self,
        tree: &StateTree,
        location: &Location,
        holds: impl FnOnce() -> String,
    ) -> Result<()> {
        let Some(set) = &self.set else {
            return Ok(());
        };
        match self
            .globs
            .iter()
            .zip(tree.matched_by(set))
            .find(|(_, m)| !m)
        {
            Some((glob, _)) => Err(Error::InvalidArgument {
                what: location.uri(),
                reason: format!("select `{glob}` matches nothing{}", holds()),
            }),
            None => Ok(()),
        }
    }
}
