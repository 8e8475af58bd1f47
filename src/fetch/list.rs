//! One level of a directory (a prefix): the objects directly in it, each pinned by the
//! listing itself, and the names of its sub-directories. One LIST, on every store.

use std::collections::HashMap;

use futures::TryStreamExt;
use object_store::ObjectMeta;

use super::object::Object;
use super::options::FetchOptions;
use super::stat::ObjectInfo;
use crate::error::Result;
use crate::location::Location;

/// What one LIST of a directory showed.
#[derive(Debug, Clone)]
pub struct Listing {
    dir: Location,
    objects: Vec<ObjectMeta>,
    dirs: Vec<String>,
}

/// Lists the directory `dir`, one level deep.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// let dir = ckptio::resolve("memory://doc-list/run/", &Default::default())?;
/// # use object_store::ObjectStoreExt;
/// # for key in ["run/a.bin", "run/sub/b.bin"] {
/// #     dir.store().put(&key.into(), vec![1u8].into()).await.unwrap();
/// # }
/// let listing = ckptio::list(&dir).await?;
/// assert_eq!(listing.names().collect::<Vec<_>>(), ["a.bin"]);
/// assert_eq!(listing.dirs(), ["sub"]);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The LIST's error, classified.
pub async fn list(dir: &Location) -> Result<Listing> {
    let listed = dir
        .store()
        .list_with_delimiter(Some(dir.path()))
        .await
        .map_err(|e| dir.error("list", e))?;
    // A folder marker object (`dir/`, from an S3 console's "create folder", or what SeaweedFS
    // keeps of a folder whose objects were all deleted) lists inside the folder itself: it is
    // not an entry of it.
    let itself = |p: &object_store::path::Path| p == dir.path();
    let mut objects: Vec<ObjectMeta> = listed
        .objects
        .into_iter()
        .filter(|meta| meta.location.filename().is_some() && !itself(&meta.location))
        .collect();
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    let mut dirs: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter(|p| !itself(p))
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    dirs.sort();
    Ok(Listing {
        dir: dir.clone(),
        objects,
        dirs,
    })
}

/// Every object below the directory `dir`, as paths relative to it (`sub/file.bin`), sorted:
/// one recursive LIST where the store allows it, one LIST per directory otherwise.
///
/// # Errors
///
/// The LISTs' errors, classified.
pub async fn walk(dir: &Location) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if dir.capabilities().recursive_list {
        let objects: Vec<ObjectMeta> = dir
            .store()
            .list(Some(dir.path()))
            .try_collect()
            .await
            .map_err(|e| dir.error("list", e))?;
        for meta in objects {
            if let Some(parts) = meta.location.prefix_match(dir.path()) {
                let parts: Vec<String> = parts.map(|p| p.as_ref().to_owned()).collect();
                // Not the directory's own marker object (see `list`).
                if !parts.is_empty() {
                    names.push(parts.join("/"));
                }
            }
        }
    } else {
        let mut pending = vec![String::new()];
        while let Some(relative) = pending.pop() {
            let listing = list(&dir.join(&relative)).await?;
            let prefixed = |name: &str| {
                if relative.is_empty() {
                    name.to_owned()
                } else {
                    format!("{relative}/{name}")
                }
            };
            names.extend(listing.names().map(prefixed));
            pending.extend(listing.dirs().iter().map(|d| prefixed(d)));
        }
    }
    names.sort();
    Ok(names)
}

impl Listing {
    /// The directory listed.
    pub fn dir(&self) -> &Location {
        &self.dir
    }

    /// Names of the objects directly in the directory, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().filter_map(|m| m.location.filename())
    }

    /// Names of the sub-directories, sorted.
    pub fn dirs(&self) -> &[String] {
        &self.dirs
    }

    /// Whether the directory holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.dirs.is_empty()
    }

    /// Whether the directory holds an object called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.meta(name).is_some()
    }

    fn meta(&self, name: &str) -> Option<&ObjectMeta> {
        // Sorted by location, all in one directory: sorted by name.
        self.objects
            .binary_search_by(|m| m.location.filename().unwrap_or_default().cmp(name))
            .ok()
            .map(|i| &self.objects[i])
    }

    /// The object `name`, pinned to the ETag and size the listing showed.
    pub fn object(&self, name: &str, options: FetchOptions) -> Option<Object> {
        let meta = self.meta(name)?;
        let loc = self.dir.join(name);
        let info = ObjectInfo::new(&loc, meta.clone());
        Some(Object::with_info(&loc, info, options))
    }

    /// The objects `names` that the directory holds, each pinned by the listing; a name may
    /// come any number of times (a DCP `.metadata` names a data file once per chunk).
    pub fn objects<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        options: &FetchOptions,
    ) -> HashMap<String, Object> {
        let mut found = HashMap::new();
        for name in names {
            if !found.contains_key(name)
                && let Some(object) = self.object(name, options.clone())
            {
                found.insert(name.to_owned(), object);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn objects_are_found_by_name_once_however_often_named() {
        let dir = crate::location::resolve("memory://listing/ckpt/", &Default::default()).unwrap();
        // Put out of order: the listing sorts them, and lookups rely on that.
        for name in ["__1_0.distcp", "__0_0.distcp", ".metadata", "__10_0.distcp"] {
            let loc = dir.join(name);
            loc.store()
                .put(loc.path(), vec![0u8; name.len()].into())
                .await
                .unwrap();
        }
        let listing = list(&dir).await.unwrap();
        for name in ["__0_0.distcp", "__1_0.distcp", "__10_0.distcp", ".metadata"] {
            assert!(listing.contains(name), "{name}");
        }
        assert!(!listing.contains("__2_0.distcp"));
        let named = [
            "__1_0.distcp",
            "__0_0.distcp",
            "__1_0.distcp",
            "__2_0.distcp",
        ];
        let found = listing.objects(named, &FetchOptions::default());
        let mut names: Vec<&str> = found.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["__0_0.distcp", "__1_0.distcp"]);
        assert_eq!(found["__1_0.distcp"].info().size, 12);
    }
}
