//! Moving object bytes: the only module that reads an object's data.
//!
//! One HEAD pins an [`Object`] to its ETag and version; its bytes then arrive by parallel range
//! requests into memory ([`Object::bytes`]), into a local file ([`Object::download_to`]), as an
//! ordered stream ([`Object::stream`]), or as arbitrary range lists ([`Object::read_ranges`]).
//! Every range is pinned (`If-Match`, and the response's ETag checked for servers that ignore
//! it), retried by one policy ([`RetryPolicy`]) from the last byte received, and reported to a
//! [`Progress`].

mod file;
mod object;
mod options;
mod plan;
mod progress;
mod rate;
mod sink;
mod source;
mod stat;
mod task;

pub(crate) use task::blocking;

pub use object::Object;
pub use options::{FetchOptions, MAX_CONCURRENCY, RetryPolicy};
pub use plan::{MAX_PIECES, chunk_size_for, chunks, coalesce, split};
pub use progress::{NoProgress, Progress};
pub use stat::{ObjectInfo, stat};

/// What the crate's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use object_store::ObjectStoreExt;

    use super::{FetchOptions, Object};

    /// `data` as the object `memory://unit-tests/{name}`, opened with `options`.
    pub(crate) async fn memory_object(
        name: &str,
        data: impl Into<bytes::Bytes>,
        options: FetchOptions,
    ) -> Object {
        let loc =
            crate::location::resolve(&format!("memory://unit-tests/{name}"), &Default::default())
                .unwrap();
        loc.store()
            .put(loc.path(), data.into().into())
            .await
            .unwrap();
        Object::open(&loc, options).await.unwrap()
    }
}
