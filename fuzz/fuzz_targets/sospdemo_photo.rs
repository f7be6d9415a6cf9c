//! A photo to classify (JPEG or PNG).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sospdemo::fuzz_targets::photo(data));
