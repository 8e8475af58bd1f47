//! A fault-injecting TCP proxy for HTTP/1.1, between ckptio and a real server: faults happen on
//! the wire (a reset socket, a 503, a stall, a short body), not in a mock.
//!
//! Each client connection carries one request: the proxy rewrites it to `Connection: close`,
//! forwards it upstream and relays the response, applying the next queued [`Fault`] to GET
//! requests (HEAD and others always pass). It counts the response body bytes it relays, so
//! tests can tell how much was fetched twice.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do to one GET.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Relay it untouched.
    Pass,
    /// Relay `n` body bytes, give the client a moment to read them, then reset the connection
    /// (RST). Bytes still unread in the client's socket buffer are lost, as in real resets.
    ResetAfter(usize),
    /// Relay `n` body bytes, then close cleanly: the body ends short of its Content-Length.
    TruncateAfter(usize),
    /// Relay `n` body bytes, then send nothing for `d` before closing.
    StallAfter(usize, Duration),
    /// Answer with this status (and `Retry-After` seconds) instead of forwarding.
    Status(u16, Option<u64>),
}

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// The `Range` header of every GET, in arrival order (`None` without one).
    pub get_ranges: Mutex<Vec<Option<String>>>,
    /// Response body bytes relayed to the client, over all requests.
    pub body_bytes: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let faults = Arc::new(Mutex::new(VecDeque::new()));
        let (s, f) = (Arc::clone(&stats), Arc::clone(&faults));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (s, f) = (Arc::clone(&s), Arc::clone(&f));
                tokio::spawn(async move {
                    let _ = serve(client, upstream, s, f).await;
                });
            }
        });
        Self {
            addr,
            stats,
            faults,
            task,
        }
    }

    /// Queues faults for the next GETs, in order.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.lock().unwrap().extend(faults);
    }

    /// GETs seen so far.
    pub fn gets(&self) -> usize {
        self.stats.get_ranges.lock().unwrap().len()
    }

    /// Response body bytes relayed so far.
    pub fn body_bytes(&self) -> u64 {
        self.stats.body_bytes.load(Ordering::SeqCst)
    }
}

/// Reads up to the end of an HTTP head (`\r\n\r\n`); returns the head and any bytes after it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    stats: Arc<Stats>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
) -> std::io::Result<()> {
    let (head, body_start) = read_head(&mut client).await?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let is_get = head.starts_with("GET ");
    let fault = if is_get {
        stats
            .get_ranges
            .lock()
            .unwrap()
            .push(header(&head, "range").map(str::to_owned));
        faults.lock().unwrap().pop_front().unwrap_or(Fault::Pass)
    } else {
        Fault::Pass
    };

    if let Fault::Status(code, retry_after) = fault {
        let retry = retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let reply = format!(
            "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n{retry}\r\n"
        );
        client.write_all(reply.as_bytes()).await?;
        return client.shutdown().await;
    }

    // One request per connection: the client must not reuse it.
    let mut request: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    request.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(request.as_bytes()).await?;
    if !body_start.is_empty() {
        server.write_all(&body_start).await?;
    }
    if !is_get {
        // Request bodies (PUT) are relayed as they come; responses untouched.
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = tokio::io::copy(&mut cr, &mut sw);
        let down = tokio::io::copy(&mut sr, &mut cw);
        let _ = tokio::join!(up, down);
        return Ok(());
    }

    let (response_head, mut pending) = read_head(&mut server).await?;
    client.write_all(&response_head).await?;
    let limit = match fault {
        Fault::ResetAfter(n) | Fault::TruncateAfter(n) | Fault::StallAfter(n, _) => n,
        _ => usize::MAX,
    };
    let mut sent = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if pending.is_empty() {
            let n = server.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
        }
        let take = pending.len().min(limit - sent);
        client.write_all(&pending[..take]).await?;
        stats.body_bytes.fetch_add(take as u64, Ordering::SeqCst);
        sent += take;
        pending.drain(..take);
        if sent == limit {
            break;
        }
    }
    match fault {
        Fault::ResetAfter(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO))?;
            drop(client);
        }
        Fault::StallAfter(_, stall) => {
            tokio::time::sleep(stall).await;
            drop(client);
        }
        _ => client.shutdown().await?,
    }
    Ok(())
}
