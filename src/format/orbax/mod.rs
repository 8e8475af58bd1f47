//! Orbax checkpoints (orbax-checkpoint 0.12, as jax writes them): a step directory with
//! `_CHECKPOINT_METADATA`, and per checkpointable (`pytree/`, `default/`, or the directory
//! itself for a flat root) a `_METADATA` naming the pytree's leaves, whose arrays are zarr v2
//! or v3 arrays in one OCDBT database (`manifest.ocdbt` and `d/` data files) or in one directory
//! each. Opening reads the metadata, the B+tree and each array's `.zarray` or `zarr.json`; an
//! array's chunks are read, and decompressed, when it is materialized.

mod metadata;
pub mod ocdbt;
mod reader;
pub mod zarr;

pub(crate) use reader::{COMMIT_SUCCESS, is_orbax, open, step_committed};

/// What is wrong with an Orbax checkpoint: the source of an [`Error::Corrupt`](crate::Error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrbaxError {
    /// The OCDBT database.
    #[error("OCDBT {0}")]
    Ocdbt(String),
    /// An array's zarr metadata.
    #[error("zarr: {0}")]
    Zarr(String),
    /// `_METADATA`.
    #[error("_METADATA: {0}")]
    Metadata(String),
    /// Anything else.
    #[error("{0}")]
    Layout(String),
}
