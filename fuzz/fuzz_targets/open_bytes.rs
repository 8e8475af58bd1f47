//! Any bytes as a checkpoint held in memory: opening it and reading its small tensors must
//! return, never panic, hang or allocate by a claim in the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::open_bytes(data));
