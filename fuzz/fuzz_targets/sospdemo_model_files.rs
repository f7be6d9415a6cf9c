//! A model's three files checked against each other: the first byte picks the synset, the
//! architecture or the weights, the rest replaces it; the other two stay those of a small
//! valid model.
#![no_main]

use std::sync::OnceLock;

/// The files of the valid model, made once per process.
fn model() -> &'static [Vec<u8>; 3] {
    static MODEL: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    MODEL.get_or_init(|| sospdemo::fuzz_targets::tiny_model().expect("the tiny model is built"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sospdemo::fuzz_targets::model_any_file(model(), data)
});
