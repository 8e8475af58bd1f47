//! Any bytes as torch's data.pkl: the VM and the conversion with torch's rebuild rules must return,
//! never panic, recurse without bound or build more than the pickle's budget.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::torch_pickle(data));
