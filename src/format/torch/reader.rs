//! Opening a `torch.save` file lazily. A zip (PyTorch ≥ 1.6): its tail (one request: end
//! records and central directory), then `data.pkl` with the small records beside it (one
//! more); a small file is one request in all. A legacy file: its first MiB, which holds the
//! pickles of any usual checkpoint (a longer head costs a few more requests, each at least
//! doubling what is held).

use std::sync::Arc;

use bytes::Bytes;

use super::codec::Storages;
use super::legacy::{self, Head, Problem};
use super::{TorchError, archive, is_pickle, unsupported};
use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Object};
use crate::format::object::{TooLargeFile, source};
use crate::format::pickle::{self, limits::MAX_PICKLE_BYTES};
use crate::format::zip::TAIL_READ;
use crate::format::{Format, ReadOptions};
use crate::location::Location;
use crate::tree::{Anchor, ByteRange, Source, StateTree, TensorData};

/// Bytes read from the start of a legacy file when the probe did not read them.
const HEAD_READ: u64 = 1 << 20;

/// Opens the torch file at `location`: the zip's tail, then `data.pkl` and its neighbours; or,
/// when the tail holds no zip and the file starts with a pickle, as a legacy file. Says which
/// it was ([`Format::Torch`] or [`Format::TorchLegacy`]).
///
/// # Errors
///
/// As [`archive::read`].
pub(crate) async fn open(
    location: &Location,
    fetch: FetchOptions,
    options: ReadOptions,
) -> Result<(Format, StateTree)> {
    let (object, start, tail) = Object::open_suffix(location, TAIL_READ, fetch).await?;
    let size = object.info().size;
    // A zip's tail holds its end record; without one, the first bytes say what it is.
    if !tail.windows(4).any(|w| w == b"PK\x05\x06") {
        let first = if start == 0 {
            tail.clone()
        } else {
            object.read_range(0..size.min(HEAD_READ)).await?
        };
        if is_pickle(&first) {
            return open_pickle(&object, first, options).await;
        }
    }
    let tree = archive::read(&object, 0..size, vec![(start, tail)], options).await?;
    Ok((Format::Torch, tree))
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

/// Opens the bare pickle `object`, whose first bytes `first` were read already: a legacy
/// `torch.save` file ([`Format::TorchLegacy`]; tensors become byte ranges of their storages,
/// whose element counts are checked when they are read), or a plain pickle
/// ([`Format::Pickle`], read whole: plain values, numpy arrays as tensors over its bytes).
///
/// # Errors
///
/// [`Error::Unsupported`] for a plain pickle of torch tensors; [`Error::Corrupt`] or
/// [`Error::Unsafe`] as for a zip; the reads' errors.
pub(crate) async fn open_pickle(
    object: &Object,
    first: Bytes,
    options: ReadOptions,
) -> Result<(Format, StateTree)> {
    let uri = object.location().uri();
    let size = object.info().size;
    let policy = archive::policy(options);
    let mut have = first;
    let head = loop {
        match legacy::parse(&have, size, &policy) {
            Ok(head) => break head,
            Err(Problem::Need) => {
                let held = have.len() as u64;
                if held >= MAX_PICKLE_BYTES {
                    return Err(Error::corrupt(
                        uri,
                        TooLargeFile {
                            what: "legacy torch pickles",
                            size,
                            limit: MAX_PICKLE_BYTES,
                        },
                    ));
                }
                let end = (2 * held).max(HEAD_READ).min(size).min(MAX_PICKLE_BYTES);
                have = object.extend_prefix(have, end).await?;
            }
            Err(Problem::NotTorch) => {
                let tree = plain_pickle(object, have, options).await?;
                return Ok((Format::Pickle, tree));
            }
            Err(Problem::Pickle(what, e)) => return Err(pickle::error(&uri, what, *e)),
            Err(Problem::Bad(why)) => {
                return Err(Error::corrupt(
                    uri,
                    TorchError(format!("a legacy torch.save file whose {why}")),
                ));
            }
        }
    };
    drop(have);
    let record = format!(
        "the pickled object (bytes {}..{})",
        head.object_bytes.start, head.object_bytes.end
    );
    let storages = LegacyStorages {
        source: source(object),
        head: &head,
    };
    let tree = archive::tree_of(&head.object, &record, &storages, &uri)?;
    Ok((Format::TorchLegacy, tree))
}

/// A plain pickle, read whole (at most [`MAX_PICKLE_BYTES`]), as a tree: its values, numpy
/// arrays as tensors over its bytes, any class ckptio does not interpret inert.
async fn plain_pickle(object: &Object, first: Bytes, options: ReadOptions) -> Result<StateTree> {
    let uri = object.location().uri();
    let size = object.info().size;
    if size > MAX_PICKLE_BYTES {
        return Err(Error::corrupt(
            uri,
            TooLargeFile {
                what: "pickle",
                size,
                limit: MAX_PICKLE_BYTES,
            },
        ));
    }
    let whole = object.extend_prefix(first, size).await?;
    let heap = pickle::parse(&whole, &archive::policy(options))
        .map_err(|e| pickle::error(&uri, "the pickle", e))?;
    // `pickle.dump` of a torch tensor embeds each storage as a torch.save archive of its own.
    if heap
        .globals()
        .any(|g| g.is("torch.storage", "_load_from_bytes"))
    {
        return Err(unsupported(&uri, super::TORCH_IN_PLAIN_PICKLE));
    }
    archive::tree_of(
        &heap,
        "the pickle",
        &NoStorages(Arc::from(uri.as_str())),
        &uri,
    )
}

/// A plain pickle's storages: there are none.
struct NoStorages(Arc<str>);

impl Storages for NoStorages {
    fn data(&self, key: &str, _: std::ops::Range<u64>) -> std::result::Result<TensorData, String> {
        Err(format!(
            "a tensor refers to storage `{key}`, but a plain pickle holds no storages"
        ))
    }

    fn origin(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

/// The storages of a legacy file, each a range of the object after its element count.
struct LegacyStorages<'a> {
    source: Arc<dyn Source>,
    head: &'a Head,
}

impl Storages for LegacyStorages<'_> {
    fn data(
        &self,
        key: &str,
        bytes: std::ops::Range<u64>,
    ) -> std::result::Result<TensorData, String> {
        let (root, base) = match self.head.views.get(key) {
            Some((root, offset)) => (root.as_str(), *offset),
            None => (key, 0),
        };
        let stored = self.head.storages.get(root).ok_or_else(|| {
            format!("a tensor refers to storage `{key}`, which the file does not hold")
        })?;
        let end = base.checked_add(bytes.end).filter(|&e| e <= stored.len);
        if end.is_none() {
            return Err(format!(
                "a tensor reaches byte {} of storage `{key}`, which has {} bytes",
                base.saturating_add(bytes.end),
                stored.len
            ));
        }
        let start = stored.start + base + bytes.start;
        let mut range = ByteRange::new(
            Arc::clone(&self.source),
            start..stored.start + base + bytes.end,
        );
        // A tensor at the start of its storage is read with the count before it, which must
        // be the one the pickle gave.
        if start == stored.start {
            range.anchor = Some(Arc::new(ElementCount {
                key: key.to_owned(),
                at: stored.start - 8,
                numel: stored.numel,
            }));
        }
        Ok(TensorData::Range(range))
    }

    fn origin(&self) -> Arc<str> {
        Arc::from(self.source.uri())
    }
}

/// The 8-byte element count before a legacy storage's elements.
#[derive(Debug)]
struct ElementCount {
    key: String,
    at: u64,
    numel: u64,
}

impl Anchor for ElementCount {
    fn header_start(&self) -> u64 {
        self.at
    }

    fn predicted(&self) -> u64 {
        self.at + 8
    }

    fn payload_start(&self, uri: &str, header: &[u8]) -> Result<u64> {
        let count = header
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        if count == Some(self.numel) {
            return Ok(self.predicted());
        }
        Err(Error::corrupt(
            uri,
            TorchError(format!(
                "storage `{}` at byte {} begins with an element count of {count:?}, but the \
                 pickle says {}",
                self.key, self.at, self.numel
            )),
        ))
    }
}
