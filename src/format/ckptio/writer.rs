//! Writing the ckptio layout's own parts: data-file names unique to one save, and the commit
//! (the manifest, put create-only, last).
//!
//! Data files are named `data-{writer}-{i:05}-of-{n:05}.safetensors`, where `writer` is unique
//! to one save: two writers of the same checkpoint never overwrite each other's data, and the
//! one whose manifest lands second cleans up after itself.

use super::manifest::MANIFEST;
use crate::error::{Error, Result};
use crate::location::Location;
use crate::upload::{CreateError, put_create};

/// Names for `n` data files of one save.
pub(crate) fn data_file_names(n: usize) -> Vec<String> {
    let writer = writer_id();
    (1..=n)
        .map(|i| format!("data-{writer}-{i:05}-of-{n:05}.safetensors"))
        .collect()
}

/// Commits the checkpoint in `dir`: its manifest (`json`), put create-only.
///
/// # Errors
///
/// [`Error::AlreadyCommitted`] when a manifest is there (or another writer's landed first);
/// the store's error.
pub(crate) async fn commit(dir: &Location, json: Vec<u8>) -> Result<()> {
    match put_create(&dir.join(MANIFEST), json).await {
        Ok(()) => Ok(()),
        Err(CreateError::Exists) => Err(Error::AlreadyCommitted { uri: dir.uri() }),
        Err(CreateError::Failed(e)) => Err(e),
    }
}

/// Deletes `names` in `dir`, best effort (a failed save's data files).
pub(crate) async fn remove_files(dir: &Location, names: &[String]) {
    use object_store::ObjectStoreExt;
    for name in names {
        let loc = dir.join(name);
        let _ = loc.store().delete(loc.path()).await;
    }
}

/// A name unique to one save: time, process and a counter, hashed to 8 hex digits.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_numbered_and_unique_to_a_save() {
        let a = data_file_names(2);
        assert!(a[0].starts_with("data-") && a[0].ends_with("-00001-of-00002.safetensors"));
        assert_ne!(data_file_names(1)[0], data_file_names(1)[0]);
    }
}
