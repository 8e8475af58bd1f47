//! `manifest.json` read in one pass straight into manifest nodes, without building a JSON
//! tree first: what a manifest costs is what its nodes hold, at most [`MAX_NODES`] of them,
//! nested at most [`MAX_JSON_DEPTH`] JSON levels deep (the parser's own bound, which also
//! keeps skipped fields from recursing without end), and a shape longer than [`MAX_DIMS`] is
//! refused where it crosses the limit. Validation against the data files is
//! [`manifest`](super::manifest)'s. Pure.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::manifest::{LeafValue, ManifestNode};
use crate::dtype::DType;
use crate::tree::{Dict, Int, KeyKind, Leaf, List, MAX_DIMS, Node, Opaque};

/// The most nodes (dict entries, list items, leaves) a manifest's tree may hold.
pub const MAX_NODES: usize = 1 << 22;

/// The deepest a manifest's JSON may nest (arrays and objects): `serde_json`'s bound.
pub const MAX_JSON_DEPTH: usize = 127;

/// The top-level fields of a manifest, as written.
#[derive(Debug, Default)]
pub struct Document {
    pub format: Option<String>,
    pub layout_version: Option<u64>,
    pub created: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub files: Option<Vec<FileJson>>,
    pub tree: Option<ManifestNode>,
}

/// A data file's entry, as written.
#[derive(Debug, Deserialize)]
pub struct FileJson {
    pub name: String,
    pub size: u64,
}

/// A stored tensor's entry, as written (checked against the files by the manifest).
#[derive(Debug, Deserialize)]
pub struct TensorJson {
    pub file: u64,
    pub dtype: String,
    pub shape: Dims,
    pub offsets: [u64; 2],
    pub crc32c: String,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// A shape of at most [`MAX_DIMS`] dimensions.
#[derive(Debug)]
pub struct Dims(pub Vec<u64>);

impl<'de> Deserialize<'de> for Dims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dims;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {MAX_DIMS} non-negative integers")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dims, A::Error> {
                let mut dims = Vec::new();
                while let Some(d) = seq.next_element::<u64>()? {
                    if dims.len() == MAX_DIMS {
                        return Err(de::Error::custom(format!(
                            "a shape of more than {MAX_DIMS} dimensions"
                        )));
                    }
                    dims.push(d);
                }
                Ok(Dims(dims))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Reads a manifest's fields from `json`.
///
/// # Errors
///
/// The parser's message, with where it stopped: text that is not JSON, a field of the wrong
/// type, a tree over its limits, a malformed `$`-leaf (naming its path).
pub fn read(json: &[u8]) -> Result<Document, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let doc = de
        .deserialize_map(DocumentVisitor)
        .and_then(|doc| de.end().map(|()| doc))
        .map_err(|e| e.to_string())?;
    Ok(doc)
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a manifest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut doc = Document::default();
        let mut nodes = 0;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => doc.format = map.next_value::<Option<String>>()?,
                "layout_version" => doc.layout_version = map.next_value::<Option<u64>>()?,
                "created" => doc.created = map.next_value::<Option<String>>()?,
                "metadata" => doc.metadata = map.next_value()?,
                "files" => doc.files = Some(map.next_value()?),
                "tree" => {
                    let mut path = Vec::new();
                    doc.tree = Some(map.next_value_seed(Tree {
                        nodes: &mut nodes,
                        path: &mut path,
                        plain: false,
                    })?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(doc)
    }
}

/// A node of the tree, at `path`, counted against `nodes`; inside an opaque object (`plain`)
/// tensors are shapes only.
struct Tree<'a> {
    nodes: &'a mut usize,
    path: &'a mut Vec<String>,
    plain: bool,
}

impl Tree<'_> {
    fn child(&mut self) -> Tree<'_> {
        Tree {
            nodes: self.nodes,
            path: self.path,
            plain: self.plain,
        }
    }

    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        *self.nodes += 1;
        if *self.nodes > MAX_NODES {
            return Err(E::custom(format!(
                "the tree holds more than {MAX_NODES} nodes"
            )));
        }
        Ok(())
    }

    fn path(&self) -> String {
        self.path.join("/")
    }

    fn leaf(leaf: Leaf) -> ManifestNode {
        ManifestNode::Leaf(LeafValue(leaf))
    }

    /// The body of the `$`-leaf `tag`.
    fn tagged<'de, A: MapAccess<'de>>(
        &mut self,
        tag: &str,
        map: &mut A,
    ) -> Result<ManifestNode, A::Error> {
        let wrong = |path: String| A::Error::custom(format!("`{path}`: bad {tag} leaf"));
        Ok(match tag {
            "$tensor" if !self.plain => {
                let stored = map
                    .next_value::<TensorJson>()
                    .and_then(|body| super::manifest::stored(body).map_err(A::Error::custom))
                    .map_err(|e| A::Error::custom(format!("tensor `{}`: {e}", self.path())))?;
                ManifestNode::Tensor(Box::new(stored))
            }
            "$int" => {
                let digits: String = map.next_value()?;
                let valid = digits.strip_prefix('-').unwrap_or(&digits);
                if valid.is_empty() || !valid.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(wrong(self.path()));
                }
                Self::leaf(Leaf::Int(Int::Big(digits)))
            }
            "$float" => {
                let text: String = map.next_value()?;
                Self::leaf(Leaf::Float(text.parse().map_err(|_| wrong(self.path()))?))
            }
            "$bytes" => {
                let text: String = map.next_value()?;
                let bytes = super::manifest::unhex(&text).ok_or_else(|| wrong(self.path()))?;
                Self::leaf(Leaf::Bytes(bytes.into()))
            }
            "$abstract" => {
                #[derive(Deserialize)]
                struct Abstract {
                    dtype: String,
                    shape: Dims,
                }
                let body: Abstract = map.next_value()?;
                let dtype: DType = body.dtype.parse().map_err(|_| wrong(self.path()))?;
                Self::leaf(Leaf::Tensor(Box::new(crate::tree::LazyTensor::abstract_(
                    dtype,
                    body.shape.0,
                ))))
            }
            "$tuple" => match map.next_value_seed(self.child())? {
                ManifestNode::List(items, _) => ManifestNode::List(items, true),
                _ => return Err(wrong(self.path())),
            },
            "$intkeys" => match map.next_value_seed(self.child())? {
                ManifestNode::Dict(entries, _)
                    if entries.iter().all(|(k, _)| k.parse::<i64>().is_ok()) =>
                {
                    ManifestNode::Dict(entries, KeyKind::Int)
                }
                _ => return Err(wrong(self.path())),
            },
            "$opaque" => map.next_value_seed(OpaqueSeed(Tree {
                nodes: self.nodes,
                path: self.path,
                plain: true,
            }))?,
            _ => {
                return Err(A::Error::custom(format!(
                    "`{}`: unknown leaf kind {tag}",
                    self.path()
                )));
            }
        })
    }
}

impl<'de> DeserializeSeed<'de> for Tree<'_> {
    type Value = ManifestNode;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ManifestNode, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree<'_> {
    type Value = ManifestNode;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tree node")
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<ManifestNode, E> {
        self.count()?;
        Ok(Self::leaf(Leaf::None))
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<ManifestNode, E> {
        self.count()?;
        Ok(Self::leaf(Leaf::Bool(v)))
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<ManifestNode, E> {
        self.count()?;
        Ok(Self::leaf(Leaf::Int(Int::Small(v))))
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<ManifestNode, E> {
        self.count()?;
        // Past i64, an integer is written as `$int`; a bare one is read as JSON reads it.
        Ok(Self::leaf(match i64::try_from(v) {
            Ok(v) => Leaf::Int(Int::Small(v)),
            Err(_) => Leaf::Float(v as f64),
        }))
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<ManifestNode, E> {
        self.count()?;
        Ok(Self::leaf(Leaf::Float(v)))
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<ManifestNode, E> {
        self.count()?;
        Ok(Self::leaf(Leaf::Str(v.to_owned())))
    }

    fn visit_string<E: de::Error>(mut self, v: String) -> Result<ManifestNode, E> {
        self.count()?;
        Ok(Self::leaf(Leaf::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<ManifestNode, A::Error> {
        self.count()?;
        let mut items = Vec::new();
        loop {
            self.path.push(items.len().to_string());
            let item = seq.next_element_seed(self.child());
            self.path.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(ManifestNode::List(items, false)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<ManifestNode, A::Error> {
        self.count()?;
        let Some(first) = map.next_key::<String>()? else {
            return Ok(ManifestNode::Dict(Vec::new(), KeyKind::Str));
        };
        if first.starts_with('$') && !first.starts_with("$$") {
            let node = self.tagged(&first, &mut map)?;
            if map.next_key::<IgnoredAny>()?.is_some() {
                return Err(A::Error::custom(format!(
                    "`{}`: a {first} leaf with other keys",
                    self.path()
                )));
            }
            return Ok(node);
        }
        let mut entries = Vec::new();
        let mut key = Some(first);
        while let Some(k) = key {
            // A key that starts with `$` is written with one more.
            let k = match k.strip_prefix('$') {
                Some(rest) if rest.starts_with('$') => rest.to_owned(),
                _ => k,
            };
            self.path.push(crate::tree::path::escape(&k));
            let value = map.next_value_seed(self.child());
            self.path.pop();
            entries.push((k, value?));
            key = map.next_key::<String>()?;
        }
        Ok(ManifestNode::Dict(entries, KeyKind::Str))
    }
}

/// An opaque object's body: `{"module", "name", "args", "kwargs", "state"}`, its nodes plain.
struct OpaqueSeed<'a>(Tree<'a>);

impl<'de> DeserializeSeed<'de> for OpaqueSeed<'_> {
    type Value = ManifestNode;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ManifestNode, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OpaqueSeed<'_> {
    type Value = ManifestNode;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an opaque object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<ManifestNode, A::Error> {
        let (mut module, mut name, mut args, mut kwargs, mut state) =
            (None, None, Vec::new(), None, None);
        while let Some(key) = map.next_key::<String>()? {
            let tree = self.0.child();
            match key.as_str() {
                "module" => module = Some(map.next_value::<String>()?),
                "name" => name = Some(map.next_value::<String>()?),
                "args" => match map.next_value_seed(tree)? {
                    ManifestNode::List(items, _) => {
                        args = items.into_iter().map(plain).collect();
                    }
                    _ => return Err(A::Error::custom("an opaque object's args are not a list")),
                },
                "kwargs" => kwargs = Some(plain(map.next_value_seed(tree)?)),
                "state" => state = Some(plain(map.next_value_seed(tree)?)),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (Some(module), Some(name)) = (module, name) else {
            return Err(A::Error::custom(format!(
                "`{}`: bad $opaque leaf",
                self.0.path()
            )));
        };
        let keep = |n: Node| (!matches!(n, Node::Leaf(Leaf::None))).then(|| Box::new(n));
        Ok(Tree::leaf(Leaf::Opaque(Box::new(Opaque {
            module,
            name,
            args,
            kwargs: kwargs.and_then(keep),
            state: state.and_then(keep),
        }))))
    }
}

/// A manifest node with no stored tensors, as a plain tree node.
pub fn plain(node: ManifestNode) -> Node {
    match node {
        ManifestNode::Dict(d, keys) => Node::Dict(
            d.into_iter()
                .map(|(k, v)| (k, plain(v)))
                .collect::<Dict>()
                .with_key_kind(keys),
        ),
        ManifestNode::List(l, false) => Node::List(l.into_iter().map(plain).collect()),
        ManifestNode::List(l, true) => Node::List(List::tuple(l.into_iter().map(plain).collect())),
        ManifestNode::Tensor(s) => {
            Node::from(crate::tree::LazyTensor::abstract_(s.dtype, s.shape.clone()))
        }
        ManifestNode::Leaf(LeafValue(l)) => Node::Leaf(l),
    }
}
