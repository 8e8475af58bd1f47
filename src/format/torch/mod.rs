//! PyTorch checkpoints (`torch.save` since 1.6: `.pt`, `.pth`, `.ckpt`, `pytorch_model.bin`;
//! and the legacy format before it, [`legacy`]), read lazily and never executed.
//!
//! A torch file is a zip of stored entries under one top-level folder: `data.pkl` (the pickled
//! object, with tensors as persistent ids naming storages), `byteorder`, and one `data/<key>`
//! entry per storage. [`codec`] says what the pickle means (pure); the reader fetches the
//! directory and the pickle, and hands tensors byte ranges of their storage records. Each
//! storage read whole is checked against the entry's CRC-32.

pub(crate) mod archive;
pub(crate) mod codec;
pub(crate) mod legacy;
pub(crate) mod pickled;
mod reader;
pub(crate) mod writer;

pub(crate) use reader::{open, open_object, open_pickle};

use crate::error::Error;
use crate::format::zip::ZipError;

/// A torch file whose records do not fit together: the source of an [`Error::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TorchError(pub String);

/// What a bare pickle gets where only a torch zip can be (a DCP chunk).
pub(crate) const PLAIN_PICKLE: &str = "this is a bare pickle, not a torch.save archive";

/// What a plain pickle of torch tensors gets.
pub(crate) const TORCH_IN_PLAIN_PICKLE: &str = "a plain pickle of torch tensors (pickle.dump \
     embeds each storage as a torch.save archive of its own), which ckptio does not read; save \
     it with torch.save instead";

pub(crate) fn unsupported(uri: &str, what: &str) -> Error {
    Error::Unsupported {
        uri: uri.to_owned(),
        what: what.to_owned(),
    }
}

/// Whether `first` starts a pickle (protocol 2 to 5): a legacy `torch.save` file, or a plain
/// pickle.
pub(crate) fn is_pickle(first: &[u8]) -> bool {
    first.starts_with(b"\x80") && first.get(1).is_some_and(|p| (2..=5).contains(p))
}

/// The error for a file whose zip directory is broken: a bare pickle is named as such rather
/// than "not a zip" (a legacy file never gets here: its readers look first).
pub(crate) fn legacy_or_zip_error(uri: &str, first: &[u8], problem: ZipError) -> Error {
    if is_pickle(first) {
        unsupported(uri, PLAIN_PICKLE)
    } else {
        Error::corrupt(uri, problem)
    }
}
