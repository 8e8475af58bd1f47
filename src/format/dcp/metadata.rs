//! What a DCP `.metadata` says, read out of its pickle: every item's type (tensors with their
//! dtype, size and chunks), where each chunk or item is stored, and the planner's map from
//! flattened names back to the saved state dict's nesting. Pure.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::dtype::DType;
use crate::format::pickle::convert::{Budget, key_string};
use crate::format::pickle::{Global, Heap, Id, Value};
use crate::format::torch::codec::{dtype_of, ints};
use crate::tree::{Dict, Leaf, List, Node};

/// Whether `global` is one of the DCP classes the reader interprets.
pub(crate) fn is_known(global: &Global) -> bool {
    matches!(
        global.module.as_str(),
        "torch.distributed.checkpoint.metadata" | "torch.distributed.checkpoint.filesystem"
    ) || global.is("torch.serialization", "_get_layout")
}

/// A step of a flattened key path: a dict key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Str(String),
    Index(usize),
}

/// What `.metadata` says, read out of the pickle heap.
pub(crate) struct Metadata {
    pub items: Vec<(String, Item)>,
    pub planner: HashMap<String, Vec<Key>>,
    /// Where each item's bytes are, by its fully qualified name.
    pub storage: HashMap<String, Stored>,
    /// The data files the items are stored in, each once.
    pub files: Vec<Arc<str>>,
    pub version: Option<String>,
}

pub(crate) enum Item {
    Tensor(TensorMeta),
    Bytes,
}

pub(crate) struct TensorMeta {
    pub dtype: DType,
    pub size: Vec<u64>,
    pub chunks: Vec<(Vec<u64>, Vec<u64>)>,
}

/// Where one item's bytes are: whole (an item that is not a tensor), or chunk by chunk (a
/// tensor's, sorted by their offsets: most tensors have one chunk, and a map each would cost
/// more than the chunk).
#[derive(Default)]
pub(crate) struct Stored {
    pub whole: Option<StorageInfo>,
    pub chunks: Vec<(Vec<u64>, StorageInfo)>,
}

impl Stored {
    /// Sorts the chunks by offsets, keeping the last entry given for the same offsets (as a
    /// dict would).
    fn seal(&mut self) {
        self.chunks.reverse();
        self.chunks.sort_by(|a, b| a.0.cmp(&b.0));
        self.chunks.dedup_by(|later, first| later.0 == first.0);
        self.chunks.shrink_to_fit();
    }

    fn chunk(&self, offsets: &[u64]) -> Option<&StorageInfo> {
        let at = self
            .chunks
            .binary_search_by(|(o, _)| o.as_slice().cmp(offsets))
            .ok()?;
        Some(&self.chunks[at].1)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StorageInfo {
    /// The data file, shared by every item stored in it.
    pub path: Arc<str>,
    pub range: Range<u64>,
    /// The stream transforms the item was written through, outermost first
    /// (`stream.zstd/1`).
    pub transforms: Vec<String>,
}

/// The fields of an object that `BUILD` gave a dict (a dataclass), looked up by name where
/// the pickle has them: a `.metadata` holds five such objects per tensor, too many to index.
struct Fields<'h> {
    heap: &'h Heap,
    pairs: &'h [(Id, Id)],
}

impl<'h> Fields<'h> {
    /// The field `name` (the last one set, as in a dict).
    fn get(&self, name: &str) -> Option<&'h Id> {
        let heap = self.heap;
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| matches!(heap.get(*k), Value::Str(k) if k == name))
            .map(|(_, v)| v)
    }
}

/// The fields of the object `id`, if `BUILD` gave it a dict.
fn fields(heap: &Heap, id: Id) -> Option<Fields<'_>> {
    let Value::Call(call) = heap.get(id) else {
        return None;
    };
    let pairs = match heap.get(call.state?) {
        Value::Dict(pairs) => pairs,
        // (dict, slots) for classes with __slots__.
        Value::Tuple(t) => match t.first().map(|&d| heap.get(d)) {
            Some(Value::Dict(pairs)) => pairs,
            _ => return None,
        },
        _ => return None,
    };
    Some(Fields { heap, pairs })
}

/// The string `id`, as the heap holds it.
fn str_at(heap: &Heap, id: Id) -> Option<&str> {
    match heap.get(id) {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn string(heap: &Heap, id: Id, budget: &mut Budget) -> Result<Option<String>, String> {
    match heap.get(id) {
        Value::Str(s) => budget.string(s).map(Some),
        _ => Ok(None),
    }
}

fn int(heap: &Heap, id: Id) -> Option<u64> {
    match heap.get(id) {
        Value::Int(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

impl Metadata {
    /// Reads the metadata out of `heap`, building no more than the heap's size justifies.
    pub(crate) fn read(heap: &Heap) -> Result<Self, String> {
        let budget = &mut Budget::for_heap(heap);
        let root = fields(heap, heap.root()).ok_or("`.metadata` does not hold a Metadata")?;
        let Some(Value::Dict(sd)) = root.get("state_dict_metadata").map(|&i| heap.get(i)) else {
            return Err("`.metadata` has no state_dict_metadata".into());
        };
        let mut items = Vec::with_capacity(sd.len());
        for &(k, v) in sd {
            budget.node()?;
            let fqn = key_string(heap, k, budget)?;
            let class = match heap.get(v) {
                Value::Call(c) => heap.global(c.func).map(|g| g.name.as_str()),
                _ => None,
            };
            let item = match class {
                Some("TensorStorageMetadata") => Item::Tensor(
                    tensor_meta(heap, v, budget)?
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
                if path.is_empty() || path.len() > MAX_KEY_DEPTH {
                    continue;
                }
                let mut keys = Vec::with_capacity(path.len());
                for &p in path {
                    budget.node()?;
                    keys.push(match heap.get(p) {
                        Value::Int(i) => usize::try_from(*i).ok().map(Key::Index),
                        Value::Str(s) => Some(Key::Str(budget.string(s)?)),
                        _ => None,
                    });
                }
                if let Some(keys) = keys.into_iter().collect::<Option<Vec<Key>>>() {
                    planner.insert(key_string(heap, k, budget)?, keys);
                }
            }
        }
        let mut storage: HashMap<String, Stored> = HashMap::new();
        // A data file's name comes once per chunk stored in it: built once.
        let mut paths: HashMap<&str, Arc<str>> = HashMap::new();
        if let Some(Value::Dict(pairs)) = root.get("storage_data").map(|&i| heap.get(i)) {
            for &(k, v) in pairs {
                budget.node()?;
                let index = fields(heap, k).ok_or("a storage key is not a MetadataIndex")?;
                let info = fields(heap, v).ok_or("a storage value is not a _StorageInfo")?;
                let fqn = index.get("fqn").and_then(|&f| str_at(heap, f));
                let offset = index.get("offset").and_then(|&o| ints(heap, o));
                let path = match info.get("relative_path").and_then(|&p| str_at(heap, p)) {
                    Some(p) => match paths.get(p) {
                        Some(shared) => Some(Arc::clone(shared)),
                        None => {
                            let shared: Arc<str> = budget.string(p)?.into();
                            paths.insert(p, Arc::clone(&shared));
                            Some(shared)
                        }
                    },
                    None => None,
                };
                let start = info.get("offset").and_then(|&o| int(heap, o));
                let len = info.get("length").and_then(|&l| int(heap, l));
                let (Some(fqn), Some(path), Some(start), Some(len)) = (fqn, path, start, len)
                else {
                    return Err("a storage entry without fqn, path, offset or length".into());
                };
                let end = start.checked_add(len).ok_or("a storage range overflows")?;
                let descriptors = info.get("transform_descriptors").copied();
                let transforms = match descriptors.map(|t| (heap.get(t), heap.items(t))) {
                    None | Some((Value::None, _)) => Vec::new(),
                    Some((_, Some(items))) => items
                        .iter()
                        .map(|&d| {
                            string(heap, d, budget)?
                                .ok_or_else(|| "a transform that is not a name".to_owned())
                        })
                        .collect::<Result<_, String>>()?,
                    Some(_) => return Err("transform descriptors that are not a list".into()),
                };
                let info = StorageInfo {
                    path,
                    range: start..end,
                    transforms,
                };
                let stored = match storage.get_mut(fqn) {
                    Some(stored) => stored,
                    None => storage.entry(budget.string(fqn)?).or_default(),
                };
                match offset {
                    Some(offsets) => {
                        if stored.chunks.is_empty() {
                            // Room for one: Vec's first growth would take four.
                            stored.chunks.reserve_exact(1);
                        }
                        stored.chunks.push((offsets, info));
                    }
                    None => stored.whole = Some(info),
                }
            }
        }
        storage.values_mut().for_each(Stored::seal);
        let files = paths.into_values().collect();
        let version = match root.get("version") {
            Some(&v) => string(heap, v, budget)?,
            None => None,
        };
        Ok(Self {
            items,
            planner,
            storage,
            files,
            version,
        })
    }

    /// Where the item `fqn` (a chunk at `offsets`, or a non-tensor item) is stored.
    pub(crate) fn stored(&self, fqn: &str, offsets: Option<&[u64]>) -> Option<&StorageInfo> {
        let stored = self.storage.get(fqn)?;
        match offsets {
            Some(offsets) => stored.chunk(offsets),
            None => stored.whole.as_ref(),
        }
    }
}

/// A `TensorStorageMetadata`: `None` if it is not one; an error if its chunks, shared with
/// other tensors, spend the budget.
fn tensor_meta(heap: &Heap, id: Id, budget: &mut Budget) -> Result<Option<TensorMeta>, String> {
    let Some(meta) = read_tensor_meta(heap, id) else {
        return Ok(None);
    };
    for _ in 0..meta.len() {
        budget.node()?;
    }
    Ok(meta.into_meta(heap))
}

/// A tensor's metadata with its chunk list not yet read, so that the chunks can be paid for
/// first.
struct Unread<'h> {
    dtype: DType,
    size: Vec<u64>,
    chunks: &'h [Id],
}

impl Unread<'_> {
    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn into_meta(self, heap: &Heap) -> Option<TensorMeta> {
        let chunks = self
            .chunks
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
            dtype: self.dtype,
            size: self.size,
            chunks,
        })
    }
}

fn read_tensor_meta(heap: &Heap, id: Id) -> Option<Unread<'_>> {
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
    Some(Unread {
        dtype: dtype_of(dtype)?,
        size: ints(heap, *f.get("size")?)?,
        chunks: heap.items(*f.get("chunks")?)?,
    })
}

/// The longest key path accepted from the planner's map (nesting, not length of names).
const MAX_KEY_DEPTH: usize = 128;

/// Puts `node` at `keys`, making dicts and lists on the way. A list index may not exceed
/// `items` (the checkpoint's item count): a lying index cannot make a huge list of holes.
pub(crate) fn insert(
    root: &mut Dict,
    keys: &[Key],
    node: Node,
    items: usize,
) -> Result<(), String> {
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
        Some(Key::Index(_)) => Node::List(List::default()),
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
    use crate::tree::StateTree;

    #[test]
    fn chunks_are_found_by_offsets_and_the_last_entry_for_the_same_offsets_wins() {
        let info = |path: &str, start: u64| StorageInfo {
            path: path.into(),
            range: start..start + 1,
            transforms: Vec::new(),
        };
        let mut stored = Stored::default();
        for (offsets, at) in [
            (vec![4, 0], 1),
            (vec![0, 0], 2),
            (vec![4, 0], 3),
            (vec![2, 0], 4),
        ] {
            stored.chunks.push((offsets, info("f", at)));
        }
        stored.seal();
        assert_eq!(stored.chunks.len(), 3);
        assert_eq!(stored.chunk(&[0, 0]).unwrap().range.start, 2);
        assert_eq!(stored.chunk(&[2, 0]).unwrap().range.start, 4);
        assert_eq!(stored.chunk(&[4, 0]).unwrap().range.start, 3);
        assert!(stored.chunk(&[1, 0]).is_none());
    }

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
