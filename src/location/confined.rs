//! A local file system that keeps every request inside one directory: the checkpoint's. A
//! symbolic link may point anywhere inside it; one that leads out is refused when read or
//! written through, and left out of listings (logged), so an untrusted checkpoint cannot make
//! ckptio read, copy away, overwrite or delete a file elsewhere. The object the URI named may
//! itself be a link: naming it is the user's choice.
//!
//! The directory is the one the URI names, or a named file's directory; a file in a Hugging
//! Face cache snapshot (`models--org--name/snapshots/<rev>/...`, whose files are links into
//! `models--org--name/blobs/`) is confined to its model's cache directory instead.

use std::fmt;
use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::error::{Escape, NotAFile};

/// `inner` (a local file system rooted at `/`), confined.
#[derive(Debug)]
pub(crate) struct Confined {
    inner: Arc<dyn ObjectStore>,
    named: Path,
    root: PathBuf,
}

impl Confined {
    /// Confines `inner` to the directory of `named` (the object path a URI named; `dir` when
    /// it names a directory).
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, named: &Path, dir: bool) -> Self {
        let local = local(named);
        let is_dir = dir || std::fs::metadata(&local).is_ok_and(|m| m.is_dir());
        let base = if is_dir {
            local.clone()
        } else {
            local
                .parent()
                .map_or_else(|| local.clone(), FsPath::to_path_buf)
        };
        let base = hub_model_dir(&base).unwrap_or(base);
        Self {
            inner,
            named: named.clone(),
            root: real(&base),
        }
    }

    /// Where `path` leads, when that is outside the root.
    fn escape(&self, path: &Path) -> Option<Escape> {
        if *path == self.named {
            return None;
        }
        let asked = local(path);
        let target = real(&asked);
        (!target.starts_with(&self.root)).then(|| Escape {
            path: asked,
            target,
            root: self.root.clone(),
        })
    }

    /// Refuses a request for `path` that would leave the root.
    fn check(&self, path: &Path) -> Result<()> {
        match self.escape(path) {
            None => Ok(()),
            Some(escape) => Err(object_store::Error::PermissionDenied {
                path: escape.path.display().to_string(),
                source: Box::new(escape),
            }),
        }
    }

    /// Refuses a write to `path` when it exists and is not a regular file (`/dev/null`, a
    /// FIFO): the local store writes a staging file and renames it over the target.
    fn check_writable(&self, path: &Path) -> Result<()> {
        self.check(path)?;
        Self::check_regular(path, true)
    }

    /// Refuses a read of `path` when it is not a regular file: a FIFO (`<(cat file)`) would
    /// block or read as empty, a device has no size.
    fn check_readable(&self, path: &Path) -> Result<()> {
        self.check(path)?;
        Self::check_regular(path, false)
    }

    fn check_regular(path: &Path, write: bool) -> Result<()> {
        let at = local(path);
        match special_file(&at) {
            Some(kind) => Err(object_store::Error::NotSupported {
                source: Box::new(NotAFile {
                    kind,
                    path: at,
                    write,
                }),
            }),
            None => Ok(()),
        }
    }

    /// Whether a listed `path` stays inside the root; one that does not is logged and left out.
    fn keep(&self, path: &Path) -> bool {
        match self.escape(path) {
            None => true,
            Some(escape) => {
                tracing::warn!("left out of a listing: {escape}");
                false
            }
        }
    }
}

/// What the file at `path` (links followed) is when it exists and is neither a regular file
/// nor a directory (`character device`, `FIFO`, ...): a destination that is written through,
/// never renamed over.
pub(crate) fn special_file(path: &FsPath) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_file() || kind.is_dir() {
        return None;
    }
    Some(if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    })
}

/// The local path of an object path of a store rooted at `/`.
fn local(path: &Path) -> PathBuf {
    FsPath::new("/").join(path.as_ref())
}

/// Where `path` really is: its nearest existing ancestor with every link resolved, and the
/// rest of it after that.
fn real(path: &FsPath) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(resolved) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(resolved, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The cache directory of the Hugging Face model whose snapshot holds `dir`
/// (`.../models--org--name` for `.../models--org--name/snapshots/<rev>/sub`).
fn hub_model_dir(dir: &FsPath) -> Option<PathBuf> {
    let parts: Vec<Component> = dir.components().collect();
    let at = parts.windows(2).rposition(|w| {
        let repo = w[0].as_os_str().to_string_lossy();
        let repo_kind = ["models--", "datasets--", "spaces--"]
            .iter()
            .any(|p| repo.starts_with(p));
        repo_kind && w[1].as_os_str() == "snapshots"
    })?;
    Some(parts[..=at].iter().collect())
}

impl fmt::Display for Confined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Confined({}, {})", self.inner, self.root.display())
    }
}

#[async_trait]
impl ObjectStore for Confined {
    async fn put_opts(
        &self,
        path: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check_writable(path)?;
        self.inner.put_opts(path, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check_writable(path)?;
        self.inner.put_multipart_opts(path, opts).await
    }

    async fn get_opts(&self, path: &Path, options: GetOptions) -> Result<GetResult> {
        self.check_readable(path)?;
        self.inner.get_opts(path, options).await
    }

    fn delete_stream(
        &self,
        paths: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let allowed = Arc::new(Self {
            inner: Arc::clone(&self.inner),
            named: self.named.clone(),
            root: self.root.clone(),
        });
        let checked = paths
            .map(move |p| p.and_then(|p| allowed.check(&p).map(|()| p)))
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Some(Err(e)) = prefix.map(|p| self.check(p)) {
            return futures::stream::once(async { Err(e) }).boxed();
        }
        let confined = Self {
            inner: Arc::clone(&self.inner),
            named: self.named.clone(),
            root: self.root.clone(),
        };
        self.inner
            .list(prefix)
            .filter(move |meta| {
                let keep = meta.as_ref().map_or(true, |m| confined.keep(&m.location));
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        if let Some(prefix) = prefix {
            self.check(prefix)?;
        }
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects.retain(|m| self.keep(&m.location));
        listed.common_prefixes.retain(|p| self.keep(p));
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check_readable(from)?;
        self.check_writable(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_snapshot_is_confined_to_its_models_cache_directory() {
        let dir = FsPath::new("/home/u/.cache/huggingface/hub/models--org--name/snapshots/abc");
        assert_eq!(
            hub_model_dir(dir).unwrap(),
            FsPath::new("/home/u/.cache/huggingface/hub/models--org--name")
        );
        assert_eq!(hub_model_dir(FsPath::new("/data/run/ckpt")), None);
    }

    #[test]
    fn a_path_that_does_not_exist_yet_is_where_its_existing_parent_really_is() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            real(&dir.path().join("new/sub/file")),
            real_dir.join("new/sub/file")
        );
    }
}
