//! Downloads an object into memory and prints its size: the memory-sink row of `scripts/bench`.
//!
//! ```sh
//! cargo run --release --example get_memory -- [--huge-pages] URI [CONCURRENCY] [CHUNK_BYTES]
//! ```

use ckptio::{FetchOptions, Object};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let huge_pages = args.next_if_eq("--huge-pages").is_some();
    let uri = args
        .next()
        .ok_or("usage: get_memory [--huge-pages] URI [CONCURRENCY] [CHUNK_BYTES]")?;
    let defaults = FetchOptions::default();
    let options = FetchOptions {
        concurrency: args
            .next()
            .map(|c| c.parse())
            .transpose()?
            .unwrap_or(defaults.concurrency),
        chunk_size: args
            .next()
            .map(|c| c.parse())
            .transpose()?
            .unwrap_or(defaults.chunk_size),
        huge_pages,
        ..defaults
    };
    let location = ckptio::resolve(&uri, &Default::default())?;
    let bytes = Object::open(&location, options).await?.bytes().await?;
    println!("{}", bytes.len());
    Ok(())
}
