//! Checkpoint formats: pure, bounded parsers over bytes, and readers that ask
//! [`fetch`](crate::fetch) for exactly the byte ranges they need.

pub mod safetensors;
