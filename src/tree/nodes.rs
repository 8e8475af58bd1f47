//! The tree's two containers: an ordered dict with string keys and a list, each remembering the
//! Python kind it was read from (integer keys, a tuple), so that a checkpoint read from a pickle
//! goes back to Python — or into another pickle — as `torch.load` gives it. Paths and globs see
//! only the strings; the kinds ride along.
//!
//! ```
//! use ckptio::{Dict, KeyKind, Leaf, List, Node};
//!
//! let mut state = Dict::new().with_key_kind(KeyKind::Int);
//! state.insert("0".into(), Node::Leaf(Leaf::Float(0.5)));
//! let betas = List::tuple(vec![Node::Leaf(Leaf::Float(0.9)), Node::Leaf(Leaf::Float(0.999))]);
//! assert_eq!(state.key_kind(), KeyKind::Int);
//! assert!(betas.is_tuple() && betas.len() == 2);
//! ```

use std::ops::{Deref, DerefMut};

use indexmap::IndexMap;

use super::Node;

/// What a dict's keys were where it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// Strings (and anything else, rendered as its Python text).
    #[default]
    Str,
    /// Every key a Python `int` (an optimizer's `state`, keyed by parameter index).
    Int,
}

/// An ordered dict with string keys; derefs to its [`IndexMap`].
#[derive(Debug, Clone, Default)]
pub struct Dict {
    entries: IndexMap<String, Node>,
    key_kind: KeyKind,
}

impl Dict {
    /// An empty dict with string keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty dict with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: IndexMap::with_capacity(n),
            key_kind: KeyKind::Str,
        }
    }

    /// The dict, its keys marked as `kind`.
    #[must_use]
    pub fn with_key_kind(mut self, kind: KeyKind) -> Self {
        self.key_kind = kind;
        self
    }

    /// What its keys were.
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// The entries, without the kind.
    pub fn into_entries(self) -> IndexMap<String, Node> {
        self.entries
    }
}

impl Deref for Dict {
    type Target = IndexMap<String, Node>;

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl DerefMut for Dict {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

impl FromIterator<(String, Node)> for Dict {
    fn from_iter<I: IntoIterator<Item = (String, Node)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
            key_kind: KeyKind::Str,
        }
    }
}

impl<const N: usize> From<[(String, Node); N]> for Dict {
    fn from(entries: [(String, Node); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<IndexMap<String, Node>> for Dict {
    fn from(entries: IndexMap<String, Node>) -> Self {
        Self {
            entries,
            key_kind: KeyKind::Str,
        }
    }
}

impl IntoIterator for Dict {
    type Item = (String, Node);
    type IntoIter = indexmap::map::IntoIter<String, Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Dict {
    type Item = (&'a String, &'a Node);
    type IntoIter = indexmap::map::Iter<'a, String, Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl<'a> IntoIterator for &'a mut Dict {
    type Item = (&'a String, &'a mut Node);
    type IntoIter = indexmap::map::IterMut<'a, String, Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter_mut()
    }
}

/// A list, or a tuple; derefs to its `Vec`.
#[derive(Debug, Clone, Default)]
pub struct List {
    items: Vec<Node>,
    tuple: bool,
}

impl List {
    /// A tuple of `items`.
    pub fn tuple(items: Vec<Node>) -> Self {
        Self { items, tuple: true }
    }

    /// Whether it was a tuple.
    pub fn is_tuple(&self) -> bool {
        self.tuple
    }

    /// The items.
    pub fn into_items(self) -> Vec<Node> {
        self.items
    }
}

impl Deref for List {
    type Target = Vec<Node>;

    fn deref(&self) -> &Self::Target {
        &self.items
    }
}

impl DerefMut for List {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.items
    }
}

impl From<Vec<Node>> for List {
    fn from(items: Vec<Node>) -> Self {
        Self {
            items,
            tuple: false,
        }
    }
}

impl FromIterator<Node> for List {
    fn from_iter<I: IntoIterator<Item = Node>>(iter: I) -> Self {
        Vec::from_iter(iter).into()
    }
}

impl IntoIterator for List {
    type Item = Node;
    type IntoIter = std::vec::IntoIter<Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a List {
    type Item = &'a Node;
    type IntoIter = std::slice::Iter<'a, Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<'a> IntoIterator for &'a mut List {
    type Item = &'a mut Node;
    type IntoIter = std::slice::IterMut<'a, Node>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter_mut()
    }
}
