//! Pinned objects as the tree sees them: a [`fetch::Object`](Object) is the [`Source`] of the
//! byte ranges a reader puts in its tree.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::Result;
use crate::fetch::Object;
use crate::tree::Source;

impl Source for Object {
    fn uri(&self) -> String {
        self.location().uri()
    }

    fn read_ranges(&self, ranges: Vec<Range<u64>>) -> BoxFuture<'static, Result<Vec<Bytes>>> {
        let object = self.clone();
        Box::pin(async move { object.read_ranges(&ranges).await })
    }
}

/// `object` as the one source every tensor of it shares.
pub(crate) fn source(object: &Object) -> Arc<dyn Source> {
    Arc::new(object.clone())
}
