//! Ordered and raw multicast under the deterministic sim backend: every node in one thread,
//! the network advanced event by event, several seeds. A failing seed is printed and replays
//! exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use derecho::multicast::Mode;
use derecho_fabric::sim::SimRng;
use derecho_tests::checker::{digest, Checker, Event, MemberLog, MessageId};
use derecho_tests::sim::{build, Run};

/// Each sender sends `per_sender` messages of random sizes (across the SMC/RDMC boundary),
/// interleaved with network events, then everything is driven to quiescence.
fn drive(seed: u64, r: &Run, senders: usize, per_sender: u64) {
    let mut rng = SimRng::new(seed ^ 0xabcd);
    let mut next = vec![0u64; senders];
    let total = senders as u64 * per_sender;
    for _ in 0..5_000_000u64 {
        let s = rng.below(senders as u64) as usize;
        if next[s] < per_sender {
            let len = match rng.below(10) {
                0..=5 => 12 + rng.below(900) as usize,
                6..=8 => 1025 + rng.below(20_000) as usize,
                _ => 12,
            };
            let mut payload = vec![(seed as u8) ^ (s as u8); len];
            let id = MessageId {
                sender: s as u32,
                serial: next[s],
            };
            id.stamp(&mut payload);
            if r.groups[s].try_send(0, &payload).unwrap().is_some() {
                r.logs[s].lock().unwrap().events.push(Event::Sent {
                    subgroup: 0,
                    shard: 0,
                    id,
                    digest: digest(&payload),
                });
                next[s] += 1;
            }
        }
        let mut progress = false;
        for g in &r.groups {
            progress |= g.poll();
        }
        let delivered = r.logs.iter().all(|l| {
            l.lock()
                .unwrap()
                .events
                .iter()
                .filter(|e| matches!(e, Event::Delivered { .. }))
                .count() as u64
                == total
        });
        if delivered {
            return;
        }
        if !progress {
            r.net.step();
        }
    }
    panic!("seed {seed}: did not finish within the step bound");
}

fn check(seed: u64, r: &Run, mode: Mode) {
    let logs: Vec<MemberLog> = r.logs.iter().map(|l| l.lock().unwrap().clone()).collect();
    let mut checker = Checker::new().expect_complete();
    if mode == Mode::Raw {
        checker = checker.fifo_subgroups([0]);
    }
    let report = checker.check(&logs);
    assert!(report.ok(), "seed {seed}: {report}");
}

#[test]
fn ordered_multicast_is_total_and_complete_over_many_seeds() {
    for seed in 1..=12 {
        let n = 2 + (seed as usize % 3);
        let senders = 1 + (seed as usize % n);
        let r = build(seed, n, Mode::Ordered, senders);
        drive(seed, &r, senders, 40);
        check(seed, &r, Mode::Ordered);
    }
}

#[test]
fn raw_multicast_is_fifo_per_sender_over_many_seeds() {
    for seed in 100..106 {
        let r = build(seed, 3, Mode::Raw, 3);
        drive(seed, &r, 3, 40);
        check(seed, &r, Mode::Raw);
    }
}

#[test]
fn the_same_seed_replays_the_same_deliveries() {
    let runs: Vec<Vec<MemberLog>> = (0..2)
        .map(|_| {
            let r = build(77, 3, Mode::Ordered, 3);
            drive(77, &r, 3, 30);
            r.logs.iter().map(|l| l.lock().unwrap().clone()).collect()
        })
        .collect();
    assert_eq!(runs[0], runs[1], "a seed must replay exactly");
}
