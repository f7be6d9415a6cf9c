//! The versioned log on both backends: queries, reopen, torn and corrupt
//! data, truncate and trim, segments, capacity, concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use derecho_persist::log::ENTRY_HEADER_LEN;
use derecho_persist::{
    field_name, min_latest_persisted, pack, shard_prefix, BatchEntry, Entry, Error, FileStorage,
    Hlc, Log, LogOptions, SimOp, SimStorage, Storage, TrimPolicy, INVALID,
};

fn sim() -> Arc<dyn Storage> {
    Arc::new(SimStorage::new())
}

fn small_segments(bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes: bytes,
        ..LogOptions::default()
    }
}

fn payload(v: i64) -> Vec<u8> {
    format!("value-{v}")
        .repeat((v % 5) as usize + 1)
        .into_bytes()
}

/// Appends versions `pack(0, 0..n)` with timestamps `10 * seq`.
fn fill(log: &Log, n: i32) {
    for seq in 0..n {
        let v = pack(0, seq);
        log.append(
            v,
            Hlc::new(10 * seq as u64, 0),
            (seq % 3) as u8,
            &payload(v),
        )
        .unwrap();
    }
}

fn entry(seq: i32) -> Entry {
    let v = pack(0, seq);
    Entry {
        version: v,
        hlc: Hlc::new(10 * seq as u64, 0),
        kind: (seq % 3) as u8,
        payload: payload(v),
    }
}

fn all(log: &Log) -> Vec<Entry> {
    log.iter_from(INVALID).collect::<Result<_, _>>().unwrap()
}

#[test]
fn queries_round_trip() {
    let log = Log::open(sim(), "q", LogOptions::default()).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.latest_version(), INVALID);
    assert_eq!(log.get(0).unwrap(), None);
    fill(&log, 20);
    assert_eq!(log.len(), 20);
    assert_eq!(log.latest_version(), pack(0, 19));
    assert_eq!(log.earliest_version(), pack(0, 0));
    assert_eq!(log.get(pack(0, 7)).unwrap(), Some(entry(7)));
    assert_eq!(log.get(pack(0, 20)).unwrap(), None);
    assert_eq!(
        log.latest_at_or_before(pack(1, 0)).unwrap(),
        Some(entry(19))
    );
    assert_eq!(log.latest_at_or_before(pack(0, 3)).unwrap(), Some(entry(3)));
    assert_eq!(log.latest_at_or_before(INVALID).unwrap(), None);
    assert_eq!(log.at_time(Hlc::new(55, 0)).unwrap(), Some(entry(5)));
    assert_eq!(log.at_time(Hlc::new(50, 0)).unwrap(), Some(entry(5)));
    assert_eq!(log.version_at_time(Hlc::MAX), Some(pack(0, 19)));
    assert_eq!(log.at_time(Hlc::ZERO).unwrap(), Some(entry(0)));
    let suffix: Vec<_> = log.iter_from(pack(0, 16)).map(|e| e.unwrap()).collect();
    assert_eq!(suffix, vec![entry(17), entry(18), entry(19)]);
    assert_eq!(all(&log), (0..20).map(entry).collect::<Vec<_>>());
    let infos = log.infos(pack(0, 1), pack(0, 3));
    assert_eq!(
        infos.iter().map(|i| i.version).collect::<Vec<_>>(),
        [pack(0, 2), pack(0, 3)]
    );
    let expected_bytes: usize = (0..20)
        .map(|s| ENTRY_HEADER_LEN + payload(pack(0, s)).len())
        .sum();
    assert_eq!(log.bytes_used(), expected_bytes as u64);
}

#[test]
fn at_time_handles_timestamps_that_go_backwards() {
    let log = Log::open(sim(), "t", LogOptions::default()).unwrap();
    log.append(1, Hlc::new(100, 0), 0, b"a").unwrap();
    log.append(2, Hlc::new(50, 0), 0, b"b").unwrap();
    log.append(3, Hlc::new(200, 0), 0, b"c").unwrap();
    assert_eq!(log.version_at_time(Hlc::new(60, 0)), Some(2));
    assert_eq!(log.version_at_time(Hlc::new(150, 0)), Some(2));
    assert_eq!(log.version_at_time(Hlc::new(10, 0)), None);
    assert_eq!(log.version_at_time(Hlc::new(200, 0)), Some(3));
}

#[test]
fn versions_must_increase() {
    let log = Log::open(sim(), "v", LogOptions::default()).unwrap();
    log.append(pack(1, 5), Hlc::ZERO, 0, b"x").unwrap();
    for bad in [pack(1, 5), pack(1, 4), pack(0, 100), INVALID] {
        match log.append(bad, Hlc::ZERO, 0, b"y") {
            Err(Error::VersionNotIncreasing {
                version, latest, ..
            }) => {
                assert_eq!((version, latest), (bad, pack(1, 5)));
            }
            other => panic!("expected VersionNotIncreasing, got {other:?}"),
        }
    }
    log.advance_version(pack(1, 9)).unwrap();
    assert!(matches!(
        log.append(pack(1, 8), Hlc::ZERO, 0, b"z"),
        Err(Error::VersionNotIncreasing { .. })
    ));
    log.append(pack(2, 0), Hlc::ZERO, 0, b"z").unwrap();
    assert_eq!(log.len(), 2);
}

#[test]
fn file_backend_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path()).unwrap());
        Log::open(s, "f", small_segments(300)).unwrap()
    };
    let log = open();
    fill(&log, 40);
    assert!(log.segment_count() > 3, "segments: {}", log.segment_count());
    assert_eq!(log.persist().unwrap(), pack(0, 39));
    drop(log);
    let log = open();
    assert_eq!(all(&log), (0..40).map(entry).collect::<Vec<_>>());
    assert_eq!(log.persisted_version(), pack(0, 39));
    log.append(pack(1, 0), Hlc::ZERO, 9, b"after").unwrap();
    drop(log);
    assert_eq!(open().latest_version(), pack(1, 0));
}

#[test]
fn segments_roll_and_an_oversized_entry_gets_its_own() {
    let log = Log::open(sim(), "r", small_segments(100)).unwrap();
    log.append(1, Hlc::ZERO, 0, &[1; 10]).unwrap();
    log.append(2, Hlc::ZERO, 0, &[2; 10]).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(3, Hlc::ZERO, 0, &[3; 500]).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.append(4, Hlc::ZERO, 0, &[4; 1]).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.get(3).unwrap().unwrap().payload, vec![3; 500]);
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn flipped_byte_in_the_last_entry_is_cut_on_the_file_backend() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path()).unwrap());
        Log::open(s, "c", LogOptions::default())
    };
    let log = open().unwrap();
    fill(&log, 10);
    log.persist().unwrap();
    drop(log);
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();

    let log = open().unwrap();
    assert_eq!(all(&log), (0..9).map(entry).collect::<Vec<_>>());
    assert_eq!(log.latest_version(), pack(0, 8));
    let cut_len = std::fs::metadata(&seg).unwrap().len() as usize;
    assert!(cut_len < n, "the bad entry was not cut from the file");
    // The freed version can be written again and everything reopens cleanly.
    log.append(pack(0, 9), Hlc::ZERO, 0, b"rewritten").unwrap();
    log.persist().unwrap();
    drop(log);
    let log = open().unwrap();
    assert_eq!(log.get(pack(0, 9)).unwrap().unwrap().payload, b"rewritten");
    assert_eq!(log.len(), 10);
}

#[test]
fn corruption_in_an_earlier_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path()).unwrap());
        Log::open(s, "e", small_segments(200))
    };
    let log = open().unwrap();
    fill(&log, 30);
    log.persist().unwrap();
    drop(log);
    let first = dir.path().join("e.0000000000.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let err = open().unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    // Nothing was cut: the bytes are left for inspection.
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
}

#[test]
fn without_verify_sealed_a_damaged_payload_is_found_when_read_and_a_damaged_header_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path()).unwrap());
        let options = LogOptions {
            verify_sealed: false,
            ..small_segments(200)
        };
        Log::open(s, "w", options)
    };
    let log = open().unwrap();
    fill(&log, 30);
    log.persist().unwrap();
    let before: Vec<_> = log.iter_from(INVALID).map(|e| e.unwrap()).collect();
    drop(log);
    // The walk indexes exactly what a full scan does.
    let log = open().unwrap();
    let walked: Vec<_> = log.iter_from(INVALID).map(|e| e.unwrap()).collect();
    assert_eq!(walked, before);
    drop(log);
    let first = dir.path().join("w.0000000000.seg");
    let clean = std::fs::read(&first).unwrap();
    // A payload byte of the first entry: the open does not read it, the read finds it.
    let mut bytes = clean.clone();
    bytes[40] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let log = open().unwrap();
    let first_version = before[0].version;
    assert!(log.get(first_version).unwrap_err().is_corrupt());
    assert_eq!(
        log.get(before[1].version).unwrap().as_ref(),
        Some(&before[1])
    );
    drop(log);
    // A reserved header byte: the open fails, and cuts nothing.
    let mut bytes = clean;
    bytes[34] = 9;
    std::fs::write(&first, &bytes).unwrap();
    let err = open().unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
}

#[test]
fn reading_an_entry_damaged_after_open_is_an_error() {
    let s = Arc::new(SimStorage::new());
    let log = Log::open(s.clone(), "d", LogOptions::default()).unwrap();
    fill(&log, 3);
    let seg = "d.0000000000.seg";
    let mut bytes = s.read_all(seg).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    s.replace(seg, &bytes).unwrap();
    assert!(log.get(pack(0, 2)).unwrap_err().is_corrupt());
    assert_eq!(log.get(pack(0, 1)).unwrap(), Some(entry(1)));
}

#[test]
fn truncate_is_durable_and_versions_can_be_reused() {
    let s = Arc::new(SimStorage::new());
    let log = Log::open(s.clone(), "t", small_segments(250)).unwrap();
    fill(&log, 30);
    log.persist().unwrap();
    log.truncate(pack(0, 11)).unwrap();
    assert_eq!(log.latest_version(), pack(0, 11));
    assert_eq!(log.persisted_version(), pack(0, 11));
    assert_eq!(all(&log), (0..12).map(entry).collect::<Vec<_>>());
    drop(log);
    s.crash(1);
    let log = Log::open(s.clone(), "t", small_segments(250)).unwrap();
    assert_eq!(all(&log), (0..12).map(entry).collect::<Vec<_>>());
    log.append(pack(0, 12), Hlc::ZERO, 7, b"new twelve")
        .unwrap();
    log.persist().unwrap();
    drop(log);
    let log = Log::open(s, "t", small_segments(250)).unwrap();
    assert_eq!(
        log.get(pack(0, 12)).unwrap().unwrap().payload,
        b"new twelve"
    );
    assert_eq!(log.len(), 13);
}

#[test]
fn an_interrupted_truncate_is_finished_at_open() {
    let sim = Arc::new(SimStorage::new());
    let log = Log::open(sim.clone(), "i", small_segments(200)).unwrap();
    fill(&log, 25);
    log.persist().unwrap();
    sim.fail(SimOp::Remove);
    sim.fail(SimOp::Truncate);
    assert!(log.truncate(pack(0, 4)).is_err());
    assert!(matches!(
        log.append(pack(1, 0), Hlc::ZERO, 0, b""),
        Err(Error::NeedsReopen(_))
    ));
    drop(log);
    sim.heal(SimOp::Remove);
    sim.heal(SimOp::Truncate);
    sim.crash(3);
    let log = Log::open(sim, "i", small_segments(200)).unwrap();
    assert_eq!(all(&log), (0..5).map(entry).collect::<Vec<_>>());
}

#[test]
fn an_interrupted_trim_is_finished_at_open() {
    let sim = Arc::new(SimStorage::new());
    let log = Log::open(sim.clone(), "it", small_segments(200)).unwrap();
    fill(&log, 30);
    let segments = log.segment_count();
    sim.fail(SimOp::Remove);
    assert!(log.trim(pack(0, 20)).is_err());
    assert!(matches!(log.persist(), Err(Error::NeedsReopen(_))));
    // Reads still answer from the trimmed index.
    assert_eq!(log.earliest_version(), pack(0, 20));
    drop(log);
    sim.heal(SimOp::Remove);
    sim.crash(4);
    let log = Log::open(sim.clone(), "it", small_segments(200)).unwrap();
    assert_eq!(all(&log), (20..30).map(entry).collect::<Vec<_>>());
    assert!(
        log.segment_count() < segments,
        "wholly trimmed segments were not removed"
    );
    let files = sim
        .list()
        .unwrap()
        .into_iter()
        .filter(|f| f.ends_with(".seg"))
        .count();
    assert_eq!(files, log.segment_count());
}

#[test]
fn trim_removes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let s: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path()).unwrap());
        Log::open(s, "tr", small_segments(200)).unwrap()
    };
    let log = open();
    fill(&log, 40);
    let (segments, bytes) = (log.segment_count(), log.bytes_used());
    log.trim(pack(0, 25)).unwrap();
    assert_eq!(log.earliest_version(), pack(0, 25));
    assert_eq!(log.get(pack(0, 24)).unwrap(), None);
    assert!(log.segment_count() < segments && log.bytes_used() < bytes);
    assert_eq!(log.persisted_version(), pack(0, 39), "trim persists first");
    drop(log);
    let log = open();
    assert_eq!(all(&log), (25..40).map(entry).collect::<Vec<_>>());
    assert_eq!(log.latest_at_or_before(pack(0, 10)).unwrap(), None);
    // Trimming past the end empties the log but keeps its latest version.
    log.trim(pack(5, 0)).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.bytes_used(), 0);
    assert_eq!(log.latest_version(), pack(0, 39));
    drop(log);
    let log = open();
    assert!(log.is_empty());
    assert_eq!(log.latest_version(), pack(0, 39));
    log.append(pack(0, 40), Hlc::ZERO, 0, b"next").unwrap();
    drop(log);
    assert_eq!(open().len(), 1);
}

#[test]
fn truncate_below_the_trim_point_drops_everything() {
    let s = sim();
    let log = Log::open(s.clone(), "b", small_segments(10_000)).unwrap();
    fill(&log, 10);
    log.trim(pack(0, 5)).unwrap();
    log.truncate(pack(0, 2)).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.latest_version(), pack(0, 2));
    log.append(pack(0, 3), Hlc::ZERO, 0, b"three").unwrap();
    drop(log);
    let log = Log::open(s, "b", LogOptions::default()).unwrap();
    assert_eq!(
        log.len(),
        1,
        "an entry below the old trim point must be visible"
    );
    assert_eq!(log.get(pack(0, 3)).unwrap().unwrap().payload, b"three");
}

#[test]
fn trim_policy_keeps_the_newest_entries() {
    let log = Log::open(sim(), "p", small_segments(150)).unwrap();
    fill(&log, 30);
    let by_count = TrimPolicy {
        keep_versions: Some(10),
        keep_bytes: None,
    };
    assert_eq!(by_count.apply(&log).unwrap(), Some(pack(0, 20)));
    assert_eq!(log.len(), 10);
    assert_eq!(by_count.apply(&log).unwrap(), None);
    let entry_bytes = |s| (ENTRY_HEADER_LEN + payload(pack(0, s)).len()) as u64;
    let budget = entry_bytes(29) + entry_bytes(28) + entry_bytes(27);
    let by_bytes = TrimPolicy {
        keep_versions: None,
        keep_bytes: Some(budget),
    };
    assert_eq!(by_bytes.apply(&log).unwrap(), Some(pack(0, 27)));
    assert_eq!(log.len(), 3);
    let tiny = TrimPolicy {
        keep_versions: Some(0),
        keep_bytes: Some(1),
    };
    tiny.apply(&log).unwrap();
    assert_eq!(log.len(), 1, "the newest entry is always kept");
}

#[test]
fn full_storage_is_a_typed_error_and_trimming_makes_room() {
    let s: Arc<dyn Storage> = Arc::new(SimStorage::with_capacity(4_000));
    let log = Log::open(s.clone(), "full", small_segments(1_000)).unwrap();
    let mut v = 0;
    let err = loop {
        match log.append(pack(0, v), Hlc::ZERO, 0, &[7; 100]) {
            Ok(()) => v += 1,
            Err(e) => break e,
        }
        assert!(v < 1000, "capacity never reached");
    };
    assert!(err.is_full(), "{err}");
    let len = log.len();
    assert_eq!(log.latest_version(), pack(0, v - 1));
    assert_eq!(
        all(&log).len(),
        len,
        "the failed append left nothing behind"
    );
    log.trim(pack(0, v - 2)).unwrap();
    for extra in 0..5 {
        log.append(pack(0, v + extra), Hlc::ZERO, 0, &[8; 100])
            .unwrap();
    }
    log.persist().unwrap();
    drop(log);
    let log = Log::open(s, "full", small_segments(1_000)).unwrap();
    assert_eq!(log.latest_version(), pack(0, v + 4));
    assert_eq!(log.earliest_version(), pack(0, v - 2));
}

#[test]
fn persist_from_another_thread_while_appending() {
    let s = Arc::new(SimStorage::new());
    let log = Log::open(s.clone(), "mt", small_segments(4_096)).unwrap();
    let persister = log.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !done2.load(std::sync::atomic::Ordering::Acquire) {
            seen.push(persister.persist().unwrap());
        }
        seen
    });
    for seq in 0..3_000 {
        log.append(pack(0, seq), Hlc::new(seq as u64, 0), 0, &seq.to_le_bytes())
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let seen = handle.join().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "persisted version went backwards"
    );
    let persisted = *seen.last().unwrap();
    assert!(persisted <= log.latest_version());
    drop(log);
    s.crash(42);
    let log = Log::open(s, "mt", small_segments(4_096)).unwrap();
    assert!(
        log.latest_version() >= persisted,
        "a persisted version was lost"
    );
    for (i, e) in log.iter_from(INVALID).enumerate() {
        let e = e.unwrap();
        assert_eq!(e.version, pack(0, i as i32));
        assert_eq!(e.payload, (i as i32).to_le_bytes());
    }
}

#[test]
fn read_only_open_changes_nothing() {
    let s = Arc::new(SimStorage::new());
    let log = Log::open(s.clone(), "ro", LogOptions::default()).unwrap();
    fill(&log, 5);
    drop(log);
    let seg = "ro.0000000000.seg";
    s.append(seg, b"garbage tail").unwrap();
    let before = s.read_all(seg).unwrap();
    let ro = LogOptions {
        read_only: true,
        ..LogOptions::default()
    };
    let log = Log::open(s.clone(), "ro", ro).unwrap();
    assert_eq!(log.len(), 5);
    assert!(matches!(
        log.append(pack(1, 0), Hlc::ZERO, 0, b""),
        Err(Error::ReadOnly(_))
    ));
    assert!(matches!(log.persist(), Err(Error::ReadOnly(_))));
    assert_eq!(s.read_all(seg).unwrap(), before);
}

#[test]
fn invalid_log_names_are_rejected() {
    for bad in ["", "a.b", "a/b"] {
        assert!(matches!(
            Log::open(sim(), bad, LogOptions::default()),
            Err(Error::InvalidName(_))
        ));
    }
}

#[test]
fn min_latest_persisted_scans_a_shards_logs() {
    let s = sim();
    let prefix = shard_prefix("app::Store", 0, 1);
    assert_eq!(min_latest_persisted(s.clone(), &prefix).unwrap(), INVALID);
    let a = Log::open(
        s.clone(),
        &field_name("app::Store", 0, 1, "a"),
        LogOptions::default(),
    )
    .unwrap();
    let b = Log::open(
        s.clone(),
        &field_name("app::Store", 0, 1, "b"),
        LogOptions::default(),
    )
    .unwrap();
    let other = Log::open(
        s.clone(),
        &field_name("app::Store", 0, 2, "a"),
        LogOptions::default(),
    )
    .unwrap();
    fill(&a, 10);
    fill(&b, 6);
    fill(&other, 2);
    // A version with no entry counts once persisted.
    b.advance_version(pack(0, 20)).unwrap();
    a.persist().unwrap();
    b.persist().unwrap();
    other.persist().unwrap();
    drop((a, b, other));
    assert_eq!(
        min_latest_persisted(s.clone(), &prefix).unwrap(),
        pack(0, 9)
    );
    assert_eq!(
        min_latest_persisted(s.clone(), &shard_prefix("app::Store", 0, 2)).unwrap(),
        pack(0, 1)
    );
    let b = Log::open(
        s.clone(),
        &field_name("app::Store", 0, 1, "b"),
        LogOptions::default(),
    )
    .unwrap();
    assert_eq!(b.latest_version(), pack(0, 20));
}

#[test]
fn a_failed_sync_requires_a_reopen() {
    let sim = Arc::new(SimStorage::new());
    let log = Log::open(sim.clone(), "fs", LogOptions::default()).unwrap();
    fill(&log, 3);
    sim.fail(SimOp::Sync);
    assert!(log.persist().is_err());
    sim.heal(SimOp::Sync);
    // A retry must not report success for data a failed fsync may have lost.
    assert!(matches!(log.persist(), Err(Error::NeedsReopen(_))));
    assert_eq!(log.persisted_version(), INVALID);
    drop(log);
    let log = Log::open(sim, "fs", LogOptions::default()).unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log.persist().unwrap(), pack(0, 2));
}

/// A batch reads back like the same entries appended one by one, across a reopen, also when
/// it would cross a segment boundary; a batch whose versions do not increase appends nothing.
#[test]
fn batches_read_back_like_single_appends() {
    let storage = sim();
    let log = Log::open(Arc::clone(&storage), "batch", small_segments(600)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..40).map(|s| payload(pack(0, s))).collect();
    for chunk in (0..40).collect::<Vec<i32>>().chunks(7) {
        let batch: Vec<BatchEntry<'_>> = chunk
            .iter()
            .map(|&seq| BatchEntry {
                version: pack(0, seq),
                hlc: Hlc::new(10 * seq as u64, 0),
                kind: (seq % 3) as u8,
                payload: &payloads[seq as usize],
            })
            .collect();
        log.append_batch(&batch).unwrap();
    }
    let expected: Vec<Entry> = (0..40).map(entry).collect();
    assert_eq!(all(&log), expected);
    assert!(log.segment_count() > 1);
    let stale = [
        BatchEntry {
            version: pack(0, 50),
            hlc: Hlc::ZERO,
            kind: 0,
            payload: b"x",
        },
        BatchEntry {
            version: pack(0, 45),
            hlc: Hlc::ZERO,
            kind: 0,
            payload: b"y",
        },
    ];
    assert!(matches!(
        log.append_batch(&stale),
        Err(Error::VersionNotIncreasing { .. })
    ));
    assert_eq!(log.latest_version(), pack(0, 39));
    log.persist().unwrap();
    drop(log);
    let again = Log::open(storage, "batch", small_segments(600)).unwrap();
    assert_eq!(all(&again), expected);
}
