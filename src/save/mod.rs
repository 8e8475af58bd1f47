//! Writing checkpoints: format writers that stream tensors to any store.

pub mod manifest;
pub mod safetensors;
