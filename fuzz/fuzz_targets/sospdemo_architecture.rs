//! The architecture file of a model (JSON).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sospdemo::fuzz_targets::architecture(data));
