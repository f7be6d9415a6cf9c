//! Persistent subgroups across in-process members over tcp: the persistence frontier, and
//! total restart (every member down, then back from its logs): the quorum rule, the longest
//! log, and replicas that were behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use derecho::config::{Config, Durability};
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::persist::{field_name, Log, LogOptions, SimStorage, Storage, INVALID};
use derecho::rpc::{Group, GroupBuilder, PersistenceError, StartError};
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

fn start_one(cfg: Config) -> std::thread::JoinHandle<Result<Group, StartError>> {
    start_on(cfg, None)
}

/// Starts a member whose logs are on `disk` (a simulated disk) rather than in its folder.
fn start_on(
    cfg: Config,
    disk: Option<Arc<SimStorage>>,
) -> std::thread::JoinHandle<Result<Group, StartError>> {
    std::thread::spawn(move || {
        let mut b = GroupBuilder::new(&cfg);
        if let Some(d) = disk {
            b = b.storage(d);
        }
        b.persistent::<Kv>("Kv", |_| Kv::default())
            .layout(policy())
            .timeout(Duration::from_secs(20))
            .start()
    })
}

/// Starts members 0..disks.len() (0 is the contact), member i on `disks[i]`.
fn start_on_disks(root: &Path, disks: &[Arc<SimStorage>]) -> Vec<Group> {
    start_on_disks_with(root, disks, |_| {})
}

/// [`start_on_disks`] with every member's config changed by `edit` first.
fn start_on_disks_with(
    root: &Path,
    disks: &[Arc<SimStorage>],
    edit: impl Fn(&mut Config),
) -> Vec<Group> {
    logs();
    let mut lead = config(root, 0, None, Durability::WriteBehind);
    edit(&mut lead);
    let contact = lead.derecho.gms_port;
    let mut handles = vec![start_on(lead, Some(Arc::clone(&disks[0])))];
    for (i, d) in disks.iter().enumerate().skip(1) {
        let mut cfg = config(root, i as u32, Some(contact), Durability::WriteBehind);
        edit(&mut cfg);
        handles.push(start_on(cfg, Some(Arc::clone(d))));
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect()
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

/// Configurations for `ids` (the first is the contact) whose restart leaders are `leaders`
/// (indices into `ids`, in priority order), with backup restart leaders on.
fn with_backup_leaders(root: &Path, ids: &[u32], leaders: &[usize]) -> Vec<Config> {
    let first = config(root, ids[0], None, Durability::WriteBehind);
    let contact = first.derecho.gms_port;
    let mut cfgs = vec![first];
    for id in &ids[1..] {
        cfgs.push(config(root, *id, Some(contact), Durability::WriteBehind));
    }
    let ports: Vec<u16> = leaders.iter().map(|&i| cfgs[i].derecho.gms_port).collect();
    for c in &mut cfgs {
        c.derecho.restart_leaders = vec![std::net::Ipv4Addr::LOCALHOST.into(); ports.len()];
        c.derecho.restart_leader_ports = ports.clone();
        c.derecho.enable_backup_restart_leaders = true;
    }
    cfgs
}

/// With backup restart leaders, a restart goes on without the first restart leader: the
/// second takes over after its grace period, a node that is no leader finds it, and the first
/// leader, started later, joins the restarted group instead of founding another.
#[test]
fn a_backup_restart_leader_takes_over_when_the_first_is_gone() {
    logs();
    let root = tempfile::tempdir().unwrap();
    let cfgs = with_backup_leaders(root.path(), &[0, 1, 2], &[0, 1]);
    let handles: Vec<_> = cfgs.into_iter().map(start_one).collect();
    let groups: Vec<Group> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    for i in 0..12 {
        put(&groups[i % 3], &format!("k{i}"));
    }
    let before = state(&groups[0]);
    crash_all(groups);
    // Node 0, the first restart leader, stays down; fresh ports, the same logs.
    let mut cfgs = with_backup_leaders(root.path(), &[0, 1, 2], &[0, 1]);
    let first = cfgs.remove(0);
    let started = Instant::now();
    let handles: Vec<_> = cfgs.into_iter().map(start_one).collect();
    let mut groups: Vec<Group> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(started.elapsed() < Duration::from_secs(15));
    let vid = groups[0].view().vid;
    assert!(vid > 0, "a restart view comes after the logged ones");
    for g in &groups {
        assert_eq!(g.view().ids().len(), 2, "{:?}", g.view().ids());
        assert_eq!(state(g), before, "node {}", g.my_id());
    }
    // The first leader comes back and joins the group its backup restarted.
    let back = start_one(first).join().unwrap().unwrap();
    assert!(back.view().vid > vid, "{:?}", back.view());
    assert_eq!(state(&back), before);
    groups.push(back);
    put(&groups[2], "after");
    crash_all(groups);
}

/// Every ragged trim is on each survivor's disk before the view it ends is followed by the
/// next: the same trim on every survivor, covering what each sender had delivered.
#[test]
fn every_survivor_logs_the_same_ragged_trim_before_the_next_view() {
    let root = tempfile::tempdir().unwrap();
    let disks: Vec<Arc<SimStorage>> = (0..3).map(|_| Arc::new(SimStorage::new())).collect();
    let mut groups = start_on_disks(root.path(), &disks);
    let first = groups[0].view().vid;
    for i in 0..10 {
        put(&groups[0], &format!("a{i}"));
    }
    for i in 0..5 {
        put(&groups[1], &format!("b{i}"));
    }
    let gone = groups.pop().unwrap();
    gone.node().abort();
    drop(gone);
    for g in &groups {
        g.node()
            .wait_for_view(first + 1, Duration::from_secs(20))
            .unwrap();
    }
    let trims_of = |d: &Arc<SimStorage>| {
        let storage: Arc<dyn derecho::persist::Storage> = d.clone();
        derecho::rpc::logged_trims(&storage).unwrap()
    };
    let (t0, t1) = (trims_of(&disks[0]), trims_of(&disks[1]));
    let ended = |t: &[(u64, BTreeMap<usize, Vec<i64>>)]| {
        t.iter()
            .find(|(vid, _)| *vid == first)
            .map(|(_, trim)| trim.clone())
            .unwrap_or_else(|| panic!("no trim of view {first} in {t:?}"))
    };
    let trim = ended(&t0);
    assert_eq!(trim, ended(&t1), "the survivors logged different trims");
    // Views are logged in order, once each.
    assert!(t0.windows(2).all(|w| w[0].0 < w[1].0), "{t0:?}");
    // Three senders in the one subgroup; node 0's ten updates and node 1's five are covered
    // (indices count from 0).
    let mut last = trim.get(&0).cloned().unwrap_or_default();
    last.sort_unstable();
    assert_eq!(last.len(), 3, "{trim:?}");
    assert!(last[2] >= 9 && last[1] >= 4, "{trim:?}");
    crash_all(groups);
}

/// Issue #15, durability: every member's disk loses or tears what it had not synced when
/// everyone crashed (simulated disks, several seeds). After the restart every replica holds
/// the same prefix of the update history, and that prefix covers every update whose global
/// persistence was reported.
#[test]
fn a_crash_that_loses_unsynced_writes_keeps_every_globally_persisted_update() {
    let root = tempfile::tempdir().unwrap();
    for seed in 1..=4u64 {
        let disks: Vec<Arc<SimStorage>> = (0..3).map(|_| Arc::new(SimStorage::new())).collect();
        let groups = start_on_disks(root.path(), &disks);
        let h = groups[0].subgroup::<Kv>(0).unwrap();
        let mut sent = Vec::new();
        let mut durable = 0;
        for i in 0..60 {
            let u = KvUpdate::Put(format!("k{}", i % 13), vec![i as u8; 100]);
            let replies = h.ordered_send(&u).unwrap();
            sent.push(u);
            if i == 39 {
                replies
                    .await_global_persistence(Duration::from_secs(20))
                    .unwrap();
                durable = sent.len();
            }
            replies.wait().unwrap();
        }
        crash_all(groups);
        for (i, d) in disks.iter().enumerate() {
            d.crash(seed * 10 + i as u64);
        }
        let groups = start_on_disks(root.path(), &disks);
        let states: Vec<(u64, u64)> = groups.iter().map(state).collect();
        assert!(
            states.iter().all(|s| *s == states[0]),
            "seed {seed}: {states:?}"
        );
        let applied = states[0].1 as usize;
        assert!(
            (durable..=sent.len()).contains(&applied),
            "seed {seed}: {applied} updates restored, {durable} were globally persisted"
        );
        // The restored state is exactly the first `applied` updates.
        let mut expected = Kv::default();
        for u in &sent[..applied] {
            derecho::Replicated::apply(&mut expected, u.clone());
        }
        assert_eq!(
            states[0],
            (expected.digest, expected.applied),
            "seed {seed}"
        );
        crash_all(groups);
    }
}

/// Issue #15, bounded disk: when a member's disk is full its log fails with a typed error;
/// the updates are still applied and answered everywhere, only the persistence frontier stops
/// (and stays stopped: a small update that would still fit after the failed ones must not
/// make the log claim a version whose predecessors are missing).
#[test]
fn a_full_disk_stops_the_frontier_not_the_group() {
    let root = tempfile::tempdir().unwrap();
    let disks: Vec<Arc<SimStorage>> = vec![
        Arc::new(SimStorage::new()),
        Arc::new(SimStorage::with_capacity(16 << 10)),
        Arc::new(SimStorage::new()),
    ];
    let groups = start_on_disks(root.path(), &disks);
    let h = groups[0].subgroup::<Kv>(0).unwrap();
    let mut last = None;
    for i in 0..80u8 {
        let replies = h
            .ordered_send(&KvUpdate::Put(format!("k{i}"), vec![i; 512]))
            .unwrap();
        let answers = replies.wait().unwrap();
        assert_eq!(answers.len(), 3);
        assert!(answers.values().all(Result::is_ok), "{answers:?}");
        last = Some(i);
    }
    assert_eq!(last, Some(79));
    let replies = h.ordered_send(&KvUpdate::Echo(1)).unwrap();
    let got = replies.await_global_persistence(Duration::from_millis(500));
    assert!(
        matches!(got, Err(PersistenceError::Timeout(_))),
        "{got:?} in {:?}",
        groups[0].view().ids()
    );
    replies
        .await_local_persistence(Duration::from_secs(10))
        .unwrap();
    let states: Vec<(u64, u64)> = groups.iter().map(state).collect();
    assert!(states.iter().all(|s| *s == states[0]), "{states:?}");
    assert_eq!(states[0].1, 80, "the 80 puts (an echo changes nothing)");
    crash_all(groups);
}

/// The update and checkpoint logs of the one `Kv` replica on `disk`, opened read-only.
fn replica_logs(disk: &Arc<SimStorage>) -> Vec<Log> {
    let ro = LogOptions {
        read_only: true,
        ..LogOptions::default()
    };
    ["updates", "checkpoints"]
        .iter()
        .map(|f| {
            let storage: Arc<dyn Storage> = disk.clone();
            Log::open(storage, &field_name("Kv", 0, 0, f), ro.clone()).unwrap()
        })
        .collect()
}

/// Issue #15, item 7: with `[PERS] signed_logs`, every member signs its replica's update and
/// checkpoint logs with the group's key. Every log verifies with the public key up to its
/// newest entry (checkpoint trims included), the members' signatures of one version agree byte
/// for byte, and the chains go on verifying after a total restart. A member whose key file is
/// missing does not start.
#[test]
fn signed_replica_logs_verify_agree_and_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("group-key.pem");
    let public = derecho::persist::generate_signing_key(&key).unwrap();
    let signed = |c: &mut Config| {
        c.pers.signed_logs = true;
        c.pers.private_key_file = key.clone();
    };
    let disks: Vec<Arc<SimStorage>> = (0..3).map(|_| Arc::new(SimStorage::new())).collect();
    let groups = start_on_disks_with(root.path(), &disks, signed);
    for i in 0..40 {
        put(&groups[0], &format!("k{i}"));
    }
    crash_all(groups);
    let mut newest = Vec::new();
    for disk in &disks {
        let logs = replica_logs(disk);
        for log in &logs {
            let last = log
                .infos(INVALID, i64::MAX)
                .last()
                .map_or(INVALID, |e| e.version);
            assert_eq!(log.verify(&public).unwrap(), last, "{}", log.name());
        }
        assert!(logs[1]
            .signature(logs[1].earliest_version())
            .unwrap()
            .is_some());
        newest.push(logs[0].latest_version());
    }
    // Every acknowledged update was persisted everywhere: the members share a signed version.
    let common = *newest.iter().min().unwrap();
    assert!(common >= 0);
    let sigs: Vec<_> = disks
        .iter()
        .map(|d| replica_logs(d)[0].signature(common).unwrap().unwrap())
        .collect();
    assert!(sigs.iter().all(|s| *s == sigs[0]), "{sigs:?}");

    let groups = start_on_disks_with(root.path(), &disks, signed);
    for i in 40..50 {
        put(&groups[0], &format!("k{i}"));
    }
    crash_all(groups);
    for disk in &disks {
        for log in replica_logs(disk) {
            let last = log
                .infos(INVALID, i64::MAX)
                .last()
                .map_or(INVALID, |e| e.version);
            assert_eq!(log.verify(&public).unwrap(), last, "{}", log.name());
        }
        assert!(replica_logs(disk)[0].latest_version() > common);
    }

    // Another key does not verify them.
    let other = root.path().join("other-key.pem");
    let other = derecho::persist::generate_signing_key(&other).unwrap();
    assert!(replica_logs(&disks[0])[0].verify(&other).is_err());

    let mut cfg = config(root.path(), 5, None, Durability::WriteBehind);
    cfg.pers.signed_logs = true;
    cfg.pers.private_key_file = root.path().join("missing.pem");
    match start_on(cfg, Some(Arc::new(SimStorage::new())))
        .join()
        .unwrap()
    {
        Err(StartError::Config(e)) => assert!(e.to_string().contains("missing.pem"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started without its signing key"),
    }
}
