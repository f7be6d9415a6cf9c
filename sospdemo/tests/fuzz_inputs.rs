//! The files and photos sospdemo reads from clients, run on seeded mutations of valid ones
//! (`derecho_tests::fuzz`): a corrupt model file or a non-image photo must give an error,
//! never a panic. `FUZZ_ITERATIONS` raises the counts for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use derecho_tests::fuzz;
use sospdemo::model::{decode_photo, Classifier};

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
    let ran = fuzz::run("photos", 11, &corpus, iterations(3_000), |b| {
        let _ = decode_photo(b);
    })
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
            |b| {
                let mut f = files.clone();
                f[part] = b.to_vec();
                let _ = Classifier::from_bytes(&f[0], &f[1], &f[2]);
            },
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
