//! The weights file of a model (safetensors), loaded for a small architecture.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sospdemo::fuzz_targets::safetensors(data));
