//! The seeded whole-group simulation (see `derecho_tests::simulate`): a sample of seeds, the
//! seeds that found bugs, and replay. CI also runs 500 seeds of the release binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use derecho_tests::simulate::{run_seed, SeedResult};

fn check(r: &SeedResult) {
    assert!(
        r.failure.is_none(),
        "seed {} ({}; faults {:?}): {}",
        r.seed,
        r.shape,
        r.faults,
        r.failure.as_deref().unwrap_or("")
    );
    // A run that moved no traffic checks nothing; one that installed no second view must
    // have lost its majority (every member stopped).
    assert!(
        r.delivered > 0 && (r.views >= 2 || r.stayed == 0),
        "seed {}: {} views, {} deliveries, {} members stayed",
        r.seed,
        r.views,
        r.delivered,
        r.stayed
    );
}

#[test]
fn a_sample_of_seeds_holds_every_property() {
    for seed in 1..=12 {
        check(&run_seed(seed));
    }
}

/// Seeds whose decided view lost members to a partition before it started: the absent
/// members' rows were never pushed and read as zeros ("received message 0"), so each side
/// delivered different messages in that view (with the rows left as zeros these seeds fail
/// the stability check: "delivered message 0 of node 1 while node 1 had received only 0").
/// Absent members' rows now read as members that did nothing.
#[test]
fn members_cut_off_before_the_view_starts_deliver_nothing_there() {
    for seed in [32, 66] {
        let r = run_seed(seed);
        assert!(
            r.faults
                .iter()
                .any(|f| matches!(f, derecho_tests::simulate::Fault::PartitionBeforeSetup(..))),
            "seed {seed} no longer draws a partition before set-up: {:?}",
            r.faults
        );
        check(&r);
    }
}

#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(7);
    let b = run_seed(7);
    check(&a);
    assert_eq!(a.trace, b.trace, "seed 7 ran differently twice");
    assert_eq!(a.delivered, b.delivered);
}

/// A group of five that needs all five: a crash makes the next view inadequate (no
/// subgroups), its leader crashes there as well, a joiner's leader crashes after proposing it,
/// and joins finally make a view adequate; the messages owed since the first crash are then
/// delivered by everyone who stayed.
#[test]
fn an_inadequate_view_replaces_its_leader_and_recovers_through_joins() {
    let r = run_seed(12);
    assert!(r.shape.contains("need=5"), "seed 12 drew {}", r.shape);
    assert!(
        matches!(
            r.faults.get(..2),
            Some([
                derecho_tests::simulate::Fault::Crash(_),
                derecho_tests::simulate::Fault::Crash(_)
            ])
        ),
        "seed 12 drew {:?}",
        r.faults
    );
    check(&r);
}
