//! Crash recovery of the log on the simulated backend, over many seeds: the
//! real recovery code meets lost, torn and partially synced tails. Odd seeds
//! sign their logs, and the signature chain must verify after every recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use derecho_persist::SplitMix as Rng;
use derecho_persist::{
    pack, unpack, Entry, Hlc, Log, LogOptions, PublicKey, Signer, SimStorage, INVALID,
};

/// A fixed signing key (PKCS#8 v1 around RFC 8032's first test secret).
fn test_signer() -> Arc<Signer> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[0x5a; 32]);
    Arc::new(Signer::from_pkcs8(&der).unwrap())
}

/// The newest entry's version of `log`, which `verify` must reach.
fn check_chain(log: &Log, key: Option<&PublicKey>, context: &str) {
    if let Some(key) = key {
        let newest = log
            .infos(INVALID, i64::MAX)
            .last()
            .map_or(INVALID, |e| e.version);
        assert_eq!(
            log.verify(key).unwrap_or_else(|e| panic!("{context}: {e}")),
            newest,
            "{context}"
        );
    }
}

fn options(rng: &mut Rng) -> LogOptions {
    LogOptions {
        segment_bytes: 200 + rng.below(3_000),
        verify_sealed: rng.below(2) == 0,
        ..LogOptions::default()
    }
}

fn next_version(rng: &mut Rng, last: i64) -> i64 {
    if last == INVALID {
        return pack(0, 0);
    }
    let (vid, seq) = unpack(last);
    if rng.below(10) == 0 {
        pack(vid + 1, 0)
    } else {
        pack(vid, seq + 1 + rng.below(3) as i32)
    }
}

fn read_all(log: &Log) -> Vec<Entry> {
    log.iter_from(INVALID)
        .collect::<Result<_, _>>()
        .expect("a recovered log returned a corrupt entry")
}

/// Runs appends, persists, trims and truncates, then crashes, several times
/// per seed; after each crash checks what came back against a model.
fn run_seed(seed: u64) -> usize {
    let mut cycles_with_loss = 0;
    let mut rng = Rng(seed);
    let sim = Arc::new(SimStorage::new());
    let mut opts = options(&mut rng);
    let signer = (seed % 2 == 1).then(test_signer);
    let key = signer.as_ref().map(|s| s.public_key());
    opts.signer = signer;
    // Entries the log must hold, oldest first, and how many of them are durable.
    let mut model: Vec<Entry> = Vec::new();
    let mut durable = 0usize;
    let mut last_version = INVALID;
    // The latest version (entry or announced) known durable.
    let mut durable_latest = INVALID;
    for cycle in 0..3 {
        let log = Log::open(sim.clone(), "crash", opts.clone()).unwrap();
        for _ in 0..rng.below(60) {
            match rng.below(20) {
                0 if !model.is_empty() => {
                    let keep = rng.below(model.len() as u64 + 1) as usize;
                    let to = if keep == 0 {
                        INVALID
                    } else {
                        model[keep - 1].version
                    };
                    let had_newer = log.latest_version() > to;
                    log.truncate(to).unwrap();
                    if had_newer {
                        assert_eq!(log.latest_version(), to);
                    }
                    assert_eq!(log.persisted_version(), log.latest_version());
                    model.truncate(keep);
                    durable = keep;
                    durable_latest = durable_latest.min(log.latest_version());
                    last_version = log.latest_version();
                    assert!(last_version <= to.max(INVALID));
                }
                1 if !model.is_empty() => {
                    let first = rng.below(model.len() as u64) as usize;
                    log.trim(model[first].version).unwrap();
                    model.drain(..first);
                    durable = model.len();
                    durable_latest = log.latest_version();
                }
                2..=4 => {
                    durable_latest = log.persist().unwrap();
                    assert_eq!(durable_latest, log.latest_version());
                    durable = model.len();
                }
                5 => {
                    // A version in which nothing changed: no entry.
                    let version = next_version(&mut rng, last_version);
                    log.advance_version(version).unwrap();
                    last_version = version;
                }
                _ => {
                    let version = next_version(&mut rng, last_version);
                    let len = rng.below(700) as usize;
                    let e = Entry {
                        version,
                        hlc: Hlc::new(rng.below(1_000_000), rng.below(3)),
                        kind: rng.below(4) as u8,
                        payload: rng.bytes(len),
                    };
                    log.append(e.version, e.hlc, e.kind, &e.payload).unwrap();
                    last_version = version;
                    model.push(e);
                }
            }
        }
        assert_eq!(
            read_all(&log),
            model,
            "seed {seed} cycle {cycle}: before the crash"
        );
        check_chain(
            &log,
            key.as_ref(),
            &format!("seed {seed} cycle {cycle}: before the crash"),
        );
        drop(log);
        sim.crash(seed.wrapping_mul(31).wrapping_add(cycle));

        let log = Log::open(sim.clone(), "crash", opts.clone())
            .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: recovery failed: {e}"));
        let got = read_all(&log);
        assert!(
            got.len() >= durable,
            "seed {seed} cycle {cycle}: {} entries recovered, {durable} were persisted",
            got.len()
        );
        assert!(got.len() <= model.len());
        assert!(
            log.latest_version() >= durable_latest,
            "seed {seed} cycle {cycle}: latest version went back below a persisted one"
        );
        assert_eq!(
            got[..],
            model[..got.len()],
            "seed {seed} cycle {cycle}: recovered entries differ"
        );
        assert!(got.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(log.persisted_version(), log.latest_version());
        check_chain(
            &log,
            key.as_ref(),
            &format!("seed {seed} cycle {cycle}: recovered"),
        );
        if got.len() < model.len() {
            cycles_with_loss += 1;
        }
        model.truncate(got.len());
        durable = model.len();
        // The latest version may exceed the last entry (an empty, trimmed log
        // remembers it); appends continue above it either way.
        last_version = log.latest_version();
        durable_latest = last_version;
        assert!(last_version >= model.last().map_or(INVALID, |e| e.version));
        // Appending right after recovery works and reads back.
        let v = next_version(&mut rng, last_version);
        log.append(v, Hlc::ZERO, 1, b"after recovery").unwrap();
        assert_eq!(log.get(v).unwrap().unwrap().payload, b"after recovery");
        model.push(log.get(v).unwrap().unwrap());
        last_version = v;
        check_chain(
            &log,
            key.as_ref(),
            &format!("seed {seed} cycle {cycle}: after recovery"),
        );
    }
    cycles_with_loss
}

/// `PERSIST_CRASH_SEEDS=n` runs `n` seeds instead of 500 (for longer soaks).
#[test]
fn recovery_over_500_seeds() {
    let seeds: u64 = std::env::var("PERSIST_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let lossy: usize = (0..seeds).map(run_seed).sum();
    // The workload must actually meet lost and torn tails to mean anything.
    assert!(
        lossy as u64 > seeds * 3 / 5,
        "only {lossy} crash cycles lost unsynced entries"
    );
}
