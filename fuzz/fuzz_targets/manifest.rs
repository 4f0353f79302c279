//! Fuzz target: `diskferry::fuzzing::manifest` must not panic, hang or over-allocate on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = diskferry::fuzzing::manifest(data);
});
