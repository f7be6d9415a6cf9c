//! The sealed frames of authenticated connections, after the handshake.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_fabric::fuzz_targets::sealed_frames(data));
