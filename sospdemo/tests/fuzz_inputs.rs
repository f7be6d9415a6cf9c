//! The files and photos sospdemo reads from clients, run on seeded mutations of valid ones
//! (`derecho_tests::fuzz`): a corrupt model file or a non-image photo must give an error,
//! never a panic. The check of one input is each decoder's function in
//! `sospdemo::fuzz_targets`, which the cargo-fuzz targets of `fuzz/` run too.
//! `FUZZ_ITERATIONS` raises the counts for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use derecho_tests::fuzz;
use sospdemo::fuzz_targets::{self as targets, feed};
use sospdemo::model::{load_weights, Architecture, Classifier};
use sospdemo_proto::{ModelAssembler, PhotoAssembler};

fn iterations(default: usize) -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn photos() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("photos/flowers");
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    corpus.truncate(3);
    let ran = fuzz::run("photos", 11, &corpus, iterations(3_000), targets::photo)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("photos: {ran} inputs");
}

/// Mutates one of a model's three files at a time, the other two staying valid.
fn model_files(name: &str, seed: u64, files: [Vec<u8>; 3], count: usize) {
    for part in 0..3 {
        let ran = fuzz::run(
            name,
            seed + part as u64,
            &[files[part].clone()],
            count,
            |b| targets::model_file(&files, part, b),
        )
        .unwrap_or_else(|e| panic!("part {part}: {e}"));
        eprintln!("{name}, part {part}: {ran} inputs");
    }
}

#[test]
fn our_model_files() {
    model_files(
        "bundled flowers model",
        20,
        [
            read("models/flowers/synset.txt"),
            read("models/flowers/arch.json"),
            read("models/flowers/weights.safetensors"),
        ],
        iterations(300),
    );
}

#[test]
fn mxnet_model_files() {
    model_files(
        "MXNet resnet18_v1",
        30,
        [
            read("fixtures/mxnet/synset.txt"),
            read("fixtures/mxnet/resnet18_v1-symbol.json"),
            read("fixtures/mxnet/resnet18_v1-0000.params"),
        ],
        iterations(300),
    );
}

/// The tiny model the cargo-fuzz target starts from is valid, and small enough that many
/// mutations of it run here too.
#[test]
fn tiny_model_files() {
    let files = targets::tiny_model().unwrap();
    Classifier::from_bytes(&files[0], &files[1], &files[2]).unwrap();
    assert!(files[2].len() < 8 << 10, "{} bytes", files[2].len());
    model_files("tiny model", 14, files, iterations(2_000));
}

#[test]
fn architecture_files() {
    let corpus = vec![
        read("models/flowers/arch.json"),
        targets::tiny_architecture().to_json(),
        Architecture::resnet50(1000).to_json(),
    ];
    for c in &corpus {
        Architecture::from_json(c).unwrap();
    }
    let ran = fuzz::run(
        "architecture",
        17,
        &corpus,
        iterations(20_000),
        targets::architecture,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("architecture: {ran} inputs");
}

#[test]
fn safetensors_files() {
    let corpus = vec![targets::tiny_model().unwrap()[2].clone()];
    load_weights(&targets::tiny_architecture(), &corpus[0]).unwrap();
    let ran = fuzz::run(
        "safetensors",
        18,
        &corpus,
        iterations(5_000),
        targets::safetensors,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("safetensors: {ran} inputs");
}

#[test]
fn photo_upload_streams() {
    let corpus = targets::photo_upload_corpus();
    assert_eq!(corpus.len(), 3);
    let mut whole = PhotoAssembler::default();
    assert!(feed(&corpus[0], |m| whole.push(m).is_ok()));
    assert_eq!(whole.finish().unwrap().data, targets::upload_photo());
    let ran = fuzz::run(
        "photo stream",
        12,
        &corpus,
        iterations(20_000),
        targets::photo_upload,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("photo stream: {ran} inputs");
}

#[test]
fn model_upload_streams() {
    let corpus = targets::model_upload_corpus();
    assert_eq!(corpus.len(), 3);
    let mut whole = ModelAssembler::default();
    assert!(feed(&corpus[0], |m| whole.push(m).is_ok()));
    let model = whole.finish().unwrap();
    assert_eq!(
        (model.synset, model.architecture, model.weights),
        targets::upload_model()
    );
    let ran = fuzz::run(
        "model stream",
        13,
        &corpus,
        iterations(20_000),
        targets::model_upload,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("model stream: {ran} inputs");
}
