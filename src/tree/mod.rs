//! The state tree every reader produces: nested ordered dicts and lists whose leaves are
//! scalars, strings, bytes, inert opaque objects, or [`LazyTensor`]s that know where their
//! bytes are but have not fetched them.
//!
//! Paths join keys with `/` (`state_dict/net.0.weight`, `optimizer_states/0/state/3/exp_avg`);
//! list indices are numbers, and a key holding `/` is escaped (see [`path`]).
//!
//! ```
//! use ckptio::{Leaf, Node, StateTree};
//!
//! let mut tree = StateTree::new();
//! tree.insert("state/model/layer1.weights", Node::Leaf(Leaf::Int(1.into()))).unwrap();
//! tree.insert("state/model/layer2.weights", Node::Leaf(Leaf::Int(2.into()))).unwrap();
//! tree.insert("state/epoch", Node::Leaf(Leaf::Int(3.into()))).unwrap();
//! let kept = tree.ignore(&["state/model/layer1*"]).unwrap();
//! let paths: Vec<String> = kept.leaves().map(|(p, _)| p).collect();
//! assert_eq!(paths, ["state/model/layer2.weights", "state/epoch"]);
//! ```

pub(crate) mod cover;
mod nodes;
pub mod path;
mod select;
mod tensor;

use std::fmt;

pub use nodes::{Dict, KeyKind, List};
pub(crate) use select::globset;
pub use select::{GlobError, Mismatch, Report};
pub use tensor::{
    Anchor, BlockScheme, ByteRange, Check, Checksum, Inline, LazyTensor, Locate, MAX_DIMS, Piece,
    Pieces, Quantized, Source, Tensor, TensorData, Unreadable, View, contiguous_strides,
    strided_extent,
};

/// A nested checkpoint: the root is a dict.
#[derive(Debug, Clone, Default)]
pub struct StateTree {
    root: Dict,
}

/// One node of a tree.
#[derive(Debug, Clone)]
pub enum Node {
    /// Ordered string keys.
    Dict(Dict),
    /// A list or tuple.
    List(List),
    /// Anything else.
    Leaf(Leaf),
}

/// A value at the end of a path.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// Python's `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer, however large.
    Int(Int),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(bytes::Bytes),
    /// A tensor, not fetched yet (boxed, so that the many scalar leaves stay small).
    Tensor(Box<LazyTensor>),
    /// An object ckptio does not interpret, kept inert.
    Opaque(Box<Opaque>),
}

impl From<Leaf> for Node {
    fn from(leaf: Leaf) -> Self {
        Self::Leaf(leaf)
    }
}

impl From<LazyTensor> for Node {
    fn from(tensor: LazyTensor) -> Self {
        Self::Leaf(Leaf::Tensor(Box::new(tensor)))
    }
}

impl From<Opaque> for Node {
    fn from(opaque: Opaque) -> Self {
        Self::Leaf(Leaf::Opaque(Box::new(opaque)))
    }
}

/// An integer kept exactly: machine-sized when it fits, decimal digits when it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Int {
    /// Fits in 64 bits.
    Small(i64),
    /// Decimal digits, with a leading `-` when negative.
    Big(String),
}

impl From<i64> for Int {
    fn from(v: i64) -> Self {
        Self::Small(v)
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Small(v) => write!(f, "{v}"),
            Self::Big(digits) => f.write_str(digits),
        }
    }
}

/// An object of a class ckptio does not know (from a pickle, say): its class and the data it
/// was built from, never executed.
#[derive(Debug, Clone)]
pub struct Opaque {
    /// The class's module.
    pub module: String,
    /// The class's name.
    pub name: String,
    /// Constructor arguments.
    pub args: Vec<Node>,
    /// Constructor keyword arguments (a dict), when the object was built with them.
    pub kwargs: Option<Box<Node>>,
    /// State set after construction, if any.
    pub state: Option<Box<Node>>,
}

/// A path that does not fit the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path `{path}`: {reason}")]
pub struct PathError {
    /// The path.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl StateTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree whose root is `root`.
    pub fn from_dict(root: Dict) -> Self {
        Self { root }
    }

    /// The root dict.
    pub fn root(&self) -> &Dict {
        &self.root
    }

    /// The root dict, taken out of the tree.
    pub fn into_root(self) -> Dict {
        self.root
    }

    /// Puts `node` at `path`, creating the dicts on the way.
    ///
    /// # Errors
    ///
    /// [`PathError`] when the path is empty or runs through a leaf or a list.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), PathError> {
        let bad = |reason: &str| PathError {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let keys: Vec<String> = path::segments(path).map(path::unescape).collect();
        let (last, parents) = keys.split_last().ok_or_else(|| bad("empty path"))?;
        let mut dict = &mut self.root;
        for key in parents {
            let next = dict
                .entry(key.clone())
                .or_insert_with(|| Node::Dict(Dict::new()));
            dict = match next {
                Node::Dict(d) => d,
                _ => return Err(bad(&format!("`{key}` is not a dict"))),
            };
        }
        dict.insert(last.clone(), node);
        Ok(())
    }

    /// Takes the node at `path` out of the tree (a list item becomes `None`, so the others keep
    /// their indices).
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        let keys: Vec<String> = path::segments(path).map(path::unescape).collect();
        let (last, parents) = keys.split_last()?;
        if parents.is_empty() {
            return self.root.shift_remove(last);
        }
        let mut node = self.root.get_mut(&parents[0])?;
        for key in &parents[1..] {
            node = match node {
                Node::Dict(d) => d.get_mut(key)?,
                Node::List(items) => items.get_mut(key.parse::<usize>().ok()?)?,
                Node::Leaf(_) => return None,
            };
        }
        match node {
            Node::Dict(d) => d.shift_remove(last),
            Node::List(items) => {
                let item = items.get_mut(last.parse::<usize>().ok()?)?;
                Some(std::mem::replace(item, Node::Leaf(Leaf::None)))
            }
            Node::Leaf(_) => None,
        }
    }

    /// The node at `path` (the root dict for an empty path is not a node: `None`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut segments = path::segments(path);
        let first = path::unescape(segments.next()?);
        let mut node = self.root.get(&first)?;
        for segment in segments {
            node = match node {
                Node::Dict(d) => d.get(&path::unescape(segment))?,
                Node::List(items) => items.get(segment.parse::<usize>().ok()?)?,
                Node::Leaf(_) => return None,
            };
        }
        Some(node)
    }

    /// The tensor at `path`, if that is a tensor.
    pub fn tensor(&self, path: &str) -> Option<&LazyTensor> {
        match self.get(path)? {
            Node::Leaf(Leaf::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// The tree below `path`, as a tree of its own (`state_dict` for the weights alone).
    pub fn subtree(&self, path: &str) -> Option<StateTree> {
        match self.get(path)? {
            Node::Dict(d) => Some(StateTree::from_dict(d.clone())),
            _ => None,
        }
    }

    /// Every leaf with its path, depth first, in order.
    pub fn leaves(&self) -> impl Iterator<Item = (String, &Leaf)> {
        let mut out = Vec::new();
        for (key, node) in &self.root {
            collect_leaves(path::escape(key), node, &mut out);
        }
        out.into_iter()
    }

    /// Every tensor with its path, in tree order.
    pub fn tensors(&self) -> impl Iterator<Item = (String, &LazyTensor)> {
        self.leaves().filter_map(|(p, leaf)| match leaf {
            Leaf::Tensor(t) => Some((p, &**t)),
            _ => None,
        })
    }

    /// Calls `f` with every leaf and its path, depth first, in order, building no list: one
    /// path buffer serves every leaf.
    ///
    /// ```
    /// use ckptio::{Leaf, Node, StateTree};
    ///
    /// let mut tree = StateTree::new();
    /// tree.insert("a/b", Node::Leaf(Leaf::Int(1.into()))).unwrap();
    /// tree.insert("c", Node::Leaf(Leaf::None)).unwrap();
    /// let mut paths = Vec::new();
    /// tree.walk_leaves(|path, _| paths.push(path.to_owned()));
    /// assert_eq!(paths, ["a/b", "c"]);
    /// ```
    pub fn walk_leaves(&self, mut f: impl FnMut(&str, &Leaf)) {
        let mut at = String::new();
        for (key, node) in &self.root {
            walk(&mut at, &path::escape(key), node, &mut f);
        }
    }

    /// The tree's tensors with their paths, in tree order, taken out of it: what a writer or a
    /// check consumes when the rest of the tree is not needed.
    pub fn into_tensors(self) -> Vec<(String, LazyTensor)> {
        let mut out = Vec::new();
        for (key, node) in self.root {
            take_tensors(path::escape(&key), node, &mut out);
        }
        out
    }
}

fn walk(at: &mut String, key: &str, node: &Node, f: &mut dyn FnMut(&str, &Leaf)) {
    let len = at.len();
    if !at.is_empty() {
        at.push('/');
    }
    at.push_str(key);
    match node {
        Node::Leaf(leaf) => f(at, leaf),
        Node::Dict(d) => {
            for (k, child) in d {
                walk(at, &path::escape(k), child, f);
            }
        }
        Node::List(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(at, &i.to_string(), child, f);
            }
        }
    }
    at.truncate(len);
}

fn take_tensors(at: String, node: Node, out: &mut Vec<(String, LazyTensor)>) {
    match node {
        Node::Leaf(Leaf::Tensor(t)) => out.push((at, *t)),
        Node::Leaf(_) => {}
        Node::Dict(d) => {
            for (key, child) in d {
                take_tensors(path::join(&at, &path::escape(&key)), child, out);
            }
        }
        Node::List(items) => {
            for (i, child) in items.into_iter().enumerate() {
                take_tensors(path::join(&at, &i.to_string()), child, out);
            }
        }
    }
}

fn collect_leaves<'a>(at: String, node: &'a Node, out: &mut Vec<(String, &'a Leaf)>) {
    match node {
        Node::Leaf(leaf) => out.push((at, leaf)),
        Node::Dict(d) => {
            for (key, child) in d {
                collect_leaves(path::join(&at, &path::escape(key)), child, out);
            }
        }
        Node::List(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_leaves(path::join(&at, &i.to_string()), child, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Node {
        Node::Leaf(Leaf::Int(v.into()))
    }

    #[test]
    fn get_walks_dicts_and_lists_with_escaped_keys() {
        let mut tree = StateTree::new();
        tree.insert(
            "optimizer/state",
            Node::List(vec![int(0), Node::Dict(Dict::from([("exp_avg".into(), int(7))]))].into()),
        )
        .unwrap();
        tree.insert(&format!("odd/{}", path::escape("a/b")), int(9))
            .unwrap();
        assert!(matches!(
            tree.get("optimizer/state/1/exp_avg"),
            Some(Node::Leaf(Leaf::Int(Int::Small(7))))
        ));
        assert!(matches!(
            tree.get("odd/a%2Fb"),
            Some(Node::Leaf(Leaf::Int(Int::Small(9))))
        ));
        assert!(tree.get("optimizer/state/2").is_none());
        assert!(tree.get("optimizer/state/x").is_none());
        assert!(tree.get("").is_none());
        let paths: Vec<String> = tree.leaves().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "optimizer/state/0",
                "optimizer/state/1/exp_avg",
                "odd/a%2Fb"
            ]
        );
    }

    #[test]
    fn remove_takes_one_node_and_keeps_list_indices() {
        let mut tree = StateTree::new();
        tree.insert("a/b", int(1)).unwrap();
        tree.insert("a/c", Node::List(vec![int(2), int(3)].into()))
            .unwrap();
        assert!(matches!(
            tree.remove("a/c/0"),
            Some(Node::Leaf(Leaf::Int(Int::Small(2))))
        ));
        assert!(matches!(
            tree.get("a/c/1"),
            Some(Node::Leaf(Leaf::Int(Int::Small(3))))
        ));
        assert!(matches!(tree.get("a/c/0"), Some(Node::Leaf(Leaf::None))));
        assert!(tree.remove("a/b").is_some());
        assert!(tree.remove("a/b").is_none());
        assert!(tree.remove("nothing/here").is_none());
    }

    #[test]
    fn insert_refuses_to_go_through_a_leaf() {
        let mut tree = StateTree::new();
        tree.insert("a", int(1)).unwrap();
        assert!(tree.insert("a/b", int(2)).is_err());
        assert!(tree.insert("", int(2)).is_err());
    }
}
