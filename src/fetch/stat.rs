//! What one HEAD tells about an object.

use chrono::{DateTime, Utc};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStoreExt};

use crate::error::Result;
use crate::location::Location;

/// Size, ETag, last-modified time and version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's URI, redacted.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// The entity tag, as the server sent it (quotes included where the server uses them).
    pub etag: Option<String>,
    /// When the object was last written.
    pub last_modified: DateTime<Utc>,
    /// The object version, on stores with versioning.
    pub version: Option<String>,
}

impl ObjectInfo {
    pub(crate) fn new(location: &Location, meta: ObjectMeta) -> Self {
        Self {
            uri: location.uri(),
            size: meta.size,
            etag: meta.e_tag,
            last_modified: meta.last_modified,
            version: meta.version,
        }
    }
}

/// Size, ETag, last-modified time and version of the object at `location`, from one HEAD.
///
/// A presigned URL is signed for GET only, so when an HTTP location with a query string is
/// refused a HEAD, the same facts are read from a one-byte ranged GET instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// let loc = ckptio::resolve("memory://doc/weights.bin", &Default::default())?;
/// # use object_store::ObjectStoreExt;
/// # loc.store().put(loc.path(), vec![0u8; 16].into()).await.unwrap();
/// let info = ckptio::stat(&loc).await?;
/// assert_eq!(info.size, 16);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::NotFound`](crate::Error::NotFound) when there is no such object; otherwise the
/// store's error, classified ([`Error::PermissionDenied`](crate::Error::PermissionDenied),
/// [`Error::Transport`](crate::Error::Transport), ...).
pub async fn stat(location: &Location) -> Result<ObjectInfo> {
    let store = location.store();
    let head_err = match store.head(location.path()).await {
        Ok(meta) => return Ok(ObjectInfo::new(location, meta)),
        Err(err) => err,
    };
    let presigned = location.capabilities().presigned;
    let refused = matches!(
        head_err,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    );
    if !(presigned && refused) {
        return Err(location.error("stat", head_err));
    }
    let options = GetOptions {
        range: Some(GetRange::Bounded(0..1)),
        ..GetOptions::default()
    };
    match store.get_opts(location.path(), options).await {
        Ok(got) => Ok(ObjectInfo::new(location, got.meta)),
        Err(_) => Err(location.error("stat", head_err)),
    }
}
