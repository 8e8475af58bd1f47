//! Buffers of one size, lent out and frozen into [`Bytes`], taken back when the last view of
//! one drops: the chunks of a stream land in memory that is already faulted in, where a fresh
//! buffer per chunk costs the kernel a zeroed page per 4 KiB (a third of the CPU time of
//! `ckptio cp` from a local file).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::sink::RangeSink;
use crate::error::Result;

/// The free buffers of one stream. It holds no more than were ever lent at once, and goes away
/// with the stream and the last chunk it produced.
#[derive(Debug)]
pub(crate) struct Pool {
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    /// A pool of buffers of `size` bytes.
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            free: Mutex::new(Vec::new()),
        })
    }

    /// A buffer for `len` bytes (at most the pool's size), or `None` if the memory cannot be
    /// had. A reused buffer still holds an earlier chunk's bytes: only those written through
    /// its `as_mut` or `accept` are ever read back.
    pub fn lend(self: &Arc<Self>, len: usize) -> Option<Lease> {
        if len > self.size {
            return None;
        }
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        let buf = match reused {
            Some(buf) => buf,
            None => {
                let mut buf = Vec::new();
                buf.try_reserve_exact(self.size).ok()?;
                buf.resize(self.size, 0);
                buf
            }
        };
        Some(Lease {
            buf,
            len,
            filled: 0,
            pool: Arc::clone(self),
        })
    }
}

/// One buffer of a [`Pool`], `len` bytes long, back in the pool when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    buf: Vec<u8>,
    len: usize,
    /// Bytes written by [`accept`](RangeSink::accept), from the start.
    filled: usize,
    pool: Arc<Pool>,
}

impl Lease {
    /// The buffer's `len` bytes, without a copy.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The buffer, to be filled whole.
impl AsMut<[u8]> for Lease {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.free.lock() {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Fills the buffer from the start, frame by frame. The caller (the range reader) never hands
/// it more than the range's length.
impl RangeSink for Lease {
    fn received(&self) -> u64 {
        self.filled as u64
    }

    async fn accept(&mut self, piece: Bytes) -> Result<()> {
        let end = self.filled + piece.len();
        self.buf[self.filled..end].copy_from_slice(&piece);
        self.filled = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_chunk_returns_its_buffer_for_the_next() {
        let pool = Pool::new(8);
        let mut first = pool.lend(8).unwrap();
        first.as_mut().copy_from_slice(b"abcdefgh");
        let first = first.freeze();
        let view = first.slice(2..4);
        drop(first);
        assert_eq!(pool.free.lock().unwrap().len(), 0, "a view still holds it");
        drop(view);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        let mut second = pool.lend(3).unwrap();
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        second.as_mut().copy_from_slice(b"xyz");
        assert_eq!(second.freeze(), &b"xyz"[..], "only the new length is seen");
    }

    #[tokio::test]
    async fn frames_fill_the_buffer_in_order() {
        let pool = Pool::new(6);
        let mut lease = pool.lend(5).unwrap();
        lease.accept(Bytes::from_static(b"he")).await.unwrap();
        lease.accept(Bytes::from_static(b"llo")).await.unwrap();
        assert_eq!(lease.received(), 5);
        assert_eq!(lease.freeze(), &b"hello"[..]);
    }

    #[test]
    fn more_than_the_pool_size_is_refused() {
        assert!(Pool::new(4).lend(5).is_none());
    }
}
