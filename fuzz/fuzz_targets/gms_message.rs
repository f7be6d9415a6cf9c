//! The membership service's framed messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_tests::fuzz_targets::gms_message(data));
