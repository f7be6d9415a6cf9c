//! Failures end a view and the survivors continue in the next one, with virtual synchrony
//! (in-process members over tcp; every run checked by the checker).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use derecho::config::Config;
use derecho::gms::LayoutFn;
use derecho::layout::{LayoutError, SubgroupId};
use derecho::multicast::{Mode, ShardSpec, SubgroupSpec};
use derecho::node::{GroupError, GroupNode, StopReason};
use derecho_tests::checker::{digest, Checker, Event, MemberLog, MessageId};
use derecho_tests::cluster::test_sizes;
use derecho_tests::ports::listen_port;

fn config(id: u32, contact: u16, gms: u16) -> Config {
    let mut c = Config::default();
    c.derecho.local_id = id;
    c.derecho.contact_port = contact;
    c.derecho.gms_port = gms;
    c.derecho.sst_port = listen_port().unwrap();
    c.derecho.state_transfer_port = listen_port().unwrap();
    c.derecho.heartbeat_ms = 50;
    c.derecho.sst_poll_cq_timeout_ms = 1000;
    c
}

/// The first view needs `first` members; later views take whoever survives (at least 2).
fn layout(first: usize) -> LayoutFn {
    layout_min(first, 2)
}

/// The first view needs `first` members, later views `later`.
fn layout_min(first: usize, later: usize) -> LayoutFn {
    Arc::new(move |ids: &[u32], previous| {
        let need = if previous.is_none() { first } else { later };
        if ids.len() < need {
            return Err(LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: ids.len(),
                need,
            });
        }
        Ok(vec![SubgroupSpec {
            shards: vec![ShardSpec {
                members: ids.to_vec(),
                senders: ids.to_vec(),
                mode: Mode::Ordered,
                sizes: test_sizes(8),
            }],
        }])
    })
}

struct Member {
    node: Arc<GroupNode>,
    log: Arc<Mutex<MemberLog>>,
}

fn start(n: usize) -> Vec<Member> {
    start_at(listen_port().unwrap(), n, 0..n as u32)
}

/// Starts members `ids` of a group whose contact (node 0) listens on `contact` and whose first
/// view needs `first` members.
fn start_at(contact: u16, first: usize, ids: std::ops::Range<u32>) -> Vec<Member> {
    start_with_layout(contact, ids, move || layout(first))
}

fn start_with_layout(
    contact: u16,
    ids: std::ops::Range<u32>,
    layout: impl Fn() -> LayoutFn + Send + Sync + Clone + 'static,
) -> Vec<Member> {
    let handles: Vec<_> = ids
        .map(|id| {
            let cfg = config(
                id,
                contact,
                if id == 0 {
                    contact
                } else {
                    listen_port().unwrap()
                },
            );
            let layout = layout.clone();
            std::thread::spawn(move || start_member(&cfg, layout()))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Starts one member from `cfg`, recording its views and deliveries.
fn start_member(cfg: &Config, layout: LayoutFn) -> Member {
    let id = cfg.derecho.local_id;
    let log = Arc::new(Mutex::new(MemberLog::new(id)));
    let (l1, l2) = (Arc::clone(&log), Arc::clone(&log));
    let node = GroupNode::start_with(
        cfg,
        layout,
        Box::new(move |d| {
            l1.lock().unwrap().events.push(Event::Delivered {
                subgroup: d.subgroup as u32,
                shard: d.shard as u32,
                id: MessageId::read(d.payload).unwrap(),
                digest: digest(d.payload),
                seq: d.seq,
                stable: d.stable,
            });
        }),
        Some(Box::new(move |v| {
            l2.lock().unwrap().events.push(Event::View {
                vid: v.vid,
                members: v.ids(),
            });
        })),
    )
    .unwrap();
    Member {
        node: Arc::new(node),
        log,
    }
}

/// Sets the stop flag when dropped, so that streaming threads end even when an assertion of
/// the test body fails inside a thread scope (which would otherwise wait for them forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Streams from every member on threads of scope `s` until `stop` (see [`stream`]).
fn stream_all<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    members: &'scope [Member],
    stop: &'scope AtomicBool,
) {
    for m in members {
        s.spawn(move || stream(m, stop));
    }
}

/// Asserts that `members` run but offer the application no view (theirs is inadequate).
fn assert_waiting(members: &[Member]) {
    for m in members {
        assert!(
            m.node.stopped().is_none(),
            "node {} stopped: {:?}",
            m.node.id(),
            m.node.stopped()
        );
        assert!(
            matches!(m.node.multicast(), Err(GroupError::Inadequate(_))),
            "node {}: an inadequate view was offered to the application",
            m.node.id()
        );
    }
}

/// Streams messages from `m` until `stop`; a member that leaves the group stops sending.
fn stream(m: &Member, stop: &AtomicBool) {
    let id = m.node.id();
    let mut serial = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let len = if serial % 5 == 4 {
            3000
        } else {
            64 + (serial % 200) as usize
        };
        let mut payload = vec![(serial as u8) ^ (id as u8); len];
        let mid = MessageId { sender: id, serial };
        mid.stamp(&mut payload);
        m.log.lock().unwrap().events.push(Event::Sent {
            subgroup: 0,
            shard: 0,
            id: mid,
            digest: digest(&payload),
        });
        match m.node.send(0, &payload, Duration::from_secs(20)) {
            Ok(_) => serial += 1,
            Err(GroupError::Stopped(_)) => return,
            Err(e) => panic!("node {id}, message {serial}: {e:?}"),
        }
        if serial.is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn delivered(m: &Member) -> usize {
    m.log
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count()
}

fn sent(m: &Member) -> usize {
    m.log
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| matches!(e, Event::Sent { .. }))
        .count()
}

fn kill_one_and_continue(victim: usize) {
    let members = start(4);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        stream_all(s, &members, &stop);
        std::thread::sleep(Duration::from_millis(300));
        // Abrupt stop: links close without a graceful leave.
        members[victim].node.abort();
        let victim_fabric_down = Instant::now();
        for (i, m) in members.iter().enumerate() {
            if i != victim {
                let v = m
                    .node
                    .wait_for_view(1, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("node {i}: {e}"));
                assert_eq!(v.members.len(), 3);
                assert!(v.rank_of(victim as u32).is_none());
            }
        }
        eprintln!(
            "view 1 installed {:?} after the stop",
            victim_fabric_down.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    // Let the survivors drain, then compare.
    let survivors: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, m)| m)
        .collect();
    let drain = Instant::now();
    let deadline = drain + Duration::from_secs(10);
    // Until every survivor has delivered every message a survivor sent (or the deadline).
    let sent_by_survivors: usize = survivors.iter().map(|m| sent(m)).sum();
    let from_survivors = |m: &Member| {
        m.log
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { id, .. } if id.sender != victim as u32))
            .count()
    };
    loop {
        let counts: Vec<usize> = survivors.iter().map(|m| delivered(m)).collect();
        let complete = survivors
            .iter()
            .all(|m| from_survivors(m) >= sent_by_survivors);
        if (complete && counts.windows(2).all(|w| w[0] == w[1])) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("survivors agreed after {:?}", drain.elapsed());
    let logs: Vec<MemberLog> = members
        .iter()
        .map(|m| m.log.lock().unwrap().clone())
        .collect();
    // Every survivor's messages reach every survivor, each sender's in the order sent: the
    // messages the trim left undelivered go again before anything newer.
    let stayed = (0..members.len() as u32)
        .filter(|i| *i != victim as u32)
        .collect();
    let report = Checker::new()
        .expect_sender_fifo()
        .complete_for(stayed, [victim as u32].into())
        .check(&logs);
    assert!(report.ok(), "{report}");
    assert!(report.views >= 2, "{report}");
    let after: Vec<usize> = survivors.iter().map(|m| delivered(m)).collect();
    let sent: Vec<usize> = survivors.iter().map(|m| sent(m)).collect();
    assert!(
        after.windows(2).all(|w| w[0] == w[1]),
        "survivors delivered {after:?} (sent {sent:?})"
    );
    for (i, m) in members.into_iter().enumerate() {
        let t = Instant::now();
        drop(m);
        eprintln!("member {i} torn down in {:?}", t.elapsed());
    }
}

#[test]
fn a_failed_member_is_removed_and_the_survivors_continue() {
    kill_one_and_continue(2);
}

#[test]
fn a_failed_leader_is_replaced_by_the_next_rank() {
    kill_one_and_continue(0);
}

#[test]
fn the_last_rank_failing_works_too() {
    kill_one_and_continue(3);
}

#[test]
fn a_member_that_leaves_gracefully_is_removed_and_two_survivors_continue() {
    // Three members; one leaves: with partition safety on, the two others must continue,
    // because a departure is not a failure.
    let members = start(3);
    let stop = AtomicBool::new(false);
    let leaver = Arc::clone(&members[1].node);
    std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        for m in [&members[0], &members[2]] {
            let stop = &stop;
            s.spawn(move || stream(m, stop));
        }
        std::thread::sleep(Duration::from_millis(300));
        leaver.leave(Duration::from_secs(5)).unwrap();
        for i in [0, 2] {
            let v = members[i]
                .node
                .wait_for_view(1, Duration::from_secs(20))
                .unwrap();
            let mut ids = v.ids();
            ids.sort_unstable();
            assert_eq!(ids, vec![0, 2]);
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(300));
    let logs: Vec<MemberLog> = members
        .iter()
        .map(|m| m.log.lock().unwrap().clone())
        .collect();
    let report = Checker::new().check(&logs);
    assert!(report.ok(), "{report}");
    assert!(members[0].node.stopped().is_none() && members[2].node.stopped().is_none());
}

#[test]
fn a_member_reported_failed_by_the_application_is_removed_and_stops() {
    let members = start(4);
    members[0].node.report_failure(3).unwrap();
    for m in &members[..3] {
        let v = m.node.wait_for_view(1, Duration::from_secs(20)).unwrap();
        let mut ids = v.ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2]);
    }
    // Node 3 learns it is suspected and stops, saying why.
    let deadline = Instant::now() + Duration::from_secs(20);
    while members[3].node.stopped().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let why = members[3].node.stopped();
    assert!(
        matches!(
            why,
            Some(StopReason::Evicted | StopReason::Removed | StopReason::Partitioned { .. })
        ),
        "node 3: {why:?}"
    );
}

#[test]
fn nodes_join_a_running_group_one_then_two_at_once() {
    let contact = listen_port().unwrap();
    let members = start_at(contact, 3, 0..3);
    let stop = AtomicBool::new(false);
    let mut joiners = Vec::new();
    std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        stream_all(s, &members, &stop);
        std::thread::sleep(Duration::from_millis(200));
        // One joiner (asking a non-leader would be redirected; node 0 leads).
        let one = start_at(contact, 3, 3..4);
        let v = one[0].node.view();
        // Ranks follow join order; the joiner comes last.
        assert_eq!(v.ids().last(), Some(&3));
        let mut ids = v.ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        assert_eq!(v.joined, vec![3]);
        for m in &members {
            let got = m
                .node
                .wait_for_view(v.vid, Duration::from_secs(20))
                .unwrap();
            assert_eq!(got.ids(), v.ids());
        }
        std::thread::sleep(Duration::from_millis(200));
        // Two at once: they may arrive in one view change or two; both get in.
        let two = start_at(contact, 3, 4..6);
        let last = two.iter().map(|m| m.node.view().vid).max().unwrap();
        for m in members.iter().chain(&one).chain(&two) {
            let got = m.node.wait_for_view(last, Duration::from_secs(20)).unwrap();
            let mut ids = got.ids();
            ids.sort_unstable();
            assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        joiners.extend(one);
        joiners.extend(two);
    });
    let members: Vec<Member> = members.into_iter().chain(joiners).collect();
    // Let everyone drain, then compare.
    std::thread::sleep(Duration::from_millis(500));
    let logs: Vec<MemberLog> = members
        .iter()
        .map(|m| m.log.lock().unwrap().clone())
        .collect();
    let report = Checker::new().check(&logs);
    assert!(report.ok(), "{report}");
    assert!(report.views >= 3, "{report}");
    for m in &members {
        assert!(m.node.stopped().is_none(), "node {} stopped", m.node.id());
    }
}

#[test]
fn survivors_too_few_for_the_layout_wait_for_a_joiner_and_lose_nothing() {
    // Every view needs three members: after a failure the two survivors wait (no view, their
    // undelivered messages kept), and continue when a third node joins.
    let contact = listen_port().unwrap();
    let need3 = || layout_min(3, 3);
    let members = start_with_layout(contact, 0..3, need3);
    let stop = AtomicBool::new(false);
    let mut joiner = Vec::new();
    std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        stream_all(s, &members, &stop);
        std::thread::sleep(Duration::from_millis(300));
        members[2].node.abort();
        // Nothing can be installed yet.
        std::thread::sleep(Duration::from_millis(500));
        assert_waiting(&members[..2]);
        joiner = start_with_layout(contact, 3..4, need3);
        let v = joiner[0].node.view();
        let mut ids = v.ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 3]);
        for m in &members[..2] {
            m.node
                .wait_for_view(v.vid, Duration::from_secs(20))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(500));
    let logs: Vec<MemberLog> = members
        .iter()
        .chain(&joiner)
        .map(|m| m.log.lock().unwrap().clone())
        .collect();
    let report = Checker::new().check(&logs);
    assert!(report.ok(), "{report}");
}

/// Issue #14: shutting a member down (or dropping it) used to look like a crash to the others,
/// so the survivor of a 2-member group stopped as a minority. It is a graceful leave now.
#[test]
fn a_member_shut_down_leaves_and_the_last_member_goes_on() {
    for drop_it in [false, true] {
        let contact = listen_port().unwrap();
        let mut members = start_with_layout(contact, 0..2, || layout_min(2, 1));
        let leaver = members.pop().unwrap();
        let node = Arc::try_unwrap(leaver.node).unwrap_or_else(|_| panic!("node shared"));
        if drop_it {
            drop(node);
        } else {
            node.shutdown();
        }
        let v = members[0]
            .node
            .wait_for_view(1, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("drop={drop_it}: the survivor: {e}"));
        assert_eq!(v.ids(), vec![0], "drop={drop_it}");
        assert!(members[0].node.stopped().is_none(), "drop={drop_it}");
    }
}

/// Issue #14, hole 6: members whose next view the layout could not provision used to wait
/// outside any view, where nothing detected failures and only the first survivor could admit
/// joiners. When that survivor failed too, the others waited forever and joiners were sent to
/// a dead leader. The survivors now install the inadequate view, with failure detection: the
/// leader's failure is another view change, and the new leader admits the joiners.
#[test]
fn waiting_members_replace_a_failed_leader_and_admit_joiners_through_the_new_one() {
    let contact = listen_port().unwrap();
    let need4 = || layout_min(4, 4);
    let members = start_with_layout(contact, 0..4, need4);
    let stop = AtomicBool::new(false);
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        stream_all(s, &members, &stop);
        std::thread::sleep(Duration::from_millis(300));
        members[3].node.abort();
        // Three cannot provision the shard; then the leader of the three fails as well.
        std::thread::sleep(Duration::from_millis(500));
        members[0].node.abort();
        std::thread::sleep(Duration::from_millis(500));
        assert_waiting(&members[1..3]);
        // Two nodes join through a survivor (the old contact is dead). Started on their own
        // thread: on the old code they are sent to the dead leader and never return.
        let view = members[1].node.view();
        let via = view.members[view.rank_of(1).unwrap()].gms_port;
        std::thread::spawn(move || {
            let _ = joined_tx.send(start_with_layout(via, 4..6, need4));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let adequate = |m: &Member| m.node.multicast().is_ok() && m.node.view().members.len() == 4;
        while !members[1..3].iter().all(adequate) {
            assert!(
                Instant::now() < deadline,
                "no adequate view with the joiners within 30 s: node 1 is in view {} {:?}",
                members[1].node.view().vid,
                members[1].node.view().ids()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut ids = members[1].node.view().ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 4, 5]);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let joiners = joined_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the joiners started");
    std::thread::sleep(Duration::from_millis(500));
    let logs: Vec<MemberLog> = members
        .iter()
        .chain(&joiners)
        .map(|m| m.log.lock().unwrap().clone())
        .collect();
    let report = Checker::new()
        .expect_sender_fifo()
        .complete_for([1, 2, 4, 5].into(), [0, 3].into())
        .check(&logs);
    assert!(report.ok(), "{report}");
}

/// Issue #14, hole 6: a contact node that crashed and restarted founded a new group (view 0)
/// beside the one that went on without it. Told of another node of the group
/// (`restart_leaders`), it now finds the group running and rejoins it.
#[test]
fn a_restarted_contact_node_rejoins_its_group_instead_of_founding_another() {
    let contact = listen_port().unwrap();
    let mut members = start_with_layout(contact, 0..3, || layout_min(3, 2));
    members.sort_by_key(|m| m.node.id());
    let first = members.remove(0);
    first.node.abort();
    drop(first);
    for m in &members {
        let v = m.node.wait_for_view(1, Duration::from_secs(20)).unwrap();
        let mut ids = v.ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
    }
    let view = members[0].node.view();
    let peer = view.members[view.rank_of(1).unwrap()].gms_port;
    let mut cfg = config(0, contact, contact);
    cfg.derecho.restart_leaders = vec![cfg.derecho.local_ip; 2];
    cfg.derecho.restart_leader_ports = vec![contact, peer];
    // On its own thread: on the old code the node founds a group that needs three members and
    // waits for joiners forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(start_member(&cfg, layout_min(3, 2)));
    });
    let restarted = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the restarted contact node did not join within 30 s");
    let v = restarted.node.view();
    assert!(v.vid >= 2, "it founded view {}", v.vid);
    let mut ids = v.ids();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2]);
    for m in &members {
        assert_eq!(
            m.node
                .wait_for_view(v.vid, Duration::from_secs(20))
                .unwrap()
                .ids(),
            v.ids()
        );
    }
}
