//! The persistent log's recovery, run on seeded mutations (`derecho_tests::fuzz`) of the files
//! a real log of a few entries left on storage: one segment or the metadata record at a time,
//! the other files staying valid. Opening must give the log or an error, never a panic, both
//! with every entry verified (`verify_sealed: true`) and with sealed segments walked header by
//! header (`false`); a log that opens must then read back without panicking. The check of one
//! input is `derecho_tests::fuzz_targets::LogCorpus`'s, which the cargo-fuzz targets of
//! `fuzz/` run too. `FUZZ_ITERATIONS` raises the counts for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::sync::Arc;

use derecho::persist::{Log, SimStorage, Storage, INVALID};
use derecho_tests::fuzz;
use derecho_tests::fuzz_targets::{frame_metadata, log_options, LogCorpus, LOG_NAME};

/// Inputs per file: `FUZZ_ITERATIONS` from the environment, 3,000 by default (each input opens
/// the log three times).
fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

#[test]
fn the_corpus_log_opens_whole() {
    let log = LogCorpus::new().unwrap();
    let segments = log
        .files
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .count();
    assert!(segments >= 3, "{segments} segments");
    assert_eq!(log.files[log.meta].0, format!("{LOG_NAME}.meta"));
    assert_ne!(
        log.files[log.meta].1, log.truncating,
        "the unfinished truncate is recorded"
    );
    for verify_sealed in [true, false] {
        let storage = Arc::new(SimStorage::new());
        for (n, b) in &log.files {
            storage.replace(n, b).unwrap();
        }
        let opened = Log::open(storage, LOG_NAME, log_options(verify_sealed, true)).unwrap();
        let versions: Vec<i64> = opened
            .iter_from(INVALID)
            .map(|e| e.unwrap().version)
            .collect();
        assert_eq!(versions, (2..=8).collect::<Vec<_>>());
    }
    assert_eq!(
        log.log_any_file(&[]),
        3,
        "the valid files open in every mode"
    );
}

#[test]
fn log_segments_and_metadata() {
    let log = LogCorpus::new().unwrap();
    for (part, (name, _)) in log.files.iter().enumerate() {
        let corpus = log.corpus_of(part);
        let opened = Cell::new(0);
        let ran = fuzz::run(name, 40 + part as u64, &corpus, iterations(), |b| {
            opened.set(opened.get() + log.log_file(part, b));
        })
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{name}: {ran} inputs, {} opens of 3 each", opened.get());
    }
}

#[test]
fn log_metadata_payloads() {
    let log = LogCorpus::new().unwrap();
    let corpus = log.metadata_payloads();
    for (payload, record) in corpus.iter().zip(log.corpus_of(log.meta)) {
        assert_eq!(frame_metadata(payload), record);
    }
    let opened = Cell::new(0);
    let ran = fuzz::run("log metadata payload", 50, &corpus, iterations(), |b| {
        opened.set(opened.get() + log.log_metadata(b));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "log metadata payload: {ran} inputs, {} opens of 3 each",
        opened.get()
    );
}
