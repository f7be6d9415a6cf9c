//! Saved objects: round trip, absence, corruption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use derecho_persist::{load_object, save_object, Error, FileStorage, SimStorage, Storage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct View {
    vid: i32,
    members: Vec<u32>,
    failed: Vec<bool>,
    names: BTreeMap<u32, String>,
}

fn view(vid: i32) -> View {
    View {
        vid,
        members: vec![1, 2, 3],
        failed: vec![false, true, false],
        names: [(1, "a".to_string()), (2, "b".to_string())].into(),
    }
}

#[test]
fn save_load_replace_and_missing() {
    let s = SimStorage::new();
    assert_eq!(load_object::<_, View>(&s, "view").unwrap(), None);
    save_object(&s, "view", &view(1)).unwrap();
    assert_eq!(load_object::<_, View>(&s, "view").unwrap(), Some(view(1)));
    save_object(&s, "view", &view(2)).unwrap();
    assert_eq!(load_object::<_, View>(&s, "view").unwrap(), Some(view(2)));
}

#[test]
fn saved_object_survives_crash_and_reopen() {
    let s = SimStorage::new();
    save_object(&s, "view", &view(5)).unwrap();
    s.crash(9);
    assert_eq!(load_object::<_, View>(&s, "view").unwrap(), Some(view(5)));

    let dir = tempfile::tempdir().unwrap();
    save_object(&FileStorage::open(dir.path()).unwrap(), "view", &view(6)).unwrap();
    let reopened = FileStorage::open(dir.path()).unwrap();
    assert_eq!(
        load_object::<_, View>(&reopened, "view").unwrap(),
        Some(view(6))
    );
}

#[test]
fn any_flipped_byte_or_truncation_is_an_error() {
    let s = SimStorage::new();
    save_object(&s, "view", &view(3)).unwrap();
    let good = s.read_all("view").unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        s.replace("view", &bad).unwrap();
        let err = load_object::<_, View>(&s, "view").unwrap_err();
        assert!(err.is_corrupt(), "byte {i}: {err}");
    }
    s.replace("view", &good[..good.len() - 1]).unwrap();
    assert!(load_object::<_, View>(&s, "view").unwrap_err().is_corrupt());
    s.replace("view", b"").unwrap();
    assert!(load_object::<_, View>(&s, "view").unwrap_err().is_corrupt());
}

#[test]
fn wrong_type_is_a_codec_error() {
    let s = SimStorage::new();
    save_object(&s, "x", &1u8).unwrap();
    assert!(matches!(
        load_object::<_, View>(&s, "x"),
        Err(Error::Codec { .. })
    ));
}
