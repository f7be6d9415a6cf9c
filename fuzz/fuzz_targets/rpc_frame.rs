//! RPC connections (hello, frame, status), ordered-call payloads and encoded arguments.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_tests::fuzz_targets::rpc_frame(data));
