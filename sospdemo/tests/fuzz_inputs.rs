//! The files and photos sospdemo reads from clients, run on seeded mutations of valid ones
//! (`derecho_tests::fuzz`): a corrupt model file or a non-image photo must give an error,
//! never a panic. `FUZZ_ITERATIONS` raises the counts for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use derecho_tests::fuzz;
use prost::Message;
use sospdemo::model::{decode_photo, Classifier};
use sospdemo_proto::install_model_request::ModelChunk;
use sospdemo_proto::photo_request::PhotoChunk;
use sospdemo_proto::{
    install_model_requests, photo_requests, InstallModelRequest, ModelAssembler, ModelMetadata,
    PhotoAssembler, PhotoMetadata, PhotoRequest,
};

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

/// The messages of a stream one after the other, each length-delimited (as the gRPC framing
/// hands them to the service, one message at a time).
fn stream_bytes<M: Message>(msgs: &[M]) -> Vec<u8> {
    let mut b = Vec::new();
    for m in msgs {
        m.encode_length_delimited(&mut b).unwrap();
    }
    b
}

/// Decodes the messages of `b` and feeds them to `push` in order, as the service does: the
/// first message that does not decode or is refused ends the stream.
fn feed<M: Message + Default>(mut b: &[u8], mut push: impl FnMut(M) -> bool) -> bool {
    while !b.is_empty() {
        match M::decode_length_delimited(&mut b) {
            Ok(m) => {
                if !push(m) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn photo_upload_streams() {
    let photo: Vec<u8> = (0..100u8).collect();
    let mut sliced = vec![PhotoRequest {
        photo_chunk: Some(PhotoChunk::Metadata(PhotoMetadata {
            photo_size: 100,
            tags: vec![1, 2, 1],
        })),
    }];
    sliced.extend(photo.chunks(40).map(|c| PhotoRequest {
        photo_chunk: Some(PhotoChunk::FileData(c.to_vec())),
    }));
    let corpus = vec![
        stream_bytes(&sliced),
        stream_bytes(&photo_requests(vec![7], &photo[..30]).unwrap()),
        stream_bytes(&photo_requests(vec![3], &[]).unwrap()),
    ];
    let mut whole = PhotoAssembler::default();
    assert!(feed(&corpus[0], |m| whole.push(m).is_ok()));
    assert_eq!(whole.finish().unwrap().data, photo);
    let ran = fuzz::run("photo stream", 12, &corpus, iterations(20_000), |b| {
        let mut assembler = PhotoAssembler::default();
        if feed(b, |m| assembler.push(m).is_ok()) {
            if let Ok(p) = assembler.finish() {
                assert!(!p.tags.is_empty());
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("photo stream: {ran} inputs");
}

#[test]
fn model_upload_streams() {
    let (synset, arch, weights) = (b"rose\ntulip\n".to_vec(), b"{}".to_vec(), vec![9u8; 50]);
    let all = [&synset[..], &arch[..], &weights[..]].concat();
    let mut sliced = vec![InstallModelRequest {
        model_chunk: Some(ModelChunk::Metadata(ModelMetadata {
            tag: 4,
            synset_size: synset.len() as u32,
            symbol_size: arch.len() as u32,
            params_size: weights.len() as u32,
        })),
    }];
    sliced.extend(all.chunks(16).map(|c| InstallModelRequest {
        model_chunk: Some(ModelChunk::FileData(c.to_vec())),
    }));
    let corpus = vec![
        stream_bytes(&sliced),
        stream_bytes(&install_model_requests(5, &synset, &arch, &weights).unwrap()),
        stream_bytes(&install_model_requests(6, b"", b"", b"").unwrap()),
    ];
    let mut whole = ModelAssembler::default();
    assert!(feed(&corpus[0], |m| whole.push(m).is_ok()));
    let model = whole.finish().unwrap();
    assert_eq!(
        (model.synset, model.architecture, model.weights),
        (synset, arch, weights)
    );
    let ran = fuzz::run("model stream", 13, &corpus, iterations(20_000), |b| {
        let mut assembler = ModelAssembler::default();
        if feed(b, |m| assembler.push(m).is_ok()) {
            let _ = assembler.finish();
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("model stream: {ran} inputs");
}
