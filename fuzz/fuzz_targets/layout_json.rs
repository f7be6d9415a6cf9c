//! The JSON text of a layout file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_tests::fuzz_targets::layout_json(data));
