//! Opening a DCP directory: one GET of `.metadata`, the data files pinned by the directory's
//! listing, and one coalesced read per data file of the non-tensor items. Each tensor becomes
//! one logical [`LazyTensor`] of [`Pieces`], located (their own zip directory and pickle) only
//! when read, with the options the checkpoint was opened with. A read takes each plain chunk
//! whole and parses it where it landed: chunks side by side in a data file, of one tensor or
//! many, come in one request.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::metadata::{self, Item, Key, Metadata, StorageInfo, TensorMeta};
use super::stored::{self, DataFile};
use super::{DcpError, MAX_METADATA, METADATA};
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Listing};
use crate::format::ReadOptions;
use crate::format::object::read_whole;
use crate::format::pickle::{self, Policy};
use crate::format::torch::codec;
use crate::location::Location;
use crate::tree::{Dict, LazyTensor, Locate, Node, Piece, Pieces, StateTree, TensorData};

/// An open DCP checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct DcpCheckpoint {
    pub tree: StateTree,
    pub metadata: BTreeMap<String, String>,
    pub files: usize,
}

/// Opens the DCP checkpoint in the directory `dir`, whose listing is `listing`.
///
/// # Errors
///
/// [`Error::NotFound`] without a `.metadata` (a checkpoint still being written has none),
/// [`Error::Unsafe`] for a refused global, [`Error::Corrupt`] for metadata that cannot be read
/// or does not fit together (a chunk stored nowhere, a data file missing from the directory);
/// the reads' errors.
pub(crate) async fn open(
    dir: &Location,
    listing: &Listing,
    fetch: FetchOptions,
    options: ReadOptions,
) -> Result<DcpCheckpoint> {
    let meta_loc = dir.join(METADATA);
    let (_, data) = read_whole(&meta_loc, MAX_METADATA, "metadata", &fetch).await?;
    let uri = meta_loc.uri();
    let bad = |problem: String| Error::corrupt(&uri, DcpError(problem));
    let policy = Policy {
        strict: options.strict,
        known: |g| metadata::is_known(g) || codec::is_known(g) || pickle::convert::is_known(g),
    };
    // The pickle's object graph is far larger than what is read from it: gone before the
    // tree is built.
    let meta = {
        let heap = pickle::parse(&data, &policy).map_err(|e| pickle::error(&uri, METADATA, e))?;
        Metadata::read(&heap).map_err(bad)?
    };
    drop(data);
    let files: HashMap<String, Arc<DataFile>> = listing
        .objects(meta.files.iter().map(|f| &**f), &fetch)
        .into_iter()
        .map(|(name, object)| (name, DataFile::new(object)))
        .collect();

    let count = meta.items.len();
    let mut root = Dict::new();
    let mut items: Vec<(Vec<Key>, &StorageInfo)> = Vec::new();
    for (fqn, item) in &meta.items {
        let keys = meta
            .planner
            .get(fqn)
            .cloned()
            .unwrap_or_else(|| vec![Key::Str(fqn.clone())]);
        match item {
            Item::Tensor(t) => {
                let tensor = tensor(&meta, fqn, t, &files, options).map_err(bad)?;
                metadata::insert(&mut root, &keys, Node::from(tensor), count).map_err(bad)?;
            }
            Item::Bytes => {
                let info = meta
                    .stored(fqn, None)
                    .ok_or_else(|| bad(format!("item `{fqn}` is stored nowhere")))?;
                items.push((keys, info));
            }
        }
    }
    for (keys, node) in read_items(dir, &items, &files, options).await? {
        metadata::insert(&mut root, &keys, node, count).map_err(bad)?;
    }
    let mut metadata = BTreeMap::new();
    if let Some(version) = &meta.version {
        metadata.insert("dcp_version".into(), version.clone());
    }
    Ok(DcpCheckpoint {
        tree: StateTree::from_dict(root),
        metadata,
        files: files.len(),
    })
}

/// Tensor `fqn` as one lazy tensor of its chunks.
fn tensor(
    meta: &Metadata,
    fqn: &str,
    t: &TensorMeta,
    files: &HashMap<String, Arc<DataFile>>,
    options: ReadOptions,
) -> Result<LazyTensor, String> {
    crate::tree::cover::check(
        &t.size,
        t.chunks.iter().map(|(o, s)| (o.as_slice(), s.as_slice())),
    )
    .map_err(|e| format!("tensor `{fqn}`: {e}"))?;
    let mut boxes = Vec::with_capacity(t.chunks.len());
    for (offsets, sizes) in &t.chunks {
        let info = meta
            .stored(fqn, Some(offsets))
            .ok_or_else(|| format!("tensor `{fqn}`: the chunk at {offsets:?} is stored nowhere"))?;
        let file = files
            .get(&*info.path)
            .ok_or_else(|| format!("tensor `{fqn}`: its data file `{}` is missing", info.path))?;
        if info.range.end > file.object.info().size {
            return Err(format!(
                "tensor `{fqn}`: its chunk at bytes {:?} runs past the end of `{}`",
                info.range, info.path
            ));
        }
        boxes.push(Arc::new(Piece {
            offsets: offsets.clone(),
            sizes: sizes.clone(),
            locate: Arc::new(Chunk {
                file: Arc::clone(file),
                fqn: fqn.to_owned(),
                offsets: offsets.clone(),
                sizes: sizes.clone(),
                dtype: t.dtype,
                info: info.clone(),
                options,
                located: OnceCell::new(),
            }),
        }));
    }
    let rows = 0..t.size.first().copied().unwrap_or(1);
    Ok(LazyTensor {
        dtype: t.dtype,
        shape: t.size.clone(),
        strides: Vec::new(),
        data: TensorData::Pieces(Arc::new(Pieces { boxes, rows })),
        view: Default::default(),
        quantized: None,
    })
}

/// A chunk of a tensor, located (its zip's tail and pickle, or its blob's header, read) on
/// first use with the options the checkpoint was opened with.
#[derive(Debug)]
struct Chunk {
    file: Arc<DataFile>,
    fqn: String,
    offsets: Vec<u64>,
    sizes: Vec<u64>,
    dtype: crate::dtype::DType,
    info: StorageInfo,
    options: ReadOptions,
    located: OnceCell<LazyTensor>,
}

impl Locate for Chunk {
    fn describe(&self) -> String {
        self.file.describe(&self.info.range)
    }

    fn locate(&self) -> BoxFuture<'_, Result<LazyTensor>> {
        Box::pin(async move {
            let nbytes = self.nbytes();
            let tensor = self
                .located
                .get_or_try_init(|| {
                    self.file.chunk(
                        &self.fqn,
                        (&self.offsets, &self.sizes),
                        &self.info.range,
                        &self.info.transforms,
                        nbytes,
                        self.options,
                    )
                })
                .await?;
            Ok(tensor.clone())
        })
    }

    /// A plain `torch.save` item is its whole range; items through stream transforms and
    /// tensors in a safetensors blob (exactly as long as the tensor) are located their own way.
    fn stored(&self) -> Option<(Arc<dyn crate::tree::Source>, Range<u64>)> {
        let range = &self.info.range;
        let plain = self.info.transforms.is_empty() && !stored::in_blob(range, self.nbytes());
        plain.then(|| (Arc::clone(&self.file.source), range.clone()))
    }

    fn parse(&self, data: bytes::Bytes) -> Result<LazyTensor> {
        self.file.chunk_in(&data, &self.info.range, self.options)
    }
}

impl Chunk {
    fn nbytes(&self) -> u64 {
        crate::dtype::numel(&self.sizes)
            .and_then(|n| self.dtype.byte_len(n))
            .unwrap_or(u64::MAX)
    }
}

/// The non-tensor items, each a small `torch.save` file: read with one coalesced request per
/// data file, then read in memory.
async fn read_items(
    dir: &Location,
    items: &[(Vec<Key>, &StorageInfo)],
    files: &HashMap<String, Arc<DataFile>>,
    options: ReadOptions,
) -> Result<Vec<(Vec<Key>, Node)>> {
    let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, info)) in items.iter().enumerate() {
        by_file.entry(&*info.path).or_default().push(i);
    }
    let mut out = Vec::with_capacity(items.len());
    for (path, indices) in by_file {
        let file = files.get(path).ok_or_else(|| {
            Error::corrupt(
                dir.join(path).uri(),
                DcpError(format!(
                    "the data file `{path}` is missing from the checkpoint"
                )),
            )
        })?;
        let ranges: Vec<Range<u64>> = indices.iter().map(|&i| items[i].1.range.clone()).collect();
        let datas = file.object.read_ranges(&ranges).await?;
        for (&i, data) in indices.iter().zip(datas) {
            let (keys, info) = &items[i];
            let tree = file.item(&data, &info.range, &info.transforms, MAX_METADATA, options)?;
            let node = match tree.root().get("") {
                Some(node) if tree.root().len() == 1 => node.clone(),
                _ => Node::Dict(tree.root().clone()),
            };
            out.push((keys.clone(), node));
        }
    }
    Ok(out)
}
