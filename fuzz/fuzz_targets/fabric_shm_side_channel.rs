//! The shm backend's side channel: a stream of messages, and the file names they carry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_fabric::fuzz_targets::shm_side_channel(data));
