//! What the crate's unit tests share.

pub(crate) mod alloc;

use std::sync::Arc;

use object_store::ObjectStoreExt;

use crate::fetch::{FetchOptions, Object};
use crate::tree::Source;

/// `data` as the object `memory://unit-tests/{name}`, opened with `options`.
pub(crate) async fn memory_object(
    name: &str,
    data: impl Into<bytes::Bytes>,
    options: FetchOptions,
) -> Object {
    let loc = crate::location::resolve(&format!("memory://unit-tests/{name}"), &Default::default())
        .unwrap();
    loc.store()
        .put(loc.path(), data.into().into())
        .await
        .unwrap();
    Object::open(&loc, options).await.unwrap()
}

/// `data` as a tensor source in memory, without a runtime: what a test of the materializer
/// reads from.
pub(crate) fn memory_source(name: &str, data: Vec<u8>) -> Arc<dyn Source> {
    Arc::new(Bytes {
        name: name.to_owned(),
        data: data.into(),
    })
}

#[derive(Debug)]
struct Bytes {
    name: String,
    data: bytes::Bytes,
}

impl Source for Bytes {
    fn uri(&self) -> String {
        format!("memory://unit-tests/{}", self.name)
    }

    fn read_ranges(
        &self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'static, crate::Result<Vec<bytes::Bytes>>> {
        let data = self.data.clone();
        Box::pin(async move {
            Ok(ranges
                .into_iter()
                .map(|r| data.slice(r.start as usize..r.end as usize))
                .collect())
        })
    }
}
