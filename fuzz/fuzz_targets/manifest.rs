//! Any bytes as a ckptio manifest.json: read in one pass within its node and depth bounds, never a
//! panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::manifest(data));
