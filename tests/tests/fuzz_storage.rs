//! The persistent log's recovery, run on seeded mutations (`derecho_tests::fuzz`) of the files
//! a real log of a few entries left on storage: one segment or the metadata record at a time,
//! the other files staying valid. Opening must give the log or an error, never a panic, both
//! with every entry verified (`verify_sealed: true`) and with sealed segments walked header by
//! header (`false`); a log that opens must then read back without panicking.
//! `FUZZ_ITERATIONS` raises the counts for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::sync::Arc;

use derecho::persist::{Hlc, Log, LogOptions, SimOp, SimStorage, Storage, INVALID};
use derecho_tests::fuzz;

/// Inputs per file: `FUZZ_ITERATIONS` from the environment, 3,000 by default (each input opens
/// the log three times).
fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

const NAME: &str = "fuzzlog";
/// Small segments, so a few entries fill several: every segment but the last is sealed.
const SEGMENT_BYTES: u64 = 120;

fn options(verify_sealed: bool, read_only: bool) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        read_only,
        verify_sealed,
    }
}

/// The files of a log of eight entries over several segments, its two oldest trimmed; and the
/// metadata record of the same log with a truncate that was decided but not carried out.
fn log_files() -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let storage = Arc::new(SimStorage::new());
    let log = Log::open(storage.clone(), NAME, options(true, false)).unwrap();
    for v in 1..=8i64 {
        let payload = format!("entry {v} ").repeat(v as usize % 4 + 1);
        log.append(
            v,
            Hlc::new(100 * v as u64, v as u64 % 2),
            v as u8 % 3,
            payload.as_bytes(),
        )
        .unwrap();
    }
    log.persist().unwrap();
    log.trim(2).unwrap();
    let read = |storage: &SimStorage| {
        let mut names = storage.list().unwrap();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let b = storage.read_all(&n).unwrap();
                (n, b)
            })
            .collect::<Vec<_>>()
    };
    let files = read(&storage);
    storage.fail(SimOp::Truncate);
    storage.fail(SimOp::Remove);
    log.truncate(5).unwrap_err();
    let meta_name = format!("{NAME}.meta");
    let truncating = storage.read_all(&meta_name).unwrap();
    assert_ne!(
        files.iter().find(|(n, _)| *n == meta_name).unwrap().1,
        truncating,
        "the unfinished truncate is recorded"
    );
    (files, truncating)
}

/// Opens the log over `files` in each mode; a log that opens is read back whole. Returns in
/// how many modes it opened.
fn open_and_read(files: &[(String, Vec<u8>)]) -> usize {
    let mut opened = 0;
    for (verify_sealed, read_only) in [(true, false), (false, false), (false, true)] {
        let storage = Arc::new(SimStorage::new());
        for (name, bytes) in files {
            storage.replace(name, bytes).unwrap();
        }
        if let Ok(log) = Log::open(storage, NAME, options(verify_sealed, read_only)) {
            for entry in log.iter_from(INVALID) {
                let _ = entry;
            }
            let _ = log.get(log.latest_version());
            let _ = log.at_time(Hlc::new(450, 0));
            opened += 1;
        }
    }
    opened
}

#[test]
fn the_corpus_log_opens_whole() {
    let (files, _) = log_files();
    let segments = files.iter().filter(|(n, _)| n.ends_with(".seg")).count();
    assert!(segments >= 3, "{segments} segments");
    for verify_sealed in [true, false] {
        let log = Log::open(
            {
                let s = Arc::new(SimStorage::new());
                for (n, b) in &files {
                    s.replace(n, b).unwrap();
                }
                s
            },
            NAME,
            options(verify_sealed, true),
        )
        .unwrap();
        let versions: Vec<i64> = log.iter_from(INVALID).map(|e| e.unwrap().version).collect();
        assert_eq!(versions, (2..=8).collect::<Vec<_>>());
    }
}

#[test]
fn log_segments_and_metadata() {
    let (files, truncating) = log_files();
    for (part, (name, bytes)) in files.iter().enumerate() {
        let mut corpus = vec![bytes.clone()];
        if name.ends_with(".meta") {
            corpus.push(truncating.clone());
        }
        let opened = Cell::new(0);
        let ran = fuzz::run(name, 40 + part as u64, &corpus, iterations(), |b| {
            let mut f = files.clone();
            f[part].1 = b.to_vec();
            opened.set(opened.get() + open_and_read(&f));
        })
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{name}: {ran} inputs, {} opens of 3 each", opened.get());
    }
}

/// The metadata record's framing (magic, length, CRC32) in front of `payload`, as the log
/// writes it: mutations of the payload reach its decoder instead of failing the checksum.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = b"DPOB".to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn log_metadata_payloads() {
    let (files, truncating) = log_files();
    let meta = files
        .iter()
        .position(|(n, _)| n.ends_with(".meta"))
        .unwrap();
    let corpus: Vec<Vec<u8>> = [&files[meta].1, &truncating]
        .iter()
        .map(|b| {
            let payload = b[16..].to_vec();
            assert_eq!(frame(&payload), **b);
            payload
        })
        .collect();
    let opened = Cell::new(0);
    let ran = fuzz::run("log metadata payload", 50, &corpus, iterations(), |b| {
        let mut f = files.clone();
        f[meta].1 = frame(b);
        opened.set(opened.get() + open_and_read(&f));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "log metadata payload: {ran} inputs, {} opens of 3 each",
        opened.get()
    );
}
