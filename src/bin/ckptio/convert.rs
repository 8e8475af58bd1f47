//! `ckptio convert SRC DST`: any readable checkpoint to safetensors, a `torch.save` file or a
//! ckptio checkpoint, streaming.

use std::sync::Arc;

use anyhow::{Result, bail};
use ckptio::{
    FetchOptions, Progress, SaveFormat, SaveOptions, WriteOptions, save, write_safetensors,
    write_torch,
};

use crate::progress::Bar;
use crate::units::ByteSize;
use crate::{Interrupted, ReadArgs, SrcDstArgs, ignored, say, text};

/// Arguments of `ckptio convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint to read (any path or URI).
    src: String,
    /// Where to write (any path or URI); shards go next to it.
    dst: String,
    #[command(flatten)]
    stores: SrcDstArgs,
    /// Keep only paths matching this glob, and what lies below them (repeatable).
    #[arg(long = "select", value_name = "GLOB")]
    select: Vec<String>,
    /// Drop paths matching this glob, and what lies below them (repeatable).
    #[arg(long = "ignore", value_name = "GLOB")]
    ignore: Vec<String>,
    /// Split into shards of at most this size, with an index (Hugging Face convention); for
    /// a ckptio checkpoint, the largest data file.
    #[arg(long, value_name = "SIZE")]
    max_shard_size: Option<ByteSize>,
    /// Output format [default: safetensors when DST ends in `.safetensors`, torch when it ends
    /// in `.pt`, `.pth`, `.ckpt` or `.bin`, else ckptio].
    #[arg(long, value_enum)]
    to: Option<Target>,
    /// For a ckptio checkpoint: also store each tensor's SHA-256 (checked instead of the
    /// CRC-32C when it is read).
    #[arg(long)]
    sha256: bool,
    /// Leave out tensors ckptio knows are there but does not read (quantized, sparse, nested)
    /// instead of refusing to convert.
    #[arg(long)]
    skip_unreadable: bool,
    /// Write block-quantized tensors (GGUF's Q4_0…Q6_K) as their F32 values; without it they
    /// are refused, since their raw blocks mean nothing outside their format.
    #[arg(long)]
    dequantize: bool,
    #[command(flatten)]
    read: ReadArgs,
}

/// Output formats, as `--to` takes them (the library's [`SaveFormat`], with help text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// safetensors (tensor names are tree paths).
    Safetensors,
    /// A ckptio checkpoint directory: the whole tree, data files and a manifest written last.
    Ckptio,
    /// One `torch.save` file: the whole tree, which `torch.load(weights_only=True)` reads.
    Torch,
}

impl From<Target> for SaveFormat {
    fn from(target: Target) -> Self {
        match target {
            Target::Safetensors => Self::Safetensors,
            Target::Ckptio => Self::Ckptio,
            Target::Torch => Self::Torch,
        }
    }
}

/// Converts; tensors stream from source to destination within a bounded memory budget.
pub async fn run(args: Args, quiet: bool) -> Result<()> {
    let (src, dst) = args.stores.resolve(&args.src, &args.dst)?;
    let bar = Arc::new(Bar::new(quiet));
    let fetch = FetchOptions {
        progress: bar.clone(),
        ..FetchOptions::default()
    };
    // Sources keep these options: every tensor byte read advances the bar.
    let checkpoint = ckptio::open(
        &src,
        ckptio::OpenOptions {
            select: args.select.clone(),
            ..args.read.options(fetch)
        },
    )
    .await?;
    let mut tree = ignored(checkpoint.tree, &args.ignore)?;
    let quantized = dequantize(&src, &mut tree, args.dequantize)?;
    let unreadable: Vec<(String, String)> = tree
        .tensors()
        .filter_map(|(path, t)| match &t.data {
            ckptio::TensorData::Unreadable(u) => Some((path, u.what.to_string())),
            _ => None,
        })
        .chain(quantized)
        .collect();
    if !unreadable.is_empty() {
        let list: Vec<String> = unreadable
            .iter()
            .map(|(path, what)| format!("`{path}` ({what})"))
            .collect();
        if !args.skip_unreadable {
            bail!(
                "{src}: {} tensor(s) ckptio does not read: {}; --skip-unreadable leaves them out",
                unreadable.len(),
                list.join(", ")
            );
        }
        for (path, _) in &unreadable {
            tree.remove(path);
        }
        say!("left out {}", list.join(", "));
    }
    let target = args
        .to
        .map_or_else(|| SaveFormat::for_name(&args.dst), SaveFormat::from);
    let dst = match target.extension() {
        Some(ext) if dst.is_directory() => dst.join(&format!("{}.{ext}", stem(&src))),
        _ => dst,
    };
    let (count, total) = tree
        .tensors()
        .fold((0, 0), |(n, bytes), (_, t)| (n + 1, bytes + t.nbytes()));
    if count == 0 && target == SaveFormat::Safetensors {
        bail!("{src}: no tensors to convert (after --select/--ignore)");
    }
    bar.started(&src.uri(), total);
    if target == SaveFormat::Ckptio {
        let defaults = SaveOptions::default();
        let options = SaveOptions {
            metadata: checkpoint.metadata,
            max_file_size: args.max_shard_size.map_or(defaults.max_file_size, |s| s.0),
            sha256: args.sha256,
            ..defaults
        };
        let manifest = tokio::select! {
            saved = save(&dst, &tree, &options) => saved?,
            _ = tokio::signal::ctrl_c() => return Err(Interrupted.into()),
        };
        bar.finished();
        if !quiet {
            say!(
                "wrote {dst}: {} and manifest.json",
                text::count(manifest.files.len(), "data file")
            );
        }
        return Ok(());
    }
    if target == SaveFormat::Torch {
        if args.max_shard_size.is_some() {
            bail!("--max-shard-size: a torch file is one file (shard safetensors instead)");
        }
        let options = WriteOptions::default();
        let written = tokio::select! {
            written = write_torch(&tree, &dst, &options) => written?,
            _ = tokio::signal::ctrl_c() => return Err(Interrupted.into()),
        };
        bar.finished();
        if !quiet {
            say!("wrote {}", written.files.join(", "));
        }
        return Ok(());
    }
    let mut metadata = checkpoint.metadata;
    // Hugging Face's loaders refuse safetensors files without a `format`.
    metadata
        .entry("format".into())
        .or_insert_with(|| "pt".into());
    let write = WriteOptions {
        max_shard_size: args.max_shard_size.map(|s| s.0),
        metadata,
        ..WriteOptions::default()
    };
    let written = tokio::select! {
        written = write_safetensors(tree.into_tensors(), &dst, &write) => written?,
        _ = tokio::signal::ctrl_c() => return Err(Interrupted.into()),
    };
    bar.finished();
    if !quiet {
        for file in &written.files {
            say!("wrote {file}");
        }
    }
    Ok(())
}

/// The name a converted file takes in a directory: the source's, without its extension
/// (`model.safetensors.index.json` and a directory `step-3/` give `model` and `step-3`).
fn stem(src: &ckptio::Location) -> String {
    let name = src.path().filename().unwrap_or("checkpoint");
    let name = [".safetensors.index.json", ".bin.index.json", ".index.json"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
        _ => name.to_owned(),
    }
}

/// With `wanted`, every quantized tensor ckptio decodes becomes its F32 values; the ones it
/// cannot decode are returned as unreadable. Without it, any quantized tensor is refused.
fn dequantize(
    src: &ckptio::Location,
    tree: &mut ckptio::StateTree,
    wanted: bool,
) -> Result<Vec<(String, String)>> {
    let quantized: Vec<(String, ckptio::LazyTensor)> = tree
        .tensors()
        .filter(|(_, t)| t.quantized.is_some())
        .map(|(path, t)| (path, t.clone()))
        .collect();
    if quantized.is_empty() {
        return Ok(Vec::new());
    }
    if !wanted {
        let names: Vec<String> = quantized
            .iter()
            .take(5)
            .map(|(p, _)| format!("`{p}`"))
            .collect();
        bail!(
            "{src}: {} tensor(s) are quantized blocks ({}{}); --dequantize writes their F32 values",
            quantized.len(),
            names.join(", "),
            if quantized.len() > 5 { ", …" } else { "" }
        );
    }
    let mut raw = Vec::new();
    for (path, t) in quantized {
        match t.dequantized() {
            Some(values) => {
                tree.insert(&path, ckptio::Node::from(values))?;
            }
            None => {
                let scheme = t.quantized.map_or("?", |q| q.scheme.name());
                raw.push((
                    path,
                    format!("{scheme} blocks, which ckptio does not dequantize"),
                ));
            }
        }
    }
    Ok(raw)
}
