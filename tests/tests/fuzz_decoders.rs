//! Every decoder of the library that reads bytes from outside the process, run on seeded
//! mutations of valid inputs (`derecho_tests::fuzz`): no input may panic. The check of one
//! input is each decoder's function in `derecho_tests::fuzz_targets`, which the cargo-fuzz
//! targets of `fuzz/` run too. The counts per target are fixed so the suite stays fast; raise
//! `FUZZ_ITERATIONS` for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::io;

use derecho::gms::transfer::{self, ABORT_CHUNK, MAX_CHUNK};
use derecho::rpc::wire;
use derecho_tests::fuzz;
use derecho_tests::fuzz_targets::{self as targets, abort, transfer_stream, Loader};

/// Inputs per target: `FUZZ_ITERATIONS` from the environment, 20,000 by default.
fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn gms_frames() {
    let corpus = targets::gms_corpus();
    assert_eq!(corpus.len(), 8, "one frame of each message");
    let ran = fuzz::run("gms frames", 1, &corpus, iterations(), targets::gms_message)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("gms frames: {ran} inputs");
}

#[test]
fn rpc_frames_and_bodies() {
    let corpus = targets::rpc_corpus();
    assert_eq!(corpus.len(), 6, "five connections and an ordered call");
    let ran = fuzz::run("rpc frames", 2, &corpus, iterations(), targets::rpc_frame)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("rpc frames: {ran} inputs");
}

#[test]
fn configuration_files() {
    let corpus = targets::config_corpus();
    let ran = fuzz::run(
        "derecho.cfg",
        3,
        &corpus,
        iterations() / 4,
        targets::derecho_cfg,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("derecho.cfg: {ran} inputs");
}

#[test]
fn layout_json() {
    let corpus = targets::layout_corpus();
    let ran = fuzz::run(
        "layout json",
        4,
        &corpus,
        iterations() / 2,
        targets::layout_json,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("layout json: {ran} inputs");
}

#[test]
fn p2p_status_bodies() {
    let corpus = targets::p2p_status_corpus();
    for (b, a) in corpus.iter().zip(targets::p2p_answers()) {
        assert_eq!(wire::parse_status(b).unwrap(), a);
    }
    let ran = fuzz::run(
        "p2p status",
        5,
        &corpus,
        iterations() / 2,
        targets::p2p_status,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("p2p status: {ran} inputs");
}

#[test]
fn state_transfer_streams() {
    let corpus = targets::transfer_corpus();
    let whole = Loader { take: None };
    assert_eq!(
        transfer::read_one(&corpus[0][..], 7, &[3], Some(&whole)).unwrap(),
        3
    );
    let aborted = transfer::read_one(&corpus[2][..], 7, &[3], Some(&whole)).unwrap_err();
    assert!(aborted.to_string().contains("no replica"), "{aborted}");
    let loaded = Cell::new(0);
    let ran = fuzz::run("state transfer", 6, &corpus, iterations(), |b| {
        loaded.set(loaded.get() + targets::state_transfer(b));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "state transfer: {ran} inputs, {} loads of 3 each",
        loaded.get()
    );
}

/// Lengths in a transfer stream are claims: a chunk over the limit is refused before anything
/// is read, and an abort reason is read up to its bound only.
#[test]
fn state_transfer_lengths_are_bounded() {
    let whole = Loader { take: None };
    let over = ((MAX_CHUNK + 1) as u32).to_le_bytes();
    let e =
        transfer::read_one(&transfer_stream(&[], &over)[..], 7, &[3], Some(&whole)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    let mut huge_reason = ABORT_CHUNK.to_le_bytes().to_vec();
    huge_reason.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_reason.extend_from_slice(b"why");
    let e = transfer::read_one(&transfer_stream(&[], &huge_reason)[..], 7, &[3], None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    assert!(abort("x").starts_with(&ABORT_CHUNK.to_le_bytes()));
}
