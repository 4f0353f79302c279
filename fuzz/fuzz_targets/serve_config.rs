//! Fuzz target: `diskferry::fuzzing::serve_config` must not panic, hang or over-allocate on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = diskferry::fuzzing::serve_config(data);
});
