//! Which tensors are read together: file order, and batches of one object within a budget.

use std::sync::Arc;

use super::pack;
use super::split;
use crate::error::{Error, Result};
use crate::tree::{LazyTensor, Pieces, Source, TensorData};

/// The identity of a tensor's object: tensors of one object share one `Arc<dyn Source>`.
pub(super) fn source_id(source: &Arc<dyn Source>) -> *const () {
    Arc::as_ptr(source).cast()
}

/// Where a tensor comes in file order: its object (in first-seen order), then its offset;
/// bytes already in memory first, tensors in pieces last.
fn order_key(t: &LazyTensor, objects: &mut Vec<*const ()>) -> (usize, u64) {
    match &t.data {
        TensorData::Inline(_) | TensorData::Abstract | TensorData::Unreadable(_) => (0, 0),
        TensorData::Range(r) => {
            let id = source_id(&r.source);
            let group = objects.iter().position(|o| *o == id).unwrap_or_else(|| {
                objects.push(id);
                objects.len() - 1
            });
            (group + 1, r.range.start)
        }
        TensorData::Pieces(_) => (usize::MAX, 0),
    }
}

/// Sorts tensors into file order: grouped by object in first-seen order, then by offset.
/// Streaming and writing use this one order, so each tensor arrives when it is next needed.
pub(crate) fn file_order(tensors: &mut [(String, LazyTensor)]) {
    let mut objects = Vec::new();
    // Keys are computed once each, in order, so objects are numbered as first seen.
    tensors.sort_by_cached_key(|(_, t)| order_key(t, &mut objects));
}

/// A unit of reading: tensors of one object within the budget (or bytes already held), or
/// tensors assembled from pieces (within the budget, or one larger tensor).
pub(super) enum Batch {
    Read(Vec<(String, LazyTensor)>),
    Assemble(Vec<(String, LazyTensor, Arc<Pieces>)>),
}

impl Batch {
    /// The bytes working on it holds.
    pub(super) fn held(&self) -> u64 {
        match self {
            Self::Read(tensors) => tensors.iter().map(|(_, t)| held(t)).sum(),
            Self::Assemble(tensors) => tensors.iter().map(|(_, t, _)| t.nbytes()).sum(),
        }
    }
}

/// The number of bytes a batch reads for a tensor.
fn read_len(t: &LazyTensor) -> u64 {
    match &t.data {
        TensorData::Range(r) => r.range.end - r.range.start,
        TensorData::Inline(i) => i.bytes.len() as u64,
        TensorData::Abstract | TensorData::Pieces(_) | TensorData::Unreadable(_) => 0,
    }
}

/// The bytes a batch holds for a tensor: what it reads, or what that becomes once laid out
/// (a strided tensor's elements gathered), whichever is more.
fn held(t: &LazyTensor) -> u64 {
    read_len(t).max(t.nbytes())
}

/// Whether two tensors may not be read in one batch: they live in different objects, or
/// one of them needs no read.
fn apart(a: &(String, LazyTensor), b: &(String, LazyTensor)) -> bool {
    match (&a.1.data, &b.1.data) {
        (TensorData::Range(x), TensorData::Range(y)) => {
            source_id(&x.source) != source_id(&y.source)
        }
        (TensorData::Inline(_), TensorData::Inline(_)) => false,
        _ => true,
    }
}

/// Tensors in [`file_order`] (each cut into runs of at most `budget` contiguous bytes when
/// `runs`), cut into batches of one object and at most `budget` bytes (a larger tensor is a
/// batch of its own); tensors in pieces come last, in batches of their own of at most
/// `budget` bytes.
pub(super) fn batches(
    mut tensors: Vec<(String, LazyTensor)>,
    budget: u64,
    runs: bool,
) -> Result<Vec<Batch>> {
    for (path, t) in &tensors {
        match &t.data {
            TensorData::Abstract => {
                return Err(Error::InvalidArgument {
                    what: format!("tensor `{path}`"),
                    reason: "is abstract (a type and shape, no data)".into(),
                });
            }
            TensorData::Unreadable(u) => {
                return Err(Error::Unsupported {
                    uri: u.origin.to_string(),
                    what: format!("tensor `{path}` is {}, which ckptio does not read", u.what),
                });
            }
            _ => {}
        }
    }
    file_order(&mut tensors);
    if runs {
        tensors = tensors
            .into_iter()
            .flat_map(|(path, t)| {
                split::split(t, budget)
                    .into_iter()
                    .map(move |run| (path.clone(), run))
            })
            .collect();
    }
    // File order puts tensors in pieces last.
    let first_piece = tensors.partition_point(|(_, t)| !matches!(t.data, TensorData::Pieces(_)));
    let pieces = tensors.split_off(first_piece);
    let reads = tensors;
    let mut out: Vec<Batch> = pack(reads, budget, |(_, t)| held(t), apart)
        .into_iter()
        .map(Batch::Read)
        .collect();
    let pieces = pieces.into_iter().map(|(path, t)| match &t.data {
        TensorData::Pieces(p) => {
            let p = Arc::clone(p);
            (path, t, p)
        }
        _ => unreachable!("partitioned above"),
    });
    let assembled = pack(
        pieces.collect(),
        budget,
        |(_, t, _)| t.nbytes(),
        |_, _| false,
    );
    out.extend(assembled.into_iter().map(Batch::Assemble));
    Ok(out)
}
