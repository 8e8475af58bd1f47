//! The manifest of a ckptio checkpoint: `manifest.json`, written last, is what makes a
//! checkpoint exist. It holds the layout version, the whole tree (non-tensor leaves inline,
//! opaque objects preserved), each tensor's data file, dtype, shape, byte range and CRC-32C,
//! the size of every data file, the creation time and free-form metadata. Pure: JSON in, JSON
//! out.
//!
//! In the tree, dicts are JSON objects, lists arrays, and `None`, booleans, integers that fit
//! 64 bits, finite floats and strings are JSON scalars. Every other leaf is an object with one
//! `$`-key: `{"$tensor": {...}}`, `{"$int": "digits"}`, `{"$float": "nan"}`,
//! `{"$bytes": "hex"}`, `{"$opaque": {...}}`. A dict key that starts with `$` is written with
//! one more `$`, so no dict is ever mistaken for a leaf.

use std::collections::BTreeMap;
use std::ops::Range;

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Number, Value, json};

pub use super::document::MAX_JSON_DEPTH;
use super::document::{self, TensorJson};

use crate::dtype::DType;
use crate::tree::{Dict, Int, KeyKind, LazyTensor, Leaf, Node};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// The layout version this crate writes and reads.
pub const LAYOUT_VERSION: u64 = 1;

/// The largest manifest read.
pub const MAX_MANIFEST: u64 = 256 << 20;

/// A checkpoint's manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// When the checkpoint was written (RFC 3339).
    pub created: String,
    /// Free-form strings.
    pub metadata: BTreeMap<String, String>,
    /// The data files, by name, with their sizes.
    pub files: Vec<DataFile>,
    /// The tree; tensors are `Stored` leaves.
    pub tree: ManifestNode,
}

/// A data file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its name in the checkpoint's directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where a tensor is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Index into [`Manifest::files`].
    pub file: usize,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Its bytes in the file.
    pub range: Range<u64>,
    /// CRC-32C of those bytes.
    pub crc32c: u32,
    /// SHA-256 of those bytes, when the save computed it.
    pub sha256: Option<[u8; 32]>,
}

/// A node of the manifest's tree: the state tree with tensors replaced by where they are.
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestNode {
    /// A dict, and what its keys were (integer keys are written `{"$intkeys": {...}}`).
    Dict(Vec<(String, ManifestNode)>, KeyKind),
    /// A list, or a tuple (written `{"$tuple": [...]}`) when the flag is set.
    List(Vec<ManifestNode>, bool),
    /// A stored tensor.
    Tensor(Box<Stored>),
    /// Any other leaf.
    Leaf(LeafValue),
}

/// A non-tensor leaf as the manifest keeps it.
#[derive(Debug, Clone)]
pub struct LeafValue(pub Leaf);

impl PartialEq for LeafValue {
    fn eq(&self, other: &Self) -> bool {
        leaf_json(&self.0) == leaf_json(&other.0)
    }
}

/// What is wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct ManifestError(pub String);

fn bad(what: impl Into<String>) -> ManifestError {
    ManifestError(what.into())
}

impl Manifest {
    /// The manifest as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Doc<'a> {
            format: &'static str,
            layout_version: u64,
            created: &'a str,
            metadata: &'a BTreeMap<String, String>,
            files: Vec<FileJson<'a>>,
            tree: NodeJson<'a>,
        }
        #[derive(Serialize)]
        struct FileJson<'a> {
            name: &'a str,
            size: u64,
        }
        let doc = Doc {
            format: "ckptio",
            layout_version: LAYOUT_VERSION,
            created: &self.created,
            metadata: &self.metadata,
            files: self
                .files
                .iter()
                .map(|f| FileJson {
                    name: &f.name,
                    size: f.size,
                })
                .collect(),
            tree: NodeJson(&self.tree),
        };
        // Written as it is serialized: no JSON tree of the whole manifest is built.
        serde_json::to_vec(&doc).expect("a manifest always serializes")
    }

    /// Parses and validates a manifest: known layout version, every tensor's file and range
    /// within the files listed, dtype × shape equal to the range's length.
    ///
    /// # Errors
    ///
    /// [`ManifestError`] naming what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let doc = document::read(bytes).map_err(|e| bad(format!("not JSON of a manifest: {e}")))?;
        if doc.format.as_deref() != Some("ckptio") {
            return Err(bad("not a ckptio manifest (no \"format\": \"ckptio\")"));
        }
        let version = doc.layout_version;
        if version != Some(LAYOUT_VERSION) {
            return Err(bad(format!(
                "layout version {version:?}; this ckptio reads version {LAYOUT_VERSION}"
            )));
        }
        let files = doc
            .files
            .ok_or_else(|| bad("no \"files\" list"))?
            .into_iter()
            .map(|f| {
                if is_plain_name(&f.name) {
                    Ok(DataFile {
                        name: f.name,
                        size: f.size,
                    })
                } else {
                    Err(bad(format!("bad file entry `{}`", f.name)))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tree = doc.tree.ok_or_else(|| bad("no \"tree\""))?;
        check_files(&tree, &files, &mut Vec::new())?;
        let created = doc.created.unwrap_or_default();
        let metadata = doc.metadata.unwrap_or_default();
        Ok(Self {
            created,
            metadata,
            files,
            tree,
        })
    }
}

/// A file name with no directory part: a manifest may not point outside its checkpoint.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\\') && name != "." && name != ".."
}

/// Converts a state tree's root; `tensor` says where each tensor (by path) was stored.
///
/// # Errors
///
/// As [`node_of`].
pub fn dict_of(
    root: &Dict,
    tensor: &mut dyn FnMut(&str, &LazyTensor) -> Option<Stored>,
) -> Result<ManifestNode, ManifestError> {
    root.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                node_of(v, &crate::tree::path::escape(k), tensor)?,
            ))
        })
        .collect::<Result<_, _>>()
        .map(|d| ManifestNode::Dict(d, root.key_kind()))
}

/// Converts a state-tree node; `tensor` says where each tensor (by path) was stored.
pub fn node_of(
    node: &Node,
    path: &str,
    tensor: &mut dyn FnMut(&str, &LazyTensor) -> Option<Stored>,
) -> Result<ManifestNode, ManifestError> {
    let join = |k: &str| {
        let k = crate::tree::path::escape(k);
        if path.is_empty() {
            k
        } else {
            format!("{path}/{k}")
        }
    };
    Ok(match node {
        Node::Dict(d) => ManifestNode::Dict(
            d.iter()
                .map(|(k, v)| Ok((k.clone(), node_of(v, &join(k), tensor)?)))
                .collect::<Result<_, ManifestError>>()?,
            d.key_kind(),
        ),
        Node::List(l) => ManifestNode::List(
            l.iter()
                .enumerate()
                .map(|(i, v)| node_of(v, &join(&i.to_string()), tensor))
                .collect::<Result<_, _>>()?,
            l.is_tuple(),
        ),
        Node::Leaf(Leaf::Tensor(t)) => ManifestNode::Tensor(Box::new(
            tensor(path, t).ok_or_else(|| bad(format!("tensor `{path}` was not written")))?,
        )),
        Node::Leaf(leaf) => ManifestNode::Leaf(LeafValue(leaf.clone())),
    })
}

/// How deep the manifest's JSON for `node` nests (arrays and objects, `$`-leaves included):
/// a tree deeper than [`MAX_JSON_DEPTH`] cannot be saved, because it could not be read back.
pub fn json_depth(node: &Node) -> usize {
    let deepest = |nodes: &mut dyn Iterator<Item = &Node>| nodes.map(json_depth).max();
    match node {
        Node::Dict(d) => {
            let tagged = usize::from(d.key_kind() == KeyKind::Int);
            1 + tagged + deepest(&mut d.values()).unwrap_or(0)
        }
        Node::List(l) => 1 + usize::from(l.is_tuple()) + deepest(&mut l.iter()).unwrap_or(0),
        Node::Leaf(Leaf::Tensor(_)) => 3,
        Node::Leaf(Leaf::Opaque(o)) => {
            let args = 1 + deepest(&mut o.args.iter()).unwrap_or(0);
            let rest = deepest(&mut o.kwargs.iter().chain(&o.state).map(|b| &**b)).unwrap_or(0);
            2 + args.max(rest)
        }
        Node::Leaf(Leaf::Int(Int::Big(_)) | Leaf::Bytes(_)) => 1,
        Node::Leaf(Leaf::Float(v)) if leaf_json(&Leaf::Float(*v)).is_object() => 1,
        Node::Leaf(_) => 0,
    }
}

/// A manifest node as JSON, serialized in place.
struct NodeJson<'a>(&'a ManifestNode);

/// A dict's entries as a JSON object.
struct DictJson<'a>(&'a [(String, ManifestNode)]);

impl Serialize for DictJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| {
            // A key that starts with `$` gets one more, so no dict reads as a leaf.
            let key = if k.starts_with('$') {
                Cow::Owned(format!("${k}"))
            } else {
                Cow::Borrowed(k.as_str())
            };
            (key, NodeJson(v))
        }))
    }
}

/// A list's items as a JSON array.
struct ListJson<'a>(&'a [ManifestNode]);

impl Serialize for ListJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(NodeJson))
    }
}

impl Serialize for NodeJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            ManifestNode::Dict(d, KeyKind::Str) => DictJson(d).serialize(s),
            ManifestNode::Dict(d, KeyKind::Int) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("$intkeys", &DictJson(d))?;
                map.end()
            }
            ManifestNode::List(l, false) => s.collect_seq(l.iter().map(NodeJson)),
            ManifestNode::List(l, true) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("$tuple", &ListJson(l))?;
                map.end()
            }
            ManifestNode::Tensor(t) => {
                #[derive(Serialize)]
                struct Body<'a> {
                    file: usize,
                    dtype: &'a str,
                    shape: &'a [u64],
                    offsets: [u64; 2],
                    crc32c: String,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    sha256: Option<String>,
                }
                let body = Body {
                    file: t.file,
                    dtype: t.dtype.name(),
                    shape: &t.shape,
                    offsets: [t.range.start, t.range.end],
                    crc32c: format!("{:08x}", t.crc32c),
                    sha256: t.sha256.as_ref().map(|h| hex(h)),
                };
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("$tensor", &body)?;
                map.end()
            }
            ManifestNode::Leaf(LeafValue(leaf)) => leaf_json(leaf).serialize(s),
        }
    }
}

fn leaf_json(leaf: &Leaf) -> Value {
    match leaf {
        Leaf::None => Value::Null,
        Leaf::Bool(b) => Value::Bool(*b),
        Leaf::Int(Int::Small(v)) => json!(v),
        Leaf::Int(Int::Big(digits)) => json!({"$int": digits}),
        Leaf::Float(v) => match Number::from_f64(*v) {
            Some(n) if v.fract() != 0.0 || v.abs() < 1e15 => {
                // Keep a float a float: serde writes 2.0 as "2.0".
                Value::Number(n)
            }
            _ => json!({"$float": format!("{v:?}")}),
        },
        Leaf::Str(s) => Value::String(s.clone()),
        Leaf::Bytes(b) => json!({"$bytes": hex(b)}),
        Leaf::Opaque(o) => {
            let mut body = json!({
                "module": o.module,
                "name": o.name,
                "args": o.args.iter().map(plain_json).collect::<Vec<_>>(),
                "state": o.state.as_deref().map(plain_json),
            });
            if let Some(kwargs) = &o.kwargs {
                body["kwargs"] = plain_json(kwargs);
            }
            json!({ "$opaque": body })
        }
        Leaf::Tensor(_) => json!({"$tensor": null}),
    }
}

/// A node inside an opaque object (its tensors, if any, are not stored: kept as a type and
/// shape only).
fn plain_json(node: &Node) -> Value {
    let mut no_tensors = |_: &str, _: &LazyTensor| None;
    match node {
        Node::Leaf(Leaf::Tensor(t)) => {
            json!({"$abstract": {"dtype": t.dtype.name(), "shape": t.shape}})
        }
        other => node_of(other, "", &mut no_tensors)
            .map(|n| serde_json::to_value(NodeJson(&n)).unwrap_or(Value::Null))
            .unwrap_or(Value::Null),
    }
}

/// Checks that every tensor of `node` (at `path`) lies within a data file.
fn check_files(
    node: &ManifestNode,
    files: &[DataFile],
    path: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let mut each = |key: String, child: &ManifestNode| {
        path.push(key);
        let checked = check_files(child, files, path);
        path.pop();
        checked
    };
    match node {
        ManifestNode::Dict(d, _) => d
            .iter()
            .try_for_each(|(k, v)| each(crate::tree::path::escape(k), v)),
        ManifestNode::List(l, _) => l
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| each(i.to_string(), v)),
        ManifestNode::Leaf(_) => Ok(()),
        ManifestNode::Tensor(s) => {
            let wrong = |what: String| bad(format!("tensor `{}`: {what}", path.join("/")));
            let file = files
                .get(s.file)
                .ok_or_else(|| wrong("no such data file".into()))?;
            if s.range.end > file.size {
                return Err(wrong(format!(
                    "bytes {:?} are not within `{}` ({} bytes)",
                    s.range, file.name, file.size
                )));
            }
            Ok(())
        }
    }
}

/// A tensor's entry as stored, checked in itself: a known dtype, offsets in order and as far
/// apart as dtype × shape needs, checksums in hex.
pub(super) fn stored(body: TensorJson) -> Result<Stored, String> {
    let file = usize::try_from(body.file).map_err(|_| "no such data file".to_owned())?;
    let dtype: DType = body.dtype.parse().map_err(|_| "unknown dtype".to_owned())?;
    let crc32c = u32::from_str_radix(&body.crc32c, 16).map_err(|_| "bad crc32c".to_owned())?;
    let sha256 = match body.sha256 {
        None => None,
        Some(text) => Some(
            unhex(&text)
                .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
                .ok_or("bad sha256")?,
        ),
    };
    let shape = body.shape.0;
    let [start, end] = body.offsets;
    if start > end {
        return Err(format!("bytes {start}..{end} run backwards"));
    }
    let len = crate::dtype::numel(&shape).and_then(|n| dtype.byte_len(n));
    if len != Some(end - start) {
        return Err(format!(
            "{dtype} × {shape:?} does not take {} bytes",
            end - start
        ));
    }
    Ok(Stored {
        file,
        dtype,
        shape,
        range: start..end,
        crc32c,
        sha256,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut d = Dict::new();
        d.insert("epoch".into(), Node::Leaf(Leaf::Int(Int::Small(3))));
        d.insert("lr".into(), Node::Leaf(Leaf::Float(2.0)));
        d.insert("nan".into(), Node::Leaf(Leaf::Float(f64::NAN)));
        d.insert(
            "big".into(),
            Node::Leaf(Leaf::Int(Int::Big("-1208925819614629174706176".into()))),
        );
        d.insert(
            "$tensor".into(),
            Node::Leaf(Leaf::Str("a key like a tag".into())),
        );
        d.insert("blob".into(), Node::Leaf(Leaf::Bytes(vec![0, 255].into())));
        let step = |v| Node::Dict(Dict::from([("step".to_owned(), Node::Leaf(Leaf::Int(v)))]));
        d.insert(
            "state".into(),
            Node::Dict(
                Dict::from([("0".into(), step(1.into())), ("7".into(), step(2.into()))])
                    .with_key_kind(KeyKind::Int),
            ),
        );
        d.insert(
            "betas".into(),
            Node::List(crate::tree::List::tuple(vec![
                Node::Leaf(Leaf::Float(0.9)),
                Node::Leaf(Leaf::Float(0.999)),
            ])),
        );
        d.insert(
            "info".into(),
            Node::from(crate::tree::Opaque {
                module: "__main__".into(),
                name: "RunInfo".into(),
                args: vec![],
                kwargs: Some(Box::new(Node::Dict(Dict::from([(
                    "seed".to_owned(),
                    Node::Leaf(Leaf::Int(Int::Small(0))),
                )])))),
                state: Some(Box::new(Node::List(vec![Node::Leaf(Leaf::None)].into()))),
            }),
        );
        d.insert(
            "w".into(),
            Node::from(crate::tree::LazyTensor::abstract_(DType::F32, vec![2])),
        );
        let mut stored = |path: &str, _: &LazyTensor| {
            (path == "w").then_some(Stored {
                file: 0,
                dtype: DType::F32,
                shape: vec![2],
                range: 8..16,
                crc32c: 0xdead_beef,
                sha256: Some([7; 32]),
            })
        };
        Manifest {
            created: "2026-11-22T10:00:00Z".into(),
            metadata: BTreeMap::from([("run".into(), "x".into())]),
            files: vec![DataFile {
                name: "data-00001-of-00001.safetensors".into(),
                size: 16,
            }],
            tree: node_of(&Node::Dict(d), "", &mut stored).unwrap(),
        }
    }

    #[test]
    fn a_manifest_round_trips_every_kind_of_leaf() {
        let m = sample();
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        let ManifestNode::Dict(d, _) = &back.tree else {
            panic!()
        };
        assert!(
            d.iter()
                .any(|(k, v)| k == "$tensor" && matches!(v, ManifestNode::Leaf(_)))
        );
        assert!(matches!(&d[1].1, ManifestNode::Leaf(LeafValue(Leaf::Float(v))) if *v == 2.0));
        let json = String::from_utf8(m.to_json()).unwrap();
        assert!(json.contains("\"state\":{\"$intkeys\":{\"0\":"), "{json}");
        assert!(
            json.contains("\"betas\":{\"$tuple\":[0.9,0.999]}"),
            "{json}"
        );
    }

    #[test]
    fn a_manifest_that_lies_is_refused_naming_the_problem() {
        let json = String::from_utf8(sample().to_json()).unwrap();
        let cases = [
            (
                json.replace("\"layout_version\":1", "\"layout_version\":9"),
                "layout version",
            ),
            (json.replace("\"size\":16", "\"size\":12"), "are not within"),
            (json.replace("\"F32\"", "\"F64\""), "does not take 8 bytes"),
            (
                json.replace("\"file\":0", "\"file\":3"),
                "no such data file",
            ),
            (
                json.replace("data-00001-of-00001.safetensors", "../escape"),
                "bad file entry",
            ),
            (
                json.replace("{\"$tuple\":[0.9,0.999]}", "{\"$tuple\":{}}"),
                "bad $tuple leaf",
            ),
            (
                json.replace("\"7\":{\"step\"", "\"x\":{\"step\""),
                "bad $intkeys leaf",
            ),
            ("{}".to_owned(), "not a ckptio manifest"),
            ("[".to_owned(), "not JSON"),
        ];
        for (text, want) in cases {
            let err = Manifest::from_json(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    /// How deep a JSON value nests.
    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn the_depth_a_save_checks_is_the_depth_of_the_json_it_writes() {
        let m = sample();
        let json: Value = serde_json::from_slice(&m.to_json()).unwrap();
        let ManifestNode::Dict(entries, _) = &m.tree else {
            panic!()
        };
        let tree: Dict = entries
            .iter()
            .map(|(k, v)| (k.clone(), document::plain(v.clone())))
            .collect();
        assert_eq!(json_depth(&Node::Dict(tree)), depth(&json["tree"]));
    }

    #[test]
    fn a_manifest_nested_past_the_parsers_bound_is_refused_not_a_crash() {
        let deep = format!(
            r#"{{"format":"ckptio","layout_version":1,"files":[],"tree":{}0{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = Manifest::from_json(deep.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        let skipped = format!(
            r#"{{"format":"ckptio","extra":{}0{},"layout_version":1}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(Manifest::from_json(skipped.as_bytes()).is_err());
    }

    #[test]
    fn a_manifest_of_millions_of_items_is_refused_in_bounded_memory() {
        let items = vec!["0"; document::MAX_NODES + 1].join(",");
        let json = format!(
            r#"{{"format":"ckptio","layout_version":1,"files":[],"tree":{{"x":[{items}]}}}}"#
        );
        let (result, most) = crate::testing::alloc::peak(|| Manifest::from_json(json.as_bytes()));
        let err = result.unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        // A node is a 48-byte manifest node, in a list that grows by doubling.
        assert!(
            most < 160 * document::MAX_NODES,
            "{most} bytes for {} bytes of JSON",
            json.len()
        );
    }
}
