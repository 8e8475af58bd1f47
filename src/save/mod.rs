//! Writing checkpoints: format writers that stream tensors to any store.

pub mod checkpoint;
pub mod manifest;
pub mod safetensors;
