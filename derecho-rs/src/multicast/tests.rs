//! Tests of one view's multicast that look at state the public API does not show: the RDMC
//! group ids a view hands out, and what a sender keeps for the ragged trim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use derecho_fabric::sim::{SimConfig, SimNet};
use derecho_fabric::Fabric;
use derecho_rdmc::schedule::Algorithm;
use derecho_rdmc::MAX_GROUP_ID;

use super::*;

#[test]
fn rdmc_group_ids_differ_across_views_and_many_senders() {
    // The ids once wrapped at view 4096 and at sender rank 256.
    let mut seen = BTreeSet::new();
    for vid in [0, 1, 4095, 4096, 8192, 1 << 20, u64::from(u32::MAX)] {
        for column in 0..300 {
            let id = rdmc_group_id(vid, column).unwrap();
            assert!(id <= MAX_GROUP_ID, "view {vid} column {column}: {id:#x}");
            assert!(seen.insert(id), "view {vid} column {column} reuses {id:#x}");
        }
    }
    assert!(rdmc_group_id(0, (1 << RDMC_COLUMN_BITS) - 1).is_ok());
    assert!(matches!(
        rdmc_group_id(0, 1 << RDMC_COLUMN_BITS),
        Err(MulticastError::SenderColumn { column }) if column == 1 << RDMC_COLUMN_BITS
    ));
}

/// Two members, the first the only sender, every message large enough for RDMC.
fn rdmc_pair(net: &Arc<SimNet>, delivered: &Arc<AtomicU64>) -> Vec<MulticastGroup> {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let members = vec![(0, addr), (1, addr)];
    let sizes = Sizes {
        max_payload: 4096,
        max_smc_payload: 64,
        block_size: 1024,
        window: 4,
        algorithm: Algorithm::Binomial,
    };
    let subgroups = vec![SubgroupSpec {
        shards: vec![ShardSpec {
            members: vec![0, 1],
            senders: vec![0],
            mode: Mode::Ordered,
            sizes,
        }],
    }];
    let fabrics: Vec<Arc<dyn Fabric>> = (0..2)
        .map(|id| net.add_node(id) as Arc<dyn Fabric>)
        .collect();
    let prepared: Vec<Prepared> = fabrics
        .into_iter()
        .enumerate()
        .map(|(my_rank, fabric)| {
            let spec = MulticastSpec {
                vid: 4096,
                members: members.clone(),
                my_rank,
                subgroups: subgroups.clone(),
            };
            let count = Arc::clone(delivered);
            let deliver: DeliveryHandler = Box::new(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
            });
            MulticastGroup::prepare(fabric, spec, MulticastConfig::default(), deliver).unwrap()
        })
        .collect();
    // Every region exists before anyone looks one up.
    let connecting: Vec<Connecting> = prepared
        .into_iter()
        .map(|p| p.connect(false).unwrap())
        .collect();
    assert!(net.run_until(Duration::from_secs(5), &mut || connecting
        .iter()
        .all(Connecting::ready)));
    connecting
        .into_iter()
        .map(|c| c.start(false).unwrap())
        .collect()
}

#[test]
fn a_sender_keeps_only_its_undelivered_rdmc_messages() {
    let net = SimNet::new(SimConfig::new(7));
    let delivered = Arc::new(AtomicU64::new(0));
    let groups = rdmc_pair(&net, &delivered);
    let state = Arc::clone(&groups[0].senders[&0].state);
    let window = 4;
    let total = 300u64;
    let mut sent = 0u64;
    let mut most_kept = 0;
    for _ in 0..1_000_000 {
        if sent < total
            && groups[0]
                .try_send(0, &[sent as u8; 2000])
                .unwrap()
                .is_some()
        {
            sent += 1;
        }
        let mut progress = false;
        for g in &groups {
            progress |= g.poll();
        }
        let kept = lock(&state).rdmc_sent.len();
        most_kept = most_kept.max(kept);
        assert!(
            kept <= window,
            "{kept} RDMC messages kept after {sent} sent"
        );
        if delivered.load(Ordering::SeqCst) == 2 * total {
            break;
        }
        if !progress {
            net.step();
        }
    }
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        2 * total,
        "not all delivered"
    );
    assert!(most_kept > 0, "the messages went through RDMC");
    assert!(lock(&state).rdmc_sent.is_empty(), "delivered messages kept");
}
