//! Writing one object, the way its store allows: a multipart upload where the store has them
//! (aborted on any error, so nothing partial appears under the name), one PUT otherwise; and
//! create-only puts, the commit of a checkpoint.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::error::{Class, Error, Result, classify};
use crate::location::{CreateOnly, Location};

/// The smallest multipart part: S3 allows 10,000 parts, so files up to 140 GiB use this size.
const PART_SIZE: usize = 16 << 20;

/// The most parts a file is split into, under S3's limit of 10,000.
const MAX_PARTS: u64 = 9_000;

/// The part size for an object of `size` bytes: 16 MiB, or larger (whole MiB) so that the
/// object takes at most 9,000 parts: 1 TiB uploads in parts of 117 MiB.
pub(crate) fn part_size_for(size: u64) -> usize {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    usize::try_from(needed).map_or(usize::MAX, |n| n.max(PART_SIZE))
}

/// An object being written.
pub(crate) struct Upload {
    dest: Location,
    inner: Inner,
}

enum Inner {
    Multipart(BufWriter),
    /// The whole object, held until it is sent as one PUT (never copied: these are the
    /// callers' own buffers).
    Single(Vec<Bytes>),
}

impl Upload {
    /// An upload to `dest` of about `size_hint` bytes (which sets the part size).
    pub(crate) fn new(dest: &Location, size_hint: u64) -> Self {
        let inner = if dest.capabilities().multipart {
            Inner::Multipart(BufWriter::with_capacity(
                dest.store().clone(),
                dest.path().clone(),
                part_size_for(size_hint),
            ))
        } else {
            if size_hint > PART_SIZE as u64 {
                tracing::info!(uri = %dest, size_hint, "this store takes no multipart uploads: one PUT of the whole object");
            }
            Inner::Single(Vec::new())
        };
        Self {
            dest: dest.clone(),
            inner,
        }
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    ///
    /// The store's error for a part that could not be sent.
    pub(crate) async fn put(&mut self, bytes: Bytes) -> Result<()> {
        match &mut self.inner {
            Inner::Multipart(writer) => writer
                .put(bytes)
                .await
                .map_err(|e| self.dest.error("put", e)),
            Inner::Single(parts) => {
                parts.push(bytes);
                Ok(())
            }
        }
    }

    /// Completes the object.
    ///
    /// # Errors
    ///
    /// The store's error. A multipart upload whose completion failed is not aborted (its
    /// parts stay with the store until its lifecycle rules remove them); nothing appears under
    /// the name.
    pub(crate) async fn finish(mut self) -> Result<()> {
        let result = match &mut self.inner {
            Inner::Multipart(writer) => writer
                .shutdown()
                .await
                .map_err(|e| shutdown_error(&self.dest, e)),
            Inner::Single(parts) => {
                let payload: PutPayload = std::mem::take(parts).into_iter().collect();
                self.dest
                    .store()
                    .put(self.dest.path(), payload)
                    .await
                    .map(drop)
                    .map_err(|e| self.dest.error("put", e))
            }
        };
        // No abort after a failed completion: object_store's writer has shut down by then (an
        // abort would panic), and a single PUT that failed left nothing.
        result
    }

    /// Gives up: the parts sent so far are discarded, and nothing appears under the name.
    pub(crate) async fn abort(self) {
        if let Inner::Multipart(mut writer) = self.inner {
            let _ = writer.abort().await;
        }
    }
}

/// The error of a multipart writer's completion: the store's error it carries, classified as
/// any other (a 403 is a permission error), or the I/O error itself.
fn shutdown_error(dest: &Location, e: std::io::Error) -> Error {
    let kind = e.kind();
    let detail = match e
        .into_inner()
        .map(|inner| inner.downcast::<object_store::Error>())
    {
        Some(Ok(store)) => return dest.error("put", *store),
        Some(Err(other)) => other.to_string(),
        None => kind.to_string(),
    };
    Error::Transport {
        uri: dest.uri(),
        operation: "put",
        kind: crate::error::TransportKind::Other,
        detail: dest.redact(&detail),
    }
}

/// Writes the pieces of `data`, in order, as the object `dest` of about `size_hint` bytes.
///
/// # Errors
///
/// The first error of `data` or of the store; the upload is then aborted.
pub(crate) async fn upload(
    dest: &Location,
    size_hint: u64,
    data: impl Stream<Item = Result<Bytes>>,
) -> Result<()> {
    let mut upload = Upload::new(dest, size_hint);
    let mut data = std::pin::pin!(data);
    while let Some(piece) = data.next().await {
        let sent = match piece {
            Ok(bytes) => upload.put(bytes).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            upload.abort().await;
            return Err(e);
        }
    }
    upload.finish().await
}

/// Puts `body` at `dest` in one request.
///
/// # Errors
///
/// The store's error.
pub(crate) async fn put(dest: &Location, body: Vec<u8>) -> Result<()> {
    dest.store()
        .put(dest.path(), body.into())
        .await
        .map(drop)
        .map_err(|e| dest.error("put", e))
}

/// Why a create-only put did not create the object.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// Another object is there (perhaps another writer's, put first).
    Exists,
    /// The put failed.
    Failed(Error),
}

/// Puts `body` at `dest` only if nothing is there, as the store allows
/// ([`Capabilities::create`](crate::location::Capabilities::create)): atomically, or with a
/// read-back where servers may ignore the condition, or by checking absence first where the
/// store has no conditional put.
///
/// # Errors
///
/// [`CreateError::Exists`] when an object is there (or won the race); the store's error.
pub(crate) async fn put_create(dest: &Location, body: Vec<u8>) -> Result<(), CreateError> {
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let mode = dest.capabilities().create;
    if mode == CreateOnly::CheckThenPut {
        return check_then_put(dest, body).await;
    }
    match dest
        .store()
        .put_opts(dest.path(), body.clone().into(), create)
        .await
    {
        Ok(_) if mode == CreateOnly::ReadBack => read_back(dest, &body).await,
        Ok(_) => Ok(()),
        Err(e) => match classify(&e) {
            Class::AlreadyExists | Class::Precondition => Err(CreateError::Exists),
            Class::NotImplemented => check_then_put(dest, body).await,
            _ => Err(CreateError::Failed(dest.error("put", e))),
        },
    }
}

async fn check_then_put(dest: &Location, body: Vec<u8>) -> Result<(), CreateError> {
    if crate::fetch::stat(dest).await.is_ok() {
        return Err(CreateError::Exists);
    }
    put(dest, body).await.map_err(CreateError::Failed)
}

/// Whether the object at `dest` is `body` (ours) or another writer's.
async fn read_back(dest: &Location, body: &[u8]) -> Result<(), CreateError> {
    let stored = match dest.store().get(dest.path()).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(stored) if stored[..] == body[..] => Ok(()),
        Ok(_) => {
            tracing::warn!(uri = %dest, "the store ignored a create-only put; another writer's object won");
            Err(CreateError::Exists)
        }
        Err(e) => Err(CreateError::Failed(dest.error("get", e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_no_file_needs_more_than_9000() {
        assert_eq!(part_size_for(0), 16 << 20);
        assert_eq!(part_size_for(100 << 30), 16 << 20);
        let tib = 1u64 << 40;
        let part = part_size_for(tib) as u64;
        assert_eq!(part % (1 << 20), 0);
        assert!(tib.div_ceil(part) <= 9_000, "{part}");
        let big = 50u64 << 30;
        assert!(big.div_ceil(part_size_for(big) as u64) <= 10_000);
    }

    #[tokio::test]
    async fn a_second_create_finds_the_first() {
        let dest =
            crate::location::resolve("memory://upload-tests/create/marker", &Default::default())
                .unwrap();
        put_create(&dest, b"one".to_vec()).await.unwrap();
        assert!(matches!(
            put_create(&dest, b"two".to_vec()).await,
            Err(CreateError::Exists)
        ));
    }

    /// A store that accepts create-only puts and ignores the condition (as Garage and s3s-fs
    /// do), and holds each put until two have landed: both writers then read back.
    #[derive(Debug)]
    struct IgnoresCreate {
        inner: object_store::memory::InMemory,
        both_put: tokio::sync::Barrier,
    }

    impl std::fmt::Display for IgnoresCreate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IgnoresCreate")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for IgnoresCreate {
        async fn put_opts(
            &self,
            path: &object_store::path::Path,
            payload: PutPayload,
            _: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            let put = self.inner.put(path, payload).await;
            self.both_put.wait().await;
            put
        }
        async fn put_multipart_opts(
            &self,
            path: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(path, opts).await
        }
        async fn get_opts(
            &self,
            path: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(path, options).await
        }
        fn delete_stream(
            &self,
            paths: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.inner.delete_stream(paths)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn a_store_built_elsewhere_reads_its_commits_back_so_one_writer_wins() {
        let store = std::sync::Arc::new(IgnoresCreate {
            inner: object_store::memory::InMemory::new(),
            both_put: tokio::sync::Barrier::new(2),
        });
        let dest = Location::from_store("wrapped:/", store, "ckpt/manifest.json".into());
        assert_eq!(dest.capabilities().create, CreateOnly::ReadBack);
        let (a, b) = tokio::join!(
            put_create(&dest, b"writer a".to_vec()),
            put_create(&dest, b"writer b".to_vec())
        );
        let wins = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{a:?} {b:?}");
        assert!(
            [a, b].iter().any(|r| matches!(r, Err(CreateError::Exists))),
            "the loser learns it lost"
        );
    }

    #[tokio::test]
    async fn a_failed_stream_leaves_nothing_under_the_name() {
        let dest =
            crate::location::resolve("memory://upload-tests/abort/file", &Default::default())
                .unwrap();
        let data = futures::stream::iter([
            Ok(Bytes::from_static(b"part")),
            Err(Error::InvalidArgument {
                what: "test".into(),
                reason: "the source broke".into(),
            }),
        ]);
        assert!(upload(&dest, 8, data).await.is_err());
        assert!(crate::fetch::stat(&dest).await.unwrap_err().is_not_found());
    }

    /// A store whose single PUTs fail (a server that refuses the last request of an upload).
    #[derive(Debug)]
    struct RefusesPuts(object_store::memory::InMemory);

    impl std::fmt::Display for RefusesPuts {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RefusesPuts")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for RefusesPuts {
        async fn put_opts(
            &self,
            _: &object_store::path::Path,
            _: PutPayload,
            _: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            Err(object_store::Error::Generic {
                store: "RefusesPuts",
                source: "400 Bad Request: invalid uploadType".into(),
            })
        }
        async fn put_multipart_opts(
            &self,
            path: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(path, opts).await
        }
        async fn get_opts(
            &self,
            path: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(path, options).await
        }
        fn delete_stream(
            &self,
            paths: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.0.delete_stream(paths)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn an_upload_whose_completion_fails_is_an_error_not_a_panic() {
        let store = std::sync::Arc::new(RefusesPuts(object_store::memory::InMemory::new()));
        let dest = Location::from_store("wrapped:/", store, "run/last.ckpt".into());
        assert!(dest.capabilities().multipart);
        let data = futures::stream::iter([Ok(Bytes::from_static(b"small, so one PUT at the end"))]);
        let err = upload(&dest, 28, data).await.unwrap_err();
        assert!(err.to_string().contains("invalid uploadType"), "{err}");
        assert!(crate::fetch::stat(&dest).await.unwrap_err().is_not_found());
    }
}
