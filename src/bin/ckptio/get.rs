//! `ckptio get URI DEST`: parallel, resumable, ETag-pinned download.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ckptio::{FetchOptions, Object, RetryPolicy};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::progress::Bar;
use crate::units::ByteSize;
use crate::{Interrupted, StoreArgs, object_error};

/// Arguments of `ckptio get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object: a path, file://, s3://, gs://, az://, http(s):// or memory:// URI.
    uri: String,
    /// A local file, a directory to put the object in, or `-` for stdout (bytes in order).
    dest: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Range requests in flight at once.
    #[arg(long, default_value_t = FetchOptions::default().concurrency as u16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Bytes per range request (16MiB, 512k, ...).
    #[arg(long, default_value_t = ByteSize(FetchOptions::default().chunk_size))]
    chunk_size: ByteSize,
    /// Retries per range after object_store gave up (0: none).
    #[arg(long, default_value_t = RetryPolicy::default().max_retries)]
    max_retries: usize,
    /// Cap on the download rate, in bytes per second (50M, 1G, ...).
    #[arg(long, value_name = "RATE")]
    limit_rate: Option<ByteSize>,
}

/// Downloads the object; Ctrl-C stops it, leaving only the resumable `.part` file.
pub async fn run(args: Args, quiet: bool) -> Result<()> {
    let location = args.store.resolve(&args.uri)?;
    let options = FetchOptions {
        chunk_size: args.chunk_size.0,
        concurrency: args.concurrency.into(),
        retry: RetryPolicy {
            max_retries: args.max_retries,
            ..RetryPolicy::default()
        },
        rate_limit: args.limit_rate.map(|r| r.0),
        progress: Arc::new(Bar::new(quiet || args.dest == "-")),
        ..FetchOptions::default()
    };
    let dest = match args.dest.as_str() {
        "-" => None,
        dest => Some(PathBuf::from(dest)),
    };
    let object = match Object::open(&location, options).await {
        Ok(object) => object,
        Err(e) => return Err(object_error(&location, e).await),
    };
    let download = async {
        match &dest {
            None => to_stdout(&object).await,
            Some(dest) => Ok(object.download_to(dest).await.map(drop)?),
        }
    };
    tokio::select! {
        result = download => result,
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    }
}

async fn to_stdout(object: &Object) -> Result<()> {
    let mut stdout = tokio::io::stdout();
    let mut pieces = object.stream();
    while let Some(piece) = pieces.next().await {
        let (_, bytes) = piece?;
        match stdout.write_all(&bytes).await {
            // The reader went away (`| head`): nothing more is wanted.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    if let Err(e) = stdout.flush().await
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        bail!("writing to stdout: {e}");
    }
    Ok(())
}
