//! Any bytes, as a whole zip: the directory reader must return, never panic, loop or allocate
//! by an untrusted length; every entry's local header is parsed too.
#![no_main]

use ckptio::format::zip::{payload_offset, read_directory};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(directory) = read_directory(data) else {
        return;
    };
    for entry in directory.entries() {
        let _ = entry.torch_payload_offset(64);
        let header = usize::try_from(entry.header_offset)
            .ok()
            .and_then(|at| data.get(at..))
            .unwrap_or_default();
        let _ = payload_offset(entry, header);
    }
});
