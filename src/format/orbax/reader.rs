//! Opening an Orbax checkpoint: which checkpointable, its `_METADATA`, the OCDBT B+tree (one
//! GET per level, the nodes of a level read together), and each array's `.zarray` (read
//! together, coalesced per data file). Arrays become tensors in chunks, each fetched and
//! decompressed when the tensor is materialized; scalars are read at once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, try_join_all};
use indexmap::IndexMap;

use super::OrbaxError;
use super::metadata::{self, Leaf as MetaLeaf};
use super::ocdbt::{self, NodeRef, Value};
use super::zarr::{self, Array};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Listing, Object};
use crate::format::object::read_whole;
use crate::location::Location;
use crate::streams::spawn;
use crate::tree::{
    Dict, Inline, Int, LazyTensor, Leaf, Locate, Node, Opaque, Piece, Pieces, StateTree,
    TensorData, View, contiguous_strides,
};

/// The files that say a directory is an Orbax step or checkpointable.
const MARKERS: [&str; 2] = ["_CHECKPOINT_METADATA", "_METADATA"];

/// `_METADATA` and `manifest.ocdbt` above this are refused.
const MAX_METADATA: u64 = 256 << 20;

/// B+tree levels, at most. Each level's nodes must say they are one lower than their parent's,
/// so a node reached again (a cycle) is refused by its height.
const MAX_HEIGHT: u8 = 32;

/// B+tree nodes read, at most: a node listed by many parents (a DAG) cannot multiply the work.
const MAX_NODES: usize = 1 << 18;

/// Whether `listing` is an Orbax step directory or checkpointable.
pub(crate) fn is_orbax(listing: &Listing) -> bool {
    MARKERS.iter().any(|m| listing.contains(m))
}

/// The file Orbax writes last where renaming a directory is not atomic (object stores, and
/// every store since orbax-checkpoint 0.11).
pub(crate) const COMMIT_SUCCESS: &str = "commit_success.txt";

/// Whether `listing` is an Orbax step directory, and if so whether it is committed: it holds
/// `commit_success.txt`, or (on a local file system, where Orbax commits by renaming a
/// temporary directory, and older versions wrote no such file) `_CHECKPOINT_METADATA`.
pub(crate) fn step_committed(listing: &Listing) -> Option<bool> {
    let orbax = is_orbax(listing) || listing.contains(COMMIT_SUCCESS);
    orbax.then(|| {
        listing.contains(COMMIT_SUCCESS)
            || (listing.dir().capabilities().atomic_rename
                && listing.contains("_CHECKPOINT_METADATA"))
    })
}

/// An opened Orbax checkpoint.
pub(crate) struct Opened {
    pub tree: StateTree,
    pub arrays: usize,
    pub metadata: BTreeMap<String, String>,
}

/// Opens the Orbax checkpoint whose step directory (or checkpointable) `listing` shows.
///
/// # Errors
///
/// [`Error::NoCheckpoint`] when no checkpointable holds a `_METADATA`; [`Error::Corrupt`]
/// naming the file and the problem; the reads'.
pub(crate) async fn open(listing: &Listing, fetch: FetchOptions) -> Result<Opened> {
    let (dir, name) = checkpointable(listing).await?;
    let meta_loc = dir.join("_METADATA");
    let (_, raw) = read_whole(&meta_loc, MAX_METADATA, "_METADATA", &fetch).await?;
    let meta = metadata::parse(&raw).map_err(|e| Error::corrupt(meta_loc.uri(), e))?;
    let store = Arc::new(if meta.ocdbt {
        Store::ocdbt(&dir, &fetch).await?
    } else {
        Store::Files {
            dir: dir.clone(),
            fetch: fetch.clone(),
        }
    });
    let wanted: Vec<&MetaLeaf> = meta.leaves.iter().filter(|l| !l.skipped).collect();
    let (doc_name, parse): (&str, zarr::Parser) = if meta.zarr3 {
        ("zarr.json", zarr::parse_v3)
    } else {
        (".zarray", zarr::parse)
    };
    let names: Vec<String> = wanted
        .iter()
        .filter(|l| holds_array(l))
        .map(|l| l.param_name())
        .collect();
    let doc_keys: Vec<String> = names.iter().map(|n| format!("{n}/{doc_name}")).collect();
    let docs = store.read_many(&doc_keys).await?;
    let mut arrays = HashMap::new();
    for ((name, key), doc) in names.into_iter().zip(&doc_keys).zip(docs) {
        let doc = doc.ok_or_else(|| store.corrupt(key, "is missing".into()))?;
        let array = parse(&doc).map_err(|e| store.corrupt(key, e.to_string()))?;
        arrays.insert(name, Arc::new(array));
    }
    let strings = if wanted.iter().any(|l| l.value_type == "string") {
        read_strings(&dir, &fetch).await?
    } else {
        HashMap::new()
    };
    let mut root = Build::default();
    for leaf in &wanted {
        let name = leaf.param_name();
        let node = match arrays.get(&name) {
            Some(array) if leaf.value_type == "scalar" => scalar(&store, &name, array).await?,
            Some(array) => Node::from(tensor(&store, &name, array)),
            None if leaf.value_type == "string" => match strings.get(&name) {
                Some(s) => Node::Leaf(Leaf::Str(s.clone())),
                None => return Err(store.corrupt(&name, "is a string not in _strings.json".into())),
            },
            None if leaf.value_type == "None" => Node::Leaf(Leaf::None),
            None => Node::Leaf(Leaf::Opaque(Box::new(Opaque {
                module: "orbax".into(),
                name: leaf.value_type.clone(),
                args: Vec::new(),
                kwargs: None,
                state: None,
            }))),
        };
        root.insert(&leaf.keys, node)
            .map_err(|why| Error::corrupt(meta_loc.uri(), OrbaxError::Metadata(why)))?;
    }
    let mut info = BTreeMap::new();
    if !name.is_empty() {
        info.insert("orbax.checkpointable".into(), name);
    }
    Ok(Opened {
        tree: StateTree::from_dict(root.into_dict()),
        arrays: arrays.len(),
        metadata: info,
    })
}

/// Leaves stored as zarr arrays (everything but strings and `None`).
fn holds_array(leaf: &MetaLeaf) -> bool {
    !matches!(leaf.value_type.as_str(), "string" | "None")
}

/// The checkpointable to read, as Orbax's `checkpointable_name='AUTO'` picks it: a `pytree`
/// subdirectory, else the first subdirectory (alphabetically) holding a `_METADATA`, else the
/// directory itself. Returns it and its name (empty for the directory itself).
async fn checkpointable(listing: &Listing) -> Result<(Location, String)> {
    let dir = listing.dir();
    let mut candidates: Vec<&String> = listing.dirs().iter().collect();
    candidates.sort_by_key(|d| (d.as_str() != "pytree", d.as_str()));
    for name in candidates {
        if name.contains(".orbax-checkpoint-tmp") {
            continue;
        }
        let sub = dir.join(&format!("{name}/"));
        if crate::fetch::list(&sub).await?.contains("_METADATA") {
            return Ok((sub, name.clone()));
        }
    }
    if listing.contains("_METADATA") {
        return Ok((dir.clone(), String::new()));
    }
    let mut found: Vec<String> = listing.names().map(str::to_owned).collect();
    found.extend(listing.dirs().iter().map(|d| format!("{d}/")));
    found.truncate(crate::error::NO_CHECKPOINT_NAMES);
    Err(Error::NoCheckpoint {
        uri: dir.uri(),
        found,
        hint: Some("an Orbax step directory, but no checkpointable in it holds a _METADATA".into()),
    })
}

/// `_strings.json`: string leaves by parameter name.
async fn read_strings(dir: &Location, fetch: &FetchOptions) -> Result<HashMap<String, String>> {
    let loc = dir.join("_strings.json");
    let (_, raw) = read_whole(&loc, MAX_METADATA, "_strings.json", fetch).await?;
    serde_json::from_slice(&raw).map_err(|e| {
        Error::corrupt(
            loc.uri(),
            OrbaxError::Metadata(format!("_strings.json is not a map of strings: {e}")),
        )
    })
}

/// Where an array's chunks are: one OCDBT database, or one file per chunk.
enum Store {
    Ocdbt {
        dir: Location,
        entries: HashMap<String, Value>,
        files: HashMap<String, Object>,
    },
    Files {
        dir: Location,
        fetch: FetchOptions,
    },
}

impl Store {
    /// Reads the database in `dir`: its manifest, then the B+tree a level at a time.
    async fn ocdbt(dir: &Location, fetch: &FetchOptions) -> Result<Self> {
        let manifest = dir.join("manifest.ocdbt");
        let (_, raw) = read_whole(&manifest, MAX_METADATA, "manifest.ocdbt", fetch).await?;
        let root = ocdbt::manifest_root(&raw).map_err(|e| Error::corrupt(manifest.uri(), e))?;
        let mut files: HashMap<String, Object> = HashMap::new();
        let mut entries = HashMap::new();
        let mut level: Vec<NodeRef> = root.into_iter().collect();
        let (mut depth, mut visited) = (0, 0usize);
        while !level.is_empty() {
            depth += 1;
            if depth > MAX_HEIGHT {
                return Err(Error::corrupt(
                    manifest.uri(),
                    OrbaxError::Ocdbt(format!("a B+tree deeper than {MAX_HEIGHT} levels")),
                ));
            }
            pin(
                dir,
                fetch,
                &mut files,
                level.iter().map(|n| n.file.as_str()),
            )
            .await?;
            let spans: Vec<(&str, Range<u64>)> = level
                .iter()
                .map(|n| (n.file.as_str(), n.offset..n.offset.saturating_add(n.length)))
                .collect();
            let read = read_spans(&files, &spans).await?;
            let mut next = Vec::new();
            visited += level.len();
            for (at, bytes) in level.iter().zip(read) {
                let uri = || dir.join(&at.file).uri();
                match ocdbt::node(&bytes, at).map_err(|e| Error::corrupt(uri(), e))? {
                    ocdbt::Node::Interior(children) => {
                        if visited + next.len() + children.len() > MAX_NODES {
                            return Err(Error::corrupt(
                                manifest.uri(),
                                OrbaxError::Ocdbt(format!(
                                    "a B+tree of more than {MAX_NODES} nodes"
                                )),
                            ));
                        }
                        next.extend(children);
                    }
                    ocdbt::Node::Leaf(pairs) => {
                        for (key, value) in pairs {
                            let key = String::from_utf8(key).map_err(|_| {
                                Error::corrupt(
                                    uri(),
                                    OrbaxError::Ocdbt("a key that is not UTF-8".into()),
                                )
                            })?;
                            if let Value::Indirect { file, .. } = &value {
                                pin(dir, fetch, &mut files, [file.as_str()]).await?;
                            }
                            entries.insert(key, value);
                        }
                    }
                }
            }
            level = next;
        }
        Ok(Self::Ocdbt {
            dir: dir.clone(),
            entries,
            files,
        })
    }

    fn corrupt(&self, key: &str, why: String) -> Error {
        let dir = match self {
            Self::Ocdbt { dir, .. } | Self::Files { dir, .. } => dir,
        };
        Error::corrupt(dir.uri(), OrbaxError::Layout(format!("`{key}` {why}")))
    }

    /// The values of `keys` (`None` for a key that is not there), read together: one
    /// coalesced request per data file.
    async fn read_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        match self {
            Self::Ocdbt { entries, files, .. } => {
                let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
                let mut spans = Vec::new();
                for (i, key) in keys.iter().enumerate() {
                    match entries.get(key) {
                        None => {}
                        Some(Value::Inline(v)) => out[i] = Some(Bytes::copy_from_slice(v)),
                        Some(Value::Indirect {
                            file,
                            offset,
                            length,
                        }) => spans
                            .push((i, (file.as_str(), *offset..offset.saturating_add(*length)))),
                    }
                }
                let where_: Vec<(&str, Range<u64>)> =
                    spans.iter().map(|(_, s)| s.clone()).collect();
                for ((i, _), bytes) in spans.iter().zip(read_spans(files, &where_).await?) {
                    out[*i] = Some(bytes);
                }
                Ok(out)
            }
            Self::Files { .. } => try_join_all(keys.iter().map(|k| self.read(k))).await,
        }
    }

    /// The value of `key`, or `None` when there is none (a chunk never written).
    async fn read(&self, key: &str) -> Result<Option<Bytes>> {
        match self {
            Self::Ocdbt { .. } => Ok(self.read_many(&[key.to_owned()]).await?.pop().flatten()),
            Self::Files { dir, fetch } => {
                match read_whole(&dir.join(key), MAX_METADATA, "zarr chunk", fetch).await {
                    Ok((_, bytes)) => Ok(Some(bytes)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// Pins each data file of `names` not pinned yet (one HEAD each, together).
async fn pin<'a>(
    dir: &Location,
    fetch: &FetchOptions,
    files: &mut HashMap<String, Object>,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let mut missing: Vec<&str> = names
        .into_iter()
        .filter(|n| !files.contains_key(*n))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let pinned = try_join_all(missing.into_iter().map(|name| async move {
        let loc = dir.join(name);
        let info = crate::fetch::stat(&loc).await?;
        Ok::<_, Error>((
            name.to_owned(),
            Object::with_info(&loc, info, fetch.clone()),
        ))
    }))
    .await?;
    files.extend(pinned);
    Ok(())
}

/// The bytes of `spans` (data file, range), in order: one coalesced request per file.
async fn read_spans(
    files: &HashMap<String, Object>,
    spans: &[(&str, Range<u64>)],
) -> Result<Vec<Bytes>> {
    let mut by_file: BTreeMap<&str, Vec<(usize, Range<u64>)>> = BTreeMap::new();
    for (i, (file, range)) in spans.iter().enumerate() {
        by_file.entry(file).or_default().push((i, range.clone()));
    }
    let mut out = vec![Bytes::new(); spans.len()];
    let reads = by_file.into_iter().map(|(file, wanted)| {
        let object = files[file].clone();
        async move {
            let ranges: Vec<Range<u64>> = wanted.iter().map(|(_, r)| r.clone()).collect();
            let got = object.read_ranges(&ranges).await?;
            Ok::<_, Error>(
                wanted
                    .into_iter()
                    .map(|(i, _)| i)
                    .zip(got)
                    .collect::<Vec<_>>(),
            )
        }
    });
    for (i, bytes) in try_join_all(reads).await?.into_iter().flatten() {
        out[i] = bytes;
    }
    Ok(out)
}

/// A scalar leaf (`step`), read now: its one chunk, as a Python value.
async fn scalar(store: &Arc<Store>, name: &str, array: &Arc<Array>) -> Result<Node> {
    let t = Chunk::at(store, array, name, &[], Vec::new())
        .decode()
        .await?;
    let TensorData::Inline(inline) = &t.data else {
        unreachable!("chunks decode inline")
    };
    let bad = || store.corrupt(name, format!("is a scalar of {}", array.dtype));
    let b = |n: usize| -> Result<[u8; 8]> {
        let mut out = [0u8; 8];
        let bytes = inline.bytes.get(..n).ok_or_else(bad)?;
        if array.big_endian {
            out[..n].copy_from_slice(&bytes.iter().rev().copied().collect::<Vec<_>>());
        } else {
            out[..n].copy_from_slice(bytes);
        }
        Ok(out)
    };
    let leaf = match array.dtype {
        DType::BOOL => Leaf::Bool(b(1)?[0] != 0),
        DType::I8 => Leaf::Int(Int::Small(i64::from(b(1)?[0] as i8))),
        DType::U8 => Leaf::Int(Int::Small(i64::from(b(1)?[0]))),
        DType::I16 => Leaf::Int(Int::Small(i64::from(i16::from_le_bytes([
            b(2)?[0],
            b(2)?[1],
        ])))),
        DType::I32 => Leaf::Int(Int::Small(i64::from(i32::from_le_bytes(
            b(4)?[..4].try_into().expect("4"),
        )))),
        DType::U32 => Leaf::Int(Int::Small(i64::from(u32::from_le_bytes(
            b(4)?[..4].try_into().expect("4"),
        )))),
        DType::I64 => Leaf::Int(Int::Small(i64::from_le_bytes(b(8)?))),
        DType::F32 => Leaf::Float(f64::from(f32::from_le_bytes(
            b(4)?[..4].try_into().expect("4"),
        ))),
        DType::F64 => Leaf::Float(f64::from_le_bytes(b(8)?)),
        _ => return Ok(Node::from(t)),
    };
    Ok(Node::Leaf(leaf))
}

/// An array as a tensor of chunks, each located (read and decompressed) when needed.
fn tensor(store: &Arc<Store>, name: &str, array: &Arc<Array>) -> LazyTensor {
    let grid = array.grid();
    let mut boxes = Vec::new();
    let mut index = vec![0u64; grid.len()];
    if !grid.contains(&0) {
        loop {
            let offsets: Vec<u64> = index
                .iter()
                .zip(&array.chunks)
                .map(|(i, c)| i * c)
                .collect();
            let sizes: Vec<u64> = offsets
                .iter()
                .zip(&array.chunks)
                .zip(&array.shape)
                .map(|((o, c), s)| (*c).min(s - o))
                .collect();
            boxes.push(Arc::new(Piece {
                locate: Arc::new(Chunk::at(store, array, name, &offsets, sizes.clone())),
                offsets,
                sizes,
            }));
            // The next grid position, last dimension fastest.
            let mut d = grid.len();
            loop {
                if d == 0 {
                    break;
                }
                d -= 1;
                index[d] += 1;
                if index[d] < grid[d] {
                    break;
                }
                index[d] = 0;
            }
            if d == 0 && index.iter().all(|&i| i == 0) {
                break;
            }
        }
    }
    let rows = array.shape.first().copied().unwrap_or(1);
    LazyTensor {
        dtype: array.dtype,
        shape: array.shape.clone(),
        strides: Vec::new(),
        data: TensorData::Pieces(Arc::new(Pieces {
            boxes,
            rows: 0..rows,
        })),
        view: View::default(),
        quantized: None,
    }
}

/// One chunk of an array: read, decompressed and cropped to the array's edge when located.
#[derive(Clone)]
struct Chunk {
    store: Arc<Store>,
    array: Arc<Array>,
    /// The array's key prefix (`params.dense.kernel`).
    name: Arc<str>,
    key: String,
    sizes: Vec<u64>,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Chunk {
    /// The chunk of array `name` that starts at element `offsets` and holds `sizes` of it.
    fn at(
        store: &Arc<Store>,
        array: &Arc<Array>,
        name: &str,
        offsets: &[u64],
        sizes: Vec<u64>,
    ) -> Self {
        let index: Vec<u64> = offsets
            .iter()
            .zip(&array.chunks)
            .map(|(o, c)| o / c)
            .collect();
        Self {
            store: Arc::clone(store),
            array: Arc::clone(array),
            name: Arc::from(name),
            key: format!("{name}/{}", array.chunk_key(&index)),
            sizes,
        }
    }

    /// The chunk's elements, read and decoded.
    async fn decode(&self) -> Result<LazyTensor> {
        let raw = self.store.read(&self.key).await?;
        self.elements(raw)
    }

    /// The elements of `raw`, the stored chunk (`None` when never written: zeros, as Orbax
    /// writes every chunk and a fill value of `null` leaves the rest undefined).
    fn elements(&self, raw: Option<Bytes>) -> Result<LazyTensor> {
        let whole = self.array.chunk_bytes().ok_or_else(|| {
            self.store
                .corrupt(&self.key, "is a chunk too large to hold".into())
        })?;
        let bytes = match raw {
            None => Bytes::from(vec![0u8; whole as usize]),
            Some(raw) => self
                .array
                .decode(&raw, whole)
                .map_err(|why| self.store.corrupt(&self.key, why))?,
        };
        // An edge chunk is stored whole: its part inside the array is a strided view of it.
        let strides = if self.sizes == self.array.chunks {
            Vec::new()
        } else {
            contiguous_strides(&self.array.chunks)
        };
        Ok(LazyTensor {
            dtype: self.array.dtype,
            shape: self.sizes.clone(),
            strides,
            data: TensorData::Inline(Inline {
                bytes,
                big_endian: self.array.big_endian,
                origin: Arc::from(self.key.as_str()),
                checked: false,
            }),
            view: View::default(),
            quantized: None,
        })
    }
}

impl Locate for Chunk {
    fn describe(&self) -> String {
        let dir = match &*self.store {
            Store::Ocdbt { dir, .. } | Store::Files { dir, .. } => dir,
        };
        format!("{}: `{}`", dir.uri(), self.key)
    }

    // Not cached: what a chunk locates to is its elements, which the tree must not keep.
    fn locate(&self) -> BoxFuture<'_, Result<LazyTensor>> {
        Box::pin(self.decode())
    }

    // Chunks of one array are values of one database: read together, neighbours in a data
    // file come in one request; each is then decoded as a task of its own, so a large array
    // decodes on every worker.
    fn locate_group<'a>(
        &'a self,
        group: &'a [Arc<Piece>],
    ) -> Option<BoxFuture<'a, Result<Vec<LazyTensor>>>> {
        Some(Box::pin(async move {
            let chunks: Vec<Chunk> = group
                .iter()
                .map(|p| {
                    Chunk::at(
                        &self.store,
                        &self.array,
                        &self.name,
                        &p.offsets,
                        p.sizes.clone(),
                    )
                })
                .collect();
            let keys: Vec<String> = chunks.iter().map(|c| c.key.clone()).collect();
            let raws = self.store.read_many(&keys).await?;
            try_join_all(
                chunks
                    .into_iter()
                    .zip(raws)
                    .map(|(c, raw)| spawn(async move { c.elements(raw) })),
            )
            .await
        }))
    }
}

/// A pytree under construction: dicts keyed as saved, turned into lists where every key
/// indexes a sequence.
#[derive(Default)]
struct Build {
    children: IndexMap<String, (bool, Slot)>,
}

enum Slot {
    Leaf(Node),
    Inner(Build),
}

impl Build {
    fn insert(&mut self, keys: &[(String, bool)], node: Node) -> std::result::Result<(), String> {
        let ((key, seq), rest) = keys.split_first().ok_or("a leaf with no keys")?;
        if rest.is_empty() {
            if self
                .children
                .insert(key.clone(), (*seq, Slot::Leaf(node)))
                .is_some()
            {
                return Err(format!("two leaves at `{key}`"));
            }
            return Ok(());
        }
        let entry = self
            .children
            .entry(key.clone())
            .or_insert_with(|| (*seq, Slot::Inner(Build::default())));
        match &mut entry.1 {
            Slot::Inner(inner) => inner.insert(rest, node),
            Slot::Leaf(_) => Err(format!("`{key}` is a leaf and a container")),
        }
    }

    fn into_node(self) -> Node {
        let sequence = !self.children.is_empty()
            && self
                .children
                .iter()
                .all(|(k, (seq, _))| *seq && k.parse::<u64>().is_ok());
        if !sequence {
            return Node::Dict(self.into_dict());
        }
        let mut items: Vec<(u64, Node)> = self
            .children
            .into_iter()
            .map(|(k, (_, slot))| (k.parse().unwrap_or(u64::MAX), slot.into_node()))
            .collect();
        items.sort_by_key(|(i, _)| *i);
        Node::List(items.into_iter().map(|(_, n)| n).collect())
    }

    fn into_dict(self) -> Dict {
        self.children
            .into_iter()
            .map(|(k, (_, slot))| (k, slot.into_node()))
            .collect()
    }
}

impl Slot {
    fn into_node(self) -> Node {
        match self {
            Slot::Leaf(n) => n,
            Slot::Inner(b) => b.into_node(),
        }
    }
}
