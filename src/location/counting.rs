//! A store wrapper that counts the requests and bytes passing through it: how tests check
//! that reading a header costs one GET, and how `ckptio inspect --stats` reports it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Requests and bytes seen through a [`Location::counted`](super::Location::counted).
#[derive(Debug, Default)]
pub struct Counts {
    gets: AtomicU64,
    heads: AtomicU64,
    other: AtomicU64,
    bytes: AtomicU64,
}

impl Counts {
    /// GET requests (ranged or whole).
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    /// HEAD requests.
    pub fn heads(&self) -> u64 {
        self.heads.load(Ordering::SeqCst)
    }

    /// Every other request (put, list, delete, copy).
    pub fn other(&self) -> u64 {
        self.other.load(Ordering::SeqCst)
    }

    /// Bytes the GET responses carried.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} GET, {} HEAD, {} other; {} bytes read",
            self.gets(),
            self.heads(),
            self.other(),
            self.bytes()
        )
    }
}

/// Wraps a store and counts what goes through it.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<Counts>,
}

impl CountingStore {
    /// `inner`, counted into `counts`.
    pub fn new(inner: Arc<dyn ObjectStore>, counts: Arc<Counts>) -> Self {
        Self { inner, counts }
    }

    fn other(&self) {
        self.counts.other.fetch_add(1, Ordering::SeqCst);
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        path: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.other();
        self.inner.put_opts(path, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.other();
        self.inner.put_multipart_opts(path, opts).await
    }

    async fn get_opts(&self, path: &Path, options: GetOptions) -> Result<GetResult> {
        let counter = if options.head {
            &self.counts.heads
        } else {
            &self.counts.gets
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let head = options.head;
        let result = self.inner.get_opts(path, options).await?;
        // A HEAD's result names the object's whole range, but no byte of it moved.
        if !head && !result.range.is_empty() {
            self.counts
                .bytes
                .fetch_add(result.range.end - result.range.start, Ordering::SeqCst);
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        paths: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.other();
        self.inner.delete_stream(paths)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.other();
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.other();
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.other();
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn a_head_counts_as_a_request_and_moves_no_bytes() {
        let loc = crate::resolve("memory://counting-head/x.bin", &Default::default()).unwrap();
        loc.store()
            .put(loc.path(), vec![7u8; 1000].into())
            .await
            .unwrap();
        let (counted, counts) = loc.counted();
        crate::fetch::stat(&counted).await.unwrap();
        assert_eq!((counts.heads(), counts.bytes()), (1, 0));
        let object = crate::fetch::Object::open_prefix(&counted, 10, Default::default())
            .await
            .unwrap();
        assert_eq!(object.1.len(), 10);
        assert_eq!((counts.gets(), counts.bytes()), (1, 10));
    }
}
