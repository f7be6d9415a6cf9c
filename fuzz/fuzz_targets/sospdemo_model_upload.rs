//! A model upload: the stream of messages a client sends to install a model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sospdemo::fuzz_targets::model_upload(data));
