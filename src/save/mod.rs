//! Writing checkpoints: format writers that stream tensors to any store.

pub mod checkpoint;
pub mod copy;
pub mod manifest;
pub mod safetensors;
