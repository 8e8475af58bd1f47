//! `ckptio inspect URI`: the tree of a checkpoint, without fetching tensor data.

use anyhow::Result;
use ckptio::{FetchOptions, Int, Leaf, Node, StateTree};
use indicatif::HumanBytes;
use serde_json::{Value, json};

use crate::{ReadArgs, StoreArgs, filtered, out, out_json};

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
    let checkpoint = ckptio::open(&counted, args.read.options(FetchOptions::default())).await?;
    let tree = filtered(&checkpoint.tree, &args.select, &args.ignore)?;
    if args.json {
        let tensors: Vec<Value> = tree
            .tensors()
            .map(|(path, t)| json!({ "path": path, "dtype": t.dtype.name(), "shape": t.shape, "nbytes": t.nbytes() }))
            .collect();
        let doc = json!({
            "uri": location.uri(),
            "format": checkpoint.format.to_string(),
            "metadata": checkpoint.metadata,
            "tensors": tensors,
            "tree": Value::Object(tree.root().iter().map(|(k, n)| (k.clone(), node_json(n))).collect()),
        });
        out_json!(serde_json::to_string_pretty(&doc)?);
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

fn print_text(
    uri: &str,
    format: &str,
    metadata: &std::collections::BTreeMap<String, String>,
    tree: &StateTree,
) -> Result<()> {
    let (count, bytes) = tree
        .tensors()
        .fold((0u64, 0u64), |(c, b), (_, t)| (c + 1, b + t.nbytes()));
    out!("{uri}: {format}, {count} tensors, {}", HumanBytes(bytes));
    if !metadata.is_empty() {
        out!("metadata:");
        for (k, v) in metadata {
            out!("  {k}: {v}");
        }
    }
    let rows: Vec<(String, String)> = tree
        .leaves()
        .map(|(path, leaf)| (path, leaf_text(leaf)))
        .collect();
    let width = rows.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
    for (path, text) in rows {
        out!("{path:width$}  {text}");
    }
    Ok(())
}

fn leaf_text(leaf: &Leaf) -> String {
    match leaf {
        Leaf::Tensor(t) => {
            let mut text = format!(
                "{:<7} {:<16} {}",
                t.dtype.name(),
                format!("{:?}", t.shape),
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

fn node_json(node: &Node) -> Value {
    match node {
        Node::Dict(d) => Value::Object(d.iter().map(|(k, n)| (k.clone(), node_json(n))).collect()),
        Node::List(items) => Value::Array(items.iter().map(node_json).collect()),
        Node::Leaf(Leaf::Tensor(t)) => match &t.data {
            ckptio::TensorData::Unreadable(u) => json!({
                "dtype": t.dtype.name(), "shape": t.shape, "nbytes": t.nbytes(), "unreadable": &*u.what,
            }),
            _ => json!({ "dtype": t.dtype.name(), "shape": t.shape, "nbytes": t.nbytes() }),
        },
        Node::Leaf(Leaf::None) => Value::Null,
        Node::Leaf(Leaf::Bool(b)) => json!(b),
        Node::Leaf(Leaf::Int(Int::Small(i))) => json!(i),
        Node::Leaf(Leaf::Int(big)) => json!(big.to_string()),
        Node::Leaf(Leaf::Float(f)) => json!(f),
        Node::Leaf(Leaf::Str(s)) => json!(s),
        Node::Leaf(Leaf::Bytes(b)) => json!({ "bytes": b.len() }),
        Node::Leaf(Leaf::Opaque(o)) => json!({ "opaque": format!("{}.{}", o.module, o.name) }),
    }
}
