//! Classifying a URI once: an object (whose first bytes are read, once, and handed on to its
//! reader) or a directory (whose one listing is handed on), and which format it holds.
//!
//! A name that says what it is (`*.safetensors.index.json`, `manifest.json`, `.metadata`,
//! `.pt`) costs no probe. Anything else costs one ranged GET of its first MiB, which is the
//! safetensors reader's own first read; when there is no such object, one LIST of the
//! directory. So a directory holding a checkpoint costs two requests before its reader's own
//! reads, and an object none.

use bytes::Bytes;

use crate::error::{Error, NO_CHECKPOINT_NAMES, Result};
use crate::fetch::{FetchOptions, Listing, Object};
use crate::location::Location;

use super::{ckptio, dcp, safetensors, sharded};

/// What a URI names.
pub(crate) enum Probed {
    /// A safetensors shard index.
    Index,
    /// A torch zip named as one (`.pt`, `.pth`, `.ckpt`): its reader reads the tail first.
    TorchByName,
    /// The directory holding a file that names its format (`manifest.json`, `.metadata`).
    Marker(Layout, Location),
    /// An object, with its first bytes.
    Object {
        object: Object,
        first: Bytes,
        kind: Sniffed,
    },
    /// A directory holding a checkpoint of this layout, with its listing.
    Dir(Layout, Listing),
    /// A directory of model weights (a Hugging Face model directory): the file holding them.
    Weights(Location),
    /// A directory of a training run's state files (accelerate's `save_state`): each file,
    /// opened as a subtree named after it.
    StateFiles(Listing, Vec<String>),
    /// An Orbax step directory (or checkpointable), with its listing.
    Orbax(Listing),
}

/// A checkpoint directory's layout, known by the file that commits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A ckptio checkpoint (`manifest.json`).
    Ckptio,
    /// A torch.distributed.checkpoint directory (`.metadata`).
    Dcp,
}

/// The files that commit a checkpoint directory: written last, removed first, copied last.
pub(crate) const MARKERS: [(&str, Layout); 2] = [
    (ckptio::manifest::MANIFEST, Layout::Ckptio),
    (dcp::METADATA, Layout::Dcp),
];

/// The layout the file `name` commits, if it is a commit marker.
pub(crate) fn marker(name: &str) -> Option<Layout> {
    MARKERS
        .iter()
        .find(|(marker, _)| *marker == name)
        .map(|&(_, layout)| layout)
}

/// The layout a directory's commit marker says it has; `None` when it holds none (a save in
/// progress, one that died, or no checkpoint at all).
pub(crate) fn committed(listing: &Listing) -> Option<Layout> {
    MARKERS
        .iter()
        .find(|(marker, _)| listing.contains(marker))
        .map(|&(_, layout)| layout)
}

/// What an object's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A zip: a `torch.save` file under another name (`pytorch_model.bin`).
    Zip,
    /// A bare pickle: a legacy `torch.save` file, or a plain pickle.
    Pickle,
    /// A GGUF file.
    Gguf,
    /// Anything else: read as safetensors.
    Other,
}

/// What an object's first bytes say it is.
pub(crate) fn sniff(first: &[u8]) -> Sniffed {
    if first.starts_with(b"PK\x03\x04") {
        Sniffed::Zip
    } else if super::torch::is_pickle(first) {
        Sniffed::Pickle
    } else if first.starts_with(b"GGUF") {
        Sniffed::Gguf
    } else {
        Sniffed::Other
    }
}

/// Names torch gives its files (`pytorch_model.bin` is found by its first bytes: `.bin` is
/// anyone's).
fn is_torch_name(name: &str) -> bool {
    [".pt", ".pth", ".ckpt"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Classifies `location`.
///
/// # Errors
///
/// [`Error::NotFound`] when there is neither an object nor a directory;
/// [`Error::NoCheckpoint`] for a directory that holds nothing ckptio reads, listing what it
/// holds; the requests' errors.
pub(crate) async fn probe(location: &Location, fetch: &FetchOptions) -> Result<Probed> {
    let name = location.path().filename().unwrap_or_default();
    if sharded::is_index(name) {
        return Ok(Probed::Index);
    }
    if let Some(layout) = marker(name) {
        return Ok(Probed::Marker(layout, location.parent()));
    }
    if location.names_dir() {
        let listing = crate::fetch::list(location).await?;
        if listing.is_empty() {
            return Err(Error::NotFound {
                uri: location.uri(),
            });
        }
        return classify_dir(listing);
    }
    if is_torch_name(name) {
        return Ok(Probed::TorchByName);
    }
    let read = Object::open_prefix(location, safetensors::SPECULATIVE_READ, fetch.clone()).await;
    let error = match read {
        Ok((object, first)) => {
            let kind = sniff(&first);
            return Ok(Probed::Object {
                object,
                first,
                kind,
            });
        }
        Err(e) => e,
    };
    // One listing tells whether it is a directory.
    if !maybe_directory(&error) {
        return Err(error);
    }
    let listing = match crate::fetch::list(location).await {
        Ok(listing) if !listing.is_empty() => listing,
        _ => return Err(error),
    };
    classify_dir(listing)
}

/// Whether a failed read of `location` may mean it is a directory: stores answer a GET of a
/// directory's name with 404 (S3, GCS, memory, local disks), 403 or a redirect (web servers),
/// or 500 (file-backed S3 servers). An unreachable or silent server is not asked again.
pub(crate) fn maybe_directory(error: &Error) -> bool {
    use crate::error::TransportKind;
    match error {
        Error::NotFound { .. } | Error::PermissionDenied { .. } => true,
        Error::Transport { kind, .. } => {
            !matches!(kind, TransportKind::Unreachable | TransportKind::TimedOut)
        }
        _ => false,
    }
}

/// What the directory `listing` holds.
fn classify_dir(listing: Listing) -> Result<Probed> {
    if let Some(layout) = committed(&listing) {
        return Ok(Probed::Dir(layout, listing));
    }
    // A listing that hides dot-files cannot show `.metadata`: with DCP data files there, the
    // reader's own first read (of `.metadata`) tells.
    if !listing.dir().capabilities().lists_dotfiles
        && listing.names().any(|n| n.ends_with(".distcp"))
    {
        return Ok(Probed::Dir(Layout::Dcp, listing));
    }
    if super::orbax::is_orbax(&listing) {
        return Ok(Probed::Orbax(listing));
    }
    let names: Vec<&str> = listing.names().collect();
    if names.iter().any(|n| is_training_state(n)) {
        let files = names
            .iter()
            .filter(|n| is_state_file(n))
            .map(|n| (*n).to_owned())
            .collect();
        return Ok(Probed::StateFiles(listing, files));
    }
    if let Some(name) = weights(&names) {
        return Ok(Probed::Weights(listing.dir().join(name)));
    }
    Err(no_checkpoint(&listing))
}

/// The files a Hugging Face model directory keeps its weights in, in the order its loaders
/// prefer them.
const WEIGHTS: [&str; 4] = [
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
];

/// The file holding a model directory's weights: a known name, else an index (safetensors
/// before torch, a plain one before a variant).
fn weights<'a>(names: &[&'a str]) -> Option<&'a str> {
    let found = |name: &str| names.iter().copied().find(|n| *n == name);
    WEIGHTS.iter().find_map(|w| found(w)).or_else(|| {
        let mut indexes: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| sharded::is_index(n))
            .collect();
        indexes.sort_by_key(|n| {
            (
                !n.contains(".safetensors."),
                !n.ends_with(".index.json"),
                *n,
            )
        });
        indexes.first().copied()
    })
}

/// Whether `name` is `prefix` or `prefix_<n>` before its first dot, as accelerate numbers the
/// files of a second model or optimizer.
fn numbered(name: &str, prefix: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default();
    stem == prefix
        || stem
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A file of a training run's state other than weights, as accelerate's `save_state` writes
/// them: optimizers', schedulers' and samplers' states, the random states, the gradient
/// scaler's, custom objects.
fn is_training_state(name: &str) -> bool {
    [
        "optimizer",
        "scheduler",
        "sampler",
        "random_states",
        "scaler",
        "custom_checkpoint",
    ]
    .iter()
    .any(|p| numbered(name, p))
        && [".bin", ".pt", ".pkl", ".safetensors"]
            .iter()
            .any(|e| name.ends_with(e))
}

/// A file of a training-state directory: the training state, or a model's weights.
fn is_state_file(name: &str) -> bool {
    is_training_state(name)
        || (numbered(name, "model") && name.ends_with(".safetensors"))
        || (numbered(name, "pytorch_model") && name.ends_with(".bin"))
}

/// Whether a directory's name ends in a step number (`step-3`, `checkpoint_500`, `epoch=2`).
fn index_suffix(name: &str) -> bool {
    name.rsplit_once(['-', '_', '='])
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The error for a directory that holds nothing ckptio reads: what it holds, and what that
/// suggests.
pub(crate) fn no_checkpoint(listing: &Listing) -> Error {
    let mut found: Vec<String> = listing
        .names()
        .map(str::to_owned)
        .chain(listing.dirs().iter().map(|d| format!("{d}/")))
        .collect();
    let hint = if found.iter().any(|n| n.ends_with(".distcp")) {
        Some(format!(
            "a torch.distributed.checkpoint directory without `{}` is a save that did not finish",
            dcp::METADATA
        ))
    } else if found
        .iter()
        .any(|n| n.starts_with("data-") && n.ends_with(".safetensors"))
    {
        Some(format!(
            "a ckptio checkpoint without `{}` is a save that did not finish",
            ckptio::manifest::MANIFEST
        ))
    } else if listing.dirs().iter().any(|d| index_suffix(d)) {
        Some(
            "a root of numbered checkpoints (`ckptio ls ROOT` or Python's `ckptio.ls(root)` \
             lists them)"
                .to_owned(),
        )
    } else {
        None
    };
    let more = found.len().saturating_sub(NO_CHECKPOINT_NAMES);
    found.truncate(NO_CHECKPOINT_NAMES);
    if more > 0 {
        found.push(format!("and {more} more"));
    }
    Error::NoCheckpoint {
        uri: listing.dir().uri(),
        found,
        hint,
    }
}

impl Probed {
    /// Whether the probe's own answer says nothing was read (a name that says what it is).
    #[cfg(test)]
    fn by_name(&self) -> bool {
        matches!(self, Self::Index | Self::TorchByName | Self::Marker(..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_say_what_a_file_is() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Sniffed::Zip);
        assert_eq!(sniff(b"\x80\x02}q\x00"), Sniffed::Pickle);
        assert_eq!(sniff(b"\x80\x09"), Sniffed::Other, "not a pickle protocol");
        assert_eq!(sniff(b"GGUF\x03\x00"), Sniffed::Gguf);
        assert_eq!(sniff(b"\x10\x00\x00\x00\x00\x00\x00\x00{"), Sniffed::Other);
        assert_eq!(sniff(b""), Sniffed::Other);
    }

    #[tokio::test]
    async fn a_root_of_numbered_checkpoints_is_named_as_one() {
        use object_store::ObjectStoreExt;
        let root = crate::resolve("memory://probe-root/run/", &Default::default()).unwrap();
        for key in [
            "run/step-10/manifest.json",
            "run/step-9/manifest.json",
            "run/log.txt",
        ] {
            root.store()
                .put(&key.into(), vec![1u8].into())
                .await
                .unwrap();
        }
        let listing = crate::fetch::list(&root).await.unwrap();
        let Error::NoCheckpoint { hint, .. } = no_checkpoint(&listing) else {
            panic!("not NoCheckpoint");
        };
        assert!(hint.unwrap().starts_with("a root of numbered checkpoints"));
        assert!(index_suffix("checkpoint_500") && index_suffix("epoch=2"));
        assert!(!index_suffix("step-") && !index_suffix("v2.1") && !index_suffix("logs"));
    }

    #[test]
    fn commit_markers_name_their_layouts() {
        assert_eq!(marker("manifest.json"), Some(Layout::Ckptio));
        assert_eq!(marker(".metadata"), Some(Layout::Dcp));
        assert_eq!(marker("model.safetensors"), None);
    }

    #[tokio::test]
    async fn names_that_say_what_they_are_cost_no_request() {
        for uri in [
            "memory://probe/m.safetensors.index.json",
            "memory://probe/ckpt/manifest.json",
            "memory://probe/dcp/.metadata",
            "memory://probe/model.pt",
        ] {
            let loc = crate::location::resolve(uri, &Default::default()).unwrap();
            let (counted, counts) = loc.counted();
            let probed = probe(&counted, &FetchOptions::default()).await.unwrap();
            assert!(probed.by_name(), "{uri}");
            assert_eq!(counts.gets() + counts.heads() + counts.other(), 0, "{uri}");
        }
    }
}
