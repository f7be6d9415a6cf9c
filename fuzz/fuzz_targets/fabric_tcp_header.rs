//! The tcp backend's 32-byte frame headers, hellos and answers to hellos.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_fabric::fuzz_targets::tcp_headers(data));
