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
    let mut objects: Vec<ObjectMeta> = listed
        .objects
        .into_iter()
        .filter(|meta| meta.location.filename().is_some())
        .collect();
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    let mut dirs: Vec<String> = listed
        .common_prefixes
        .iter()
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
                names.push(parts.join("/"));
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
        self.objects
            .iter()
            .find(|m| m.location.filename() == Some(name))
    }

    /// The object `name`, pinned to the ETag and size the listing showed.
    pub fn object(&self, name: &str, options: FetchOptions) -> Option<Object> {
        let meta = self.meta(name)?;
        let loc = self.dir.join(name);
        let info = ObjectInfo::new(&loc, meta.clone());
        Some(Object::with_info(&loc, info, options))
    }

    /// The objects `names` that the directory holds, each pinned by the listing.
    pub fn objects<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        options: &FetchOptions,
    ) -> HashMap<String, Object> {
        names
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), self.object(name, options.clone())?)))
            .collect()
    }
}
