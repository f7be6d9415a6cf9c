//! Exhaustive checks of the RDMC block schedules.
//!
//! For every algorithm, group sizes 1..=16 and block counts 1..=64, all ranks are simulated
//! together step by step and these properties are checked (they hold for all four algorithms):
//!
//! 1. every send at step s is matched by the peer's receive of the same block at step s, and
//!    every receive by the peer's send;
//! 2. a rank only sends a block it holds before the step (the root holds all of them);
//! 3. every rank but the root receives every block exactly once, and the root receives nothing;
//! 4. at most one send and one receive per rank per step (the API returns one of each);
//! 5. the step count matches the algorithm's formula, and the last step is not idle;
//! 6. the lazy views (`send_at`, `recv_at`, `sends`, `recvs`, `next_send`, `next_recv`,
//!    `first_recv`) agree with `step`, every peer is in `Participant::peers`, and the first
//!    block's source does not depend on the block count.
//!
//! A planted-bug test checks that the simulator rejects a corrupted schedule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Instant;

use derecho_rdmc::schedule::{self, MAX_BLOCKS, MAX_GROUP_SIZE};
use derecho_rdmc::{Algorithm, Participant, Schedule, ScheduleError, Step, Transfer};

/// The step-count formulas, written independently of the library.
fn expected_steps(alg: Algorithm, n: usize, b: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let floor_log = (usize::BITS - 1 - n.leading_zeros()) as usize;
    let ceil_log = if n.is_power_of_two() {
        floor_log
    } else {
        floor_log + 1
    };
    match alg {
        Algorithm::Binomial if n.is_power_of_two() => b + floor_log - 1,
        Algorithm::Binomial => b + floor_log,
        Algorithm::Chain => b + n - 2,
        Algorithm::Sequential => b * (n - 1),
        Algorithm::Tree => b * ceil_log,
    }
}

/// Runs `n` ranks through `num_steps` steps, where `step(rank, s)` says what a rank does, and
/// checks properties 1–3. Returns a description of the first violation.
fn simulate(
    n: usize,
    b: usize,
    num_steps: usize,
    step: impl Fn(usize, usize) -> Step,
) -> Result<(), String> {
    let mut has: Vec<Vec<bool>> = (0..n).map(|r| vec![r == 0; b]).collect();
    for s in 0..num_steps {
        let now: Vec<Step> = (0..n).map(|r| step(r, s)).collect();
        // Property 1: both ends of every transfer agree.
        for (r, st) in now.iter().enumerate() {
            for (t, what) in [(st.send, "send"), (st.recv, "receive")] {
                let Some(t) = t else { continue };
                if t.step != s || t.peer >= n || t.peer == r || t.block >= b {
                    return Err(format!("step {s}: rank {r} has a malformed {what} {t:?}"));
                }
                let mirror = Some(Transfer {
                    step: s,
                    block: t.block,
                    peer: r,
                });
                let other = if what == "send" {
                    now[t.peer].recv
                } else {
                    now[t.peer].send
                };
                if other != mirror {
                    return Err(format!(
                        "step {s}: rank {r}'s {what} {t:?} is not matched by rank {}: {other:?}",
                        t.peer
                    ));
                }
            }
        }
        // Property 2: a sender holds what it sends before the step.
        for (r, st) in now.iter().enumerate() {
            if let Some(t) = st.send {
                if !has[r][t.block] {
                    return Err(format!(
                        "step {s}: rank {r} sends block {} it does not hold",
                        t.block
                    ));
                }
            }
        }
        // Property 3 (first half): nothing arrives twice.
        for (r, st) in now.iter().enumerate() {
            if let Some(t) = st.recv {
                if has[r][t.block] {
                    return Err(format!(
                        "step {s}: rank {r} receives block {} a second time",
                        t.block
                    ));
                }
                has[r][t.block] = true;
            }
        }
    }
    // Property 3 (second half): everything arrives.
    for (r, blocks) in has.iter().enumerate() {
        if let Some(missing) = blocks.iter().position(|&h| !h) {
            return Err(format!(
                "rank {r} never receives block {missing} in {num_steps} steps"
            ));
        }
    }
    Ok(())
}

/// Checks property 6 for one rank, and property 5's "last step is not idle" contribution.
fn check_views(sched: &Schedule, fixed_first_peer: Option<usize>) {
    let ctx = format!(
        "{} n={} rank={} b={}",
        sched.algorithm(),
        sched.group_size(),
        sched.rank(),
        sched.blocks()
    );
    let t = sched.num_steps();
    let steps: Vec<Step> = sched.steps().collect();
    assert_eq!(steps.len(), t, "{ctx}");
    for (s, st) in steps.iter().enumerate() {
        assert_eq!(sched.send_at(s), st.send, "{ctx} step {s}");
        assert_eq!(sched.recv_at(s), st.recv, "{ctx} step {s}");
    }
    for s in t..t + 3 {
        assert!(sched.step(s).is_idle(), "{ctx}: step {s} is past the end");
    }

    let sends: Vec<Transfer> = steps.iter().filter_map(|st| st.send).collect();
    let recvs: Vec<Transfer> = steps.iter().filter_map(|st| st.recv).collect();
    assert_eq!(sched.sends().collect::<Vec<_>>(), sends, "{ctx}");
    assert_eq!(sched.recvs().collect::<Vec<_>>(), recvs, "{ctx}");
    let expected_recvs = if sched.rank() == 0 { 0 } else { sched.blocks() };
    assert_eq!(recvs.len(), expected_recvs, "{ctx}");

    // next_send / next_recv from every step, against a backwards scan.
    let (mut next_send, mut next_recv) = (None, None);
    for s in (0..=t).rev() {
        if let Some(st) = steps.get(s) {
            next_send = st.send.or(next_send);
            next_recv = st.recv.or(next_recv);
        }
        assert_eq!(sched.next_send(s), next_send, "{ctx} next_send({s})");
        assert_eq!(sched.next_recv(s), next_recv, "{ctx} next_recv({s})");
    }

    assert_eq!(sched.first_recv(), recvs.first().copied(), "{ctx}");
    let participant = sched.participant();
    match (participant.first_block_source(), sched.first_recv()) {
        (None, None) => assert!(participant.is_root() || sched.group_size() == 1, "{ctx}"),
        (Some(fb), Some(first)) => {
            assert_eq!(fb.peer, first.peer, "{ctx}: first block source");
            assert_eq!(
                fb.block_for(sched.blocks()),
                first.block,
                "{ctx}: first block"
            );
            if let Some(peer) = fixed_first_peer {
                assert_eq!(peer, first.peer, "{ctx}");
            }
        }
        (fb, first) => panic!("{ctx}: first_block_source {fb:?} but first_recv {first:?}"),
    }

    let peers: BTreeSet<usize> = participant.peers().into_iter().collect();
    assert!(!peers.contains(&sched.rank()), "{ctx}");
    for tr in sends.iter().chain(&recvs) {
        assert!(peers.contains(&tr.peer), "{ctx}: {tr:?} not in {peers:?}");
    }
}

/// Builds every rank's schedule and runs all checks for one (algorithm, n, b).
fn check_all(alg: Algorithm, n: usize, b: usize) {
    let scheds: Vec<Schedule> = (0..n)
        .map(|r| schedule::schedule(alg, n, r, b).unwrap())
        .collect();
    let t = expected_steps(alg, n, b);
    assert_eq!(alg.num_steps(n, b), Ok(t), "{alg} n={n} b={b}");
    for sched in &scheds {
        assert_eq!(sched.num_steps(), t, "{alg} n={n} b={b}");
        let fixed = Participant::new(alg, n, sched.rank())
            .unwrap()
            .first_block_source()
            .map(|fb| fb.peer);
        check_views(sched, fixed);
    }
    if t > 0 {
        assert!(
            scheds.iter().any(|s| !s.step(t - 1).is_idle()),
            "{alg} n={n} b={b}: the last step is idle"
        );
    }
    simulate(n, b, t, |r, s| scheds[r].step(s))
        .unwrap_or_else(|e| panic!("{alg} n={n} b={b}: {e}"));
}

#[test]
fn exhaustive_small_groups() {
    let start = Instant::now();
    let mut cases = 0;
    for alg in Algorithm::ALL {
        for n in 1..=16 {
            for b in 1..=64 {
                check_all(alg, n, b);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 4 * 16 * 64);
    eprintln!(
        "exhaustive_small_groups: {cases} cases in {:?}",
        start.elapsed()
    );
}

#[test]
fn wider_groups_sampled_block_counts() {
    for alg in Algorithm::ALL {
        for n in (17..=40).chain([63, 64, 65, 100, 127, 128, 129]) {
            for b in [1, 2, 3, 4, 7, 16, 33] {
                check_all(alg, n, b);
            }
        }
    }
}

#[test]
fn planted_bugs_are_caught() {
    let (n, b) = (11, 9);
    let scheds: Vec<Schedule> = (0..n)
        .map(|r| Schedule::new(Algorithm::Binomial, n, r, b).unwrap())
        .collect();
    let t = scheds[0].num_steps();
    let real = |r: usize, s: usize| scheds[r].step(s);
    simulate(n, b, t, real).unwrap();

    // A sender and its receiver disagree on the block.
    let (victim, when) = (0..t)
        .flat_map(|s| (0..n).map(move |r| (r, s)))
        .find(|&(r, s)| r != 0 && scheds[r].send_at(s).is_some())
        .unwrap();
    let wrong_block = |r: usize, s: usize| {
        let mut st = real(r, s);
        if (r, s) == (victim, when) {
            let send = st.send.as_mut().unwrap();
            send.block = (send.block + 1) % b;
        }
        st
    };
    let err = simulate(n, b, t, wrong_block).unwrap_err();
    assert!(err.contains("not matched"), "{err}");

    // One step too few: some rank misses a block.
    assert!(simulate(n, b, t - 1, real)
        .unwrap_err()
        .contains("never receives"));

    // A relay forwards a block it only receives later: rewrite both ends of its first send.
    let first_send = scheds[victim].sends().next().unwrap();
    let late = scheds[victim].recvs().last().unwrap();
    assert!(late.step >= first_send.step);
    let too_early = |r: usize, s: usize| {
        let mut st = real(r, s);
        if s == first_send.step {
            if r == victim {
                st.send.as_mut().unwrap().block = late.block;
            } else if r == first_send.peer {
                st.recv.as_mut().unwrap().block = late.block;
            }
        }
        st
    };
    let err = simulate(n, b, t, too_early).unwrap_err();
    assert!(err.contains("does not hold"), "{err}");
}

#[test]
fn step_count_formulas() {
    use Algorithm::*;
    // (algorithm, n, b, steps)
    let table = [
        (Binomial, 2, 10, 10),
        (Binomial, 8, 10, 12),
        (Binomial, 9, 10, 13),
        (Binomial, 16, 100, 103),
        (Binomial, 15, 100, 103),
        (Chain, 2, 10, 10),
        (Chain, 5, 10, 13),
        (Sequential, 5, 10, 40),
        (Tree, 2, 10, 10),
        (Tree, 5, 10, 30),
        (Tree, 8, 10, 30),
        (Tree, 9, 10, 40),
    ];
    for (alg, n, b, steps) in table {
        assert_eq!(alg.num_steps(n, b), Ok(steps), "{alg} n={n} b={b}");
    }
    for alg in Algorithm::ALL {
        assert_eq!(alg.num_steps(1, 7), Ok(0));
    }
}

#[test]
fn binomial_pipeline_on_eight_vertices() {
    // At step 0 the root starts block 0 on vertex 1; at step 1 vertex 1 passes it across
    // dimension 1 to vertex 3 while the root starts block 1 on vertex 2.
    let s = |r| Schedule::new(Algorithm::Binomial, 8, r, 4).unwrap();
    let t = |step, block, peer| Transfer { step, block, peer };
    assert_eq!(s(0).send_at(0), Some(t(0, 0, 1)));
    assert_eq!(s(1).recv_at(0), Some(t(0, 0, 0)));
    assert_eq!(s(0).send_at(1), Some(t(1, 1, 2)));
    assert_eq!(s(1).send_at(1), Some(t(1, 0, 3)));
    assert_eq!(s(7).first_recv(), Some(t(2, 0, 3)));
    // From step k = 3 on, every vertex receives at every step.
    for r in 1..8 {
        for step in 3..s(r).num_steps() {
            assert!(s(r).recv_at(step).is_some(), "rank {r} step {step}");
        }
    }
}

#[test]
fn one_member_groups_are_empty() {
    for alg in Algorithm::ALL {
        let sched = Schedule::new(alg, 1, 0, 5).unwrap();
        assert_eq!(sched.num_steps(), 0);
        assert!(sched.step(0).is_idle());
        assert_eq!(sched.sends().count(), 0);
        assert_eq!(sched.recvs().count(), 0);
        assert_eq!(sched.first_recv(), None);
        let p = sched.participant();
        assert!(p.is_root());
        assert!(p.peers().is_empty());
        assert_eq!(p.first_block_source(), None);
    }
}

#[test]
fn invalid_parameters_are_errors() {
    for alg in Algorithm::ALL {
        assert_eq!(
            Schedule::new(alg, 0, 0, 1).unwrap_err(),
            ScheduleError::EmptyGroup
        );
        assert_eq!(
            Schedule::new(alg, 4, 4, 1).unwrap_err(),
            ScheduleError::RankOutOfRange {
                rank: 4,
                group_size: 4
            }
        );
        assert_eq!(
            Schedule::new(alg, 4, 1, 0).unwrap_err(),
            ScheduleError::NoBlocks
        );
        assert_eq!(
            Schedule::new(alg, MAX_GROUP_SIZE + 1, 0, 1).unwrap_err(),
            ScheduleError::GroupTooLarge(MAX_GROUP_SIZE + 1)
        );
        assert_eq!(
            Participant::new(alg, 3, 7).unwrap_err(),
            ScheduleError::RankOutOfRange {
                rank: 7,
                group_size: 3
            }
        );
        assert_eq!(alg.num_steps(0, 1), Err(ScheduleError::EmptyGroup));
        assert_eq!(alg.num_steps(2, 0), Err(ScheduleError::NoBlocks));
    }
    if let Ok(too_many) = usize::try_from(MAX_BLOCKS + 1) {
        assert_eq!(
            Schedule::new(Algorithm::Chain, 4, 1, too_many).unwrap_err(),
            ScheduleError::TooManyBlocks(too_many)
        );
    }
    let msg = ScheduleError::RankOutOfRange {
        rank: 4,
        group_size: 4,
    }
    .to_string();
    assert!(msg.contains("rank 4"), "{msg}");
}

#[test]
fn limits_are_accepted_and_cheap() {
    let Ok(max_blocks) = usize::try_from(MAX_BLOCKS) else {
        return; // 32-bit platform: the largest block count is not representable.
    };
    let n = MAX_GROUP_SIZE;
    let start = Instant::now();
    for alg in Algorithm::ALL {
        for rank in [0, 1, n / 2, n - 1] {
            let sched = Schedule::new(alg, n, rank, max_blocks).unwrap();
            assert_eq!(sched.num_steps(), expected_steps(alg, n, max_blocks));
            let last = sched.num_steps() - 1;
            let _ = sched.step(last);
            let _ = sched.step(last / 2);
            if rank > 0 {
                let first = sched.first_recv().unwrap();
                let fb = sched.participant().first_block_source().unwrap();
                assert_eq!(first.peer, fb.peer);
                assert!(sched.next_recv(first.step + 1).is_some());
            }
        }
    }
    assert!(
        start.elapsed().as_secs() < 5,
        "queries at the limits took {:?}",
        start.elapsed()
    );
}

#[test]
fn hundred_blocks_on_sixteen_ranks_is_instant() {
    let start = Instant::now();
    for alg in Algorithm::ALL {
        let total: usize = (0..16)
            .map(|r| {
                let s = Schedule::new(alg, 16, r, 100).unwrap();
                s.sends().count() + s.recvs().count()
            })
            .sum();
        assert_eq!(total, 2 * 15 * 100);
    }
    assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
}

#[test]
fn algorithm_names() {
    assert_eq!(Algorithm::default(), Algorithm::Binomial);
    for (alg, name) in Algorithm::ALL.into_iter().zip([
        "binomial_send",
        "chain_send",
        "sequential_send",
        "tree_send",
    ]) {
        assert_eq!(alg.to_string(), name);
        assert_eq!(alg.config_name(), name);
        assert_eq!(name.parse::<Algorithm>(), Ok(alg));
    }
    for bad in [
        "",
        "binomial",
        "Binomial_Send",
        " chain_send",
        "tree_send ",
        "pipeline",
    ] {
        let err = bad.parse::<Algorithm>().unwrap_err();
        assert_eq!(err.0, bad);
        assert!(err.to_string().contains("binomial_send"));
    }
}
