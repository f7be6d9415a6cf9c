//! A conformance suite for [`Storage`] implementations.
//!
//! This file owns the executable statement of the [`Storage`] contract as seen
//! through its API. Each check takes a factory returning a fresh, empty
//! storage and panics with a description when the backend breaks the contract,
//! so a backend's tests call [`run_all`] with their own factory. Crash
//! durability cannot be observed through the trait and is tested per backend.

use crate::error::StorageError;
use crate::storage::{Storage, StorageResult};

fn ok<T>(result: StorageResult<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what} failed: {e}"),
    }
}

fn expect_not_found<T: std::fmt::Debug>(result: StorageResult<T>, what: &str) {
    match result {
        Err(StorageError::NotFound(_)) => {}
        other => panic!("conformance: {what} should be NotFound, got {other:?}"),
    }
}

/// Runs every check below, each on a fresh storage from `make`.
pub fn run_all<S: Storage>(make: impl Fn() -> S) {
    append_read_round_trip(make());
    lengths_and_short_reads(make());
    truncate_shortens_and_never_grows(make());
    replace_swaps_whole_content(make());
    list_is_sorted_and_complete(make());
    remove_deletes(make());
    missing_files_are_not_found(make());
    sync_keeps_data_and_appends_continue(make());
    invalid_names_are_rejected(make());
}

/// Appended bytes read back identically, and `append` returns the new length.
pub fn append_read_round_trip<S: Storage>(s: S) {
    assert_eq!(ok(s.append("a", b"hello "), "append"), 6);
    assert_eq!(ok(s.append("a", b"world"), "append"), 11);
    assert_eq!(ok(s.read_all("a"), "read_all"), b"hello world");
    assert_eq!(ok(s.read("a", 6, 5), "read"), b"world");
    assert_eq!(ok(s.append("a", b""), "empty append"), 11);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
    ok(s.append("big", &big), "append big");
    assert_eq!(ok(s.read_all("big"), "read big"), big);
    assert_eq!(
        ok(s.read("big", 4099, 10_000), "read middle"),
        &big[4099..14_099]
    );
}

/// `len` tracks appends; reads past the end are short or empty.
pub fn lengths_and_short_reads<S: Storage>(s: S) {
    ok(s.append("f", &[1, 2, 3, 4]), "append");
    assert_eq!(ok(s.len("f"), "len"), 4);
    assert_eq!(ok(s.read("f", 2, 10), "short read"), [3, 4]);
    assert!(ok(s.read("f", 4, 10), "read at end").is_empty());
    assert!(ok(s.read("f", 100, 10), "read past end").is_empty());
    assert!(ok(s.exists("f"), "exists"));
}

/// Truncate shortens, later appends continue at the new end, growing fails.
pub fn truncate_shortens_and_never_grows<S: Storage>(s: S) {
    ok(s.append("t", b"0123456789"), "append");
    ok(s.truncate("t", 4), "truncate");
    assert_eq!(ok(s.len("t"), "len"), 4);
    assert_eq!(ok(s.append("t", b"xy"), "append after truncate"), 6);
    assert_eq!(ok(s.read_all("t"), "read"), b"0123xy");
    match s.truncate("t", 7) {
        Err(StorageError::OutOfRange { .. }) => {}
        other => panic!("conformance: growing truncate should be OutOfRange, got {other:?}"),
    }
    ok(s.truncate("t", 0), "truncate to zero");
    assert_eq!(ok(s.len("t"), "len"), 0);
    assert!(ok(s.exists("t"), "exists after truncate to zero"));
}

/// `replace` creates or swaps the whole content; appends after it extend the
/// new content.
pub fn replace_swaps_whole_content<S: Storage>(s: S) {
    ok(s.replace("m", b"first version"), "replace (create)");
    assert_eq!(ok(s.read_all("m"), "read"), b"first version");
    ok(s.append("m", b" + tail"), "append");
    ok(s.replace("m", b"v2"), "replace");
    assert_eq!(ok(s.read_all("m"), "read"), b"v2");
    ok(s.append("m", b"!"), "append after replace");
    assert_eq!(ok(s.read_all("m"), "read"), b"v2!");
    ok(s.replace("m", b""), "replace with empty");
    assert_eq!(ok(s.len("m"), "len"), 0);
    // No temporary file is visible afterwards.
    assert_eq!(ok(s.list(), "list"), vec!["m".to_string()]);
}

/// `list` returns every file, sorted, and nothing else.
pub fn list_is_sorted_and_complete<S: Storage>(s: S) {
    assert!(ok(s.list(), "list empty").is_empty());
    for name in ["zeta", "alpha.0001.seg", "alpha.meta", "Beta", "m-1-2"] {
        ok(s.append(name, b"x"), "append");
    }
    let mut expected = vec!["zeta", "alpha.0001.seg", "alpha.meta", "Beta", "m-1-2"];
    expected.sort();
    assert_eq!(ok(s.list(), "list"), expected);
}

/// `remove` deletes a file; removing again is `NotFound`.
pub fn remove_deletes<S: Storage>(s: S) {
    ok(s.append("a", b"1"), "append");
    ok(s.append("b", b"2"), "append");
    ok(s.remove("a"), "remove");
    assert!(!ok(s.exists("a"), "exists"));
    assert_eq!(ok(s.list(), "list"), vec!["b".to_string()]);
    expect_not_found(s.remove("a"), "second remove");
    // A removed name can be created again, empty.
    assert_eq!(ok(s.append("a", b"new"), "append after remove"), 3);
    assert_eq!(ok(s.read_all("a"), "read"), b"new");
}

/// Every operation on a missing file except `append`, `replace` and `exists`
/// is `NotFound`.
pub fn missing_files_are_not_found<S: Storage>(s: S) {
    expect_not_found(s.read("nope", 0, 1), "read");
    expect_not_found(s.read_all("nope"), "read_all");
    expect_not_found(s.len("nope"), "len");
    expect_not_found(s.sync("nope"), "sync");
    expect_not_found(s.truncate("nope", 0), "truncate");
    expect_not_found(s.remove("nope"), "remove");
    assert!(!ok(s.exists("nope"), "exists"));
    assert!(
        ok(s.list(), "list").is_empty(),
        "failed calls must not create files"
    );
}

/// `sync` changes nothing visible, and appends interleaved with syncs land in
/// order.
pub fn sync_keeps_data_and_appends_continue<S: Storage>(s: S) {
    let mut expected = Vec::new();
    for i in 0..20u8 {
        let chunk = vec![i; usize::from(i) * 37 + 1];
        ok(s.append("log", &chunk), "append");
        expected.extend_from_slice(&chunk);
        if i % 3 == 0 {
            ok(s.sync("log"), "sync");
        }
        assert_eq!(ok(s.len("log"), "len"), expected.len() as u64);
    }
    ok(s.sync("log"), "final sync");
    assert_eq!(ok(s.read_all("log"), "read"), expected);
}

/// Names with `/`, empty names and the reserved `.tmp` suffix are rejected.
pub fn invalid_names_are_rejected<S: Storage>(s: S) {
    for bad in ["", "a/b", ".", "..", "x.tmp"] {
        match s.append(bad, b"x") {
            Err(StorageError::InvalidName(_)) => {}
            other => panic!("conformance: name {bad:?} should be InvalidName, got {other:?}"),
        }
    }
    assert!(ok(s.list(), "list").is_empty());
}
