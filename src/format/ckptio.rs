//! ckptio checkpoints, read: `manifest.json` (one GET) and the data files pinned by one LIST of
//! the directory. Every tensor carries its CRC-32C, checked as it is materialized;
//! [`verify`](super::verify) reads everything once to check it all.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::location::Location;
use crate::save::manifest::{MANIFEST, MAX_MANIFEST, Manifest, ManifestNode, Stored};
use crate::tree::{Check, Checksum, Dict, LazyTensor, Leaf, Node, StateTree, TensorSource};

/// Whether `location` names a ckptio manifest.
pub fn is_manifest(location: &Location) -> bool {
    location.path().filename() == Some(MANIFEST)
}

/// An open ckptio checkpoint.
#[derive(Debug, Clone)]
pub struct CkptioCheckpoint {
    manifest: Manifest,
    tree: StateTree,
}

impl CkptioCheckpoint {
    /// Opens the checkpoint in the directory `location` (or whose manifest it names).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] without a manifest (an uncommitted checkpoint does not exist),
    /// [`Error::Checkpoint`] for a manifest that does not validate or a data file that is missing
    /// or of the wrong size, and the reads' errors.
    pub async fn open(location: &Location, fetch: FetchOptions) -> Result<Self> {
        let dir = if is_manifest(location) {
            location.parent()
        } else {
            location.clone()
        };
        let loc = dir.join(MANIFEST);
        let (object, bytes) = Object::open_prefix(&loc, MAX_MANIFEST, fetch.clone()).await?;
        let bad = |problem: String| Error::Checkpoint {
            uri: loc.uri(),
            problem,
        };
        if object.info().size > MAX_MANIFEST {
            return Err(bad(format!(
                "{} bytes of manifest is more than the {MAX_MANIFEST}-byte limit",
                object.info().size
            )));
        }
        let manifest = Manifest::from_json(&bytes).map_err(|e| bad(e.to_string()))?;
        let objects = data_files(&dir, &manifest, fetch).await?;
        let root = match node(&manifest.tree, &objects, &manifest) {
            Node::Dict(d) => d,
            other => Dict::from([(String::new(), other)]),
        };
        Ok(Self {
            tree: StateTree::from_dict(root),
            manifest,
        })
    }

    /// The tree; tensors check their CRC-32C when materialized.
    pub fn tree(&self) -> &StateTree {
        &self.tree
    }

    /// The tree, taken.
    pub fn into_tree(self) -> StateTree {
        self.tree
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's metadata, with its creation time.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.manifest.metadata.clone();
        m.insert("created".into(), self.manifest.created.clone());
        m
    }
}

/// The data files, pinned by one LIST (or a HEAD each where a store cannot list), each
/// checked against the size the manifest recorded.
async fn data_files(
    dir: &Location,
    manifest: &Manifest,
    fetch: FetchOptions,
) -> Result<Vec<Object>> {
    let names = manifest.files.iter().map(|f| f.name.as_str());
    let mut found = Object::open_all(dir, names, fetch).await?;
    let mut objects = Vec::with_capacity(manifest.files.len());
    for file in &manifest.files {
        let loc = dir.join(&file.name);
        let object = found.remove(&file.name).ok_or_else(|| Error::Checkpoint {
            uri: loc.uri(),
            problem: "a data file of the checkpoint is missing".into(),
        })?;
        if object.info().size != file.size {
            return Err(Error::Checkpoint {
                uri: loc.uri(),
                problem: format!(
                    "the manifest says {} bytes, the file has {}",
                    file.size,
                    object.info().size
                ),
            });
        }
        objects.push(object);
    }
    Ok(objects)
}

fn node(n: &ManifestNode, objects: &[Object], manifest: &Manifest) -> Node {
    match n {
        ManifestNode::Dict(d) => Node::Dict(
            d.iter()
                .map(|(k, v)| (k.clone(), node(v, objects, manifest)))
                .collect(),
        ),
        ManifestNode::List(l) => Node::List(l.iter().map(|v| node(v, objects, manifest)).collect()),
        ManifestNode::Leaf(v) => Node::Leaf(v.0.clone()),
        ManifestNode::Tensor(s) => Node::Leaf(Leaf::Tensor(tensor(s, objects, manifest))),
    }
}

fn tensor(s: &Stored, objects: &[Object], manifest: &Manifest) -> LazyTensor {
    LazyTensor {
        source: Some(TensorSource {
            check: Some(Check {
                span: s.range.clone(),
                checksum: s.sha256.map_or(Checksum::Crc32c(s.crc32c), |h| {
                    Checksum::Sha256(Box::new(h))
                }),
                record: Arc::from(manifest.files[s.file].name.as_str()),
            }),
            ..TensorSource::new(objects[s.file].clone(), s.range.clone())
        }),
        ..LazyTensor::abstract_(s.dtype, s.shape.clone())
    }
}
