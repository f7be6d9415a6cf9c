//! Multicast groups over the deterministic sim backend, for tests that drive every node from
//! one thread. A set-up failure here is a failed test, hence the `expect`s.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use derecho::multicast::{
    Mode, MulticastConfig, MulticastGroup, MulticastSpec, ShardSpec, SubgroupSpec,
};
use derecho_fabric::sim::{SimConfig, SimNet};
use derecho_fabric::Fabric;

use crate::checker::{Event, MemberLog};
use crate::cluster::test_sizes;

/// A cluster of multicast groups over one simulated network.
pub struct Run {
    /// The network.
    pub net: Arc<SimNet>,
    /// One group per node, by rank.
    pub groups: Vec<MulticastGroup>,
    /// What each node delivered.
    pub logs: Vec<Arc<Mutex<MemberLog>>>,
}

/// `n` nodes in one shard of one subgroup, the first `senders` of them sending, built phase by
/// phase on the simulated network of `seed` (nobody may block under simulation).
pub fn build(seed: u64, n: usize, mode: Mode, senders: usize) -> Run {
    let net = SimNet::new(SimConfig::new(seed));
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("sim set-up");
    let ids: Vec<u32> = (0..n as u32).collect();
    let members: Vec<(u32, SocketAddr)> = ids.iter().map(|&i| (i, addr)).collect();
    let fabrics: Vec<Arc<dyn Fabric>> = ids
        .iter()
        .map(|&i| net.add_node(i) as Arc<dyn Fabric>)
        .collect();
    let subgroups = vec![SubgroupSpec {
        shards: vec![ShardSpec {
            members: ids.clone(),
            senders: ids[..senders].to_vec(),
            mode,
            sizes: test_sizes(4),
        }],
    }];
    let logs = crate::cluster::first_view_logs(&ids);
    // Phase by phase on every node: nobody may block under simulation.
    let prepared: Vec<_> = (0..n)
        .map(|rank| {
            let log = Arc::clone(&logs[rank]);
            let spec = MulticastSpec {
                vid: 0,
                members: members.clone(),
                my_rank: rank,
                subgroups: subgroups.clone(),
            };
            MulticastGroup::prepare(
                Arc::clone(&fabrics[rank]),
                spec,
                MulticastConfig::default(),
                Box::new(move |d| {
                    log.lock()
                        .expect("sim set-up")
                        .events
                        .push(Event::delivered(&d));
                }),
            )
            .expect("sim set-up")
        })
        .collect();
    let connecting: Vec<_> = prepared
        .into_iter()
        .map(|p| p.connect(false).expect("sim set-up"))
        .collect();
    assert!(
        net.run_until(Duration::from_secs(5), &mut || connecting
            .iter()
            .all(|c| c.ready())),
        "seed {seed}: start barrier"
    );
    let groups = connecting
        .into_iter()
        .map(|c| c.start(false).expect("sim set-up"))
        .collect();
    Run { net, groups, logs }
}
