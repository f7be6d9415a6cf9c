//! Persistent fields in full and delta mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use derecho_persist::persistent::{KIND_DELTA, KIND_FULL};
use derecho_persist::{
    min_persisted_version, pack, Delta, DeltaPersistent, FileStorage, Hlc, LogOptions, Persistent,
    PersistentField, SimOp, SimStorage, Storage, INVALID,
};
use serde::{Deserialize, Serialize};

fn sim() -> Arc<dyn Storage> {
    Arc::new(SimStorage::new())
}

fn t(seq: i32) -> Hlc {
    Hlc::new(1_000 * seq as u64, 0)
}

/// A key-value map that records its changes as deltas.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Kv {
    map: BTreeMap<String, u64>,
    #[serde(skip)]
    pending: Vec<(String, Option<u64>)>,
    /// How many deltas were applied since this value was built (not stored).
    #[serde(skip)]
    applied: usize,
}

impl Kv {
    fn put(&mut self, k: &str, v: u64) {
        self.map.insert(k.to_string(), v);
        self.pending.push((k.to_string(), Some(v)));
    }
    fn del(&mut self, k: &str) {
        self.map.remove(k);
        self.pending.push((k.to_string(), None));
    }
}

impl Delta for Kv {
    type Delta = Vec<(String, Option<u64>)>;
    fn take_delta(&mut self) -> Option<Self::Delta> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
    fn apply_delta(&mut self, delta: Self::Delta) {
        self.applied += 1;
        for (k, v) in delta {
            match v {
                Some(v) => self.map.insert(k, v),
                None => self.map.remove(&k),
            };
        }
    }
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn full_mode_versions_reads_and_reopen() {
    let s = sim();
    let mut p = Persistent::<Vec<u32>>::open(s.clone(), "vec", Vec::new).unwrap();
    assert!(p.is_empty());
    assert_eq!(p.latest_version(), INVALID);
    for seq in 0..10 {
        p.get_mut().push(seq as u32);
        p.version(pack(0, seq), t(seq)).unwrap();
    }
    assert_eq!(p.num_versions(), 10);
    assert_eq!(p.get_version(pack(0, 3)).unwrap(), Some(vec![0, 1, 2, 3]));
    assert_eq!(p.get_version(INVALID).unwrap(), None);
    assert_eq!(
        p.get_by_time(Hlc::new(4_500, 0)).unwrap(),
        Some(vec![0, 1, 2, 3, 4])
    );
    assert_eq!(p.get_by_time(Hlc::new(0, 0)).unwrap(), Some(vec![0]));
    assert_eq!(p.persisted_version(), INVALID);
    assert_eq!(p.persist().unwrap(), pack(0, 9));
    // Unrecorded in-memory changes are not persisted.
    p.get_mut().push(99);
    drop(p);
    let p = Persistent::<Vec<u32>>::open(s, "vec", Vec::new).unwrap();
    assert_eq!(*p, (0..10).collect::<Vec<_>>());
    assert_eq!(p.latest_version(), pack(0, 9));
}

#[test]
fn full_mode_truncate_reloads_and_trim_keeps_the_requested_version() {
    let s = sim();
    let mut p = Persistent::<String>::open(s.clone(), "s", String::new).unwrap();
    for seq in 0..8 {
        p.set(format!("v{seq}"));
        p.version(pack(0, seq * 2), t(seq)).unwrap();
    }
    p.truncate(pack(0, 9)).unwrap();
    assert_eq!(p.get(), "v4");
    // The field now describes the state as of version 9, which has no entry.
    assert_eq!(p.latest_version(), pack(0, 9));
    assert_eq!(p.persisted_version(), pack(0, 9));
    assert_eq!(p.num_versions(), 5);
    p.trim(pack(0, 5)).unwrap();
    // Version 5 is answered by the entry at version 4, which must stay.
    assert_eq!(p.get_version(pack(0, 5)).unwrap().as_deref(), Some("v2"));
    assert_eq!(p.get_version(pack(0, 3)).unwrap(), None);
    p.truncate(INVALID).unwrap();
    assert_eq!(p.get(), "", "nothing left: back to the initial value");
    drop(p);
    let p = Persistent::<String>::open(s, "s", || "init".into()).unwrap();
    assert_eq!(p.get(), "init");
}

#[test]
fn delta_mode_checkpoints_bound_the_replay() {
    let s = sim();
    let opts = LogOptions::default();
    let mut p =
        DeltaPersistent::<Kv>::open_with(s.clone(), "kv", opts.clone(), 4, Kv::default).unwrap();
    for seq in 0..23 {
        p.get_mut().put(&format!("k{}", seq % 5), seq as u64);
        if seq % 7 == 6 {
            p.get_mut().del("k0");
        }
        p.version(pack(0, seq), t(seq)).unwrap();
    }
    let log = p.log().clone();
    let kinds: Vec<u8> = log
        .infos(INVALID, i64::MAX)
        .iter()
        .map(|i| i.kind)
        .collect();
    // A checkpoint first, then four deltas before each further checkpoint.
    let expected: Vec<u8> = (0..23)
        .map(|i| if i % 5 == 0 { KIND_FULL } else { KIND_DELTA })
        .collect();
    assert_eq!(kinds, expected);
    // Every historical version reads back, replaying at most four deltas.
    let mut reference = Kv::default();
    for seq in 0..23 {
        reference.put(&format!("k{}", seq % 5), seq as u64);
        if seq % 7 == 6 {
            reference.del("k0");
        }
        let got = p.get_version(pack(0, seq)).unwrap().unwrap();
        assert_eq!(got.map, reference.map, "version {seq}");
        assert!(got.applied <= 4, "replayed {} deltas", got.applied);
    }
    let current = p.get().map.clone();
    drop(p);
    let p = DeltaPersistent::<Kv>::open_with(s, "kv", opts, 4, Kv::default).unwrap();
    assert_eq!(p.map, current);
    assert!(p.applied <= 4);
    assert_eq!(p.latest_version(), pack(0, 22));
}

#[test]
fn delta_mode_unchanged_versions_write_nothing_but_count() {
    let s = sim();
    let mut p =
        DeltaPersistent::<Kv>::open_with(s.clone(), "u", LogOptions::default(), 2, Kv::default)
            .unwrap();
    // The first version is always a checkpoint, even without a change.
    p.version(pack(0, 0), t(0)).unwrap();
    assert_eq!(p.num_versions(), 1);
    p.version(pack(0, 1), t(1)).unwrap();
    p.version(pack(0, 2), t(2)).unwrap();
    assert_eq!(p.num_versions(), 1);
    assert_eq!(p.latest_version(), pack(0, 2));
    p.get_mut().put("a", 1);
    p.version(pack(0, 3), t(3)).unwrap();
    p.get_mut().put("a", 2);
    p.version(pack(0, 4), t(4)).unwrap();
    // No change while a checkpoint is due: still nothing written.
    p.version(pack(0, 5), t(5)).unwrap();
    assert_eq!(p.num_versions(), 3);
    assert_eq!(p.get_version(pack(0, 2)).unwrap().unwrap().map, map(&[]));
    assert_eq!(
        p.get_version(pack(0, 5)).unwrap().unwrap().map,
        map(&[("a", 2)])
    );
    assert_eq!(p.persist().unwrap(), pack(0, 5));
    drop(p);
    let p =
        DeltaPersistent::<Kv>::open_with(s, "u", LogOptions::default(), 2, Kv::default).unwrap();
    assert_eq!(
        p.latest_version(),
        pack(0, 5),
        "the unchanged latest version survives"
    );
    assert_eq!(p.map, map(&[("a", 2)]));
}

#[test]
fn delta_mode_truncate_trim_and_time_queries() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Storage> = Arc::new(FileStorage::open(dir.path()).unwrap());
    let mut p =
        DeltaPersistent::<Kv>::open_with(s.clone(), "d", LogOptions::default(), 3, Kv::default)
            .unwrap();
    for seq in 0..12 {
        p.get_mut().put("x", seq as u64);
        p.version(pack(1, seq), t(seq)).unwrap();
    }
    assert_eq!(
        p.get_by_time(Hlc::new(5_500, 0)).unwrap().unwrap().map,
        map(&[("x", 5)])
    );
    assert_eq!(
        p.get_by_time(Hlc::ZERO).unwrap().unwrap().map,
        map(&[("x", 0)])
    );
    p.truncate(pack(1, 6)).unwrap();
    assert_eq!(p.map, map(&[("x", 6)]));
    // Recording continues from the reloaded value with correct deltas.
    p.get_mut().put("y", 1);
    p.version(pack(1, 7), t(7)).unwrap();
    assert_eq!(
        p.get_version(pack(1, 7)).unwrap().unwrap().map,
        map(&[("x", 6), ("y", 1)])
    );
    // Trim keeps the checkpoint that version 6 is built from.
    p.trim(pack(1, 6)).unwrap();
    assert_eq!(
        p.get_version(pack(1, 6)).unwrap().unwrap().map,
        map(&[("x", 6)])
    );
    assert_eq!(p.get_version(pack(1, 3)).unwrap(), None);
    drop(p);
    let p =
        DeltaPersistent::<Kv>::open_with(s, "d", LogOptions::default(), 3, Kv::default).unwrap();
    assert_eq!(p.map, map(&[("x", 6), ("y", 1)]));
}

#[test]
fn fields_behind_the_object_safe_trait() {
    let s = sim();
    let mut a = Persistent::<u64>::open(s.clone(), "a", || 0).unwrap();
    let mut b = DeltaPersistent::<Kv>::open(s.clone(), "b", Kv::default).unwrap();
    {
        let mut fields: Vec<&mut dyn PersistentField> = vec![&mut a, &mut b];
        for seq in 0..5 {
            for f in fields.iter_mut() {
                f.version(pack(0, seq), t(seq)).unwrap();
            }
        }
        fields[0].persist().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["a", "b"]);
    }
    assert_eq!(
        min_persisted_version([&a as &dyn PersistentField, &b]),
        INVALID
    );
    PersistentField::persist(&b).unwrap();
    assert_eq!(
        min_persisted_version([&a as &dyn PersistentField, &b]),
        pack(0, 4)
    );
    assert_eq!(min_persisted_version(std::iter::empty()), INVALID);
    PersistentField::truncate(&mut a, pack(0, 2)).unwrap();
    assert_eq!(PersistentField::latest_version(&a), pack(0, 2));
}

#[test]
fn persist_from_a_second_thread_through_the_log_handle() {
    let s = Arc::new(SimStorage::new());
    let mut p = Persistent::<u64>::open(s.clone(), "c", || 0).unwrap();
    let handle = p.log().clone();
    let persister = std::thread::spawn(move || {
        let mut last = INVALID;
        for _ in 0..200 {
            last = handle.persist().unwrap();
        }
        last
    });
    for seq in 0..500 {
        *p.get_mut() += 1;
        p.version(pack(0, seq), t(seq)).unwrap();
    }
    let seen = persister.join().unwrap();
    assert!(seen <= pack(0, 499));
    drop(p);
    s.crash(5);
    let p = Persistent::<u64>::open(s, "c", || 0).unwrap();
    assert!(p.latest_version() >= seen);
    assert_eq!(*p as i64, p.latest_version() - pack(0, 0) + 1);
}

#[test]
fn delta_mode_failed_append_is_followed_by_a_checkpoint() {
    let sim = Arc::new(SimStorage::new());
    let opts = LogOptions::default();
    let mut p =
        DeltaPersistent::<Kv>::open_with(sim.clone(), "f", opts.clone(), 100, Kv::default).unwrap();
    for seq in 0..5 {
        p.get_mut().put(&format!("k{seq}"), seq as u64);
        p.version(pack(0, seq), t(seq)).unwrap();
    }
    sim.fail(SimOp::Append);
    p.get_mut().put("lost?", 5);
    assert!(p.version(pack(0, 5), t(5)).is_err());
    sim.heal(SimOp::Append);
    // The change of the failed version is still in memory only; the next
    // version must capture it, so it is written as a checkpoint.
    p.get_mut().put("k6", 6);
    p.version(pack(0, 6), t(6)).unwrap();
    let last = p.log().find_back(i64::MAX, |_| true).unwrap();
    assert_eq!((last.version, last.kind), (pack(0, 6), KIND_FULL));
    let expected = p.map.clone();
    assert!(expected.contains_key("lost?"));
    assert_eq!(p.get_version(pack(0, 6)).unwrap().unwrap().map, expected);
    p.persist().unwrap();
    drop(p);
    let p = DeltaPersistent::<Kv>::open_with(sim, "f", opts, 100, Kv::default).unwrap();
    assert_eq!(p.map, expected);
}

#[test]
fn delta_mode_crash_recovery_matches_a_recorded_version() {
    use std::collections::HashMap;
    for seed in 0..200u64 {
        let sim = Arc::new(SimStorage::new());
        let opts = LogOptions {
            segment_bytes: 300 + seed * 7,
            ..LogOptions::default()
        };
        let interval = (seed % 5) as u32 + 1;
        let mut p =
            DeltaPersistent::<Kv>::open_with(sim.clone(), "c", opts.clone(), interval, Kv::default)
                .unwrap();
        // The map as of every recorded version.
        let mut history: HashMap<i64, BTreeMap<String, u64>> = HashMap::new();
        let mut persisted = INVALID;
        let mut x = seed;
        for seq in 0..60 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (x >> 33) % 4 {
                0 => p.get_mut().del(&format!("k{}", (x >> 40) % 6)),
                1 => {}
                _ => p.get_mut().put(&format!("k{}", (x >> 40) % 6), x >> 50),
            }
            p.version(pack(0, seq), t(seq)).unwrap();
            history.insert(pack(0, seq), p.map.clone());
            if (x >> 20) % 7 == 0 {
                persisted = p.persist().unwrap();
            }
        }
        drop(p);
        sim.crash(seed);
        let p = DeltaPersistent::<Kv>::open_with(sim, "c", opts, interval, Kv::default).unwrap();
        let latest = p.latest_version();
        assert!(latest >= persisted, "seed {seed}: lost persisted versions");
        if latest == INVALID {
            assert!(p.map.is_empty());
        } else {
            assert_eq!(&p.map, &history[&latest], "seed {seed}: value at {latest}");
        }
        assert!(p.applied <= interval as usize);
    }
}
