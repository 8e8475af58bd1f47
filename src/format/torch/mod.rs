//! PyTorch checkpoints (`torch.save` since 1.6: `.pt`, `.pth`, `.ckpt`, `pytorch_model.bin`),
//! read lazily and never executed.
//!
//! A torch file is a zip of stored entries under one top-level folder: `data.pkl` (the pickled
//! object, with tensors as persistent ids naming storages), `byteorder`, and one `data/<key>`
//! entry per storage. [`codec`] says what the pickle means (pure); the reader fetches the
//! directory and the pickle, and hands tensors byte ranges of their storage records. Each
//! storage read whole is checked against the entry's CRC-32.

pub(crate) mod archive;
pub(crate) mod codec;
pub(crate) mod pickled;
mod reader;
pub(crate) mod writer;

pub(crate) use reader::{open, open_object};

use crate::error::Error;
use crate::format::zip::ZipError;

/// A torch file whose records do not fit together: the source of an [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TorchError(pub String);

/// What a bare pickle gets, whatever its name.
pub(crate) const LEGACY_OR_PICKLE: &str = "this is a bare pickle (the legacy torch.save format \
     before PyTorch 1.6, or a plain pickle), which ckptio does not read; re-save it with a \
     current torch: torch.save(torch.load(path, weights_only=True), new_path)";

pub(crate) fn unsupported(uri: &str, what: &str) -> Error {
    Error::Unsupported {
        uri: uri.to_owned(),
        what: what.to_owned(),
    }
}

/// The error for a file whose zip directory is broken: a pre-1.6 torch file is a bare pickle,
/// and is named as such rather than "not a zip".
pub(crate) fn legacy_or_zip_error(uri: &str, first: &[u8], problem: ZipError) -> Error {
    if first.starts_with(b"\x80") && first.get(1).is_some_and(|p| (2..=5).contains(p)) {
        unsupported(uri, LEGACY_OR_PICKLE)
    } else {
        Error::corrupt(uri, problem)
    }
}
