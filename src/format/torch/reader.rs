//! Opening a `torch.save` file (PyTorch ≥ 1.6) lazily: the zip's tail (one request: end
//! records and central directory), then `data.pkl` with the small records beside it (one
//! more). A small file is one request in all.

use bytes::Bytes;

use super::archive;
use crate::error::Result;
use crate::fetch::{FetchOptions, Object};
use crate::format::ReadOptions;
use crate::format::zip::TAIL_READ;
use crate::location::Location;
use crate::tree::StateTree;

/// Opens the torch file at `location`: the zip's tail, then `data.pkl` and its neighbours.
///
/// # Errors
///
/// As [`archive::read`].
pub(crate) async fn open(
    location: &Location,
    fetch: FetchOptions,
    options: ReadOptions,
) -> Result<StateTree> {
    let (object, start, tail) = Object::open_suffix(location, TAIL_READ, fetch).await?;
    let size = object.info().size;
    archive::read(&object, 0..size, vec![(start, tail)], options).await
}

/// Opens the torch file `object`, whose first bytes `first` were read already (they often hold
/// `data.pkl`, which torch writes first): one more request for the zip's tail, none when
/// `first` is the whole file.
///
/// # Errors
///
/// As [`archive::read`].
pub(crate) async fn open_object(
    object: &Object,
    first: Bytes,
    options: ReadOptions,
) -> Result<StateTree> {
    let size = object.info().size;
    let mut held = vec![(0, first.clone())];
    if (first.len() as u64) < size {
        let tail = size.saturating_sub(TAIL_READ).max(first.len() as u64)..size;
        held.push((tail.start, object.read_range(tail).await?));
    }
    archive::read(object, 0..size, held, options).await
}
