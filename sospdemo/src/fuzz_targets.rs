//! The checks of one input for every decoder of bytes sospdemo receives from clients (upload
//! streams, photos, model files), with the valid inputs their mutations start from.
//!
//! Each check feeds the input to the decoder the way the service does and returns; the
//! decoder may refuse the input, but must not panic. The same functions run in two places: the
//! seeded mutation tests of `tests/fuzz_inputs.rs` (stable Rust) and the cargo-fuzz targets of
//! the repository's `fuzz/` directory, so a finding of either is a finding of both.

use prost::Message;
use sospdemo_proto::install_model_request::ModelChunk;
use sospdemo_proto::photo_request::PhotoChunk;
use sospdemo_proto::{
    install_model_requests, photo_requests, InstallModelRequest, ModelAssembler, ModelMetadata,
    PhotoAssembler, PhotoMetadata, PhotoRequest,
};

use crate::model::{
    decode_photo, load_weights, random_weights, save_weights, Architecture, BlockKind, Classifier,
    ModelError,
};

/// The messages of a stream one after the other, each length-delimited (as the gRPC framing
/// hands them to the service, one message at a time).
pub fn stream_bytes<M: Message>(msgs: &[M]) -> Vec<u8> {
    msgs.iter()
        .flat_map(Message::encode_length_delimited_to_vec)
        .collect()
}

/// Decodes the messages of `b` and feeds them to `push` in order, as the service does: the
/// first message that does not decode or is refused ends the stream. Whether every message
/// decoded and was taken.
pub fn feed<M: Message + Default>(mut b: &[u8], mut push: impl FnMut(M) -> bool) -> bool {
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

/// The photo every stream of [`photo_upload_corpus`] carries (100 bytes, not an image: the
/// assembler does not look inside).
pub fn upload_photo() -> Vec<u8> {
    (0..100u8).collect()
}

/// Photo upload streams: [`upload_photo`] in slices of 40 bytes, a photo of 30 bytes and an
/// empty one as the client library sends them.
pub fn photo_upload_corpus() -> Vec<Vec<u8>> {
    let photo = upload_photo();
    let mut sliced = vec![PhotoRequest {
        photo_chunk: Some(PhotoChunk::Metadata(PhotoMetadata {
            photo_size: 100,
            tags: vec![1, 2, 1],
        })),
    }];
    sliced.extend(photo.chunks(40).map(|c| PhotoRequest {
        photo_chunk: Some(PhotoChunk::FileData(c.to_vec())),
    }));
    let mut corpus = vec![stream_bytes(&sliced)];
    for (tags, bytes) in [(vec![7], &photo[..30]), (vec![3], &[][..])] {
        if let Ok(requests) = photo_requests(tags, bytes) {
            corpus.push(stream_bytes(&requests));
        }
    }
    corpus
}

/// Checks one input of a photo upload: read as the stream of messages a client sent, fed to
/// the service's assembler; a photo it accepts must carry tags.
pub fn photo_upload(data: &[u8]) {
    let mut assembler = PhotoAssembler::default();
    if feed(data, |m| assembler.push(m).is_ok()) {
        if let Ok(p) = assembler.finish() {
            assert!(!p.tags.is_empty(), "a photo was accepted without tags");
        }
    }
}

/// The three files every stream of [`model_upload_corpus`] carries: a synset, an architecture
/// and weights (not a real model: the assembler does not look inside).
pub fn upload_model() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (b"rose\ntulip\n".to_vec(), b"{}".to_vec(), vec![9u8; 50])
}

/// Model upload streams: [`upload_model`] in slices of 16 bytes, and models as the client
/// library sends them (one with empty files).
pub fn model_upload_corpus() -> Vec<Vec<u8>> {
    let (synset, arch, weights) = upload_model();
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
    let mut corpus = vec![stream_bytes(&sliced)];
    for (tag, files) in [
        (5, [&synset[..], &arch[..], &weights[..]]),
        (6, [&[][..]; 3]),
    ] {
        if let Ok(requests) = install_model_requests(tag, files[0], files[1], files[2]) {
            corpus.push(stream_bytes(&requests));
        }
    }
    corpus
}

/// Checks one input of a model upload: read as the stream of messages a client sent, fed to
/// the service's assembler.
pub fn model_upload(data: &[u8]) {
    let mut assembler = ModelAssembler::default();
    if feed(data, |m| assembler.push(m).is_ok()) {
        let _ = assembler.finish();
    }
}

/// A valid PNG photo of 8 by 8 pixels, so that photo mutations reach the PNG decoder too
/// (the bundled photos are JPEGs).
pub fn tiny_png() -> Result<Vec<u8>, image::ImageError> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 32, y as u8 * 32, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Checks one input of a photo to classify: decoded as the service decodes a client's photo
/// (JPEG or PNG, bounded in size).
pub fn photo(data: &[u8]) {
    let _ = decode_photo(data);
}

/// Checks one input of a model's architecture file: parsed and checked, and the parameters an
/// accepted one names listed, as loading a model does before it reads the weights.
pub fn architecture(data: &[u8]) {
    if let Ok(arch) = Architecture::from_json(data) {
        let _ = arch.resize_side();
        let _ = arch.feature_width();
        let _ = arch.parameters();
    }
}

/// The smallest network [`tiny_model`] describes: one stage of one basic block, four channels
/// and three classes on 16-pixel inputs.
pub fn tiny_architecture() -> Architecture {
    Architecture {
        block: BlockKind::Basic,
        layers: vec![1],
        widths: vec![4],
        stem_width: 4,
        stem_kernel: 3,
        num_classes: 3,
        input_size: 16,
        resize_size: None,
        ..Architecture::resnet18(3)
    }
}

/// The three files (synset, architecture, weights) of a valid model of [`tiny_architecture`]
/// with seeded weights: a few kilobytes, so that mutations reach every part quickly.
pub fn tiny_model() -> Result<[Vec<u8>; 3], ModelError> {
    let arch = tiny_architecture();
    let weights = save_weights(&random_weights(&arch, 7, false)?)?;
    Ok([b"daisy\nrose\ntulip\n".to_vec(), arch.to_json(), weights])
}

/// Checks one input of a safetensors weights file: loaded for [`tiny_architecture`] (the
/// tensors it needs found, their shapes and types checked, converted to f32).
pub fn safetensors(data: &[u8]) {
    let _ = load_weights(&tiny_architecture(), data);
}

/// Checks one input as file `part` (0 the synset, 1 the architecture, 2 the weights) of the
/// model `files`, the other two staying valid: the three are checked against each other and
/// the network built, as installing a model does. A `part` out of range checks `files`.
pub fn model_file(files: &[Vec<u8>; 3], part: usize, data: &[u8]) {
    let mut f = files.clone();
    if let Some(p) = f.get_mut(part) {
        *p = data.to_vec();
    }
    let _ = Classifier::from_bytes(&f[0], &f[1], &f[2]);
}

/// Checks one input of a model's files: its first byte picks the file (modulo 3) and the rest
/// replaces it in the model `files` (see [`model_file`]).
pub fn model_any_file(files: &[Vec<u8>; 3], data: &[u8]) {
    match data.split_first() {
        Some((pick, rest)) => model_file(files, usize::from(*pick % 3), rest),
        None => model_file(files, 3, data),
    }
}
