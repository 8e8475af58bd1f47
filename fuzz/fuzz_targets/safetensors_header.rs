//! Any bytes, as a whole safetensors file: the header parser must return, never panic or
//! allocate by an untrusted length.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::safetensors_header(data));
