//! Any bytes, as a pickle: the restricted VM and the conversion into a tree must return, never
//! panic, recurse without bound or allocate by an untrusted length.
#![no_main]

use ckptio::format::pickle::convert::{NoHooks, to_node};
use ckptio::format::pickle::{Policy, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(heap) = parse(data, &Policy::permissive()) {
        let _ = to_node(&heap, &mut NoHooks, "fuzz");
    }
});
