//! Buffers of one size, lent out and frozen into [`Bytes`], taken back when the last view of
//! one drops: the chunks of a stream land in memory that is already faulted in, where a fresh
//! buffer per chunk costs the kernel a zeroed page per 4 KiB (a third of the CPU time of
//! `ckptio cp` from a local file).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::sink::{RangeSink, Region};
use crate::error::{Error, Result};

/// The free buffers of one stream. It holds no more than were ever lent at once, and goes away
/// with the stream and the last chunk it produced.
pub(crate) struct Pool {
    size: usize,
    free: Mutex<Vec<Region>>,
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
        let region = match reused {
            Some(region) => region,
            // Reused, a buffer pays for its pages once: small ones do.
            None => Region::new(self.size, false)?,
        };
        Some(Lease {
            region,
            len,
            filled: 0,
            pool: Arc::clone(self),
        })
    }
}

/// One buffer of a [`Pool`], `len` bytes long, back in the pool when dropped.
pub(crate) struct Lease {
    region: Region,
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
        &self.region.as_ref()[..self.len]
    }
}

/// The buffer, to be filled whole.
impl AsMut<[u8]> for Lease {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.region.as_mut()[..self.len]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let region = std::mem::replace(&mut self.region, Region::Heap(Vec::new()));
        if let Ok(mut free) = self.pool.free.lock() {
            free.push(region);
        }
    }
}

/// Fills the buffer from the start, frame by frame. The range reader stops a body longer than
/// its range before it gets here; more than the buffer holds is refused all the same.
impl RangeSink for Lease {
    fn received(&self) -> u64 {
        self.filled as u64
    }

    async fn accept(&mut self, piece: Bytes) -> Result<()> {
        let at = self.filled;
        let dest = self
            .as_mut()
            .get_mut(at..at + piece.len())
            .ok_or_else(|| Error::LocalIo {
                path: "<memory>".into(),
                action: "take more bytes than the range has",
                source: io::Error::from(io::ErrorKind::InvalidData),
            })?;
        dest.copy_from_slice(&piece);
        self.filled += piece.len();
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

    #[tokio::test]
    async fn a_frame_past_the_lease_is_an_error_not_a_panic() {
        let pool = Pool::new(8);
        let mut lease = pool.lend(4).unwrap();
        lease.accept(Bytes::from_static(b"abc")).await.unwrap();
        let err = lease.accept(Bytes::from_static(b"de")).await.unwrap_err();
        assert!(
            err.to_string().contains("more bytes than the range has"),
            "{err}"
        );
        assert_eq!(lease.received(), 3);
    }
}
