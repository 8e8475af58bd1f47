//! Any bytes, as a pickle: the restricted VM and the conversion into a tree must return, never
//! panic, recurse without bound or allocate by an untrusted length.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::pickle(data));
