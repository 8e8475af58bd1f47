//! ckptio reads and writes ML checkpoints and model weights wherever they live — a local path,
//! `file://`, `s3://`, `gs://`, `az://`, `http(s)://` — without downloading what the caller does
//! not need.
//!
//! The pipeline runs one way: a URI is resolved to a [`Location`] (a store and a path,
//! [`location`]), bytes are fetched by ranges ([`fetch`]), format readers parse them into a lazy
//! state tree, and selected tensors are materialized. The storage engine is the
//! [`object_store`] crate; ckptio never speaks S3, GCS or HTTP itself.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ckptio::Result<()> {
//! use ckptio::location::{resolve, StorageOptions};
//!
//! let loc = resolve("memory://demo/model.safetensors", &StorageOptions::new())?;
//! # use object_store::ObjectStoreExt;
//! # loc.store().put(loc.path(), vec![0u8; 8].into()).await.unwrap();
//! let info = ckptio::fetch::stat(&loc).await?;
//! println!("{} is {} bytes", loc, info.size);
//! # Ok(()) }
//! ```
//!
//! The library never prints: it returns [`enum@Error`]s that name the URI (with secrets
//! redacted) and emits [`tracing`] events.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpointer;
pub mod dtype;
pub mod error;
pub mod fetch;
pub mod format;
pub mod location;
pub mod materialize;
pub mod save;
mod streams;
pub mod tree;

pub use dtype::DType;
pub use error::{Error, Result};
pub use location::{Location, Resolver, StorageOptions};
