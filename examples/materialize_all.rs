//! Opens a checkpoint and materializes every tensor through the streaming API (bounded
//! memory): the ckptio rows of `scripts/bench safetensors`.
//!
//! ```sh
//! cargo run --release --example materialize_all -- URI
//! ```

use ckptio::materialize::{self, MaterializeOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::args()
        .nth(1)
        .ok_or("usage: materialize_all URI")?;
    let location = ckptio::location::resolve(&uri, &Default::default())?;
    let checkpoint = ckptio::format::open(&location, Default::default()).await?;
    let tensors = checkpoint
        .tree
        .tensors()
        .map(|(p, t)| (p, t.clone()))
        .collect();
    let mut stream = materialize::stream(tensors, MaterializeOptions::default());
    let (mut count, mut bytes, mut check) = (0u64, 0u64, 0u8);
    while let Some(item) = stream.next().await {
        let (_, tensor) = item?;
        count += 1;
        bytes += tensor.data.len() as u64;
        check ^= tensor.data.iter().fold(0u8, |a, b| a ^ b);
    }
    println!("{count} tensors, {bytes} bytes, xor {check:02x}");
    Ok(())
}
