//! Writes the seed corpus of every target: the valid inputs the seeded tests of the normal
//! suite start from, one file each, into `corpus/<target>/` (where `cargo fuzz run` looks).
//!
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds` from the repository
//! root; an argument names another directory to write into.

use std::path::PathBuf;

use derecho_fabric::fuzz_targets as fabric;
use derecho_tests::fuzz_targets as derecho;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let log = derecho::LogCorpus::new()?;
    let log_files: Vec<Vec<u8>> = (0..log.files.len())
        .flat_map(|part| {
            log.corpus_of(part)
                .into_iter()
                .map(move |b| [&[part as u8][..], &b].concat())
        })
        .collect();
    #[allow(unused_mut)]
    let mut targets: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("fabric_tcp_header", fabric::tcp_corpus()),
        ("fabric_side_channel", fabric::side_channel_corpus()),
        ("fabric_sealed_frames", fabric::sealed_corpus()),
        ("fabric_shm_side_channel", fabric::shm_corpus()),
        ("gms_message", derecho::gms_corpus()),
        ("rpc_frame", derecho::rpc_corpus()),
        ("p2p_status", derecho::p2p_status_corpus()),
        ("state_transfer", derecho::transfer_corpus()),
        ("persist_log_file", log_files),
        ("persist_log_metadata", log.metadata_payloads()),
        ("derecho_cfg", derecho::config_corpus()),
        ("layout_json", derecho::layout_corpus()),
    ];
    #[cfg(feature = "rdma")]
    targets.push(("fabric_rdma_side_channel", fabric::rdma_corpus()));
    extra_targets(&mut targets)?;
    for (name, corpus) in targets {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        for (i, input) in corpus.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), input)?;
        }
        println!("{name}: {} seeds in {}", corpus.len(), dir.display());
    }
    Ok(())
}

/// The targets of sospdemo's decoders.
#[cfg(feature = "sospdemo")]
fn extra_targets(
    targets: &mut Vec<(&str, Vec<Vec<u8>>)>,
) -> Result<(), Box<dyn std::error::Error>> {
    use sospdemo::fuzz_targets as demo;
    let dir = sospdemo::bundled_dir();
    let mut photos = vec![demo::tiny_png()?];
    for name in ["tulip-1.jpg", "sunflower-2.jpg", "tulip-2.jpg"] {
        photos.push(std::fs::read(dir.join("photos/flowers").join(name))?);
    }
    let model = demo::tiny_model()?;
    let model_files = model
        .iter()
        .enumerate()
        .map(|(part, b)| [&[part as u8][..], b].concat())
        .collect();
    targets.extend([
        ("sospdemo_photo_upload", demo::photo_upload_corpus()),
        ("sospdemo_model_upload", demo::model_upload_corpus()),
        ("sospdemo_photo", photos),
        (
            "sospdemo_architecture",
            vec![
                std::fs::read(dir.join("models/flowers/arch.json"))?,
                model[1].clone(),
            ],
        ),
        ("sospdemo_safetensors", vec![model[2].clone()]),
        ("sospdemo_model_files", model_files),
    ]);
    Ok(())
}

/// Without the `sospdemo` feature, no more targets.
#[cfg(not(feature = "sospdemo"))]
#[allow(clippy::unnecessary_wraps)]
fn extra_targets(
    _targets: &mut Vec<(&str, Vec<Vec<u8>>)>,
) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
