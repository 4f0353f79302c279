//! Fuzz target: `longhorn::fuzzing::backup_cfg` must not panic, hang or over-allocate on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = longhorn::fuzzing::backup_cfg(data);
});
