//! The body of a peer-to-peer reply: an answer or a refusal.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_tests::fuzz_targets::p2p_status(data));
