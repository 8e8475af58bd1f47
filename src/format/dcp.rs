//! torch.distributed.checkpoint (DCP) directories, read lazily.
//!
//! A DCP checkpoint is a directory: `.metadata` (a pickle of `Metadata`: every item's type,
//! and for tensors their dtype, size and chunks; where each chunk or item is stored; and the
//! planner's flattening map) and `__<rank>_<n>.distcp` files, which concatenate complete
//! `torch.save` files, one per tensor chunk or non-tensor item.
//!
//! Opening one costs a LIST of the directory, one GET of `.metadata`, and one coalesced read of
//! the non-tensor items per data file. Each tensor becomes one logical [`LazyTensor`] assembled
//! from its chunks, which are located (their own zip directory and pickle) only when read;
//! [`LazyTensor::rows`] narrows a sharded tensor to the chunks a reader needs. Paths are those
//! of the state dict that was saved (`model/0.weight`), rebuilt from the planner's map.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use super::pickle::convert::{self, key_string};
use super::pickle::{self, Global, Heap, Id, Policy, Value};
use super::torch::{self, TorchFile, TorchOptions};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::location::Location;
use crate::tree::{Dict, LazyTensor, Leaf, Node, Piece, Pieces, StateTree};

/// The name of the metadata file.
pub const METADATA: &str = ".metadata";

/// The largest `.metadata` read.
pub const MAX_METADATA: u64 = 256 << 20;

/// Whether `location` names a DCP checkpoint's metadata file.
pub fn is_metadata(location: &Location) -> bool {
    location.path().filename() == Some(METADATA)
}

/// An open DCP checkpoint.
#[derive(Debug, Clone)]
pub struct DcpCheckpoint {
    tree: StateTree,
    metadata: BTreeMap<String, String>,
    files: usize,
}

impl DcpCheckpoint {
    /// Opens the DCP checkpoint in the directory `location` (or whose `.metadata` it names).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] without a `.metadata` (a checkpoint still being written has none),
    /// [`Error::Pickle`] for a metadata pickle that cannot be read, [`Error::Torch`] for
    /// metadata that does not fit together (a chunk with no stored location, a data file
    /// missing from the directory), and the reads' errors.
    pub async fn open(
        location: &Location,
        fetch: FetchOptions,
        options: TorchOptions,
    ) -> Result<Self> {
        let dir = if is_metadata(location) {
            location.parent()
        } else {
            location.clone()
        };
        let meta_loc = dir.join(METADATA);
        let (meta_object, data) =
            Object::open_prefix(&meta_loc, MAX_METADATA, fetch.clone()).await?;
        if meta_object.info().size > MAX_METADATA {
            return Err(Error::Torch {
                uri: meta_loc.uri(),
                problem: format!(
                    "{} bytes of metadata is more than the {MAX_METADATA}-byte limit",
                    meta_object.info().size
                ),
            });
        }
        let torch_err = |problem: String| Error::Torch {
            uri: meta_loc.uri(),
            problem,
        };
        let policy = Policy {
            strict: options.strict,
            known: |g| is_known(g) || torch::is_known(g) || convert::is_known(g),
        };
        let heap = pickle::parse(&data, &policy).map_err(|problem| Error::Pickle {
            uri: meta_loc.uri(),
            record: METADATA.into(),
            problem,
        })?;
        let meta = Metadata::read(&heap).map_err(torch_err)?;
        let files = Files::list(&dir, &meta, fetch).await?;

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
                    let tensor = meta.tensor(fqn, t, &files).map_err(torch_err)?;
                    insert(&mut root, &keys, Node::Leaf(Leaf::Tensor(tensor)), count)
                        .map_err(torch_err)?;
                }
                Item::Bytes => {
                    let info = meta
                        .stored(fqn, None)
                        .ok_or_else(|| torch_err(format!("item `{fqn}` is stored nowhere")))?;
                    items.push((keys, info));
                }
            }
        }
        for (keys, node) in read_items(&items, &files, options).await? {
            insert(&mut root, &keys, node, count).map_err(torch_err)?;
        }
        let mut metadata = BTreeMap::new();
        if let Some(version) = &meta.version {
            metadata.insert("dcp_version".into(), version.clone());
        }
        Ok(Self {
            tree: StateTree::from_dict(root),
            metadata,
            files: files.objects.len(),
        })
    }

    /// The tree, with the saved state dict's nesting.
    pub fn tree(&self) -> &StateTree {
        &self.tree
    }

    /// The tree, taken.
    pub fn into_tree(self) -> StateTree {
        self.tree
    }

    /// What the metadata says about the checkpoint (its DCP version).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// How many data files it has.
    pub fn file_count(&self) -> usize {
        self.files
    }
}

/// Whether `global` is one of the DCP classes the reader interprets.
pub fn is_known(global: &Global) -> bool {
    matches!(
        global.module.as_str(),
        "torch.distributed.checkpoint.metadata" | "torch.distributed.checkpoint.filesystem"
    ) || global.is("torch.serialization", "_get_layout")
}

/// The box of a chunk as a lazy tensor: its `torch.save` file's directory and pickle read
/// (once; later reads reuse it).
///
/// # Errors
///
/// As [`TorchFile::open_embedded`], and [`Error::Torch`] when the file holds no tensor.
pub async fn resolve(piece: &Piece) -> Result<LazyTensor> {
    let tensor = piece
        .resolved
        .get_or_try_init(|| async {
            let file = TorchFile::open_embedded(
                &piece.object,
                piece.range.clone(),
                TorchOptions::default(),
            )
            .await?;
            file.tree()
                .tensors()
                .next()
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::Torch {
                    uri: piece.object.location().uri(),
                    problem: format!(
                        "the chunk at bytes {}..{} holds no tensor",
                        piece.range.start, piece.range.end
                    ),
                })
        })
        .await?;
    Ok(tensor.clone())
}

/// A step of a flattened key path: a dict key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Str(String),
    Index(usize),
}

/// What `.metadata` says, read out of the pickle heap.
struct Metadata {
    items: Vec<(String, Item)>,
    planner: HashMap<String, Vec<Key>>,
    storage: HashMap<(String, Option<Vec<u64>>), StorageInfo>,
    version: Option<String>,
}

enum Item {
    Tensor(TensorMeta),
    Bytes,
}

struct TensorMeta {
    dtype: DType,
    size: Vec<u64>,
    chunks: Vec<(Vec<u64>, Vec<u64>)>,
}

#[derive(Debug, Clone)]
struct StorageInfo {
    path: String,
    range: Range<u64>,
}

/// The fields of an object that `BUILD` gave a dict (a dataclass), by name.
fn fields(heap: &Heap, id: Id) -> Option<HashMap<&str, Id>> {
    let Value::Call(call) = heap.get(id) else {
        return None;
    };
    let state = match heap.get(call.state?) {
        Value::Dict(pairs) => pairs,
        // (dict, slots) for classes with __slots__.
        Value::Tuple(t) => match t.first().map(|&d| heap.get(d)) {
            Some(Value::Dict(pairs)) => pairs,
            _ => return None,
        },
        _ => return None,
    };
    Some(
        state
            .iter()
            .filter_map(|&(k, v)| match heap.get(k) {
                Value::Str(k) => Some((k.as_str(), v)),
                _ => None,
            })
            .collect(),
    )
}

/// `torch.Size((a, b))` or a tuple of ints.
fn ints(heap: &Heap, id: Id) -> Option<Vec<u64>> {
    let items = match heap.get(id) {
        Value::Call(call) => heap.items(*heap.items(call.args)?.first()?)?,
        _ => heap.items(id)?,
    };
    items
        .iter()
        .map(|&i| match heap.get(i) {
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        })
        .collect()
}

fn string(heap: &Heap, id: Id) -> Option<String> {
    match heap.get(id) {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(heap: &Heap, id: Id) -> Option<u64> {
    match heap.get(id) {
        Value::Int(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

impl Metadata {
    fn read(heap: &Heap) -> Result<Self, String> {
        let root = fields(heap, heap.root()).ok_or("`.metadata` does not hold a Metadata")?;
        let Some(Value::Dict(sd)) = root.get("state_dict_metadata").map(|&i| heap.get(i)) else {
            return Err("`.metadata` has no state_dict_metadata".into());
        };
        let mut items = Vec::with_capacity(sd.len());
        for &(k, v) in sd {
            let fqn = key_string(heap, k, 0);
            let class = match heap.get(v) {
                Value::Call(c) => heap.global(c.func).map(|g| g.name.as_str()),
                _ => None,
            };
            let item = match class {
                Some("TensorStorageMetadata") => Item::Tensor(
                    tensor_meta(heap, v)
                        .ok_or_else(|| format!("item `{fqn}`: bad tensor metadata"))?,
                ),
                Some("BytesStorageMetadata") => Item::Bytes,
                _ => return Err(format!("item `{fqn}`: unknown storage metadata")),
            };
            items.push((fqn, item));
        }
        let mut planner = HashMap::new();
        if let Some(Value::Dict(pairs)) = root.get("planner_data").map(|&i| heap.get(i)) {
            for &(k, v) in pairs {
                let Some(path) = heap.items(v) else { continue };
                let keys = path
                    .iter()
                    .map(|&p| match heap.get(p) {
                        Value::Int(i) => usize::try_from(*i).ok().map(Key::Index),
                        Value::Str(s) => Some(Key::Str(s.clone())),
                        _ => None,
                    })
                    .collect::<Option<Vec<Key>>>();
                if let Some(keys) = keys.filter(|k| !k.is_empty()) {
                    planner.insert(key_string(heap, k, 0), keys);
                }
            }
        }
        let mut storage = HashMap::new();
        if let Some(Value::Dict(pairs)) = root.get("storage_data").map(|&i| heap.get(i)) {
            for &(k, v) in pairs {
                let index = fields(heap, k).ok_or("a storage key is not a MetadataIndex")?;
                let info = fields(heap, v).ok_or("a storage value is not a _StorageInfo")?;
                let fqn = index.get("fqn").and_then(|&f| string(heap, f));
                let offset = index.get("offset").and_then(|&o| ints(heap, o));
                let path = info.get("relative_path").and_then(|&p| string(heap, p));
                let start = info.get("offset").and_then(|&o| int(heap, o));
                let len = info.get("length").and_then(|&l| int(heap, l));
                let (Some(fqn), Some(path), Some(start), Some(len)) = (fqn, path, start, len)
                else {
                    return Err("a storage entry without fqn, path, offset or length".into());
                };
                let end = start.checked_add(len).ok_or("a storage range overflows")?;
                storage.insert(
                    (fqn, offset),
                    StorageInfo {
                        path,
                        range: start..end,
                    },
                );
            }
        }
        let version = root.get("version").and_then(|&v| string(heap, v));
        Ok(Self {
            items,
            planner,
            storage,
            version,
        })
    }

    /// Where the item `fqn` (a chunk at `offsets`, or a non-tensor item) is stored.
    fn stored(&self, fqn: &str, offsets: Option<&[u64]>) -> Option<&StorageInfo> {
        self.storage
            .get(&(fqn.to_owned(), offsets.map(<[u64]>::to_vec)))
    }

    fn tensor(&self, fqn: &str, t: &TensorMeta, files: &Files) -> Result<LazyTensor, String> {
        let mut boxes = Vec::with_capacity(t.chunks.len());
        for (offsets, sizes) in &t.chunks {
            let info = self.stored(fqn, Some(offsets)).ok_or_else(|| {
                format!("tensor `{fqn}`: the chunk at {offsets:?} is stored nowhere")
            })?;
            let object = files.get(&info.path).ok_or_else(|| {
                format!("tensor `{fqn}`: its data file `{}` is missing", info.path)
            })?;
            if info.range.end > object.info().size {
                return Err(format!(
                    "tensor `{fqn}`: its chunk at bytes {:?} runs past the end of `{}`",
                    info.range, info.path
                ));
            }
            boxes.push(Arc::new(Piece {
                offsets: offsets.clone(),
                sizes: sizes.clone(),
                object: object.clone(),
                range: info.range.clone(),
                resolved: Default::default(),
            }));
        }
        let rows = 0..t.size.first().copied().unwrap_or(1);
        Ok(LazyTensor {
            dtype: t.dtype,
            shape: t.size.clone(),
            strides: Vec::new(),
            source: None,
            pieces: Some(Arc::new(Pieces { boxes, rows })),
        })
    }
}

fn tensor_meta(heap: &Heap, id: Id) -> Option<TensorMeta> {
    let f = fields(heap, id)?;
    let Value::Call(props) = heap.get(*f.get("properties")?) else {
        return None;
    };
    // TensorProperties' state is (dtype, layout, requires_grad, memory_format, pin_memory).
    let dtype = match heap.get(props.state?) {
        Value::Tuple(t) => heap.global(*t.first()?)?,
        Value::Dict(_) => heap.global(*fields(heap, *f.get("properties")?)?.get("dtype")?)?,
        _ => return None,
    };
    let dtype = torch::dtype_of(dtype)?;
    let size = ints(heap, *f.get("size")?)?;
    let chunks = heap
        .items(*f.get("chunks")?)?
        .iter()
        .map(|&c| {
            let c = fields(heap, c)?;
            Some((
                ints(heap, *c.get("offsets")?)?,
                ints(heap, *c.get("sizes")?)?,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(TensorMeta {
        dtype,
        size,
        chunks,
    })
}

/// The checkpoint's data files, pinned by one LIST (or, on stores that cannot list, a HEAD
/// each).
struct Files {
    objects: HashMap<String, Object>,
}

impl Files {
    async fn list(dir: &Location, meta: &Metadata, fetch: FetchOptions) -> Result<Self> {
        let names = meta.storage.values().map(|s| s.path.as_str());
        Ok(Self {
            objects: Object::open_all(dir, names, fetch).await?,
        })
    }

    fn get(&self, name: &str) -> Option<&Object> {
        self.objects.get(name)
    }
}

/// The non-tensor items, each a small `torch.save` file: read with one coalesced request per
/// data file, then unpickled in memory.
async fn read_items(
    items: &[(Vec<Key>, &StorageInfo)],
    files: &Files,
    options: TorchOptions,
) -> Result<Vec<(Vec<Key>, Node)>> {
    let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, info)) in items.iter().enumerate() {
        by_file.entry(info.path.as_str()).or_default().push(i);
    }
    let mut out = Vec::with_capacity(items.len());
    for (path, indices) in by_file {
        let object = files.get(path).ok_or_else(|| Error::Torch {
            uri: path.to_owned(),
            problem: format!("the data file `{path}` is missing from the checkpoint"),
        })?;
        let ranges: Vec<Range<u64>> = indices.iter().map(|&i| items[i].1.range.clone()).collect();
        let datas = object.read_ranges(&ranges).await?;
        for (&i, data) in indices.iter().zip(datas) {
            let (keys, info) = &items[i];
            let name = format!("{path}@{}", info.range.start);
            let len = data.len() as u64;
            let inline = Object::inline(&name, data);
            let file = TorchFile::open_embedded(&inline, 0..len, options).await?;
            let tree = file.into_tree();
            let node = match tree.root().get("") {
                Some(node) if tree.root().len() == 1 => node.clone(),
                _ => Node::Dict(tree.root().clone()),
            };
            out.push((keys.clone(), node));
        }
    }
    Ok(out)
}

/// The longest key path accepted from the planner's map (nesting, not length of names).
const MAX_KEY_DEPTH: usize = 128;

/// Puts `node` at `keys`, making dicts and lists on the way. A list index may not exceed
/// `items` (the checkpoint's item count): a lying index cannot make a huge list of holes.
fn insert(root: &mut Dict, keys: &[Key], node: Node, items: usize) -> Result<(), String> {
    if keys.len() > MAX_KEY_DEPTH {
        return Err(format!(
            "a key path of {} levels (more than {MAX_KEY_DEPTH})",
            keys.len()
        ));
    }
    let Some((Key::Str(first), rest)) = keys.split_first() else {
        return Err("a key path that does not start with a name".into());
    };
    let slot = root
        .entry(first.clone())
        .or_insert_with(|| empty_for(rest.first()));
    place(slot, rest, node, items)
}

fn empty_for(key: Option<&Key>) -> Node {
    match key {
        Some(Key::Index(_)) => Node::List(Vec::new()),
        _ => Node::Dict(Dict::new()),
    }
}

fn place(slot: &mut Node, keys: &[Key], node: Node, items: usize) -> Result<(), String> {
    let Some((key, rest)) = keys.split_first() else {
        *slot = node;
        return Ok(());
    };
    let next = match (slot, key) {
        (Node::Dict(d), Key::Str(k)) => d
            .entry(k.clone())
            .or_insert_with(|| empty_for(rest.first())),
        (Node::List(l), Key::Index(i)) => {
            if *i >= l.len() {
                if *i >= items {
                    return Err(format!(
                        "list index {i} in a checkpoint of {items} items (a lying key path)"
                    ));
                }
                l.resize(*i + 1, Node::Leaf(Leaf::None));
            }
            let at = &mut l[*i];
            if matches!(at, Node::Leaf(Leaf::None)) {
                *at = empty_for(rest.first());
            }
            at
        }
        (Node::Dict(d), Key::Index(i)) => d
            .entry(i.to_string())
            .or_insert_with(|| empty_for(rest.first())),
        _ => return Err("two items claim the same path".into()),
    };
    place(next, rest, node, items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_rebuild_dicts_and_lists_and_lying_ones_are_refused() {
        let mut root = Dict::new();
        let leaf = |v: i64| Node::Leaf(Leaf::Int(v.into()));
        let path = |keys: &[&str]| -> Vec<Key> {
            keys.iter()
                .map(|k| k.parse().map_or_else(|_| Key::Str((*k).into()), Key::Index))
                .collect()
        };
        insert(
            &mut root,
            &path(&["optim", "groups", "1", "lr"]),
            leaf(2),
            4,
        )
        .unwrap();
        insert(
            &mut root,
            &path(&["optim", "groups", "0", "lr"]),
            leaf(1),
            4,
        )
        .unwrap();
        let tree = StateTree::from_dict(root.clone());
        assert!(matches!(
            tree.get("optim/groups/0/lr"),
            Some(Node::Leaf(Leaf::Int(_)))
        ));
        assert!(matches!(tree.get("optim/groups"), Some(Node::List(l)) if l.len() == 2));

        let err = insert(
            &mut root,
            &path(&["optim", "groups", "4000000000"]),
            leaf(3),
            4,
        );
        assert!(err.unwrap_err().contains("lying key path"));
        let deep: Vec<Key> = (0..200).map(|i| Key::Str(i.to_string())).collect();
        let err = insert(&mut root, &deep, leaf(4), 4).unwrap_err();
        assert!(err.contains("200 levels"), "{err}");
        let err = insert(
            &mut root,
            &path(&["optim", "groups", "0", "lr", "x"]),
            leaf(5),
            4,
        );
        assert!(err.unwrap_err().contains("claim the same path"));
    }
}
