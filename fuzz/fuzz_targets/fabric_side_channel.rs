//! The framing every side-channel dialect shares: header, length, body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_fabric::fuzz_targets::side_channel_frames(data));
