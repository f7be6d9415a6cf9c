//! Creating a view's groups over the tcp backend, in this process: every member creates all
//! its groups in its own order, and a member that never shows up is named in an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{payload, Collect};
use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::Fabric;
use derecho_rdmc::{GroupKey, GroupPlan, GroupSet, GroupSpec, Handler, RdmcError};

type Shard = Vec<(u32, SocketAddr)>;

fn fabrics(n: usize) -> (Vec<Arc<dyn Fabric>>, Shard) {
    let fs: Vec<Arc<dyn Fabric>> = (0..n)
        .map(|i| {
            Arc::new(
                TcpFabric::start(TcpConfig::new(i as u32, "127.0.0.1:0".parse().unwrap())).unwrap(),
            ) as Arc<dyn Fabric>
        })
        .collect();
    let shard = fs
        .iter()
        .map(|f| (f.local_id(), f.local_addr().unwrap()))
        .collect();
    (fs, shard)
}

fn plans(me: u32, shard: &[(u32, SocketAddr)], timeout: Duration, reverse: bool) -> Vec<GroupPlan> {
    let mut template = GroupSpec::new(0, Vec::new(), 0, 4096, 64 * 1024, 2);
    template.timeout = timeout;
    let mut senders: Vec<u32> = shard.iter().map(|m| m.0).collect();
    if reverse {
        senders.reverse();
    }
    senders
        .into_iter()
        .map(|s| {
            GroupPlan::for_sender(
                GroupKey {
                    subgroup: 0,
                    sender: s,
                },
                100 + u64::from(s),
                shard,
                me,
                &template,
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn all_senders_groups_of_a_shard_come_up_and_carry_messages() {
    let (fs, shard) = fabrics(3);
    let handlers: Vec<Vec<Arc<Collect>>> = (0..3)
        .map(|_| (0..3).map(|_| Arc::new(Collect::default())).collect())
        .collect();
    let sets: Vec<GroupSet> = std::thread::scope(|s| {
        let joins: Vec<_> = fs
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (shard, h) = (&shard, &handlers[i]);
                // Members list their groups in different orders.
                s.spawn(move || {
                    GroupSet::create(
                        f,
                        plans(i as u32, shard, Duration::from_secs(10), i % 2 == 1),
                        |k| h[k.sender as usize].clone() as Arc<dyn Handler>,
                    )
                    .unwrap()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (i, set) in sets.iter().enumerate() {
        assert_eq!(set.len(), 3);
        let g = set
            .get(GroupKey {
                subgroup: 0,
                sender: i as u32,
            })
            .unwrap();
        g.send(&payload(0, 5000 + i), Duration::from_secs(10))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while handlers.iter().flatten().any(|h| h.count() < 1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (member, hs) in handlers.iter().enumerate() {
        for (sender, h) in hs.iter().enumerate() {
            let got = h.got.lock().unwrap();
            assert_eq!(got.len(), 1, "member {member} from sender {sender}");
            assert!(got[0].1 == payload(0, 5000 + sender));
        }
    }
    drop(sets);
    for f in fs {
        f.shutdown();
    }
}

#[test]
fn a_member_that_never_creates_its_groups_is_named_not_waited_for() {
    let (fs, shard) = fabrics(3);
    // Node 2 is linked but never registers its regions.
    let started = Instant::now();
    let results: Vec<Result<GroupSet, RdmcError>> = std::thread::scope(|s| {
        let joins: Vec<_> = fs[..2]
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let shard = &shard;
                s.spawn(move || {
                    GroupSet::create(
                        f,
                        plans(i as u32, shard, Duration::from_secs(1), false),
                        |_| Arc::new(Collect::default()) as Arc<dyn Handler>,
                    )
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "creation waited too long"
    );
    for r in results {
        match r {
            Err(RdmcError::Setup { node: 2, .. }) => {}
            other => panic!("expected an error naming node 2, got {other:?}"),
        }
    }
    // Nothing is left registered: every group's region name is free again on both members.
    for f in &fs[..2] {
        for sender in 0..3u64 {
            let id = derecho_fabric::RegionId(0x5244_4d43_0000_0000 | (100 + sender));
            f.register(derecho_fabric::RegionSpec::new(id, 8)).unwrap();
        }
    }
    for f in fs {
        f.shutdown();
    }
}
