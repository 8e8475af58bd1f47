//! `ckptio ls | verify | rm`: numbered checkpoints under a root, integrity, removal.

use anyhow::Result;
use ckptio::{Checkpointer, CheckpointerOptions, FetchOptions, Kind};
use indicatif::HumanBytes;

use crate::text::count;
use crate::{ReadArgs, StoreArgs, out, say};

/// Arguments of `ckptio ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The root holding the checkpoints (`s3://bucket/run1/`).
    root: String,
    /// Checkpoint names are PREFIX followed by the index.
    #[arg(long, default_value = "step-")]
    prefix: String,
    /// Print only the latest committed checkpoint's URI.
    #[arg(long)]
    latest: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Lists the checkpoints: index, name, kind, committed or partial.
pub async fn ls(args: LsArgs, quiet: bool) -> Result<()> {
    let root = args.store.resolve(&args.root)?;
    let ckpt = Checkpointer::new(
        root,
        CheckpointerOptions {
            prefix: args.prefix.clone(),
            ..CheckpointerOptions::default()
        },
    );
    if args.latest {
        match ckpt.latest_entry().await? {
            Some(entry) => out!("{}", ckpt.location_of(&entry).uri()),
            None => anyhow::bail!("{}: no committed checkpoint", args.root),
        }
        return Ok(());
    }
    let entries = ckpt.list().await?;
    if entries.is_empty() && !quiet {
        // Stdout stays empty for scripts; a person sees why there is nothing (a typo in ROOT?).
        say!(
            "ckptio: no numbered checkpoints ({}N) under {}",
            args.prefix,
            args.root
        );
    }
    for e in entries {
        let whole = ckpt.is_whole(&e).await;
        let kind = match e.kind {
            Kind::Ckptio => "ckptio",
            Kind::Dcp => "dcp",
            Kind::Orbax => "orbax",
            Kind::File => "file",
            Kind::Unknown => "-",
        };
        let state = match (e.committed, whole) {
            (true, true) => "committed",
            (true, false) => "incomplete (does not open)",
            (false, _) => "partial (no commit marker: a save in progress or one that died)",
        };
        out!("{:>10}  {:<24}  {kind:<6}  {state}", e.index, e.name);
    }
    Ok(())
}

/// Arguments of `ckptio verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The checkpoint: a ckptio directory, or any file ckptio reads.
    uri: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Refuse pickled objects of classes ckptio does not understand.
    #[arg(long)]
    strict: bool,
}

/// Reads every tensor once, checking sizes and checksums (CRC-32C of ckptio checkpoints,
/// CRC-32 of torch storages), keeping nothing.
pub async fn verify(args: VerifyArgs) -> Result<()> {
    let loc = args.store.resolve(&args.uri)?;
    let read = ReadArgs {
        strict: args.strict,
        no_verify: false,
    };
    let verified = ckptio::verify(&loc, read.options(FetchOptions::default())).await?;
    let checksums = match (verified.checked, verified.tensors) {
        (_, 0) => String::new(),
        (0, _) => "; no checksum recorded: bytes read, not compared".into(),
        (c, n) if c == n => "; every tensor matched its checksum".into(),
        (c, n) => format!(
            "; {c} of {n} matched their checksums, {} have none recorded",
            n - c
        ),
    };
    out!(
        "{loc}: ok ({}, {}, {} read{checksums})",
        verified.format,
        count(verified.tensors, "tensor"),
        HumanBytes(verified.bytes)
    );
    Ok(())
}

/// Arguments of `ckptio rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The checkpoint (a ckptio, DCP or Orbax directory, or a file).
    uri: String,
    /// Also remove a directory that holds no checkpoint (a save that died before its commit):
    /// everything under it.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Removes a checkpoint, its commit marker first.
pub async fn rm(args: RmArgs) -> Result<()> {
    let loc = args.store.resolve(&args.uri)?;
    let kind = if args.force {
        ckptio::remove_any(&loc).await?
    } else {
        ckptio::remove(&loc).await?
    };
    tracing::info!(uri = %loc, ?kind, "removed");
    Ok(())
}
