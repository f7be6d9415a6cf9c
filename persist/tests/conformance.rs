//! Both storage backends against the shared contract, plus the durability
//! each one promises across a crash or reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use derecho_persist::storage::SECTOR_SIZE;
use derecho_persist::{conformance, FileStorage, SimStorage, Storage, StorageError};

#[test]
fn sim_storage_conforms() {
    conformance::run_all(SimStorage::new);
}

#[test]
fn file_storage_conforms() {
    let root = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        FileStorage::open(root.path().join(format!("s{n}"))).unwrap()
    });
}

#[test]
fn arc_of_a_backend_conforms() {
    conformance::run_all(|| Arc::new(SimStorage::new()));
}

#[test]
fn file_storage_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStorage::open(dir.path()).unwrap();
        s.append("a", b"synced").unwrap();
        s.sync("a").unwrap();
        s.append("a", b"+more").unwrap();
        s.replace("m", b"meta").unwrap();
        s.append("t", b"0123456789").unwrap();
        s.truncate("t", 3).unwrap();
        s.sync("t").unwrap();
    }
    let s = FileStorage::open(dir.path()).unwrap();
    // A process exit (not a power loss) keeps even unsynced appends.
    assert_eq!(s.read_all("a").unwrap(), b"synced+more");
    assert_eq!(s.read_all("m").unwrap(), b"meta");
    assert_eq!(s.read_all("t").unwrap(), b"012");
    assert_eq!(s.list().unwrap(), ["a", "m", "t"]);
}

#[test]
fn file_storage_removes_leftover_temporaries_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.meta.tmp"), b"half written").unwrap();
    std::fs::write(dir.path().join("x.meta"), b"old").unwrap();
    let s = FileStorage::open(dir.path()).unwrap();
    assert!(!dir.path().join("x.meta.tmp").exists());
    assert_eq!(s.list().unwrap(), ["x.meta"]);
    assert_eq!(s.read_all("x.meta").unwrap(), b"old");
}

#[test]
fn file_storage_opens_a_missing_directory_and_reports_directories_as_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let s = FileStorage::open(root.path().join("a").join("b")).unwrap();
    std::fs::create_dir(s.dir().join("sub")).unwrap();
    assert!(s.list().unwrap().is_empty(), "directories are not files");
    assert!(matches!(
        s.append("sub", b"x"),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn file_storage_sees_many_files_beyond_the_handle_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(dir.path()).unwrap();
    for round in 0..2u8 {
        for i in 0..150 {
            s.append(&format!("f{i:03}"), &[round, i as u8]).unwrap();
        }
    }
    for i in 0..150 {
        s.sync(&format!("f{i:03}")).unwrap();
        assert_eq!(
            s.read_all(&format!("f{i:03}")).unwrap(),
            [0, i as u8, 1, i as u8]
        );
    }
}

#[test]
fn sim_storage_synced_data_always_survives_and_unsynced_may_be_lost_or_torn() {
    let (mut lost, mut torn, mut whole) = (0, 0, 0);
    for seed in 0..400u64 {
        let s = SimStorage::new();
        let synced: Vec<u8> = (0..1234u32).map(|i| (i % 251) as u8).collect();
        let unsynced = vec![0xAB; 3 * SECTOR_SIZE];
        s.append("f", &synced).unwrap();
        s.sync("f").unwrap();
        s.append("f", &unsynced).unwrap();
        s.replace("m", b"meta").unwrap();
        s.crash(seed);
        let data = s.read_all("f").unwrap();
        assert_eq!(
            &data[..synced.len()],
            &synced[..],
            "seed {seed}: synced bytes changed"
        );
        assert!(data.len() <= synced.len() + unsynced.len());
        assert_eq!(s.read_all("m").unwrap(), b"meta");
        let tail = &data[synced.len()..];
        if tail.len() < unsynced.len() {
            lost += 1;
        }
        if tail.iter().any(|&b| b != 0xAB) {
            torn += 1;
        } else if tail.len() == unsynced.len() {
            whole += 1;
        }
    }
    assert!(
        lost > 100 && torn > 50 && whole > 0,
        "lost {lost} torn {torn} whole {whole}"
    );
}
