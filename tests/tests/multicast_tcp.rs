//! Ordered and raw multicast among in-process nodes over the tcp backend, checked by the
//! delivery checker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use derecho::multicast::Mode;
use derecho_tests::checker::Checker;
use derecho_tests::cluster::{single_shard, Cluster};

/// Mixed sizes across the 1 KiB SMC limit (RDMC above it), from one seed per sender.
fn size(seed: u64) -> impl Fn(u64) -> usize {
    move |serial| {
        let x = (serial + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        match x % 10 {
            0..=5 => 12 + (x >> 8) as usize % 1000,
            6..=8 => 1025 + (x >> 8) as usize % 20_000,
            _ => 12,
        }
    }
}

fn run(n: usize, mode: Mode, senders: usize, per_sender: u64) {
    let pick = move |ids: &[u32]| ids[..senders.min(ids.len())].to_vec();
    let c = Cluster::start(n, single_shard(mode, 8, pick)).unwrap();
    let sending = senders.min(n);
    std::thread::scope(|s| {
        for rank in 0..sending {
            let c = &c;
            s.spawn(move || c.send_all(rank, 0, per_sender, size(rank as u64)).unwrap());
        }
    });
    let total = sending * per_sender as usize;
    let done = c.wait_delivered(total, Duration::from_secs(30));
    let logs = c.snapshot();
    c.stop();
    let mut checker = Checker::new().expect_complete();
    if mode == Mode::Raw {
        checker = checker.fifo_subgroups([0]);
    }
    let report = checker.check(&logs);
    assert!(
        done,
        "{n} nodes {mode:?} {senders} senders: not all delivered; {report}"
    );
    assert!(
        report.ok(),
        "{n} nodes {mode:?} {senders} senders: {report}"
    );
    assert_eq!(report.delivered, total * n);
}

#[test]
fn one_node_delivers_its_own_messages() {
    run(1, Mode::Ordered, 1, 50);
}

#[test]
fn ordered_all_senders() {
    for n in 2..=4 {
        run(n, Mode::Ordered, n, 60);
    }
}

#[test]
fn ordered_one_and_half_senders() {
    run(3, Mode::Ordered, 1, 80);
    run(4, Mode::Ordered, 2, 60);
}

#[test]
fn raw_all_senders() {
    run(3, Mode::Raw, 3, 60);
}

use derecho::multicast::{MulticastError, ShardSpec, SubgroupSpec};
use derecho_tests::cluster::test_sizes;

fn shard(members: &[u32], senders: &[u32]) -> ShardSpec {
    ShardSpec {
        members: members.to_vec(),
        senders: senders.to_vec(),
        mode: Mode::Ordered,
        sizes: test_sizes(8),
    }
}

#[test]
fn two_subgroups_of_one_type_both_deliver() {
    // Upstream #219: every subgroup's columns must be indexed by its own id.
    let c = Cluster::start(3, |ids| {
        vec![
            SubgroupSpec {
                shards: vec![shard(ids, ids)],
            },
            SubgroupSpec {
                shards: vec![shard(ids, &ids[1..])],
            },
        ]
    })
    .unwrap();
    std::thread::scope(|s| {
        for rank in 0..3 {
            let c = &c;
            s.spawn(move || {
                c.send_all(rank, 0, 40, size(rank as u64)).unwrap();
                if rank > 0 {
                    c.send_all(rank, 1, 40, size(10 + rank as u64)).unwrap();
                }
            });
        }
    });
    assert!(c.wait_counts(&[200, 200, 200], Duration::from_secs(30)));
    let logs = c.snapshot();
    c.stop();
    let r = Checker::new().expect_complete().check(&logs);
    assert!(r.ok(), "{r}");
}

#[test]
fn shards_are_separate_and_overlapping_subgroups_work() {
    // Subgroup 0: two shards {0,1} and {2,3}. Subgroup 1 overlaps both: {1,2,3}.
    let c = Cluster::start(4, |ids| {
        vec![
            SubgroupSpec {
                shards: vec![shard(&ids[..2], &ids[..2]), shard(&ids[2..], &ids[2..])],
            },
            SubgroupSpec {
                shards: vec![shard(&ids[1..], &ids[1..])],
            },
        ]
    })
    .unwrap();
    std::thread::scope(|s| {
        for rank in 0..4 {
            let c = &c;
            s.spawn(move || {
                c.send_all(rank, 0, 30, size(rank as u64)).unwrap();
                if rank > 0 {
                    c.send_all(rank, 1, 30, size(20 + rank as u64)).unwrap();
                }
            });
        }
    });
    // Shard members get their shard's 60 messages; members of subgroup 1 also its 90.
    assert!(c.wait_counts(&[60, 150, 150, 150], Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(200));
    let logs = c.snapshot();
    let counts: Vec<usize> = logs
        .iter()
        .map(|l| {
            l.events
                .iter()
                .filter(|e| matches!(e, derecho_tests::checker::Event::Delivered { .. }))
                .count()
        })
        .collect();
    assert_eq!(
        counts,
        vec![60, 150, 150, 150],
        "a shard delivered another shard's messages"
    );
    c.stop();
    let r = Checker::new().check(&logs);
    assert!(r.ok(), "{r}");
}

#[test]
fn bad_sends_get_clear_errors_and_change_nothing() {
    let c = Cluster::start(2, |ids| {
        vec![
            SubgroupSpec {
                shards: vec![shard(ids, &ids[..1])],
            },
            SubgroupSpec {
                shards: vec![shard(&ids[..1], &ids[..1])],
            },
        ]
    })
    .unwrap();
    let g0 = &c.groups[0];
    let g1 = &c.groups[1];
    match g0.send(0, &vec![0u8; 64 * 1024 + 1], Duration::from_secs(1)) {
        Err(MulticastError::TooLarge { len, max, .. }) => {
            assert_eq!((len, max), (64 * 1024 + 1, 64 * 1024))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        g1.send(0, &[1; 20], Duration::from_secs(1)),
        Err(MulticastError::NotSender { .. })
    ));
    assert!(matches!(
        g1.send(1, &[1; 20], Duration::from_secs(1)),
        Err(MulticastError::NotMember { .. })
    ));
    assert!(matches!(
        g0.send(7, &[1; 20], Duration::from_secs(1)),
        Err(MulticastError::NotMember { .. })
    ));
    // The group still works afterwards.
    c.send_all(0, 0, 5, |_| 100).unwrap();
    assert!(c.wait_counts(&[5, 5], Duration::from_secs(10)));
    c.stop();
}
