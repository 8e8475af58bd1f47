//! GGUF (llama.cpp's format), read lazily: the header, typed metadata and tensor infos are one
//! or a few ranged reads at the start of the file, and each tensor is then one range.
//!
//! Plain ggml types (F32, F16, BF16, F64, I8…I64) become tensors of those dtypes. Block
//! quantizations become `U8` tensors of their raw blocks (one row of blocks per innermost row
//! of values) marked [`Quantized`](crate::Quantized), which dequantize to F32 on request for
//! `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0` and `Q2_K`…`Q6_K`
//! ([`MaterializeOptions::to_f32`](crate::MaterializeOptions)). Shapes are row-major: GGUF lists
//! dimensions innermost first and ckptio reverses them, as the `gguf` package's arrays do.

pub mod ggml;
pub mod header;
mod quant;
mod reader;

pub use header::GgufError;
pub(crate) use reader::open;
