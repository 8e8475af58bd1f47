//! Moving object bytes: the only module that reads an object's data.
//!
//! One HEAD pins an [`Object`] to its ETag and version; its bytes then arrive by parallel range
//! requests into memory ([`Object::bytes`]), into a local file ([`Object::download_to`]), as an
//! ordered stream ([`Object::stream`]), or as arbitrary range lists ([`Object::read_ranges`]).
//! Every range is pinned (`If-Match`, and the response's ETag checked for servers that ignore
//! it), retried by one policy ([`RetryPolicy`]) from the last byte received, and reported to a
//! [`Progress`].

mod file;
mod list;
mod lock;
mod mapped;
mod object;
mod options;
mod plan;
mod pool;
mod progress;
mod rate;
mod sink;
mod source;
mod stat;
mod task;

pub(crate) use plan::coalesce;
pub(crate) use task::blocking;

pub use list::{Listing, list, walk};
pub use object::Object;
pub use options::{FetchOptions, RetryPolicy};
pub use progress::{NoProgress, Progress};
pub use stat::{ObjectInfo, stat};
