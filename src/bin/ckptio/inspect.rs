//! `ckptio inspect URI`: the tree of a checkpoint, without fetching tensor data.

use std::io::Write as _;

use anyhow::Result;
use ckptio::{FetchOptions, Int, Leaf, Node, StateTree};
use indicatif::HumanBytes;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::{Value, json};

use crate::text::{count, printable};
use crate::{ReadArgs, StoreArgs, ignored, out};

/// Arguments of `ckptio inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint: a path or URI (file, s3, gs, az, http(s), memory).
    uri: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Show only paths matching this glob, and what lies below them (repeatable).
    #[arg(long = "select", value_name = "GLOB")]
    select: Vec<String>,
    /// Hide paths matching this glob, and what lies below them (repeatable).
    #[arg(long = "ignore", value_name = "GLOB")]
    ignore: Vec<String>,
    /// Print one JSON document: the tensors as a list, and the nested tree.
    #[arg(long)]
    json: bool,
    /// Report the requests and bytes the inspection cost (on stderr).
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    read: ReadArgs,
}

/// Prints the tree: path, dtype, shape and size of each tensor, scalar values, metadata.
pub async fn run(args: Args) -> Result<()> {
    let location = args.store.resolve(&args.uri)?;
    let (counted, counts) = location.counted();
    let checkpoint = ckptio::open(
        &counted,
        ckptio::OpenOptions {
            select: args.select.clone(),
            ..args.read.options(FetchOptions::default())
        },
    )
    .await?;
    let tree = ignored(checkpoint.tree, &args.ignore)?;
    if args.json {
        let (uri, format) = (location.uri(), checkpoint.format.to_string());
        let doc = Doc::new(&uri, &format, &checkpoint.metadata, &tree);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        out.flush()?;
    } else {
        print_text(
            &location.uri(),
            &checkpoint.format.to_string(),
            &checkpoint.metadata,
            &tree,
        )?;
    }
    if args.stats {
        eprintln!("stats: {counts}");
    }
    Ok(())
}

/// Prints one line per leaf, paths aligned, walking the tree twice instead of holding the
/// lines.
fn print_text(
    uri: &str,
    format: &str,
    metadata: &std::collections::BTreeMap<String, String>,
    tree: &StateTree,
) -> Result<()> {
    let (tensors, bytes) = tree
        .tensors()
        .fold((0usize, 0u64), |(c, b), (_, t)| (c + 1, b + t.nbytes()));
    out!(
        "{uri}: {format}, {}, {}",
        count(tensors, "tensor"),
        HumanBytes(bytes)
    );
    if !metadata.is_empty() {
        out!("metadata:");
        for (k, v) in metadata {
            out!("  {k}: {v}");
        }
    }
    let mut width = 0;
    tree.walk_leaves(|path, _| width = width.max(path.len()));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut written = Ok(());
    tree.walk_leaves(|path, leaf| {
        if written.is_ok() {
            let line = format!("{path:width$}  {}", leaf_text(leaf));
            written = writeln!(out, "{}", printable(&line));
        }
    });
    written?;
    out.flush()?;
    Ok(())
}

fn leaf_text(leaf: &Leaf) -> String {
    match leaf {
        Leaf::Tensor(t) => {
            // Quantized blocks show as their scheme and the shape of the values they hold.
            let (dtype, shape) = match t.quantized {
                Some(q) => (q.scheme.name(), q.values_shape(&t.shape)),
                None => (t.dtype.name(), t.shape.clone()),
            };
            let mut text = format!(
                "{:<7} {:<16} {}",
                dtype,
                format!("{shape:?}"),
                HumanBytes(t.nbytes())
            );
            if let ckptio::TensorData::Unreadable(u) = &t.data {
                text.push_str(&format!("  ({}; not read)", u.what));
            }
            text
        }
        Leaf::None => "None".into(),
        Leaf::Bool(b) => b.to_string(),
        Leaf::Int(i) => i.to_string(),
        Leaf::Float(f) => f.to_string(),
        Leaf::Str(s) => format!("{s:?}"),
        Leaf::Bytes(b) => format!("<{} bytes>", b.len()),
        Leaf::Opaque(o) => format!("<{}.{}>", o.module, o.name),
    }
}

/// The `--json` document, written as it is serialized.
#[derive(serde::Serialize)]
struct Doc<'a> {
    uri: &'a str,
    format: &'a str,
    metadata: &'a std::collections::BTreeMap<String, String>,
    tensors: Tensors<'a>,
    tree: NodeJson<'a>,
}

impl<'a> Doc<'a> {
    fn new(
        uri: &'a str,
        format: &'a str,
        metadata: &'a std::collections::BTreeMap<String, String>,
        tree: &'a StateTree,
    ) -> Self {
        Self {
            uri,
            format,
            metadata,
            tensors: Tensors(tree),
            tree: NodeJson::Root(tree.root()),
        }
    }
}

/// Every tensor: path, dtype, shape, bytes.
struct Tensors<'a>(&'a StateTree);

impl Serialize for Tensors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut result = Ok(());
        self.0.walk_leaves(|path, leaf| {
            if let (Leaf::Tensor(t), Ok(())) = (leaf, &result) {
                let mut entry = tensor_json(t);
                entry["path"] = json!(path);
                result = seq.serialize_element(&entry);
            }
        });
        result?;
        seq.end()
    }
}

/// A node of the tree: tensors as their type, shape and size; other leaves as JSON values.
enum NodeJson<'a> {
    Root(&'a ckptio::Dict),
    Node(&'a Node),
}

impl Serialize for NodeJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let dict =
            |d: &ckptio::Dict, s: S| s.collect_map(d.iter().map(|(k, n)| (k, NodeJson::Node(n))));
        match *self {
            Self::Root(d) | Self::Node(Node::Dict(d)) => dict(d, s),
            Self::Node(Node::List(items)) => s.collect_seq(items.iter().map(NodeJson::Node)),
            Self::Node(Node::Leaf(leaf)) => leaf_json(leaf).serialize(s),
        }
    }
}

/// A tensor's type, shape and stored bytes; what ckptio does not read, and for quantized
/// blocks their scheme and the shape of their values.
fn tensor_json(t: &ckptio::LazyTensor) -> Value {
    let mut entry = json!({ "dtype": t.dtype.name(), "shape": t.shape, "nbytes": t.nbytes() });
    if let ckptio::TensorData::Unreadable(u) = &t.data {
        entry["unreadable"] = json!(&*u.what);
    }
    if let Some(q) = t.quantized {
        entry["quantized"] =
            json!({ "scheme": q.scheme.name(), "shape": q.values_shape(&t.shape) });
    }
    entry
}

fn leaf_json(leaf: &Leaf) -> Value {
    match leaf {
        Leaf::Tensor(t) => tensor_json(t),
        Leaf::None => Value::Null,
        Leaf::Bool(b) => json!(b),
        Leaf::Int(Int::Small(i)) => json!(i),
        Leaf::Int(big) => json!(big.to_string()),
        Leaf::Float(f) => json!(f),
        Leaf::Str(s) => json!(s),
        Leaf::Bytes(b) => json!({ "bytes": b.len() }),
        Leaf::Opaque(o) => json!({ "opaque": format!("{}.{}", o.module, o.name) }),
    }
}
