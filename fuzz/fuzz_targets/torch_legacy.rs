//! Any bytes as a legacy `torch.save` file: the five pickles through the restricted VM and the
//! storage layout, whole and cut short, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ckptio::__fuzz::torch_legacy(data));
