//! `ckptio ls | verify | rm`: numbered checkpoints under a root, integrity, removal.

use anyhow::Result;
use ckptio::checkpointer::{Checkpointer, CheckpointerOptions, Kind};
use indicatif::HumanBytes;

use crate::{StoreOption, out, storage_options};

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
    /// A store option KEY=VALUE (repeatable), overriding the environment.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    options: Vec<StoreOption>,
}

/// Lists the checkpoints: index, name, kind, committed or partial.
pub async fn ls(args: LsArgs) -> Result<()> {
    let root = ckptio::location::resolve(&args.root, &storage_options(&args.options))?;
    let ckpt = Checkpointer::new(
        root,
        CheckpointerOptions {
            prefix: args.prefix,
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
    for e in ckpt.list().await? {
        // A file is whole when it opens (a torch.save cut short does not).
        let whole = e.kind != Kind::File
            || ckptio::format::open(&ckpt.location_of(&e), Default::default())
                .await
                .is_ok();
        let kind = match e.kind {
            Kind::Ckptio => "ckptio",
            Kind::Dcp => "dcp",
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
    /// A store option KEY=VALUE (repeatable), overriding the environment.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    options: Vec<StoreOption>,
}

/// Reads every tensor once, checking sizes and checksums (CRC-32C of ckptio checkpoints,
/// CRC-32 of torch storages), keeping nothing.
pub async fn verify(args: VerifyArgs) -> Result<()> {
    let loc = ckptio::location::resolve(&args.uri, &storage_options(&args.options))?;
    let checked = ckptio::format::verify(&loc, Default::default()).await?;
    out!(
        "{loc}: ok ({}, {} tensors, {} checked)",
        checked.format,
        checked.tensors,
        HumanBytes(checked.bytes)
    );
    Ok(())
}

/// Arguments of `ckptio rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The checkpoint (a ckptio or DCP directory, or a file).
    uri: String,
    /// A store option KEY=VALUE (repeatable), overriding the environment.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    options: Vec<StoreOption>,
}

/// Removes a checkpoint, its commit marker first.
pub async fn rm(args: RmArgs) -> Result<()> {
    let loc = ckptio::location::resolve(&args.uri, &storage_options(&args.options))?;
    let kind = ckptio::checkpointer::remove(&loc).await?;
    tracing::info!(uri = %loc, ?kind, "removed");
    Ok(())
}
