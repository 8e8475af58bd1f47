//! Writing `torch.save` archives to any store: the records torch writes, in its order
//! (`data.pkl`, `.format_version`, `.storage_alignment`, `byteorder`, one `data/<key>` per
//! tensor, `version`, `.data/serialization_id`), each tensor streamed as its runs arrive,
//! through [`upload`](crate::upload): one object, which appears whole or not at all. A file is
//! one archive; a DCP data file is several, back to back, with raw items between them.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::fetch::Progress;
use crate::format::zip::writer::{ALIGNMENT, ZipWriter};
use crate::location::Location;
use crate::tree::Tensor;
use crate::upload::Upload;

/// The folder every record is under, as torch names it when saving to a stream.
const ARCHIVE: &str = "archive";

/// One storage to write: the tensor's path and its size in bytes, in record order (`data/0`
/// first).
pub(crate) type Storage = (String, u64);

/// The bytes of an archive besides its tensors, for sizing uploads.
pub(crate) fn overhead(pickle: usize, storages: usize) -> u64 {
    pickle as u64 + (storages as u64 + 8) * (2 * ALIGNMENT + 100)
}

/// Writes the torch file `dest` from its pickle and `storages`, whose bytes arrive from `data`
/// in the same order (a large tensor as consecutive runs under its path); `progress` is told of
/// each run. A failed write is aborted, leaving whatever was at `dest` before. Returns the
/// file's size.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when a tensor's bytes do not match its storage; the stream's
/// errors; the store's.
pub(crate) async fn write_file(
    dest: &Location,
    pickle: Vec<u8>,
    storages: &[Storage],
    data: impl Stream<Item = Result<(String, Tensor)>>,
    progress: &dyn Progress,
) -> Result<u64> {
    let tensor_bytes: u64 = storages.iter().map(|(_, n)| n).sum();
    let size_hint = tensor_bytes + overhead(pickle.len(), storages.len());
    let mut upload = Upload::new(dest, size_hint);
    let mut data = std::pin::pin!(data);
    let written = async {
        let mut pending = None;
        let size = put_archive(
            &mut upload,
            dest,
            pickle,
            storages,
            &mut data,
            &mut pending,
            progress,
        )
        .await?;
        if pending.is_none() {
            pending = data.next().await.transpose()?;
        }
        if let Some((name, _)) = pending {
            return Err(Error::InvalidArgument {
                what: format!("tensor `{name}`"),
                reason: format!(
                    "arrived while writing {dest}, where the pickle has no storage for it"
                ),
            });
        }
        Ok(size)
    }
    .await;
    match written {
        Ok(size) => upload.finish().await.map(|()| size),
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// One item of a DCP data file: a tensor's archive, or bytes written as they are.
pub(crate) enum Item {
    /// A `torch.save` archive of one tensor: its pickle and storage, its bytes from the stream.
    Archive {
        /// The archive's `data.pkl`.
        pickle: Vec<u8>,
        /// Its one storage.
        storage: Storage,
    },
    /// Bytes written as they are (a pickled object DCP serialized itself).
    Raw(Bytes),
}

/// Writes the DCP data file `dest`: `items` back to back, each archive's tensor bytes from
/// `data` in order. Returns each item's byte range in the file. Aborted on failure, as
/// [`write_file`].
///
/// # Errors
///
/// As [`write_file`].
pub(crate) async fn write_items(
    dest: &Location,
    items: Vec<Item>,
    data: impl Stream<Item = Result<(String, Tensor)>>,
    progress: &dyn Progress,
) -> Result<Vec<Range<u64>>> {
    let size_hint: u64 = items
        .iter()
        .map(|item| match item {
            Item::Archive { pickle, storage } => storage.1 + overhead(pickle.len(), 1),
            Item::Raw(bytes) => bytes.len() as u64,
        })
        .sum();
    let mut upload = Upload::new(dest, size_hint);
    let mut data = std::pin::pin!(data);
    let written = async {
        let mut pending = None;
        let mut at = 0u64;
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let len = match item {
                Item::Archive { pickle, storage } => {
                    let storages = [storage];
                    put_archive(
                        &mut upload,
                        dest,
                        pickle,
                        &storages,
                        &mut data,
                        &mut pending,
                        progress,
                    )
                    .await?
                }
                Item::Raw(bytes) => {
                    let len = bytes.len() as u64;
                    upload.put(bytes).await?;
                    len
                }
            };
            ranges.push(at..at + len);
            at += len;
        }
        if pending.is_none() {
            pending = data.next().await.transpose()?;
        }
        if let Some((name, _)) = pending {
            return Err(mismatch(dest, &name, "no item of the file holds it"));
        }
        Ok(ranges)
    }
    .await;
    match written {
        Ok(ranges) => upload.finish().await.map(|()| ranges),
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// Appends one archive to `upload`: its records, the tensors' bytes taken from `data` (after
/// the run held in `pending`, where a run read ahead is left) while they are under the
/// storages' paths. Returns the archive's length.
async fn put_archive<S>(
    upload: &mut Upload,
    dest: &Location,
    pickle: Vec<u8>,
    storages: &[Storage],
    data: &mut std::pin::Pin<&mut S>,
    pending: &mut Option<(String, Tensor)>,
    progress: &dyn Progress,
) -> Result<u64>
where
    S: Stream<Item = Result<(String, Tensor)>>,
{
    let mut zip = ZipWriter::new();
    let mut head = zip.record(&format!("{ARCHIVE}/data.pkl"), &pickle);
    drop(pickle);
    head.extend(zip.record(&format!("{ARCHIVE}/.format_version"), b"1"));
    let alignment = ALIGNMENT.to_string();
    head.extend(zip.record(
        &format!("{ARCHIVE}/.storage_alignment"),
        alignment.as_bytes(),
    ));
    head.extend(zip.record(&format!("{ARCHIVE}/byteorder"), b"little"));
    upload.put(head.into()).await?;

    for (key, (path, size)) in storages.iter().enumerate() {
        upload
            .put(zip.start_record(&format!("{ARCHIVE}/data/{key}")).into())
            .await?;
        let (mut got, mut crc) = (0u64, crc32fast::Hasher::new());
        loop {
            // An empty tensor may arrive as an empty run, or not at all.
            if got == *size && (*size > 0 || pending.as_ref().is_some_and(|(n, _)| n != path)) {
                break;
            }
            if pending.is_none() {
                *pending = data.next().await.transpose()?;
            }
            let Some((_, run)) = pending.take_if(|(name, _)| name == path) else {
                break;
            };
            let len = run.data.len() as u64;
            if got + len > *size {
                return Err(mismatch(dest, path, "more bytes arrived than it holds"));
            }
            crc.update(&run.data);
            got += len;
            upload.put(run.data).await?;
            progress.advanced(len);
            if *size == 0 {
                break;
            }
        }
        if got != *size {
            return Err(mismatch(
                dest,
                path,
                &format!("{got} bytes arrived of its {size}"),
            ));
        }
        upload
            .put(zip.end_record(got, crc.finalize()).into())
            .await?;
    }
    let tail_at = zip.position();
    let mut tail = zip.record(&format!("{ARCHIVE}/version"), b"3\n");
    let id = zip.serialization_id();
    tail.extend(zip.record(&format!("{ARCHIVE}/.data/serialization_id"), id.as_bytes()));
    tail.extend(zip.finish());
    let len = tail_at + tail.len() as u64;
    upload.put(tail.into()).await?;
    Ok(len)
}

fn mismatch(dest: &Location, path: &str, what: &str) -> Error {
    Error::InvalidArgument {
        what: format!("tensor `{path}`"),
        reason: format!("while writing {dest}: {what}"),
    }
}
