//! What a store can do, decided once per store when a URI is resolved. Everything above
//! `location` asks these questions instead of looking at the scheme.

use super::uri::Scheme;

/// What a store can do.
///
/// [`Resolver::resolve`](super::Resolver::resolve) decides it from the kind of store; a store
/// built elsewhere ([`Location::from_store`](super::Location::from_store)) gets the cautious
/// [`Default`] unless told otherwise with
/// [`Location::with_capabilities`](super::Location::with_capabilities).
///
/// ```
/// use ckptio::{Capabilities, CreateOnly};
///
/// let webdav = Capabilities { multipart: false, create: CreateOnly::CheckThenPut, ..Capabilities::default() };
/// assert!(!webdav.multipart);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Multipart uploads: large files are sent in parts, and a failed upload is aborted. Without
    /// them a file is sent as one PUT, held in memory while it is sent.
    pub multipart: bool,
    /// What a create-only put (a checkpoint's commit) does.
    pub create: CreateOnly,
    /// A LIST may recurse below a prefix; otherwise listings go one level at a time.
    pub recursive_list: bool,
    /// A LIST shows every object; WebDAV servers hide names that start with `.` (a DCP
    /// checkpoint's `.metadata`), which are then asked for by name.
    pub lists_dotfiles: bool,
    /// Range GETs may carry `If-Match` to pin the object's version (the response's ETag is
    /// compared in any case).
    pub conditional_get: bool,
    /// A GET may ask for an object's last bytes (`Range: bytes=-N`), which is how a zip's
    /// directory is found in one request. Azure's Blob service cannot: its tail is read after a
    /// HEAD.
    pub suffix_ranges: bool,
    /// The URI is presigned: signed for GET only, so a HEAD may be refused and a one-byte GET
    /// stands in for it.
    pub presigned: bool,
    /// Directories are renamed into place atomically (a local file system): a writer that
    /// commits that way (Orbax) leaves no commit file of its own.
    pub atomic_rename: bool,
}

/// What a store does with a create-only put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreateOnly {
    /// Atomic: of two writers exactly one succeeds (local disks, memory, GCS, Azure).
    Atomic,
    /// Accepted, but some servers ignore the condition (S3-compatible servers): the object is
    /// read back to learn who won.
    ReadBack,
    /// Not supported (plain HTTP): the object's absence is checked, then it is put.
    CheckThenPut,
}

impl Default for Capabilities {
    /// The cautious assumptions for a store ckptio did not build: multipart uploads, a
    /// create-only put that is read back, recursive listing, conditional GETs.
    fn default() -> Self {
        Self {
            multipart: true,
            create: CreateOnly::ReadBack,
            recursive_list: true,
            lists_dotfiles: true,
            conditional_get: true,
            suffix_ranges: true,
            presigned: false,
            atomic_rename: false,
        }
    }
}

impl Capabilities {
    /// What a store of `scheme` can do; `presigned` when an HTTP URI carries a query string.
    pub(crate) fn of(scheme: Scheme, presigned: bool) -> Self {
        let default = Self::default();
        match scheme {
            Scheme::Local => Self {
                create: CreateOnly::Atomic,
                atomic_rename: true,
                ..default
            },
            Scheme::Memory | Scheme::Gcs => Self {
                create: CreateOnly::Atomic,
                ..default
            },
            Scheme::Azure => Self {
                create: CreateOnly::Atomic,
                suffix_ranges: false,
                ..default
            },
            Scheme::S3 => default,
            Scheme::Http => Self {
                multipart: false,
                create: CreateOnly::CheckThenPut,
                recursive_list: false,
                lists_dotfiles: false,
                presigned,
                ..default
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_store_gets_what_object_store_gives_it() {
        let http = Capabilities::of(Scheme::Http, true);
        assert!(!http.multipart && !http.recursive_list && !http.lists_dotfiles && http.presigned);
        assert_eq!(http.create, CreateOnly::CheckThenPut);
        assert_eq!(
            Capabilities::of(Scheme::S3, false).create,
            CreateOnly::ReadBack
        );
        for scheme in [Scheme::Local, Scheme::Memory, Scheme::Gcs, Scheme::Azure] {
            let caps = Capabilities::of(scheme, false);
            assert_eq!(caps.create, CreateOnly::Atomic, "{scheme:?}");
            assert!(caps.multipart && caps.recursive_list && !caps.presigned);
            assert_eq!(caps.atomic_rename, scheme == Scheme::Local, "{scheme:?}");
            assert_eq!(caps.suffix_ranges, scheme != Scheme::Azure, "{scheme:?}");
        }
    }
}
