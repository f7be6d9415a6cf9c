//! The transfer engine under the deterministic sim backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{payload, Collect};
use derecho_fabric::sim::{SimConfig, SimNet};
use derecho_fabric::Fabric;
use derecho_rdmc::schedule::Algorithm;
use derecho_rdmc::{GroupSpec, GroupSpecError, RdmcError, RdmcGroup, MAX_GROUP_ID};

struct Cluster {
    net: Arc<SimNet>,
    groups: Vec<RdmcGroup>,
    handlers: Vec<Arc<Collect>>,
}

fn cluster(
    seed: u64,
    n: usize,
    alg: Algorithm,
    block: usize,
    max: usize,
    window: usize,
) -> Cluster {
    let net = SimNet::new(SimConfig::new(seed));
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let members: Vec<(u32, SocketAddr)> = (0..n as u32).map(|i| (i + 10, addr)).collect();
    let handlers: Vec<Arc<Collect>> = (0..n).map(|_| Arc::new(Collect::default())).collect();
    let prepared: Vec<_> = (0..n)
        .map(|rank| {
            let fabric = net.add_node(members[rank].0) as Arc<dyn Fabric>;
            let mut spec = GroupSpec::new(7, members.clone(), rank, block, max, window);
            spec.algorithm = alg;
            RdmcGroup::prepare(fabric, spec, handlers[rank].clone()).unwrap()
        })
        .collect();
    let groups = prepared.into_iter().map(|p| p.connect().unwrap()).collect();
    Cluster {
        net,
        groups,
        handlers,
    }
}

/// Sends `sizes` from rank 0 and drives the simulation until every member has them all.
fn transfer(c: &Cluster, sizes: &[usize]) {
    let mut next = 0;
    for _ in 0..50_000_000u64 {
        while next < sizes.len() {
            match c.groups[0]
                .try_send(&payload(next as u64, sizes[next]))
                .unwrap()
            {
                Some(seq) => {
                    assert_eq!(seq, next as u64);
                    next += 1;
                }
                None => break,
            }
        }
        let mut progress = false;
        for g in &c.groups {
            progress |= g.poll().unwrap();
        }
        if c.handlers.iter().all(|h| h.count() == sizes.len()) {
            for (i, h) in c.handlers.iter().enumerate() {
                h.verify(i, sizes);
            }
            return;
        }
        if !progress && !c.net.step() {
            panic!("transfer stuck: nothing to poll and no event queued");
        }
    }
    panic!("transfer did not finish within the step bound");
}

const BLOCK: usize = 4096;

#[test]
fn edge_sizes_reach_every_member_with_every_algorithm() {
    let sizes = [1, BLOCK, BLOCK + 1, 0, 3 * BLOCK - 1, 10 * BLOCK];
    for alg in Algorithm::ALL {
        for n in 1..=4 {
            let c = cluster(n as u64, n, alg, BLOCK, 16 * BLOCK, 3);
            transfer(&c, &sizes);
        }
    }
}

#[test]
fn a_large_message_to_three_receivers() {
    // 100 MiB in 1 MiB blocks, as the demo's categorizer profile moves models.
    let c = cluster(42, 4, Algorithm::Binomial, 1 << 20, 100 << 20, 1);
    transfer(&c, &[100 << 20]);
}

#[test]
fn window_reuse_over_many_messages() {
    for alg in Algorithm::ALL {
        let sizes: Vec<usize> = (0..40).map(|i| 1 + (i * 977) % (6 * BLOCK)).collect();
        let c = cluster(7, 5, alg, BLOCK, 6 * BLOCK, 2);
        transfer(&c, &sizes);
    }
}

#[test]
fn oversized_and_misdirected_sends_are_refused() {
    let c = cluster(1, 2, Algorithm::Binomial, BLOCK, 2 * BLOCK, 1);
    assert!(matches!(
        c.groups[0].try_send(&vec![0; 2 * BLOCK + 1]),
        Err(RdmcError::TooLarge { .. })
    ));
    assert!(matches!(
        c.groups[1].try_send(&[1]),
        Err(RdmcError::NotSender)
    ));
    // Window of one: the second send waits for the first to be released everywhere.
    assert!(c.groups[0].try_send(&[1]).unwrap().is_some());
    assert!(c.groups[0].try_send(&[2]).unwrap().is_none());
}

#[test]
fn invalid_specs_are_refused() {
    let net = SimNet::new(SimConfig::new(1));
    let f = net.add_node(1) as Arc<dyn Fabric>;
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let h = Arc::new(Collect::default());
    let bad = [
        (
            GroupSpec::new(1, vec![(1, addr)], 1, 10, 10, 1),
            GroupSpecError::RankOutOfRange {
                rank: 1,
                members: 1,
            },
        ),
        (
            GroupSpec::new(1, vec![(1, addr), (1, addr)], 0, 10, 10, 1),
            GroupSpecError::DuplicateMember { node: 1 },
        ),
        (
            GroupSpec::new(1, vec![(1, addr)], 0, 0, 10, 1),
            GroupSpecError::ZeroBlockSize,
        ),
        (
            GroupSpec::new(1, vec![(1, addr)], 0, 10, 10, 0),
            GroupSpecError::Window { window: 0 },
        ),
        (
            GroupSpec::new(1, vec![(1, addr)], 0, 1, 1 << 30, 1),
            GroupSpecError::TooManyBlocks {
                max_message_size: 1 << 30,
                block_size: 1,
            },
        ),
        (
            GroupSpec::new(MAX_GROUP_ID + 1, vec![(1, addr)], 0, 10, 10, 1),
            GroupSpecError::GroupIdTooLarge {
                group_id: MAX_GROUP_ID + 1,
            },
        ),
    ];
    for (spec, expected) in bad {
        match RdmcGroup::prepare(Arc::clone(&f), spec, h.clone()) {
            Err(RdmcError::InvalidSpec(e)) => assert_eq!(e, expected),
            Err(other) => panic!("expected {expected:?}, got {other:?}"),
            Ok(_) => panic!("expected {expected:?}, got a group"),
        }
    }
}

#[test]
fn a_receiver_crash_aborts_the_transfer_on_every_survivor() {
    for seed in 0..5 {
        let c = cluster(seed, 4, Algorithm::Binomial, BLOCK, 64 * BLOCK, 2);
        c.groups[0].try_send(&payload(0, 64 * BLOCK)).unwrap();
        // Let part of the message move, then crash rank 2.
        for _ in 0..(20 + seed * 7) {
            for g in &c.groups {
                let _ = g.poll();
            }
            c.net.step();
        }
        c.net.crash(12);
        let survivors = [0usize, 1, 3];
        let mut done = false;
        for _ in 0..1_000_000 {
            for &r in &survivors {
                let _ = c.groups[r].poll();
            }
            if survivors
                .iter()
                .all(|&r| !c.handlers[r].failures.lock().unwrap().is_empty())
            {
                done = true;
                break;
            }
            if !c.net.step() {
                break;
            }
        }
        assert!(done, "seed {seed}: not every survivor learned of the crash");
        for &r in &survivors {
            let f = c.handlers[r].failures.lock().unwrap();
            assert_eq!(f.len(), 1, "seed {seed}: rank {r} told {} times", f.len());
            assert!(f[0].contains("node 12"), "seed {seed}: rank {r}: {}", f[0]);
            assert!(matches!(
                c.groups[r].poll(),
                Err(RdmcError::PeerFailed { node: 12, .. })
            ));
        }
        assert!(c.groups[0].try_send(&[1]).is_err());
    }
}
