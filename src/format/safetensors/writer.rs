//! Writing one safetensors file to any store: the header first, then each tensor's bytes as
//! they arrive, through [`upload`](crate::upload) (one PUT for small files, a multipart upload
//! for large ones, aborted on failure).

use std::collections::BTreeMap;
use std::ops::Range;

use futures::{Stream, StreamExt};

use super::header;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fetch::Progress;
use crate::location::Location;
use crate::tree::Tensor;
use crate::upload::Upload;

/// Where each tensor of a written file is, and the checksums of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileLayout {
    /// The file's size.
    pub size: u64,
    /// Each tensor, in file order.
    pub tensors: Vec<WrittenTensor>,
}

/// One tensor of a written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrittenTensor {
    /// Its name (tree path).
    pub name: String,
    /// Its bytes in the file.
    pub range: Range<u64>,
    /// CRC-32C of those bytes.
    pub crc32c: u32,
    /// SHA-256 of those bytes, when asked for.
    pub sha256: Option<[u8; 32]>,
}

/// One tensor's entry in the header: name, dtype, shape, as safetensors names them
/// ([`DType::safetensors_view`]).
pub(crate) type Entry = (String, DType, Vec<u64>);

/// Writes the safetensors file `dest`: the header for `entries`, then the tensors of `data`,
/// which must come in `entries`' order (a large tensor as several consecutive row-major runs
/// under its name), CRC-32C (and SHA-256 with `sha256`) computed on the way; `progress` is
/// told of each run's bytes as they are handed to the upload. A failed write is aborted, so
/// no partial file appears under the name.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a tensor that does not match its entry or a dtype × shape
/// that is not a whole number of bytes; the stream's errors; the store's.
pub(crate) async fn write_file(
    dest: &Location,
    entries: &[Entry],
    metadata: &BTreeMap<String, String>,
    data: impl Stream<Item = Result<(String, Tensor)>>,
    sha256: bool,
    progress: &dyn Progress,
) -> Result<FileLayout> {
    let refs: Vec<(&str, DType, &[u64])> = entries
        .iter()
        .map(|(n, d, s)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let head = header::render(&refs, metadata).map_err(|e| Error::InvalidArgument {
        what: dest.uri(),
        reason: e.to_string(),
    })?;
    let data_bytes: u64 = entries
        .iter()
        .map(|(_, d, s)| d.byte_len(crate::dtype::numel(s).unwrap_or(0)).unwrap_or(0))
        .sum();
    let mut layout = FileLayout {
        size: head.len() as u64,
        tensors: Vec::with_capacity(entries.len()),
    };
    let mut upload = Upload::new(dest, layout.size + data_bytes);
    let written = async {
        upload.put(head.into()).await?;
        let mut data = std::pin::pin!(data);
        let mut expected = entries.iter();
        let mut current: Option<Open<'_>> = None;
        while let Some(item) = data.next().await {
            let (name, run) = item?;
            if current.as_ref().is_none_or(|c| c.entry.0 != name) {
                if let Some(done) = current.take() {
                    layout.tensors.push(done.close(dest, layout.size)?);
                }
                let entry = expected.next();
                let dtype = run.dtype.safetensors_view(&run.shape).0;
                let Some(entry) = entry.filter(|(n, d, _)| *n == name && *d == dtype) else {
                    return Err(Error::InvalidArgument {
                        what: format!("tensor `{name}`"),
                        reason: format!(
                            "arrived as {}, where the header of {dest} expects {:?}",
                            run.dtype,
                            entry.map(|(n, d, s)| format!("`{n}` {d} × {s:?}"))
                        ),
                    });
                };
                current = Some(Open::new(entry, layout.size, sha256));
            }
            let open = current.as_mut().expect("opened above");
            open.add(&run.data);
            layout.size += run.data.len() as u64;
            let len = run.data.len() as u64;
            upload.put(run.data).await?;
            progress.advanced(len);
        }
        if let Some(done) = current.take() {
            layout.tensors.push(done.close(dest, layout.size)?);
        }
        if let Some((name, _, _)) = expected.next() {
            return Err(Error::InvalidArgument {
                what: format!("tensor `{name}`"),
                reason: format!("is in the header of {dest} but never arrived"),
            });
        }
        Ok(())
    }
    .await;
    match written {
        Ok(()) => upload.finish().await.map(|()| layout),
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// A tensor being written, run by run.
struct Open<'e> {
    entry: &'e Entry,
    start: u64,
    crc32c: u32,
    sha256: Option<sha2::Sha256>,
}

impl<'e> Open<'e> {
    fn new(entry: &'e Entry, start: u64, sha256: bool) -> Self {
        Self {
            entry,
            start,
            crc32c: 0,
            sha256: sha256.then(<sha2::Sha256 as sha2::Digest>::new),
        }
    }

    fn add(&mut self, data: &[u8]) {
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        if let Some(hasher) = &mut self.sha256 {
            sha2::Digest::update(hasher, data);
        }
    }

    /// The tensor written, which ends at `end`: its bytes must be what its entry says.
    fn close(self, dest: &Location, end: u64) -> Result<WrittenTensor> {
        let (name, dtype, shape) = self.entry;
        let want = crate::dtype::numel(shape).and_then(|n| dtype.byte_len(n));
        if want != Some(end - self.start) {
            return Err(Error::InvalidArgument {
                what: format!("tensor `{name}`"),
                reason: format!(
                    "arrived with {} bytes, where the header of {dest} says {dtype} × {shape:?}",
                    end - self.start
                ),
            });
        }
        Ok(WrittenTensor {
            name: name.clone(),
            range: self.start..end,
            crc32c: self.crc32c,
            sha256: self.sha256.map(|h| sha2::Digest::finalize(h).into()),
        })
    }
}
