//! The text of a `derecho.cfg` file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_tests::fuzz_targets::derecho_cfg(data));
