//! Checking a checkpoint by reading every tensor once, keeping none.

use crate::error::Result;
use crate::format::{Format, OpenOptions, open};
use crate::location::Location;
use crate::materialize::{MaterializeOptions, Tally, tally};

/// What [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The format read.
    pub format: Format,
    /// Tensors read (and checked, where the format stores checksums).
    pub tensors: usize,
    /// Stored tensor bytes read (a tensor that repeats one stored element counts the element).
    pub bytes: u64,
    /// Tensors whose bytes were compared with a checksum stored in the checkpoint; the others
    /// were read whole but the file records nothing to compare them with (a view of part of a
    /// torch storage, a file saved with `compute_crc32=False`, a format without checksums).
    pub checked: usize,
}

/// Checks a checkpoint by reading every tensor's stored bytes once, within the streaming
/// memory budget, keeping none and laying none out: a ckptio checkpoint's data file sizes and the CRC-32C (or SHA-256) of every
/// tensor, a torch file's storage CRC-32s, and for any format that every tensor's bytes are
/// there and fit its layout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ckptio::Result<()> {
/// let loc = ckptio::resolve("fixtures/tiny.safetensors", &Default::default())?;
/// let checked = ckptio::verify(&loc, Default::default()).await?;
/// assert_eq!((checked.tensors, checked.bytes), (3, 68));
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`open`]; [`Error::Corrupt`](crate::Error::Corrupt) naming the tensor and the file for
/// corrupt data.
pub async fn verify(location: &Location, options: OpenOptions) -> Result<Verified> {
    let checkpoint = open(location, options).await?;
    let Tally {
        tensors,
        bytes,
        summed,
    } = tally(
        checkpoint.tree.into_tensors(),
        MaterializeOptions::default(),
    )
    .await?;
    Ok(Verified {
        format: checkpoint.format,
        tensors,
        bytes,
        checked: summed,
    })
}
