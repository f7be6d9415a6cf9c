//! A state-transfer connection: header, chunks, end or abort.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    derecho_tests::fuzz_targets::state_transfer(data);
});
