//! Saving: tensors from any readable source (or from memory) streamed into a format's writer,
//! in file order, within a memory budget.
//!
//! - [`save`] writes a ckptio checkpoint: data files in parallel (multipart uploads), then the
//!   manifest, create-only. A failed save deletes what it wrote and leaves no manifest.
//! - [`write_safetensors`] writes one safetensors file, or shards and a Hugging Face index.
//! - [`write_torch`] writes the whole tree as one `torch.save` file.
//! - [`write_dcp_file`] writes one torch.distributed.checkpoint data file, and [`put_object`]
//!   its `.metadata`, create-only: the commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::fetch::{NoProgress, Progress};
use crate::format::ckptio::{self, manifest};
use crate::format::safetensors::{self as st, Entry, FileLayout};
use crate::location::Location;
use crate::materialize::{self, MaterializeOptions, file_order, pack};
use crate::tree::{LazyTensor, StateTree};

use crate::format::ckptio::manifest::Manifest;

/// The three ways a tree is written: [`save`], [`write_safetensors`], [`write_torch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaveFormat {
    /// A ckptio checkpoint directory ([`save`]).
    Ckptio,
    /// One safetensors file, or shards and an index ([`write_safetensors`]).
    Safetensors,
    /// One `torch.save` file ([`write_torch`]).
    Torch,
}

impl SaveFormat {
    /// The format a destination's name asks for: `.safetensors` a safetensors file; `.pt`,
    /// `.pth`, `.ckpt` and `.bin` a torch file; anything else (a directory) a ckptio checkpoint.
    ///
    /// ```
    /// use ckptio::SaveFormat;
    ///
    /// assert_eq!(SaveFormat::for_name("s3://b/model.safetensors"), SaveFormat::Safetensors);
    /// assert_eq!(SaveFormat::for_name("run/last.ckpt"), SaveFormat::Torch);
    /// assert_eq!(SaveFormat::for_name("gs://b/run/step-100/"), SaveFormat::Ckptio);
    /// assert_eq!("torch".parse(), Ok(SaveFormat::Torch));
    /// ```
    pub fn for_name(name: &str) -> Self {
        let name = name.split(['?', '#']).next().unwrap_or_default();
        if name.ends_with(".safetensors") {
            Self::Safetensors
        } else if [".pt", ".pth", ".ckpt", ".bin"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            Self::Torch
        } else {
            Self::Ckptio
        }
    }

    /// The extension a file of this format is given (`None` for a ckptio checkpoint, a
    /// directory).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Self::Ckptio => None,
            Self::Safetensors => Some("safetensors"),
            Self::Torch => Some("pt"),
        }
    }

    /// Its name: `ckptio`, `safetensors` or `torch`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ckptio => "ckptio",
            Self::Safetensors => "safetensors",
            Self::Torch => "torch",
        }
    }
}

impl std::str::FromStr for SaveFormat {
    type Err = String;

    /// A format by its [name](Self::name).
    fn from_str(name: &str) -> Result<Self, String> {
        [Self::Ckptio, Self::Safetensors, Self::Torch]
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| format!("format {name:?}: \"ckptio\", \"safetensors\" or \"torch\""))
    }
}

/// What [`save`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The checkpoint's URI (its directory).
    pub uri: String,
    /// The data files' names, in order; the manifest comes last.
    pub files: Vec<String>,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes written, data files and manifest.
    pub bytes: u64,
}

/// How a ckptio checkpoint is saved.
#[derive(Clone)]
pub struct SaveOptions {
    /// Data files hold at most this many tensor bytes (a larger tensor gets a file of its own).
    pub max_file_size: u64,
    /// Data files uploaded at once.
    pub concurrency: usize,
    /// Strings stored in the manifest.
    pub metadata: BTreeMap<String, String>,
    /// How the tensors are read (the memory budget of each file's stream).
    pub materialize: MaterializeOptions,
    /// Also store each tensor's SHA-256, which loads then check instead of the CRC-32C.
    pub sha256: bool,
    /// Told when the save starts (the tensor bytes to write), of each tensor's bytes handed
    /// to an upload, and when the manifest is committed.
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for SaveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveOptions")
            .field("max_file_size", &self.max_file_size)
            .field("concurrency", &self.concurrency)
            .field("metadata", &self.metadata)
            .field("materialize", &self.materialize)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            max_file_size: 4 << 30,
            concurrency: 4,
            metadata: BTreeMap::new(),
            materialize: MaterializeOptions::default(),
            sha256: false,
            progress: Arc::new(NoProgress),
        }
    }
}

/// Saves `tree` as a ckptio checkpoint in the directory `dir`: data files in parallel
/// (multipart uploads), then the manifest, create-only.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// let src = ckptio::resolve("fixtures/tiny.safetensors", &Default::default())?;
/// let tree = ckptio::open(&src, Default::default()).await?.tree;
/// let dir = ckptio::resolve("memory://doc-save/ckpt-1", &Default::default())?;
/// let saved = ckptio::save(&dir, &tree, &Default::default()).await?;
/// assert_eq!((saved.files.len(), saved.tensors), (1, 3));
/// let again = ckptio::open(&dir, Default::default()).await?;
/// assert_eq!(again.tree.tensors().count(), 3);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::AlreadyCommitted`] when the checkpoint exists (or another writer committed it
/// first); the reads' and uploads' errors otherwise. Whatever fails, the data files this save
/// wrote are deleted (best effort) and no manifest is written.
pub async fn save(dir: &Location, tree: &StateTree, options: &SaveOptions) -> Result<Saved> {
    let manifest_loc = dir.join(manifest::MANIFEST);
    if crate::fetch::stat(&manifest_loc).await.is_ok() {
        return Err(Error::AlreadyCommitted { uri: dir.uri() });
    }
    let depth = tree
        .root()
        .values()
        .map(manifest::json_depth)
        .max()
        .map_or(1, |d| d + 1);
    if depth > manifest::MAX_JSON_DEPTH {
        return Err(Error::InvalidArgument {
            what: dir.uri(),
            reason: format!(
                "the tree nests {depth} levels deep as JSON; a manifest holds at most {}",
                manifest::MAX_JSON_DEPTH
            ),
        });
    }
    let mut tensors: Vec<(String, LazyTensor)> =
        tree.tensors().map(|(p, t)| (p, t.clone())).collect();
    let count = tensors.len();
    file_order(&mut tensors);
    let mut groups = pack(
        tensors,
        options.max_file_size,
        |(_, t)| t.nbytes(),
        |_, _| false,
    );
    if groups.is_empty() {
        // A checkpoint without tensors still has a data file: readers find the same layout.
        groups.push(Vec::new());
    }
    let names = ckptio::data_file_names(groups.len());
    let total: u64 = groups.iter().flatten().map(|(_, t)| t.nbytes()).sum();
    options.progress.started(&dir.uri(), total);
    let file_meta = BTreeMap::from([("format".to_owned(), "ckptio".to_owned())]);
    // Locations are made up front: a closure over borrowed names would make the future not
    // `Send` (rustc cannot see the borrow is the same for every call).
    let files: Vec<(Vec<(String, LazyTensor)>, Location)> = groups
        .into_iter()
        .zip(&names)
        .map(|(group, name)| (group, dir.join(name)))
        .collect();
    let uploads = futures::stream::iter(files)
        .map(|(group, loc)| {
            let meta = &file_meta;
            async move {
                write_group(
                    &loc,
                    group,
                    meta,
                    options.materialize,
                    options.sha256,
                    options.progress.as_ref(),
                )
                .await
            }
        })
        .buffered(options.concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await;
    let layouts = match uploads {
        Ok(layouts) => layouts,
        Err(e) => {
            ckptio::remove_files(dir, &names).await;
            return Err(e);
        }
    };

    let mut written = HashMap::with_capacity(count);
    let mut files = Vec::with_capacity(names.len());
    for (i, (layout, name)) in layouts.into_iter().zip(&names).enumerate() {
        files.push(manifest::DataFile {
            name: name.clone(),
            size: layout.size,
        });
        for t in layout.tensors {
            written.insert(t.name.clone(), (i, t));
        }
    }
    let mut stored = |path: &str, t: &LazyTensor| {
        let (file, w) = written.remove(path)?;
        Some(manifest::Stored {
            file,
            dtype: t.dtype,
            shape: t.shape.clone(),
            range: w.range,
            crc32c: w.crc32c,
            sha256: w.sha256,
        })
    };
    let tree_node =
        manifest::dict_of(tree.root(), &mut stored).map_err(|e| Error::corrupt(dir.uri(), e))?;
    let manifest = Manifest {
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        metadata: options.metadata.clone(),
        files,
        tree: tree_node,
    };
    let json = manifest.to_json();
    let json_len = json.len() as u64;
    if let Err(e) = ckptio::commit(dir, json).await {
        ckptio::remove_files(dir, &names).await;
        return Err(e);
    }
    options.progress.finished();
    Ok(Saved {
        uri: dir.uri(),
        tensors: count,
        bytes: manifest.files.iter().map(|f| f.size).sum::<u64>() + json_len,
        files: names,
    })
}

/// Writes `group` (in file order) as the safetensors file `loc`, streaming each tensor from
/// its source as it is written.
async fn write_group(
    loc: &Location,
    group: Vec<(String, LazyTensor)>,
    metadata: &BTreeMap<String, String>,
    read: MaterializeOptions,
    sha256: bool,
    progress: &dyn Progress,
) -> Result<FileLayout> {
    let entries: Vec<Entry> = group
        .iter()
        .map(|(name, t)| {
            let (dtype, shape) = t.dtype.safetensors_view(&t.shape);
            (name.clone(), dtype, shape)
        })
        .collect();
    let read = MaterializeOptions {
        to_f32: false,
        ..read
    };
    let data = materialize::stream_runs(group, read);
    st::write_file(loc, &entries, metadata, data, sha256, progress).await
}

/// How safetensors files are written.
#[derive(Clone)]
pub struct WriteOptions {
    /// Split into shards of at most this many data bytes (a larger tensor gets a shard of its
    /// own), named `{stem}-00001-of-0000N.safetensors`, with `{stem}.safetensors.index.json`.
    pub max_shard_size: Option<u64>,
    /// Strings stored in each file's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
    /// How the tensors are read.
    pub materialize: MaterializeOptions,
    /// Told of every tensor's bytes as they are handed to the upload (`advanced`).
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("max_shard_size", &self.max_shard_size)
            .field("metadata", &self.metadata)
            .field("materialize", &self.materialize)
            .finish_non_exhaustive()
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            max_shard_size: None,
            metadata: BTreeMap::new(),
            materialize: MaterializeOptions::default(),
            progress: Arc::new(NoProgress),
        }
    }
}

/// What [`write_safetensors`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// URIs of the files, in order (shards, then the index).
    pub files: Vec<String>,
    /// Tensor data bytes.
    pub data_bytes: u64,
}

/// Writes `tensors` to `dest` as safetensors (or as shards and an index next to it), each
/// tensor streamed from its source in file order.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a tensor whose bytes are not a whole number; read errors
/// from the sources; the store's error for a failed upload (which is aborted, leaving no file).
pub async fn write_safetensors(
    mut tensors: Vec<(String, LazyTensor)>,
    dest: &Location,
    options: &WriteOptions,
) -> Result<Written> {
    // Written in the sources' file order: each tensor is streamed as it is read, none waits.
    file_order(&mut tensors);
    for (name, t) in &tensors {
        if t.dtype.byte_len(t.numel()).is_none() {
            return Err(Error::InvalidArgument {
                what: format!("tensor `{name}`"),
                reason: format!("{} × {:?} is not a whole number of bytes", t.dtype, t.shape),
            });
        }
    }
    let total: u64 = tensors.iter().map(|(_, t)| t.nbytes()).sum();
    let shards = match options.max_shard_size {
        Some(max) => pack(tensors, max, |(_, t)| t.nbytes(), |_, _| false),
        None => vec![tensors],
    };
    let progress = options.progress.as_ref();
    if shards.len() <= 1 {
        let group = shards.into_iter().next().unwrap_or_default();
        write_group(
            dest,
            group,
            &options.metadata,
            options.materialize,
            false,
            progress,
        )
        .await?;
        return Ok(Written {
            files: vec![dest.uri()],
            data_bytes: total,
        });
    }

    let file_name = dest.path().filename().unwrap_or("model.safetensors");
    let stem = file_name
        .strip_suffix(".safetensors")
        .unwrap_or(file_name)
        .to_owned();
    let n = shards.len();
    let mut files = Vec::with_capacity(n + 1);
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let name = format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1);
        for (tensor, _) in &shard {
            weight_map.insert(tensor.clone(), name.clone());
        }
        let location = dest.parent().join(&name);
        write_group(
            &location,
            shard,
            &options.metadata,
            options.materialize,
            false,
            progress,
        )
        .await?;
        files.push(location.uri());
    }
    let index_location = dest
        .parent()
        .join(&format!("{stem}.safetensors.index.json"));
    crate::upload::put(&index_location, st::index::render(&weight_map, total)).await?;
    files.push(index_location.uri());
    Ok(Written {
        files,
        data_bytes: total,
    })
}

/// Writes `tree` (tensors and values alike) to `dest` as one `torch.save` file, which
/// `torch.load(path, weights_only=True)` reads as the same dicts, lists, tuples, scalars and
/// tensors; each tensor streamed from its source, in file order. One object: it appears whole
/// when the upload completes (or the local file is renamed into place), or not at all, and
/// what was at `dest` stays until then.
///
/// ```no_run
/// # async fn demo(tree: ckptio::StateTree) -> ckptio::Result<()> {
/// let dest = ckptio::resolve("s3://bucket/run/last.ckpt", &Default::default())?;
/// ckptio::write_torch(&tree, &dest, &Default::default()).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::InvalidArgument`] for what a torch file cannot hold (an object ckptio kept inert, a
/// dtype torch has no name for; both named by path), for `max_shard_size` or `metadata`
/// (safetensors options); read errors from the sources; the store's.
pub async fn write_torch(
    tree: &StateTree,
    dest: &Location,
    options: &WriteOptions,
) -> Result<Written> {
    write_torch_sized(tree, dest, options)
        .await
        .map(|(written, _)| written)
}

/// [`write_torch`], with the size of the file it wrote.
pub(crate) async fn write_torch_sized(
    tree: &StateTree,
    dest: &Location,
    options: &WriteOptions,
) -> Result<(Written, u64)> {
    let refuse = |reason: &str| Error::InvalidArgument {
        what: dest.uri(),
        reason: reason.to_owned(),
    };
    if options.max_shard_size.is_some() {
        return Err(refuse(
            "a torch file is not sharded (max_shard_size is for safetensors)",
        ));
    }
    if !options.metadata.is_empty() {
        return Err(refuse(
            "a torch file has no metadata (it is for safetensors)",
        ));
    }
    let mut tensors: Vec<(String, LazyTensor)> =
        tree.tensors().map(|(p, t)| (p, t.clone())).collect();
    file_order(&mut tensors);
    let key_of: HashMap<String, usize> = tensors
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.clone(), i))
        .collect();
    let pickle =
        crate::format::torch::pickled::pickle_tree(tree.root(), &key_of).map_err(|e| refuse(&e))?;
    let storages: Vec<(String, u64)> = tensors
        .iter()
        .map(|(p, t)| (p.clone(), t.nbytes()))
        .collect();
    let total = storages.iter().map(|(_, n)| n).sum();
    let read = MaterializeOptions {
        to_f32: false,
        ..options.materialize
    };
    options.progress.started(&dest.uri(), total);
    let data = materialize::stream_runs(tensors, read);
    let size = crate::format::torch::writer::write_file(
        dest,
        pickle,
        &storages,
        data,
        options.progress.as_ref(),
    )
    .await?;
    options.progress.finished();
    let written = Written {
        files: vec![dest.uri()],
        data_bytes: total,
    };
    Ok((written, size))
}

/// One item of a torch.distributed.checkpoint data file.
#[derive(Debug, Clone)]
pub enum DcpItem {
    /// A tensor (chunk), written as its own `torch.save` archive, as torch's `FileSystemWriter`
    /// writes it.
    Tensor(LazyTensor),
    /// Bytes written as they are (an object DCP pickled itself).
    Bytes(bytes::Bytes),
}

/// Writes the DCP data file `dest` (`__{rank}_{n}.distcp`): `items` back to back, in order,
/// each tensor streamed from its source into one upload (whole or not at all). Returns each
/// item's byte range in the file, for the `_StorageInfo` entries of `.metadata`; torch's own
/// `FileSystemReader` reads the file.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a dtype torch has no name for; read errors from the sources;
/// the store's.
pub async fn write_dcp_file(
    dest: &Location,
    items: Vec<DcpItem>,
    options: &WriteOptions,
) -> Result<Vec<std::ops::Range<u64>>> {
    use crate::format::torch::{pickled, writer};

    let mut tensors = Vec::new();
    let mut planned = Vec::with_capacity(items.len());
    let one = HashMap::from([(String::new(), 0)]);
    for (i, item) in items.into_iter().enumerate() {
        match item {
            DcpItem::Tensor(t) => {
                let name = i.to_string();
                let mut root = crate::tree::Dict::new();
                root.insert(String::new(), crate::tree::Node::from(t.clone()));
                let pickle =
                    pickled::pickle_tree(&root, &one).map_err(|e| Error::InvalidArgument {
                        what: format!("item {i} of {dest}"),
                        reason: e,
                    })?;
                planned.push(writer::Item::Archive {
                    pickle,
                    storage: (name.clone(), t.nbytes()),
                });
                tensors.push((name, t));
            }
            DcpItem::Bytes(b) => planned.push(writer::Item::Raw(b)),
        }
    }
    let total = tensors.iter().map(|(_, t)| t.nbytes()).sum();
    options.progress.started(&dest.uri(), total);
    let read = MaterializeOptions {
        to_f32: false,
        ..options.materialize
    };
    let data = materialize::stream_runs(tensors, read);
    let ranges = writer::write_items(dest, planned, data, options.progress.as_ref()).await?;
    options.progress.finished();
    Ok(ranges)
}

/// Writes `body` as the object `dest`: replacing what is there, or with `create_only` only if
/// nothing is (atomically where the store allows; see
/// [`Capabilities::create`](crate::Capabilities)) — the commit of a checkpoint whose marker
/// someone else writes, a DCP `.metadata`.
///
/// # Errors
///
/// [`Error::AlreadyCommitted`] when `create_only` and an object is there (or another writer's
/// landed first); the store's error.
pub async fn put_object(dest: &Location, body: Vec<u8>, create_only: bool) -> Result<()> {
    if !create_only {
        return crate::upload::put(dest, body).await;
    }
    match crate::upload::put_create(dest, body).await {
        Ok(()) => Ok(()),
        Err(crate::upload::CreateError::Exists) => Err(Error::AlreadyCommitted { uri: dest.uri() }),
        Err(crate::upload::CreateError::Failed(e)) => Err(e),
    }
}
