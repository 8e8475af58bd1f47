//! Writing a `torch.save` file to any store: the records torch writes, in its order (`data.pkl`,
//! `.format_version`, `.storage_alignment`, `byteorder`, one `data/<key>` per tensor, `version`,
//! `.data/serialization_id`), each tensor streamed as its runs arrive, through
//! [`upload`](crate::upload): one object, which appears whole or not at all.

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
    let overhead = (storages.len() as u64 + 8) * (2 * ALIGNMENT + 100);
    let mut upload = Upload::new(dest, pickle.len() as u64 + tensor_bytes + overhead);
    let mut zip = ZipWriter::new();
    let written = async {
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

        let mut data = std::pin::pin!(data);
        let mut next = data.next().await.transpose()?;
        for (key, (path, size)) in storages.iter().enumerate() {
            upload
                .put(zip.start_record(&format!("{ARCHIVE}/data/{key}")).into())
                .await?;
            let (mut got, mut crc) = (0u64, crc32fast::Hasher::new());
            while let Some((_, run)) = next.take_if(|(name, _)| name == path) {
                let len = run.data.len() as u64;
                if got + len > *size {
                    return Err(mismatch(dest, path, "more bytes arrived than it holds"));
                }
                crc.update(&run.data);
                got += len;
                upload.put(run.data).await?;
                progress.advanced(len);
                next = data.next().await.transpose()?;
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
        if let Some((name, _)) = next {
            return Err(Error::InvalidArgument {
                what: format!("tensor `{name}`"),
                reason: format!(
                    "arrived while writing {dest}, where the pickle has no storage for it"
                ),
            });
        }
        let written_before_tail = zip.position();
        let mut tail = zip.record(&format!("{ARCHIVE}/version"), b"3\n");
        tail.extend(zip.record(
            &format!("{ARCHIVE}/.data/serialization_id"),
            serialization_id().as_bytes(),
        ));
        tail.extend(zip.finish());
        let size = written_before_tail + tail.len() as u64;
        upload.put(tail.into()).await?;
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

fn mismatch(dest: &Location, path: &str, what: &str) -> Error {
    Error::InvalidArgument {
        what: format!("tensor `{path}`"),
        reason: format!("while writing {dest}: {what}"),
    }
}

/// Forty digits naming this save, as torch writes them (it uses them to tell saves apart).
fn serialization_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:040}", nanos ^ u128::from(std::process::id()) << 64)
}
