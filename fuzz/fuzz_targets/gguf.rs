//! Any bytes as a GGUF file: the header parsed within its bounds (whole, and cut short), and
//! every decodable tensor dequantized, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::gguf(data));
