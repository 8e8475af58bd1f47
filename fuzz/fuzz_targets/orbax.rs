//! Any bytes as an OCDBT manifest, B+tree node (leaf and interior) and zarr `.zarray`: CRC,
//! decompression and every count within their bounds, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::orbax(data));
