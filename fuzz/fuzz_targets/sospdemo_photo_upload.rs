//! A photo upload: the stream of messages a client sends to the function tier.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sospdemo::fuzz_targets::photo_upload(data));
