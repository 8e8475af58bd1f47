//! Any bytes, as a whole zip: the directory reader must return, never panic, loop or allocate
//! by an untrusted length; every entry's local header is parsed too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::zip_directory(data));
