//! Ring-buffer records: the decoder reads what the kernel programs wrote, sized and typed by
//! the record itself. Whatever the bytes (a short record, a bad kind, unterminated strings,
//! lengths beyond the buffers), it answers an event or an error, never a panic.
#![no_main]

use habit_probes::decode::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode(data) {
        let _ = format!("{event:?}");
    }
});
