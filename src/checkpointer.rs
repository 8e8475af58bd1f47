//! The checkpointer: numbered checkpoints under a root (`{root}/{prefix}{index}`, or files
//! `{prefix}{index}.{extension}`), saved every `period` steps, the latest committed one found
//! and loaded, the last N kept. Bytes are [`save`](crate::save()),
//! [`write_torch`](crate::write_torch) and [`open`](crate::open())'s business; this is policy.
//!
//! It recognises other systems' checkpoints too: a DCP directory counts once its `.metadata`
//! exists, an Orbax step once its `commit_success.txt` does (Orbax's in-progress
//! `*.orbax-checkpoint-tmp*` directories are not numbered, so never listed), a `.pt`/`.ckpt`/`.safetensors` object once it is whole (its zip directory or its
//! safetensors header is complete). A directory without its commit marker is *partial*: listed
//! as such, never loaded, and removed by a new save of the same index.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ckptio::Result<()> {
//! use ckptio::{Checkpointer, CheckpointerOptions};
//!
//! let root = ckptio::resolve("memory://doc-checkpointer/run1/", &Default::default())?;
//! let ckpt = Checkpointer::new(root, CheckpointerOptions { period: 2, keep_last: Some(2), ..Default::default() });
//! let tree = ckptio::StateTree::new();
//! for step in 0..=6 {
//!     ckpt.save(step, &tree, false).await?;   // saves steps 0, 2, 4, 6
//! }
//! assert_eq!(ckpt.latest().await?, Some(6));
//! let kept: Vec<u64> = ckpt.list().await?.iter().map(|e| e.index).collect();
//! assert_eq!(kept, [4, 6]);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::fetch::{Listing, list};
use crate::format::{self, Layout, OpenOptions, committed, marker};
use crate::location::Location;
use crate::save::{SaveOptions, Saved, save};
use crate::tree::StateTree;

/// How a [`Checkpointer`] behaves.
#[derive(Debug, Clone)]
pub struct CheckpointerOptions {
    /// Checkpoint names are `{prefix}{index}`.
    pub prefix: String,
    /// Save when `index % period == 0` (or when forced).
    pub period: u64,
    /// Keep only the last N committed checkpoints (older ones are removed after a save).
    pub keep_last: Option<usize>,
    /// What each checkpoint is.
    pub form: Form,
    /// How checkpoints are written.
    pub save: SaveOptions,
}

/// What a [`Checkpointer`] writes for each checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Form {
    /// A ckptio directory `{prefix}{index}`, committed by its manifest: saved in parallel files,
    /// never overwritten.
    #[default]
    Directory,
    /// One `torch.save` file `{prefix}{index}.{extension}` (`pt`, `ckpt`, …): one object,
    /// which appears whole or not at all; saving an index again replaces it the same way.
    TorchFile {
        /// The file name's extension, without the dot.
        extension: String,
    },
}

impl Default for CheckpointerOptions {
    fn default() -> Self {
        Self {
            prefix: "step-".into(),
            period: 1,
            keep_last: None,
            form: Form::Directory,
            save: SaveOptions::default(),
        }
    }
}

/// One checkpoint under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its index.
    pub index: u64,
    /// Its name under the root (`step-100`, `step-100.pt`).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Whether it is committed.
    pub committed: bool,
}

/// What kind of checkpoint an [`Entry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A ckptio directory (committed by `manifest.json`).
    Ckptio,
    /// A DCP directory (committed by `.metadata`).
    Dcp,
    /// An Orbax step directory (committed by `commit_success.txt`; on a local file system,
    /// by `_CHECKPOINT_METADATA`, since Orbax renames it into place).
    Orbax,
    /// A directory with neither marker (a save in progress, or one that died).
    Unknown,
    /// A single file (`.pt`, `.ckpt`, `.safetensors`).
    File,
}

/// Numbered checkpoints under a root.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    root: Location,
    options: CheckpointerOptions,
}

impl Checkpointer {
    /// A checkpointer of the checkpoints under `root`.
    pub fn new(root: Location, options: CheckpointerOptions) -> Self {
        Self { root, options }
    }

    /// Where checkpoint `index` lives.
    pub fn location(&self, index: u64) -> Location {
        let prefix = &self.options.prefix;
        match &self.options.form {
            Form::Directory => self.root.join(&format!("{prefix}{index}")),
            Form::TorchFile { extension } => {
                self.root.join(&format!("{prefix}{index}.{extension}"))
            }
        }
    }

    /// Where a listed checkpoint lives.
    pub fn location_of(&self, entry: &Entry) -> Location {
        self.root.join(&entry.name)
    }

    /// Saves `tree` as checkpoint `index` when the period says so (or `force`); returns what
    /// it wrote when it saved. A partial checkpoint of the same index (a save that died) is
    /// removed first; older checkpoints beyond `keep_last` are removed after.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyCommitted`] when `index` is a committed directory; the save's errors.
    pub async fn save(&self, index: u64, tree: &StateTree, force: bool) -> Result<Option<Saved>> {
        if !force && !index.is_multiple_of(self.options.period.max(1)) {
            return Ok(None);
        }
        let saved = match &self.options.form {
            Form::Directory => self.save_directory(index, tree).await?,
            Form::TorchFile { .. } => self.save_file(index, tree).await?,
        };
        if let Some(keep) = self.options.keep_last {
            let committed: Vec<u64> = self
                .list()
                .await?
                .iter()
                .filter(|e| e.committed)
                .map(|e| e.index)
                .collect();
            let drop = committed.len().saturating_sub(keep.max(1));
            for &old in &committed[..drop] {
                self.remove(old).await?;
            }
        }
        Ok(Some(saved))
    }

    async fn save_file(&self, index: u64, tree: &StateTree) -> Result<Saved> {
        let file = self.location(index);
        let options = crate::save::WriteOptions {
            materialize: self.options.save.materialize,
            progress: self.options.save.progress.clone(),
            ..Default::default()
        };
        let (written, size) = crate::save::write_torch_sized(tree, &file, &options).await?;
        Ok(Saved {
            uri: file.uri(),
            files: written.files,
            tensors: tree.tensors().count(),
            bytes: size,
        })
    }

    async fn save_directory(&self, index: u64, tree: &StateTree) -> Result<Saved> {
        let dir = self.location(index);
        if let Some(entry) = self
            .list_all()
            .await?
            .into_iter()
            .find(|e| e.index == index)
        {
            if entry.committed {
                return Err(Error::AlreadyCommitted { uri: dir.uri() });
            }
            remove_prefix(&dir).await?;
        }
        save(&dir, tree, &self.options.save).await
    }

    /// Every checkpoint under the root, committed or partial, by index.
    ///
    /// # Errors
    ///
    /// The LIST's errors.
    pub async fn list(&self) -> Result<Vec<Entry>> {
        self.list_all().await
    }

    async fn list_all(&self) -> Result<Vec<Entry>> {
        let listing = list(&self.root).await?;
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        for name in listing.dirs() {
            let Some(index) = self.index_of(name, false) else {
                continue;
            };
            let inside = list(&self.root.join(name)).await?;
            let (kind, whole) = match (committed(&inside), format::orbax::step_committed(&inside)) {
                (Some(Layout::Ckptio), _) => (Kind::Ckptio, true),
                (Some(Layout::Dcp), _) => (Kind::Dcp, true),
                (None, Some(whole)) => (Kind::Orbax, whole),
                // What a removal leaves on a file system: a directory with nothing in it.
                (None, None) if inside.is_empty() => continue,
                (None, None) => (Kind::Unknown, false),
            };
            entries.insert(
                index,
                Entry {
                    index,
                    name: name.clone(),
                    kind,
                    committed: whole,
                },
            );
        }
        for name in listing.names() {
            let Some(index) = self.index_of(name, true) else {
                continue;
            };
            entries.entry(index).or_insert_with(|| Entry {
                index,
                name: name.to_owned(),
                kind: Kind::File,
                committed: true,
            });
        }
        Ok(entries.into_values().collect())
    }

    /// The index in `name` (`{prefix}{digits}`, with a checkpoint file extension for files).
    fn index_of(&self, name: &str, file: bool) -> Option<u64> {
        let rest = name.strip_prefix(&self.options.prefix)?;
        let digits = if file {
            let own = match &self.options.form {
                Form::TorchFile { extension } => rest
                    .strip_suffix(extension.as_str())
                    .and_then(|r| r.strip_suffix('.')),
                Form::Directory => None,
            };
            own.or_else(|| {
                [".pt", ".pth", ".ckpt", ".safetensors"]
                    .iter()
                    .find_map(|ext| rest.strip_suffix(ext))
            })?
        } else {
            rest
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The largest committed index: partial directories are skipped, and so is a file that
    /// does not open (a `torch.save` cut short).
    ///
    /// # Errors
    ///
    /// The LIST's errors.
    pub async fn latest(&self) -> Result<Option<u64>> {
        Ok(self.latest_entry().await?.map(|e| e.index))
    }

    /// The latest committed checkpoint's entry (see [`latest`](Self::latest)).
    ///
    /// # Errors
    ///
    /// The LIST's errors.
    pub async fn latest_entry(&self) -> Result<Option<Entry>> {
        for entry in self.list().await?.into_iter().rev() {
            if self.is_whole(&entry).await {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Whether `entry` can be loaded: a directory with its commit marker, or a file that
    /// opens (a `torch.save` cut short does not). Costs the file's open; a directory's entry
    /// already says.
    pub async fn is_whole(&self, entry: &Entry) -> bool {
        match entry.kind {
            Kind::File => format::open(&self.location_of(entry), OpenOptions::default())
                .await
                .is_ok(),
            _ => entry.committed,
        }
    }

    /// The latest committed checkpoint, opened lazily, with its index.
    ///
    /// # Errors
    ///
    /// The reader's errors.
    pub async fn load_latest(&self) -> Result<Option<(u64, format::Checkpoint)>> {
        let Some(entry) = self.latest_entry().await? else {
            return Ok(None);
        };
        let checkpoint = format::open(&self.location_of(&entry), OpenOptions::default()).await?;
        Ok(Some((entry.index, checkpoint)))
    }

    /// Removes checkpoint `index`: its commit marker first, so a half-removed checkpoint is
    /// never committed, then everything else under it.
    ///
    /// # Errors
    ///
    /// The deletes' errors.
    pub async fn remove(&self, index: u64) -> Result<()> {
        let Some(entry) = self.list().await?.into_iter().find(|e| e.index == index) else {
            return Ok(());
        };
        // A numbered entry may be a save that died before its commit: it goes too.
        remove_any(&self.root.join(&entry.name)).await.map(drop)
    }

    /// Removes every checkpoint under the root (what `delete_existing` does at the start of a
    /// run).
    ///
    /// # Errors
    ///
    /// As [`remove`](Self::remove).
    pub async fn delete_existing(&self) -> Result<()> {
        for entry in self.list().await? {
            self.remove(entry.index).await?;
        }
        Ok(())
    }
}

/// Removes the checkpoint at `loc`: a ckptio or DCP directory loses its commit marker first
/// (so a half-removed checkpoint is never committed), an Orbax step what says it is whole,
/// then everything else under it goes; a file is deleted. Returns what it was. Nothing there
/// is not an error (`Kind::Unknown`): removal is idempotent, as a store's deletes are.
///
/// A directory that holds things but no checkpoint (no commit marker of any layout) is
/// refused: a typo (`s3://bucket/` for `s3://bucket/run/step-3/`) must not empty a bucket.
/// [`remove_any`] removes it too (a save that died before its commit).
///
/// # Errors
///
/// [`Error::NoCheckpoint`] for such a directory, naming what it holds; otherwise the LIST's
/// and deletes' errors.
pub async fn remove(loc: &Location) -> Result<Kind> {
    remove_checked(loc, false).await
}

/// Removes whatever is at `loc`, as [`remove`] does, and also a directory that holds no
/// checkpoint: everything under it goes (on a local disk, never following a link out).
///
/// # Errors
///
/// The LIST's and deletes' errors.
pub async fn remove_any(loc: &Location) -> Result<Kind> {
    remove_checked(loc, true).await
}

async fn remove_checked(loc: &Location, any: bool) -> Result<Kind> {
    if crate::fetch::stat(loc).await.is_ok() {
        delete(loc).await?;
        return Ok(Kind::File);
    }
    let listing = list(loc).await?;
    let kind = match committed(&listing) {
        Some(layout) => {
            delete_marker(loc, &listing, layout).await?;
            match layout {
                Layout::Ckptio => Kind::Ckptio,
                Layout::Dcp => Kind::Dcp,
            }
        }
        None if format::orbax::step_committed(&listing).is_some() => {
            // What says an Orbax step is whole goes first.
            for name in [format::orbax::COMMIT_SUCCESS, "_CHECKPOINT_METADATA"] {
                if listing.contains(name) {
                    delete(&loc.join(name)).await?;
                }
            }
            Kind::Orbax
        }
        None if any || listing.is_empty() => Kind::Unknown,
        None => return Err(not_removed(&listing)),
    };
    remove_prefix(loc).await?;
    Ok(kind)
}

/// Why [`remove`] refuses a directory: what it holds, and how to remove it anyway.
fn not_removed(listing: &Listing) -> Error {
    let mut err = format::no_checkpoint(listing);
    if let Error::NoCheckpoint { hint, .. } = &mut err {
        let refusal = "not removed, as nothing in it says it is a checkpoint (`ckptio rm \
            --force`, `remove_any` or Python's `rm(..., force=True)` removes everything under it)";
        *hint = Some(match hint.take() {
            Some(h) => format!("{h}; {refusal}"),
            None => refusal.to_owned(),
        });
    }
    err
}

/// Deletes the commit marker of `layout` in the directory `loc`.
async fn delete_marker(loc: &Location, listing: &Listing, layout: Layout) -> Result<()> {
    for name in listing.names() {
        if marker(name) == Some(layout) {
            delete(&loc.join(name)).await?;
        }
    }
    Ok(())
}

async fn delete(loc: &Location) -> Result<()> {
    match loc.store().delete(loc.path()).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(loc.error("delete", e)),
    }
}

/// Deletes every object under the directory `dir`. On a local file system the directory is
/// removed as a tree that is never followed out of: a symbolic link inside it is removed as a
/// link, whatever it points to, and the staging files of uploads killed mid-way (`name#N`,
/// which listings never show) go with the rest.
async fn remove_prefix(dir: &Location) -> Result<()> {
    let Some(path) = dir.local_path() else {
        return remove_objects(dir).await;
    };
    let at = path.clone();
    crate::fetch::blocking(&path, "remove the directory", move || {
        // std's remove_dir_all unlinks symbolic links instead of following them, and does so
        // without a window for a link to be swapped in (openat/unlinkat).
        match std::fs::remove_dir_all(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    })
    .await
}

/// Deletes every object under the directory `dir`.
async fn remove_objects(dir: &Location) -> Result<()> {
    for name in crate::fetch::walk(dir).await? {
        delete(&dir.join(&name)).await?;
    }
    Ok(())
}
