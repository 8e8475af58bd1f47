//! A TCP proxy that puts a real network's latency and per-connection bandwidth between a client
//! and a server on loopback: what `scripts/bench latency` runs every remote row through.
//!
//! Bytes are relayed unchanged, each direction delayed by half the round-trip time (a pipeline:
//! many bytes are in flight at once, as on a long link, not one chunk per delay) and paced to the
//! given rate per connection and direction (a single S3 connection delivers about 100 MB/s,
//! which is why clients open many). A connection's first byte thus arrives one round trip after
//! the request, and its TCP handshake costs another, as it would.
//!
//! ```sh
//! cargo run --release --example latency_proxy -- UPSTREAM_HOST:PORT RTT_MS [MB_PER_S]
//! ```
//!
//! It prints the address it listens on (`127.0.0.1:PORT`) and relays until killed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The most bytes one direction of one connection holds in flight: a generous TCP window.
const WINDOW: usize = 16 << 20;
const READ: usize = 64 << 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: latency_proxy UPSTREAM_HOST:PORT RTT_MS [MB_PER_S]";
    let mut args = std::env::args().skip(1);
    let upstream = args.next().ok_or(usage)?;
    let rtt: u64 = args.next().ok_or(usage)?.parse()?;
    let rate: Option<f64> = args.next().map(|r| r.parse()).transpose()?;
    let link = Link {
        one_way: Duration::from_micros(rtt * 500),
        bytes_per_sec: rate.map(|mb| mb * 1e6),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            // The handshake's round trip, then the server's own.
            tokio::time::sleep(link.one_way * 2).await;
            if let Ok(server) = TcpStream::connect(&upstream).await {
                relay(client, server, link).await;
            }
        });
    }
}

/// What the link between client and server does to bytes.
#[derive(Debug, Clone, Copy)]
struct Link {
    one_way: Duration,
    bytes_per_sec: Option<f64>,
}

/// Relays both directions until either side closes.
async fn relay(client: TcpStream, server: TcpStream, link: Link) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        direction(client_read, server_write, link),
        direction(server_read, client_write, link),
    );
}

/// One direction: a reader stamps each chunk with when it may leave; a writer sends it then, at
/// no more than the link's rate.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(WINDOW / READ);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; READ];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now() + link.one_way, buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut next_free = Instant::now();
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due.max(next_free)).await;
            if to.write_all(&buf).await.is_err() {
                break;
            }
            if let Some(rate) = link.bytes_per_sec {
                next_free = next_free.max(due) + Duration::from_secs_f64(buf.len() as f64 / rate);
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
