//! The side channel of the libfabric and verbs backends: a stream of messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derecho_fabric::fuzz_targets::rdma_side_channel(data));
