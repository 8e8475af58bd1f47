//! Reading a ckptio checkpoint: `manifest.json` (one GET) and the data files pinned by the
//! directory's listing. Every tensor carries its CRC-32C (or SHA-256), checked as it is
//! materialized.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::manifest::{MANIFEST, MAX_MANIFEST, Manifest, ManifestNode, Stored};
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Listing};
use crate::format::ReadOptions;
use crate::format::object::{read_whole, source};
use crate::location::Location;
use crate::tree::{
    ByteRange, Check, Checksum, Dict, LazyTensor, List, Node, Source, StateTree, TensorData,
};

/// An open ckptio checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct CkptioCheckpoint {
    pub tree: StateTree,
    /// The manifest's metadata, with its creation time.
    pub metadata: BTreeMap<String, String>,
    /// How many data files it has.
    pub files: usize,
}

/// A checkpoint whose files do not match its manifest: the source of an [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckpointError(pub String);

/// Opens the checkpoint in the directory `dir`, whose listing is `listing`.
///
/// # Errors
///
/// [`Error::NotFound`] without a manifest (an uncommitted checkpoint does not exist),
/// [`Error::Corrupt`] for a manifest that does not validate or a data file that is missing or
/// of the wrong size; the reads' errors.
pub(crate) async fn open(
    dir: &Location,
    listing: &Listing,
    fetch: FetchOptions,
    options: ReadOptions,
) -> Result<CkptioCheckpoint> {
    let loc = dir.join(MANIFEST);
    let (_, bytes) = read_whole(&loc, MAX_MANIFEST, "manifest", &fetch).await?;
    let manifest = Manifest::from_json(&bytes).map_err(|e| Error::corrupt(loc.uri(), e))?;
    drop(bytes);
    let sources = data_files(dir, listing, &manifest, &fetch)?;
    let records: Vec<Arc<str>> = manifest
        .files
        .iter()
        .map(|f| Arc::from(f.name.as_str()))
        .collect();
    let Manifest {
        created,
        mut metadata,
        files,
        tree,
    } = manifest;
    let root = match node(tree, &sources, &records, options) {
        Node::Dict(d) => d,
        other => Dict::from([(String::new(), other)]),
    };
    metadata.insert("created".into(), created);
    Ok(CkptioCheckpoint {
        tree: StateTree::from_dict(root),
        metadata,
        files: files.len(),
    })
}

/// The data files, pinned by the listing, each checked against the size the manifest
/// recorded.
fn data_files(
    dir: &Location,
    listing: &Listing,
    manifest: &Manifest,
    fetch: &FetchOptions,
) -> Result<Vec<Arc<dyn Source>>> {
    manifest
        .files
        .iter()
        .map(|file| {
            let uri = || dir.join(&file.name).uri();
            let object = listing.object(&file.name, fetch.clone()).ok_or_else(|| {
                Error::corrupt(
                    uri(),
                    CheckpointError("a data file of the checkpoint is missing".into()),
                )
            })?;
            if object.info().size != file.size {
                return Err(Error::corrupt(
                    uri(),
                    CheckpointError(format!(
                        "the manifest says {} bytes, the file has {}",
                        file.size,
                        object.info().size
                    )),
                ));
            }
            Ok(source(&object))
        })
        .collect()
}

fn node(
    n: ManifestNode,
    sources: &[Arc<dyn Source>],
    records: &[Arc<str>],
    options: ReadOptions,
) -> Node {
    match n {
        ManifestNode::Dict(d, keys) => Node::Dict(
            d.into_iter()
                .map(|(k, v)| (k, node(v, sources, records, options)))
                .collect::<Dict>()
                .with_key_kind(keys),
        ),
        ManifestNode::List(l, tuple) => {
            let items = l.into_iter().map(|v| node(v, sources, records, options));
            Node::List(if tuple {
                List::tuple(items.collect())
            } else {
                items.collect()
            })
        }
        ManifestNode::Leaf(v) => Node::Leaf(v.0),
        ManifestNode::Tensor(s) => Node::from(tensor(*s, sources, records, options)),
    }
}

fn tensor(
    s: Stored,
    sources: &[Arc<dyn Source>],
    records: &[Arc<str>],
    options: ReadOptions,
) -> LazyTensor {
    let check = options.verify.then(|| Check {
        span: s.range.clone(),
        checksum: s.sha256.map_or(Checksum::Crc32c(s.crc32c), |h| {
            Checksum::Sha256(Box::new(h))
        }),
        record: Arc::clone(&records[s.file]),
    });
    LazyTensor {
        data: TensorData::Range(ByteRange {
            check,
            ..ByteRange::new(Arc::clone(&sources[s.file]), s.range)
        }),
        ..LazyTensor::abstract_(s.dtype, s.shape)
    }
}
