//! Persistent subgroups across in-process members over tcp: the persistence frontier, and
//! total restart (every member down, then back from its logs): the quorum rule, the longest
//! log, and replicas that were behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use derecho::config::{Config, Durability};
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::{Group, GroupBuilder, RpcError};
use derecho::testing::local_config;
use derecho_tests::kv::{Kv, KvReply, KvUpdate};
use derecho_tests::ports::listen_port;

/// Logs to the test's output with `RUST_LOG` set.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Where member `id` keeps its logs under `root`.
fn dir_of(root: &Path, id: u32) -> PathBuf {
    root.join(format!("n{id}"))
}

fn config(root: &Path, id: u32, contact: Option<u16>, durability: Durability) -> Config {
    let mut c = local_config(id, contact).unwrap();
    // Ports below the ephemeral range, distinct within this process (see `listen_port`).
    let d = &mut c.derecho;
    d.gms_port = listen_port().unwrap();
    d.contact_port = contact.unwrap_or(d.gms_port);
    d.sst_port = listen_port().unwrap();
    d.state_transfer_port = listen_port().unwrap();
    d.external_port = listen_port().unwrap();
    c.pers.file_path = dir_of(root, id);
    c.pers.durability = durability;
    c.pers.checkpoint_interval = 16;
    c.derecho.restart_timeout_ms = 300;
    c
}

/// One persistent shard of one to three members: a single member could form a group alone,
/// so only the restart's quorum rule keeps it from doing so after a crash.
fn policy() -> LayoutPolicy {
    LayoutPolicy {
        types: vec![TypePolicy::new(
            "Kv",
            vec![SubgroupPolicy::flexible_even(1, 1, 3)],
        )],
    }
}

fn start_one(cfg: Config) -> std::thread::JoinHandle<Result<Group, RpcError>> {
    std::thread::spawn(move || {
        GroupBuilder::new(&cfg)
            .persistent::<Kv>("Kv", |_| Kv::default())
            .layout(policy())
            .timeout(Duration::from_secs(20))
            .start()
    })
}

/// Starts `ids` (the first is the contact) with logs under `root`.
fn start(root: &Path, ids: &[u32], durability: Durability) -> Vec<Group> {
    logs();
    let lead = config(root, ids[0], None, durability);
    let contact = lead.derecho.gms_port;
    let mut handles = vec![start_one(lead)];
    for id in &ids[1..] {
        handles.push(start_one(config(root, *id, Some(contact), durability)));
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect()
}

fn put(g: &Group, key: &str) -> i64 {
    let h = g.subgroup::<Kv>(0).unwrap();
    let replies = h
        .ordered_send(&KvUpdate::Put(key.into(), key.as_bytes().to_vec()))
        .unwrap();
    let v = replies
        .await_global_persistence(Duration::from_secs(20))
        .unwrap();
    replies.wait().unwrap();
    v
}

fn state(g: &Group) -> (u64, u64) {
    g.subgroup::<Kv>(0)
        .unwrap()
        .with_local(|kv| (kv.digest, kv.applied))
        .unwrap()
}

/// Every member goes down at once, as in a power cut (no leave, no flush).
fn crash_all(groups: Vec<Group>) {
    for g in &groups {
        g.node().abort();
    }
    drop(groups);
    // The persist workers notice that their member is gone within half a second.
    std::thread::sleep(Duration::from_millis(600));
}

/// Issue #15: an update's reply map reports its version once every member has it on disk,
/// and the frontier only moves forward; a volatile type refuses persistence requests.
#[test]
fn the_persistence_frontier_covers_every_acknowledged_update() {
    let root = tempfile::tempdir().unwrap();
    let groups = start(root.path(), &[0, 1, 2], Durability::WriteBehind);
    let h = groups[1].subgroup::<Kv>(0).unwrap();
    let mut last = -1;
    for i in 0..40 {
        let v = put(&groups[i % 3], &format!("k{i}"));
        assert!(v > last, "versions increase: {v} after {last}");
        last = v;
    }
    // Another member's table catches up with the frontier the callers saw.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.global_persistence_frontier().unwrap() < last {
        assert!(
            Instant::now() < deadline,
            "node 1's frontier never reached {last}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(h.local_persisted_version().unwrap() >= last);
    let replies = h.ordered_send(&KvUpdate::Echo(4)).unwrap();
    let local = replies
        .await_local_persistence(Duration::from_secs(20))
        .unwrap();
    assert!(local > last);
    assert!(matches!(replies.wait().unwrap()[&1], Ok(KvReply::Bytes(_))));
    crash_all(groups);
}

/// Issue #15: after every member crashed, the members restart from their logs: the restart
/// view follows every view installed before, and every replica has every update.
#[test]
fn a_group_restarts_from_its_logs_after_every_member_crashed() {
    for durability in [Durability::WriteBehind, Durability::WriteAhead] {
        let root = tempfile::tempdir().unwrap();
        let groups = start(root.path(), &[0, 1, 2], durability);
        for i in 0..50 {
            put(&groups[i % 3], &format!("k{i}"));
        }
        let before = state(&groups[0]);
        let last_vid = groups.iter().map(|g| g.view().vid).max().unwrap();
        crash_all(groups);
        let groups = start(root.path(), &[0, 1, 2], durability);
        let view = groups[0].view();
        // One past the newest logged view: a crash during a view change leaves a view that
        // some member logged but nobody finished installing.
        assert!(view.vid > last_vid, "{durability:?}: {view:?}");
        for g in &groups {
            assert_eq!(state(g), before, "{durability:?}: node {}", g.my_id());
        }
        put(&groups[2], "after");
        let after: BTreeMap<u32, (u64, u64)> =
            groups.iter().map(|g| (g.my_id(), state(g))).collect();
        assert!(
            after
                .values()
                .all(|s| *s == after[&0] && s.1 == before.1 + 1),
            "{after:?}"
        );
        crash_all(groups);
    }
}

/// Issue #15, quorum rule: one member of three back from its logs waits; a second makes a
/// majority of the last view and the group restarts without the third.
#[test]
fn a_restart_waits_for_a_majority_of_the_last_view() {
    let root = tempfile::tempdir().unwrap();
    let groups = start(root.path(), &[0, 1, 2], Durability::WriteBehind);
    for i in 0..20 {
        put(&groups[0], &format!("k{i}"));
    }
    let before = state(&groups[0]);
    // Node 2 goes first: the others may still log a view without it (a crash can catch a view
    // change halfway), and a view {0, 1} needs both of them back, which this test starts.
    let mut groups = groups;
    groups.rotate_right(1);
    crash_all(groups);
    let lead = config(root.path(), 0, None, Durability::WriteBehind);
    let contact = lead.derecho.gms_port;
    let first = start_one(lead);
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_millis(1500) {
        assert!(!first.is_finished(), "one of three restarted alone");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = start_one(config(
        root.path(),
        1,
        Some(contact),
        Durability::WriteBehind,
    ));
    let groups = vec![
        first.join().unwrap().unwrap(),
        second.join().unwrap().unwrap(),
    ];
    assert_eq!(groups[0].view().ids(), vec![0, 1]);
    for g in &groups {
        assert_eq!(state(g), before);
    }
    crash_all(groups);
}

/// Issue #15, longest log: a member removed early keeps a short log; after the others went on
/// and everyone crashed, the restart gives every replica the longest log's state, the short
/// one included.
#[test]
fn a_restart_restores_every_replica_from_the_longest_log() {
    let root = tempfile::tempdir().unwrap();
    let mut groups = start(root.path(), &[0, 1, 2], Durability::WriteBehind);
    for i in 0..10 {
        put(&groups[0], &format!("early{i}"));
    }
    let behind = groups.pop().unwrap();
    behind.node().abort();
    drop(behind);
    groups[0]
        .node()
        .wait_for_view(1, Duration::from_secs(20))
        .unwrap();
    for i in 0..25 {
        put(&groups[i % 2], &format!("late{i}"));
    }
    let before = state(&groups[0]);
    crash_all(groups);
    let groups = start(root.path(), &[2, 0, 1], Durability::WriteBehind);
    for g in &groups {
        assert_eq!(state(g), before, "node {}", g.my_id());
    }
    crash_all(groups);
}
