//! Table behaviour on the deterministic sim backend: convergence, pushes to subsets, the
//! payload-before-guard discipline, failure detection and the barrier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{id_of, pattern, record_failures, NSLOTS, SLOT};
use derecho_sst::{SstConfig, Targets};

#[test]
fn counters_converge_across_three_nodes() {
    let (net, t, row) = common::sim_cluster(3, 11, SstConfig::default());
    for round in 1..=50u64 {
        for (r, s) in t.iter().enumerate() {
            s.set(row.counter, round * 10 + r as u64);
            s.set_elem(row.vec, r, -(round as i64));
            s.push(row.counter).unwrap();
            s.push_elem(row.vec, r).unwrap();
        }
        net.run_for(Duration::from_micros(3));
    }
    assert!(net.run_until(Duration::from_secs(1), &mut || {
        t.iter().all(|s| {
            (0..3).all(|r| {
                s.get(row.counter, r) == 500 + r as u64 && s.get_elem(row.vec, r, r) == -50
            })
        })
    }));
    for s in &t {
        for r in 0..3 {
            assert_eq!(s.get_elem(row.vec, r, r), -50);
        }
    }
}

#[test]
fn push_to_a_subset_and_whole_rows() {
    let (net, t, row) = common::sim_cluster(3, 12, SstConfig::default());
    t[0].set(row.counter, 7);
    t[0].push_to(row.counter, &[2]).unwrap();
    net.run_for(Duration::from_millis(1));
    assert_eq!(t[2].get(row.counter, 0), 7);
    assert_eq!(t[1].get(row.counter, 0), 0, "rank 1 was not a target");
    t[0].set(row.flag, true);
    t[0].write_bytes(row.slots, 5, b"hello").unwrap();
    t[0].push_row().unwrap();
    net.run_for(Duration::from_millis(1));
    let mut buf = [0u8; 5];
    t[1].read_bytes(row.slots, 0, 5, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert!(t[1].get(row.flag, 0));
    assert_eq!(t[1].get(row.counter, 0), 7);
    assert!(
        t[0].push_to(row.counter, &[3]).is_err(),
        "rank 3 does not exist"
    );
    assert!(t[0]
        .write_bytes(row.slots, SLOT * NSLOTS - 1, b"xy")
        .is_err());
}

/// Sends counters 1..=NSLOTS, slot c's payload in one push and the counter in another (or in
/// the wrong order when `guard_first`), and checks after every network event that each counter
/// value seen by the reader has its payload complete. Returns the first incomplete slot.
fn run_payload_then_guard(seed: u64, guard_first: bool) -> Result<u64, u64> {
    let mut config = derecho_fabric::sim::SimConfig::new(seed);
    config.jitter = Duration::from_micros(20);
    let (net, t, row) = common::sim_cluster_on(config, 2, SstConfig::default());
    let mut checked = 0u64;
    for c in 1..=NSLOTS as u64 {
        let slot = (c as usize - 1) * SLOT;
        t[0].write_bytes(row.slots, slot, &pattern(c, SLOT))
            .unwrap();
        t[0].set(row.counter, c);
        if guard_first {
            t[0].push(row.counter).unwrap();
            t[0].push_bytes(row.slots, slot, SLOT).unwrap();
        } else {
            t[0].push_bytes(row.slots, slot, SLOT).unwrap();
            t[0].push(row.counter).unwrap();
        }
        while net.step() {
            let seen = t[1].get(row.counter, 0);
            while checked < seen {
                checked += 1;
                let mut buf = vec![0u8; SLOT];
                let at = (checked as usize - 1) * SLOT;
                t[1].read_bytes(row.slots, 0, at, &mut buf).unwrap();
                if buf != pattern(checked, SLOT) {
                    return Err(checked);
                }
            }
        }
    }
    Ok(checked)
}

#[test]
fn payload_pushed_before_its_counter_is_complete_when_the_counter_is_seen() {
    for seed in 0..20 {
        assert_eq!(
            run_payload_then_guard(seed, false),
            Ok(NSLOTS as u64),
            "seed {seed}"
        );
    }
}

#[test]
fn the_payload_check_catches_a_guard_pushed_first() {
    assert_eq!(run_payload_then_guard(1, true), Err(1));
}

#[test]
fn a_silent_peer_is_frozen_after_the_completion_timeout_and_reported_once() {
    let config = SstConfig::default().with_poll_cq_timeout_ms(300);
    let (net, t, row) = common::sim_cluster(3, 14, config);
    let seen: Vec<_> = t.iter().map(|s| record_failures(s)).collect();
    assert!(t[0].heartbeat_once().is_empty());
    net.cut(id_of(0), id_of(2));
    let before = net.now();
    assert_eq!(t[0].heartbeat_once(), vec![2]);
    let waited = net.now() - before;
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(400));
    assert_eq!(t[0].frozen_ranks(), vec![2]);
    // Another round does not target the frozen row and reports nothing new.
    assert!(t[0].heartbeat_once().is_empty());
    assert_eq!(seen[0].lock().unwrap().len(), 1);
    assert_eq!(seen[0].lock().unwrap()[0].0, id_of(2));
    assert!(
        t[1].heartbeat_once().is_empty(),
        "node 1 still reaches everyone"
    );
    assert!(seen[1].lock().unwrap().is_empty());
    // A frozen row is never written again: node 2 sees none of node 0's later pushes.
    t[0].set(row.counter, 99);
    t[0].push(row.counter).unwrap();
    net.run_for(Duration::from_millis(5));
    assert_eq!(t[1].get(row.counter, 0), 99);
    assert_eq!(t[2].get(row.counter, 0), 0);
}

#[test]
fn a_crash_is_reported_once_whichever_signal_comes_first() {
    let (net, t, _row) = common::sim_cluster(3, 15, SstConfig::default());
    let seen: Vec<_> = t.iter().map(|s| record_failures(s)).collect();
    net.crash(id_of(2));
    // Both the heartbeat failure and the fabric's link failure reach node 0.
    t[0].heartbeat_once();
    net.run_for(Duration::from_millis(10));
    t[0].heartbeat_once();
    t[1].heartbeat_once();
    net.run_for(Duration::from_millis(10));
    for r in 0..2 {
        let s = seen[r].lock().unwrap();
        assert_eq!(s.len(), 1, "node {r}: {s:?}");
        assert_eq!(s[0].0, id_of(2));
        assert_eq!(t[r].frozen_ranks(), vec![2]);
    }
}

#[test]
fn report_failure_freezes_and_reports_once_and_late_upcalls_get_the_backlog() {
    let (_net, t, _row) = common::sim_cluster(3, 16, SstConfig::default());
    t[0].report_failure(id_of(1)).unwrap();
    t[0].report_failure(id_of(1)).unwrap();
    assert!(t[0].report_failure(999).is_err());
    let seen = record_failures(&t[0]);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "recorded before the upcall existed"
    );
    t[0].freeze(1, "again");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(t[0].failures().len(), 1);
    assert!(t[0].is_frozen(1) && !t[0].is_frozen(2));
}

#[test]
fn push_with_completion_returns_the_ranks_that_failed() {
    let config = SstConfig::default().with_poll_cq_timeout_ms(50);
    let (net, t, row) = common::sim_cluster(3, 17, config);
    let ok = t[0]
        .push_with_completion(row.counter, Targets::All, Duration::from_millis(50))
        .unwrap();
    assert!(ok.is_empty());
    net.cut(id_of(0), id_of(1));
    let failed = t[0]
        .push_with_completion(
            row.counter,
            Targets::Ranks(&[1, 2]),
            Duration::from_millis(50),
        )
        .unwrap();
    assert_eq!(failed, vec![1]);
    assert!(t[0].is_frozen(1));
}

#[test]
fn barrier_completes_among_live_members_and_names_the_missing() {
    let (net, t, _row) = common::sim_cluster(3, 18, SstConfig::default());
    let tickets: Vec<_> = t.iter().map(|s| s.barrier_enter().unwrap()).collect();
    assert!(net.run_until(Duration::from_secs(1), &mut || {
        t.iter()
            .zip(&tickets)
            .all(|(s, k)| s.barrier_missing(k).is_empty())
    }));
    // Second barrier: node 2 never enters.
    let k0 = t[0].barrier_enter().unwrap();
    let k1 = t[1].barrier_enter().unwrap();
    net.run_for(Duration::from_millis(10));
    assert_eq!(k0.epoch(), 2);
    assert_eq!(t[0].barrier_missing(&k0), vec![id_of(2)]);
    assert_eq!(t[1].barrier_missing(&k1), vec![id_of(2)]);
    // A member that is ahead counts as arrived for earlier barriers.
    let k2 = t[2].barrier_enter().unwrap();
    let k2b = t[2].barrier_enter().unwrap();
    net.run_for(Duration::from_millis(10));
    assert!(t[0].barrier_missing(&k0).is_empty());
    assert_eq!(t[2].barrier_missing(&k2), Vec::<u32>::new());
    assert_eq!(t[2].barrier_missing(&k2b).len(), 2);
}

#[test]
fn invalid_setups_are_refused() {
    use derecho_fabric::sim::{SimConfig, SimNet};
    use derecho_fabric::Fabric;
    use derecho_sst::{ConfigError, CoreLoop, CoreLoopConfig, Member, MembersError, Sst, SstError};
    use std::sync::Arc;

    let net = SimNet::new(SimConfig::new(19));
    let f: Arc<dyn Fabric> = net.add_node(id_of(0));
    let (schema, row) = common::schema();
    let m = |r: usize| Member::new(id_of(r), common::nowhere());
    let prepare = |members: &[Member], rank: usize, config: SstConfig, region: u64| {
        Sst::prepare(
            Arc::clone(&f),
            members,
            rank,
            schema.clone(),
            derecho_fabric::RegionId(region),
            config,
        )
    };
    let bad_heartbeat = SstConfig::default().with_heartbeat_ms(0);
    assert!(matches!(
        prepare(&[m(0)], 0, bad_heartbeat, 1),
        Err(SstError::Config(ConfigError::Heartbeat(_)))
    ));
    assert!(matches!(
        prepare(&[m(0), m(0)], 0, SstConfig::default(), 2),
        Err(SstError::Members(MembersError::Duplicate { node })) if node == id_of(0)
    ));
    assert!(matches!(
        prepare(&[m(1), m(0)], 0, SstConfig::default(), 3),
        Err(SstError::Members(MembersError::NotThisNode { rank: 0, .. })),
    ));
    assert!(matches!(
        prepare(&[m(0)], 1, SstConfig::default(), 4),
        Err(SstError::BadRank { .. })
    ));
    assert!(matches!(
        prepare(&[], 0, SstConfig::default(), 5),
        Err(SstError::Members(MembersError::Count { count: 0 }))
    ));
    // Not connected yet: pushes and barriers are refused, heartbeats do nothing.
    let sst = prepare(&[m(0), m(1)], 0, SstConfig::default(), 6).unwrap();
    assert!(matches!(sst.push(row.counter), Err(SstError::NotConnected)));
    assert!(matches!(sst.barrier_enter(), Err(SstError::NotConnected)));
    assert!(sst.heartbeat_once().is_empty());
    let no_park = CoreLoopConfig::default().with_park_timeout(Duration::ZERO);
    assert!(matches!(
        CoreLoop::start(Arc::clone(&sst), no_park),
        Err(SstError::Config(ConfigError::ParkTimeout(Duration::ZERO)))
    ));
    // The region ids are free again once a table is dropped.
    drop(sst);
    assert!(prepare(&[m(0)], 0, SstConfig::default(), 6).is_ok());
}

#[test]
#[should_panic(expected = "is live")]
fn a_live_row_cannot_be_reset() {
    let (_net, t, _row) = common::sim_cluster(2, 14, SstConfig::default());
    let _ = t[0].reset_row_to_mine(1);
}
