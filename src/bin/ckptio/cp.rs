//! `ckptio cp SRC DST`: an object or a whole checkpoint directory, between any two stores.

use std::sync::Arc;

use anyhow::Result;
use ckptio::{Copied, FetchOptions, copy_dir, copy_object};
use indicatif::HumanBytes;

use crate::progress::Bar;
use crate::text::count;
use crate::{Interrupted, SrcDstArgs, say};

/// Arguments of `ckptio cp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to copy: an object, or a directory (prefix) ending in `/`.
    src: String,
    /// Where to: an object, or a directory ending in `/` (the source's name is kept).
    dst: String,
    #[command(flatten)]
    stores: SrcDstArgs,
    /// Objects copied at once (for a directory).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

/// Copies: parallel ranges in, multipart out; a directory's commit marker last.
pub async fn run(args: Args, quiet: bool) -> Result<()> {
    let (src, mut dst) = args.stores.resolve(&args.src, &args.dst)?;
    let bar = Arc::new(Bar::new(quiet));
    let fetch = FetchOptions {
        progress: bar.clone(),
        ..FetchOptions::default()
    };
    let dir =
        args.src.ends_with('/') || matches!(ckptio::stat(&src).await, Err(e) if e.is_not_found());
    if args.dst.ends_with('/')
        && !dir
        && let Some(name) = src.path().filename()
    {
        dst = dst.join(name);
    }
    let work = async {
        if dir {
            copy_dir(&src, &dst, fetch, args.concurrency).await
        } else {
            copy_object(&src, &dst, fetch)
                .await
                .map(|bytes| Copied { objects: 1, bytes })
        }
    };
    let copied = tokio::select! {
        copied = work => copied?,
        _ = tokio::signal::ctrl_c() => return Err(Interrupted.into()),
    };
    if !quiet {
        say!(
            "copied {}, {} to {dst}",
            count(copied.objects, "object"),
            HumanBytes(copied.bytes)
        );
    }
    Ok(())
}
