//! In-process clusters for tests: one fabric per node, multicast groups built concurrently,
//! every send and delivery recorded for the [`crate::checker`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use derecho::config::SubgroupProfile;
use derecho::multicast::{
    Mode, MulticastConfig, MulticastGroup, MulticastSpec, ShardSpec, Sizes, SubgroupSpec,
};
use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::Fabric;

use crate::checker::{digest, Event, MemberLog, MessageId};

/// Sizes used by the cluster tests: small SMC slots and RDMC blocks so both paths are used.
pub fn test_sizes(window: usize) -> Sizes {
    Sizes::from_profile(&SubgroupProfile {
        max_payload_size: 64 * 1024,
        max_smc_payload_size: 1024,
        block_size: 8 * 1024,
        window_size: window as u32,
        ..SubgroupProfile::default()
    })
}

/// A running in-process cluster.
pub struct Cluster {
    /// One fabric per node.
    pub fabrics: Vec<Arc<dyn Fabric>>,
    /// One multicast group per node.
    pub groups: Vec<Arc<MulticastGroup>>,
    /// What each node did.
    pub logs: Vec<Arc<Mutex<MemberLog>>>,
}

impl Cluster {
    /// Starts `n` tcp nodes and builds a multicast group for `subgroups` (a function of the
    /// member list) on each, concurrently.
    pub fn start(
        n: usize,
        subgroups: impl Fn(&[u32]) -> Vec<SubgroupSpec>,
    ) -> Result<Self, String> {
        let fabrics: Vec<Arc<dyn Fabric>> = (0..n)
            .map(|i| {
                let f = TcpFabric::start(TcpConfig::new(
                    i as u32,
                    "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
                ))
                .map_err(|e| e.to_string())?;
                Ok(Arc::new(f) as Arc<dyn Fabric>)
            })
            .collect::<Result<_, String>>()?;
        let members: Vec<(u32, SocketAddr)> = fabrics
            .iter()
            .map(|f| {
                (
                    f.local_id(),
                    f.local_addr().unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
                )
            })
            .collect();
        let ids: Vec<u32> = members.iter().map(|m| m.0).collect();
        let subgroups = subgroups(&ids);
        let logs = first_view_logs(&ids);
        let groups = std::thread::scope(|s| {
            let joins: Vec<_> = (0..n)
                .map(|rank| {
                    let spec = MulticastSpec {
                        vid: 0,
                        members: members.clone(),
                        my_rank: rank,
                        subgroups: subgroups.clone(),
                    };
                    let fabric = Arc::clone(&fabrics[rank]);
                    let log = Arc::clone(&logs[rank]);
                    s.spawn(move || {
                        let config = MulticastConfig {
                            setup_timeout: Duration::from_secs(20),
                            ..MulticastConfig::default()
                        };
                        MulticastGroup::new(
                            fabric,
                            spec,
                            config,
                            Box::new(move |d| {
                                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                                l.events.push(Event::delivered(&d));
                            }),
                        )
                        .map(Arc::new)
                        .map_err(|e| format!("node {rank}: {e}"))
                    })
                })
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().map_err(|_| "set-up thread panicked".to_string())?)
                .collect::<Result<Vec<_>, String>>()
        })?;
        Ok(Self {
            fabrics,
            groups,
            logs,
        })
    }

    /// Sends `count` messages from node `rank` in `subgroup`, with sizes from `size(serial)`,
    /// stamped and logged.
    pub fn send_all(
        &self,
        rank: usize,
        subgroup: usize,
        count: u64,
        size: impl Fn(u64) -> usize,
    ) -> Result<(), String> {
        let node = self.fabrics[rank].local_id();
        for serial in 0..count {
            let mut payload = vec![0u8; size(serial).max(MessageId::LEN)];
            for (i, b) in payload.iter_mut().enumerate() {
                *b = (i as u64 ^ serial.wrapping_mul(31) ^ u64::from(node)) as u8;
            }
            let id = MessageId {
                sender: node,
                serial,
            };
            id.stamp(&mut payload);
            let shard = self.groups[rank]
                .spec()
                .my_shard(subgroup)
                .map_or(0, |(s, _)| s as u32);
            self.logs[rank]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .events
                .push(Event::Sent {
                    subgroup: subgroup as u32,
                    shard,
                    id,
                    digest: digest(&payload),
                });
            self.groups[rank]
                .send(subgroup, &payload, Duration::from_secs(20))
                .map_err(|e| format!("node {node} message {serial}: {e}"))?;
        }
        Ok(())
    }

    /// Waits until every node has logged `count` deliveries (bounded).
    pub fn wait_delivered(&self, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let done = self.logs.iter().all(|l| {
                let l = l.lock().unwrap_or_else(|p| p.into_inner());
                l.events
                    .iter()
                    .filter(|e| matches!(e, Event::Delivered { .. }))
                    .count()
                    >= count
            });
            if done {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Waits until node `i` has logged `expected[i]` deliveries, for every node (bounded).
    pub fn wait_counts(&self, expected: &[usize], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let done = self.logs.iter().zip(expected).all(|(l, &want)| {
                let l = l.lock().unwrap_or_else(|p| p.into_inner());
                l.events
                    .iter()
                    .filter(|e| matches!(e, Event::Delivered { .. }))
                    .count()
                    >= want
            });
            if done {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Snapshots of every node's log.
    pub fn snapshot(&self) -> Vec<MemberLog> {
        self.logs
            .iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Stops the groups and the fabrics.
    pub fn stop(self) {
        for g in &self.groups {
            g.stop();
        }
        drop(self.groups);
        for f in &self.fabrics {
            f.shutdown();
        }
    }
}

/// One subgroup, one shard of every node; `senders` picks the senders from the member list.
pub fn single_shard(
    mode: Mode,
    window: usize,
    senders: impl Fn(&[u32]) -> Vec<u32>,
) -> impl Fn(&[u32]) -> Vec<SubgroupSpec> {
    move |ids: &[u32]| {
        vec![SubgroupSpec {
            shards: vec![ShardSpec {
                members: ids.to_vec(),
                senders: senders(ids),
                mode,
                sizes: test_sizes(window),
            }],
        }]
    }
}

/// One log per member of `ids`, each starting with the first view (vid 0, these members).
pub fn first_view_logs(ids: &[u32]) -> Vec<Arc<Mutex<MemberLog>>> {
    ids.iter()
        .map(|&id| {
            let mut l = MemberLog::new(id);
            l.events.push(Event::View {
                vid: 0,
                members: ids.to_vec(),
            });
            Arc::new(Mutex::new(l))
        })
        .collect()
}
