//! Any bytes as a DCP .metadata: the VM, the metadata reader and the checks made before any read
//! (chunks tile each tensor, key paths rebuild a tree) must return within their bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::dcp_metadata(data));
