//! Moving object bytes: the only module that talks to a store's data path.
//!
//! For now: [`stat`], the one HEAD every download starts with.

mod stat;

pub use stat::{ObjectInfo, stat};
