//! `ckptio stat URI`: what one HEAD tells.

use anyhow::Result;
use indicatif::HumanBytes;

use crate::{StoreArgs, object_error, out, out_json};

/// Arguments of `ckptio stat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object: a path, file://, s3://, gs://, az://, http(s):// or memory:// URI.
    uri: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints the object's size, ETag, last-modified time and version.
pub async fn run(args: Args) -> Result<()> {
    let location = args.store.resolve(&args.uri)?;
    let info = match ckptio::stat(&location).await {
        Ok(info) => info,
        Err(e) => return Err(object_error(&location, e).await),
    };
    let last_modified = info
        .last_modified
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if args.json {
        let doc = serde_json::json!({
            "uri": info.uri,
            "size": info.size,
            "etag": info.etag,
            "last_modified": last_modified,
            "version": info.version,
        });
        out_json!(doc);
    } else {
        out!("uri            {}", info.uri);
        out!("size           {} ({})", info.size, HumanBytes(info.size));
        out!("etag           {}", info.etag.as_deref().unwrap_or("-"));
        out!("last-modified  {last_modified}");
        out!("version        {}", info.version.as_deref().unwrap_or("-"));
    }
    Ok(())
}
