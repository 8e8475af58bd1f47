//! Local files read through a private memory map: the bytes of every tensor are the page
//! cache's, shared until written (a write copies the page, and never reaches the file). Reading
//! a 1 GiB file this way costs no copy and no fresh memory to fault in; it is what
//! `torch.load(mmap=True)` and safetensors do.
//!
//! The file is opened by the store (so the directory's symbolic-link confinement applies) and
//! pinned to the version the object was opened at; a file truncated by another process while
//! its bytes are in use makes this process fault (SIGBUS), as with any memory-mapped reader,
//! which is why [`FetchOptions::map_local`](super::FetchOptions) can turn it off.

use std::fs::File;
use std::ops::Range;

use bytes::Bytes;
use memmap2::{MmapMut, MmapOptions};

/// A private, copy-on-write mapping of a whole file.
struct Mapping(MmapMut);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Bytes `span` of `file` over a private mapping of their own; `None` when the span is empty,
/// past the file's end, or cannot be mapped (a special file, the process's mapping limit), so
/// that the caller reads it instead.
///
/// Every call maps anew, so the bytes of two reads are never the same memory: a caller may
/// write into one without the other seeing it, as with bytes read into fresh buffers.
pub(crate) fn map(file: &File, span: Range<u64>) -> Option<Bytes> {
    let meta = file.metadata().ok()?;
    if span.is_empty() || !meta.is_file() || meta.len() < span.end {
        return None;
    }
    let len = usize::try_from(span.end - span.start).ok()?;
    // SAFETY: a private mapping of a regular file, read and written only as this process's
    // bytes; a concurrent truncation by another process faults (documented above).
    #[allow(unsafe_code)]
    let map = unsafe {
        MmapOptions::new()
            .offset(span.start)
            .len(len)
            .map_copy(file)
    }
    .ok()?;
    Some(Bytes::from_owner(Mapping(map)))
}
