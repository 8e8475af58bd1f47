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

use serde_json::{Map, Number, Value, json};

use crate::dtype::DType;
use crate::tree::{Dict, Int, Leaf, Node, Opaque};

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
    /// A dict.
    Dict(Vec<(String, ManifestNode)>),
    /// A list.
    List(Vec<ManifestNode>),
    /// A stored tensor.
    Tensor(Stored),
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
        let doc = json!({
            "format": "ckptio",
            "layout_version": LAYOUT_VERSION,
            "created": self.created,
            "metadata": self.metadata,
            "files": self.files.iter().map(|f| json!({"name": f.name, "size": f.size})).collect::<Vec<_>>(),
            "tree": node_json(&self.tree),
        });
        serde_json::to_vec_pretty(&doc).expect("a JSON value always serializes")
    }

    /// Parses and validates a manifest: known layout version, every tensor's file and range
    /// within the files listed, dtype × shape equal to the range's length.
    ///
    /// # Errors
    ///
    /// [`ManifestError`] naming what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if doc.get("format").and_then(Value::as_str) != Some("ckptio") {
            return Err(bad("not a ckptio manifest (no \"format\": \"ckptio\")"));
        }
        let version = doc.get("layout_version").and_then(Value::as_u64);
        if version != Some(LAYOUT_VERSION) {
            return Err(bad(format!(
                "layout version {version:?}; this ckptio reads version {LAYOUT_VERSION}"
            )));
        }
        let created = doc
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let metadata = match doc.get("metadata") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(m) => serde_json::from_value(m.clone())
                .map_err(|_| bad("\"metadata\" is not an object of strings"))?,
        };
        let files = doc
            .get("files")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"files\" list"))?
            .iter()
            .map(|f| {
                let name = f.get("name").and_then(Value::as_str);
                let size = f.get("size").and_then(Value::as_u64);
                match (name, size) {
                    (Some(name), Some(size)) if is_plain_name(name) => Ok(DataFile {
                        name: name.to_owned(),
                        size,
                    }),
                    _ => Err(bad(format!("bad file entry {f}"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tree = doc.get("tree").ok_or_else(|| bad("no \"tree\""))?;
        let tree = node_from(tree, &files, 0, "")?;
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

/// Converts a state-tree node; `tensor` says where each tensor (by path) was stored.
pub fn node_of(
    node: &Node,
    path: &str,
    tensor: &mut dyn FnMut(&str) -> Option<Stored>,
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
        ),
        Node::List(l) => ManifestNode::List(
            l.iter()
                .enumerate()
                .map(|(i, v)| node_of(v, &join(&i.to_string()), tensor))
                .collect::<Result<_, _>>()?,
        ),
        Node::Leaf(Leaf::Tensor(_)) => ManifestNode::Tensor(
            tensor(path).ok_or_else(|| bad(format!("tensor `{path}` was not written")))?,
        ),
        Node::Leaf(leaf) => ManifestNode::Leaf(LeafValue(leaf.clone())),
    })
}

fn node_json(node: &ManifestNode) -> Value {
    match node {
        ManifestNode::Dict(d) => Value::Object(
            d.iter()
                .map(|(k, v)| {
                    let key = if k.starts_with('$') {
                        format!("${k}")
                    } else {
                        k.clone()
                    };
                    (key, node_json(v))
                })
                .collect(),
        ),
        ManifestNode::List(l) => Value::Array(l.iter().map(node_json).collect()),
        ManifestNode::Tensor(s) => {
            let mut t = json!({
                "file": s.file,
                "dtype": s.dtype.name(),
                "shape": s.shape,
                "offsets": [s.range.start, s.range.end],
                "crc32c": format!("{:08x}", s.crc32c),
            });
            if let Some(sha) = &s.sha256 {
                t["sha256"] = json!(hex(sha));
            }
            json!({ "$tensor": t })
        }
        ManifestNode::Leaf(LeafValue(leaf)) => leaf_json(leaf),
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
    let mut no_tensors = |_: &str| None;
    match node {
        Node::Leaf(Leaf::Tensor(t)) => {
            json!({"$abstract": {"dtype": t.dtype.name(), "shape": t.shape}})
        }
        other => node_of(other, "", &mut no_tensors)
            .map(|n| node_json(&n))
            .unwrap_or(Value::Null),
    }
}

const MAX_DEPTH: usize = 256;

fn node_from(
    v: &Value,
    files: &[DataFile],
    depth: usize,
    path: &str,
) -> Result<ManifestNode, ManifestError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "`{path}` nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}/{k}")
        }
    };
    Ok(match v {
        Value::Object(map) if map.len() == 1 && is_tag(map) => {
            let (tag, body) = map.iter().next().expect("one entry");
            if tag == "$tensor" {
                ManifestNode::Tensor(stored_from(body, files, path)?)
            } else {
                ManifestNode::Leaf(LeafValue(leaf_from(tag, body, path)?))
            }
        }
        Value::Object(map) => ManifestNode::Dict(
            map.iter()
                .map(|(k, v)| {
                    let key = k
                        .strip_prefix('$')
                        .filter(|_| k.starts_with("$$"))
                        .unwrap_or(k);
                    Ok((key.to_owned(), node_from(v, files, depth + 1, &join(key))?))
                })
                .collect::<Result<_, ManifestError>>()?,
        ),
        Value::Array(items) => ManifestNode::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| node_from(v, files, depth + 1, &join(&i.to_string())))
                .collect::<Result<_, _>>()?,
        ),
        scalar => ManifestNode::Leaf(LeafValue(scalar_leaf(scalar))),
    })
}

fn is_tag(map: &Map<String, Value>) -> bool {
    map.keys()
        .next()
        .is_some_and(|k| k.starts_with('$') && !k.starts_with("$$"))
}

fn scalar_leaf(v: &Value) -> Leaf {
    match v {
        Value::Null => Leaf::None,
        Value::Bool(b) => Leaf::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => Leaf::Int(Int::Small(i)),
            _ => Leaf::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Leaf::Str(s.clone()),
        _ => Leaf::None,
    }
}

fn leaf_from(tag: &str, body: &Value, path: &str) -> Result<Leaf, ManifestError> {
    let wrong = || bad(format!("`{path}`: bad {tag} leaf"));
    Ok(match tag {
        "$int" => {
            let digits = body.as_str().ok_or_else(wrong)?;
            let valid = digits.strip_prefix('-').unwrap_or(digits);
            if valid.is_empty() || !valid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(wrong());
            }
            Leaf::Int(Int::Big(digits.to_owned()))
        }
        "$float" => Leaf::Float(
            body.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(wrong)?,
        ),
        "$bytes" => Leaf::Bytes(body.as_str().and_then(unhex).ok_or_else(wrong)?.into()),
        "$opaque" => {
            let module = body
                .get("module")
                .and_then(Value::as_str)
                .ok_or_else(wrong)?;
            let name = body.get("name").and_then(Value::as_str).ok_or_else(wrong)?;
            let plain = |v: &Value| -> Result<Node, ManifestError> {
                Ok(plain_node(&node_from(v, &[], 1, path)?))
            };
            let args = body
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(plain).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            let boxed = |key: &str| -> Result<Option<Box<Node>>, ManifestError> {
                match body.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => Ok(Some(Box::new(plain(v)?))),
                }
            };
            Leaf::Opaque(Opaque {
                module: module.to_owned(),
                name: name.to_owned(),
                args,
                kwargs: boxed("kwargs")?,
                state: boxed("state")?,
            })
        }
        "$abstract" => {
            let dtype = body
                .get("dtype")
                .and_then(Value::as_str)
                .and_then(|n| n.parse::<DType>().ok())
                .ok_or_else(wrong)?;
            let shape = serde_json::from_value(body.get("shape").cloned().unwrap_or_default())
                .map_err(|_| wrong())?;
            Leaf::Tensor(crate::tree::LazyTensor::abstract_(dtype, shape))
        }
        _ => return Err(bad(format!("`{path}`: unknown leaf kind {tag}"))),
    })
}

/// A manifest node with no stored tensors, as a plain tree node.
fn plain_node(node: &ManifestNode) -> Node {
    match node {
        ManifestNode::Dict(d) => Node::Dict(
            d.iter()
                .map(|(k, v)| (k.clone(), plain_node(v)))
                .collect::<Dict>(),
        ),
        ManifestNode::List(l) => Node::List(l.iter().map(plain_node).collect()),
        ManifestNode::Tensor(s) => Node::Leaf(Leaf::Tensor(crate::tree::LazyTensor::abstract_(
            s.dtype,
            s.shape.clone(),
        ))),
        ManifestNode::Leaf(LeafValue(l)) => Node::Leaf(l.clone()),
    }
}

fn stored_from(body: &Value, files: &[DataFile], path: &str) -> Result<Stored, ManifestError> {
    let wrong = |what: &str| bad(format!("tensor `{path}`: {what}"));
    let file = body
        .get("file")
        .and_then(Value::as_u64)
        .and_then(|f| usize::try_from(f).ok())
        .filter(|&f| f < files.len())
        .ok_or_else(|| wrong("no such data file"))?;
    let dtype = body
        .get("dtype")
        .and_then(Value::as_str)
        .and_then(|n| n.parse::<DType>().ok())
        .ok_or_else(|| wrong("unknown dtype"))?;
    let shape: Vec<u64> = serde_json::from_value(body.get("shape").cloned().unwrap_or_default())
        .map_err(|_| wrong("bad shape"))?;
    let offsets: [u64; 2] =
        serde_json::from_value(body.get("offsets").cloned().unwrap_or_default())
            .map_err(|_| wrong("bad offsets"))?;
    let crc32c = body
        .get("crc32c")
        .and_then(Value::as_str)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| wrong("bad crc32c"))?;
    let sha256 = match body.get("sha256") {
        None => None,
        Some(v) => {
            let raw = v
                .as_str()
                .and_then(unhex)
                .ok_or_else(|| wrong("bad sha256"))?;
            Some(<[u8; 32]>::try_from(raw).map_err(|_| wrong("bad sha256"))?)
        }
    };
    let range = offsets[0]..offsets[1];
    if range.start > range.end || range.end > files[file].size {
        return Err(wrong(&format!(
            "bytes {range:?} are not within `{}` ({} bytes)",
            files[file].name, files[file].size
        )));
    }
    let len = crate::dtype::numel(&shape).and_then(|n| dtype.byte_len(n));
    if len != Some(range.end - range.start) {
        return Err(wrong(&format!(
            "{dtype} × {shape:?} does not take {} bytes",
            range.end - range.start
        )));
    }
    Ok(Stored {
        file,
        dtype,
        shape,
        range,
        crc32c,
        sha256,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
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
        d.insert(
            "info".into(),
            Node::Leaf(Leaf::Opaque(Opaque {
                module: "__main__".into(),
                name: "RunInfo".into(),
                args: vec![],
                kwargs: Some(Box::new(Node::Dict(Dict::from([(
                    "seed".to_owned(),
                    Node::Leaf(Leaf::Int(Int::Small(0))),
                )])))),
                state: Some(Box::new(Node::List(vec![Node::Leaf(Leaf::None)]))),
            })),
        );
        d.insert(
            "w".into(),
            Node::Leaf(Leaf::Tensor(crate::tree::LazyTensor::abstract_(
                DType::F32,
                vec![2],
            ))),
        );
        let mut stored = |path: &str| {
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
        let ManifestNode::Dict(d) = &back.tree else {
            panic!()
        };
        assert!(
            d.iter()
                .any(|(k, v)| k == "$tensor" && matches!(v, ManifestNode::Leaf(_)))
        );
        assert!(matches!(&d[1].1, ManifestNode::Leaf(LeafValue(Leaf::Float(v))) if *v == 2.0));
    }

    #[test]
    fn a_manifest_that_lies_is_refused_naming_the_problem() {
        let json = String::from_utf8(sample().to_json()).unwrap();
        let cases = [
            (
                json.replace("\"layout_version\": 1", "\"layout_version\": 9"),
                "layout version",
            ),
            (
                json.replace("\"size\": 16", "\"size\": 12"),
                "are not within",
            ),
            (json.replace("\"F32\"", "\"F64\""), "does not take 8 bytes"),
            (
                json.replace("\"file\": 0", "\"file\": 3"),
                "no such data file",
            ),
            (
                json.replace("data-00001-of-00001.safetensors", "../escape"),
                "bad file entry",
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
}
