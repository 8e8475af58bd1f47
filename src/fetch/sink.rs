//! Where the bytes of one range go as they arrive. A range read hands each network frame
//! (a zero-copy [`Bytes`]) to a [`RangeSink`]; a retry resumes from [`RangeSink::received`].

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Advice, MmapMut};
use tokio::sync::mpsc;

use super::task::blocking;
use crate::error::{Error, Result};

/// Takes the bytes of one range, in order.
pub(crate) trait RangeSink: Send {
    /// How many bytes of the range it holds: a retry asks for the rest.
    fn received(&self) -> u64;

    /// The next bytes of the range.
    fn accept(&mut self, piece: Bytes) -> impl Future<Output = Result<()>> + Send;
}

/// Collects a range into one growing buffer (the range reader's tests).
#[cfg(test)]
impl RangeSink for bytes::BytesMut {
    fn received(&self) -> u64 {
        self.len() as u64
    }

    async fn accept(&mut self, piece: Bytes) -> Result<()> {
        self.extend_from_slice(&piece);
        Ok(())
    }
}

/// Sends each frame, tagged with its offset in the object, to one copier (the memory sink):
/// fetch tasks on every worker thread, one writer into the destination buffers.
pub(crate) struct FrameSender {
    pub tx: mpsc::Sender<(u64, Bytes)>,
    /// The offset in the object of the range's first byte.
    pub offset: u64,
    pub received: u64,
}

impl RangeSink for FrameSender {
    fn received(&self) -> u64 {
        self.received
    }

    async fn accept(&mut self, piece: Bytes) -> Result<()> {
        let len = piece.len() as u64;
        // The receiver only goes away when the download is abandoned: stop fetching then.
        self.tx
            .send((self.offset + self.received, piece))
            .await
            .map_err(|_| Error::LocalIo {
                path: "<memory>".into(),
                action: "hand bytes to an abandoned download",
                source: io::Error::from(io::ErrorKind::BrokenPipe),
            })?;
        self.received += len;
        Ok(())
    }
}

/// How many bytes a [`FileWriter`] gathers before one positional write.
const WRITE_BATCH: usize = 1 << 20;

/// Writes a range into a file at its offset, a batch of frames per positional write: no
/// intermediate buffer, no copy in user space.
pub(crate) struct FileWriter {
    pub file: Arc<File>,
    pub path: PathBuf,
    /// File offset of the range's first byte.
    pub offset: u64,
    written: u64,
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl FileWriter {
    pub fn new(file: Arc<File>, path: PathBuf, offset: u64) -> Self {
        Self {
            file,
            path,
            offset,
            written: 0,
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Writes what is gathered.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let (file, at) = (Arc::clone(&self.file), self.offset + self.written);
        let len = std::mem::take(&mut self.pending_len) as u64;
        blocking(&self.path, "write", move || {
            let mut at = at;
            for piece in batch {
                file.write_all_at(&piece, at)?;
                at += piece.len() as u64;
            }
            Ok(())
        })
        .await?;
        self.written += len;
        Ok(())
    }
}

impl RangeSink for FileWriter {
    fn received(&self) -> u64 {
        self.written + self.pending_len as u64
    }

    async fn accept(&mut self, piece: Bytes) -> Result<()> {
        self.pending_len += piece.len();
        self.pending.push(piece);
        if self.pending_len >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Ranges at least this large go into an anonymous mapping of their own, returned to the
/// system as soon as it is dropped. From the heap, they may linger: glibc raises its mmap
/// threshold (up to 32 MiB) as mapped blocks are freed, and then keeps freed blocks of such
/// sizes (streaming 1 GiB of 4 MiB tensors peaked at 280 MiB of RSS instead of 170).
const MAP_AT_LEAST: usize = 1 << 20;

/// A destination buffer for one range, filled in place and frozen into [`Bytes`] without a copy.
pub(crate) enum Region {
    Heap(Vec<u8>),
    Mapped(MmapMut),
}

impl Region {
    /// A zeroed buffer of `len` bytes, or `None` if the memory cannot be had. With
    /// `huge_pages`, a mapped buffer asks for transparent huge pages (see
    /// [`FetchOptions::huge_pages`](super::FetchOptions::huge_pages)).
    pub fn new(len: usize, huge_pages: bool) -> Option<Self> {
        if len >= MAP_AT_LEAST {
            let map = MmapMut::map_anon(len).ok()?;
            if huge_pages {
                // Advice only: where the kernel has no huge pages to give, small ones serve.
                let _ = map.advise(Advice::HugePage);
            }
            return Some(Self::Mapped(map));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).ok()?;
        buf.resize(len, 0);
        Some(Self::Heap(buf))
    }

    pub fn freeze(self) -> Bytes {
        match self {
            Self::Heap(v) => Bytes::from(v),
            // Kept writable: the Python bindings hand these bytes to numpy and torch, which may
            // write them (an optimizer's state, updated in place).
            Self::Mapped(m) => Bytes::from_owner(m),
        }
    }
}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Heap(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

impl AsMut<[u8]> for Region {
    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Heap(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_writer_writes_batches_at_the_range_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = Arc::new(
            std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap(),
        );
        file.set_len(10 + 3 * WRITE_BATCH as u64).unwrap();
        let mut w = FileWriter::new(Arc::clone(&file), path.clone(), 10);
        let piece = Bytes::from(vec![1u8; WRITE_BATCH / 2 + 1]);
        for _ in 0..5 {
            w.accept(piece.clone()).await.unwrap();
        }
        assert_eq!(
            w.received(),
            5 * piece.len() as u64,
            "pending bytes count as received"
        );
        w.flush().await.unwrap();
        let data = std::fs::read(&path).unwrap();
        assert!(data[..10].iter().all(|&b| b == 0));
        assert!(data[10..10 + 5 * piece.len()].iter().all(|&b| b == 1));
    }

    #[test]
    fn regions_freeze_without_changing_contents() {
        for (len, huge_pages) in [(0, true), (5, true), (MAP_AT_LEAST, false), (4 << 20, true)] {
            let mut region = Region::new(len, huge_pages).unwrap();
            if len > 0 {
                region.as_mut()[len - 1] = 9;
            }
            let bytes = region.freeze();
            assert_eq!(bytes.len(), len);
            assert_eq!(bytes.last().copied(), (len > 0).then_some(9));
        }
    }

    /// The `VmFlags` of the mapping of this process that holds `address`.
    fn vm_flags(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&address);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.to_string();
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    #[test]
    fn a_region_asks_for_huge_pages_only_when_told() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            return; // a kernel without THP takes no such advice
        }
        for huge_pages in [true, false] {
            let mut region = Region::new(8 << 20, huge_pages).unwrap();
            region.as_mut()[0] = 1;
            let flags = vm_flags(region.as_ref().as_ptr() as usize);
            let advised = flags.split_whitespace().any(|f| f == "hg");
            assert_eq!(advised, huge_pages, "VmFlags:{flags}");
        }
    }
}
