//! Predicate kinds and their life cycle, driven step by step on a sim cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use derecho_sst::{PredicateHandle, SstConfig, SstError};

fn counter() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    (Arc::clone(&c), c)
}

#[test]
fn one_time_fires_once_then_is_gone() {
    let (net, t, row) = common::sim_cluster(2, 1, SstConfig::default());
    let (fired, f) = counter();
    let h = t[0]
        .predicates()
        .one_time(
            move |s| s.get(row.counter, 1) >= 3,
            move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    assert_eq!(t[0].step(), 0);
    t[1].set(row.counter, 3);
    t[1].push(row.counter).unwrap();
    assert_eq!(t[0].step(), 0, "the write has not landed yet");
    net.run_for(Duration::from_millis(1));
    assert_eq!(t[0].step(), 1);
    assert_eq!(t[0].step(), 0);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    assert!(!t[0].predicates().contains(h));
    assert!(!t[0].predicates().remove(h));
    assert!(t[0].predicates().is_empty());
}

#[test]
fn recurrent_fires_every_step_while_true() {
    let (_net, t, row) = common::sim_cluster(2, 2, SstConfig::default());
    let (fired, f) = counter();
    t[0].predicates()
        .recurrent(
            move |s| s.get(row.flag, 0),
            move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    assert_eq!(t[0].step(), 0);
    t[0].set(row.flag, true);
    for _ in 0..5 {
        assert_eq!(t[0].step(), 1);
    }
    t[0].set(row.flag, false);
    assert_eq!(t[0].step(), 0);
    assert_eq!(fired.load(Ordering::SeqCst), 5);
    assert_eq!(t[0].predicates().len(), 1);
}

#[test]
fn transition_fires_only_on_false_to_true() {
    let (net, t, row) = common::sim_cluster(2, 3, SstConfig::default());
    let (fired, f) = counter();
    t[0].predicates()
        .transition(
            move |s| s.get(row.signed, 1) < 0,
            move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    let set_remote = |v: i32| {
        t[1].set(row.signed, v);
        t[1].push(row.signed).unwrap();
        net.run_for(Duration::from_millis(1));
    };
    set_remote(-1);
    assert_eq!(t[0].step(), 1, "false to true");
    assert_eq!(t[0].step(), 0, "still true: no new transition");
    set_remote(-7);
    assert_eq!(t[0].step(), 0, "true to true");
    set_remote(4);
    assert_eq!(t[0].step(), 0, "true to false");
    set_remote(-2);
    assert_eq!(t[0].step(), 1, "false to true again");
    assert_eq!(fired.load(Ordering::SeqCst), 2);
}

#[test]
fn transition_already_true_at_insertion_fires_at_first_step() {
    let (_net, t, row) = common::sim_cluster(1, 4, SstConfig::default());
    t[0].set(row.flag, true);
    t[0].predicates()
        .transition(move |s| s.get(row.flag, 0), |_| {})
        .unwrap();
    assert_eq!(t[0].step(), 1);
    assert_eq!(t[0].step(), 0);
}

#[test]
fn triggers_insert_and_remove_predicates_including_themselves() {
    let (_net, t, row) = common::sim_cluster(1, 5, SstConfig::default());
    let log = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let self_handle: Arc<Mutex<Option<PredicateHandle>>> = Arc::new(Mutex::new(None));
    let victim_handle: Arc<Mutex<Option<PredicateHandle>>> = Arc::new(Mutex::new(None));

    // A recurrent predicate that, on its first firing, inserts a child, removes a victim that
    // comes after it in this very step, and removes itself.
    let (l, me, victim) = (
        Arc::clone(&log),
        Arc::clone(&self_handle),
        Arc::clone(&victim_handle),
    );
    let h = t[0]
        .predicates()
        .recurrent(
            |_| true,
            move |s| {
                l.lock().unwrap().push("parent");
                let l2 = Arc::clone(&l);
                s.predicates()
                    .recurrent(
                        move |s| s.get(row.counter, 0) < 2,
                        move |s| {
                            l2.lock().unwrap().push("child");
                            s.set(row.counter, s.get(row.counter, 0) + 1);
                        },
                    )
                    .unwrap();
                assert!(s.predicates().remove(victim.lock().unwrap().unwrap()));
                assert!(s.predicates().remove(me.lock().unwrap().unwrap()));
                assert!(
                    !s.predicates().remove(me.lock().unwrap().unwrap()),
                    "removing twice reports false"
                );
            },
        )
        .unwrap();
    *self_handle.lock().unwrap() = Some(h);
    let l = Arc::clone(&log);
    let v = t[0]
        .predicates()
        .recurrent(|_| true, move |_| l.lock().unwrap().push("victim"))
        .unwrap();
    *victim_handle.lock().unwrap() = Some(v);

    assert_eq!(
        t[0].step(),
        1,
        "parent only: victim removed, child not yet due"
    );
    assert_eq!(t[0].predicates().len(), 1, "only the child is left");
    assert_eq!(t[0].step(), 1);
    assert_eq!(t[0].step(), 1);
    assert_eq!(t[0].step(), 0, "counter reached 2");
    assert_eq!(*log.lock().unwrap(), vec!["parent", "child", "child"]);
}

#[test]
fn a_trigger_that_steps_again_does_not_recurse() {
    let (_net, t, _row) = common::sim_cluster(1, 6, SstConfig::default());
    t[0].predicates()
        .one_time(|_| true, |s| assert_eq!(s.step(), 0))
        .unwrap();
    assert_eq!(t[0].step(), 1);
}

#[test]
fn remove_by_handle_and_clear() {
    let (_net, t, _row) = common::sim_cluster(1, 7, SstConfig::default());
    let (fired, f) = counter();
    let h = t[0]
        .predicates()
        .recurrent(
            |_| true,
            move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    assert_eq!(t[0].step(), 1);
    assert!(t[0].predicates().remove(h));
    assert_eq!(t[0].step(), 0);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    for _ in 0..3 {
        t[0].predicates().recurrent(|_| true, |_| {}).unwrap();
    }
    assert_eq!(t[0].step(), 3);
    t[0].predicates().clear();
    assert_eq!(t[0].step(), 0);
    assert!(t[0].predicates().is_empty());
}

#[test]
fn the_number_of_predicates_is_bounded() {
    let (_net, t, _row) = common::sim_cluster(1, 8, SstConfig::default().with_max_predicates(2));
    t[0].predicates().recurrent(|_| false, |_| {}).unwrap();
    t[0].predicates().recurrent(|_| false, |_| {}).unwrap();
    let err = t[0].predicates().recurrent(|_| false, |_| {}).unwrap_err();
    assert!(matches!(err, SstError::TooManyPredicates { limit: 2 }));
}
