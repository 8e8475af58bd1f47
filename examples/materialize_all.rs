//! Opens a checkpoint and materializes every tensor (or those matching GLOB) through the
//! streaming API (bounded memory), then says what crossed the network: the ckptio rows of
//! `scripts/bench safetensors` and `scripts/bench torch`.
//!
//! ```sh
//! cargo run --release --example materialize_all -- URI [GLOB]
//! ```

use ckptio::MaterializeOptions;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().ok_or("usage: materialize_all URI [GLOB]")?;
    let location = ckptio::resolve(&uri, &Default::default())?;
    let (counted, counts) = location.counted();
    let checkpoint = ckptio::open(&counted, Default::default()).await?;
    let tree = match args.next() {
        Some(glob) => checkpoint.tree.select(&[glob.as_str()])?,
        None => checkpoint.tree,
    };
    let tensors = tree.tensors().map(|(p, t)| (p, t.clone())).collect();
    let mut stream = ckptio::materialize_stream(tensors, MaterializeOptions::default());
    let (mut count, mut bytes, mut check) = (0u64, 0u64, 0u8);
    while let Some(item) = stream.next().await {
        let (_, tensor) = item?;
        count += 1;
        bytes += tensor.data.len() as u64;
        check ^= tensor.data.iter().fold(0u8, |a, b| a ^ b);
    }
    println!(
        "{count} tensors, {bytes} bytes, xor {check:02x}; moved {} bytes in {} requests",
        counts.bytes(),
        counts.gets() + counts.heads()
    );
    Ok(())
}
