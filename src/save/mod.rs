//! Writing checkpoints: format writers that stream tensors to any store.

pub mod safetensors;
