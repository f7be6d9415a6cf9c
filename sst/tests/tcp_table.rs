//! The table over the tcp backend with every node in this process: wake-ups of a parked core
//! loop, the payload-before-guard discipline under a concurrent reader, the barrier, and
//! failure reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{id_of, pattern, record_failures, tcp_cluster, NSLOTS, SLOT};
use derecho_fabric::Fabric;
use derecho_sst::{CoreLoop, CoreLoopConfig, FailureDetector, SstConfig};

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Parks forever unless the doorbell rings.
fn park_only() -> CoreLoopConfig {
    CoreLoopConfig::default()
        .with_spin(Duration::ZERO)
        .with_park_timeout(Duration::from_secs(10))
}

#[test]
fn a_parked_core_loop_is_woken_by_a_remote_write() {
    let c = tcp_cluster(2, SstConfig::default());
    let (a, b, row) = (&c.tables[0], &c.tables[1], c.row);
    b.predicates()
        .recurrent(
            move |s| s.get(row.counter, 0) > s.get(row.counter, 1),
            move |s| {
                s.set(row.counter, s.get(row.counter, 0));
                s.push(row.counter).unwrap();
            },
        )
        .unwrap();
    let core = CoreLoop::start(Arc::clone(b), park_only()).unwrap();
    for i in 1..=20u64 {
        std::thread::sleep(Duration::from_millis(5));
        a.set(row.counter, i);
        a.push(row.counter).unwrap();
        assert!(
            wait_for(Duration::from_secs(5), || a.get(row.counter, 1) == i),
            "answer {i}"
        );
    }
    let stats = core.stop();
    assert_eq!(stats.fired, 20);
    assert!(stats.wakeups >= 20, "{stats:?}");
}

#[test]
fn a_local_change_with_notify_wakes_the_core_loop() {
    let c = tcp_cluster(2, SstConfig::default());
    let (a, row) = (&c.tables[0], c.row);
    let fired = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fired);
    a.predicates()
        .transition(
            move |s| s.get(row.flag, 0),
            move |_| {
                f.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    let core = CoreLoop::start(Arc::clone(a), park_only()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    a.set(row.flag, true);
    a.notify();
    assert!(wait_for(Duration::from_secs(5), || fired
        .load(Ordering::SeqCst)
        == 1));
    a.set(row.flag, false);
    a.push(row.flag).unwrap(); // a push rings the local doorbell too
    std::thread::sleep(Duration::from_millis(20));
    a.set(row.flag, true);
    a.push(row.flag).unwrap();
    assert!(wait_for(Duration::from_secs(5), || fired
        .load(Ordering::SeqCst)
        == 2));
    core.stop();
}

#[test]
fn core_loops_start_and_stop_cleanly() {
    let c = tcp_cluster(1, SstConfig::default());
    for _ in 0..50 {
        let core = CoreLoop::start(Arc::clone(&c.tables[0]), CoreLoopConfig::default()).unwrap();
        drop(core);
    }
    let core = CoreLoop::start(Arc::clone(&c.tables[0]), park_only()).unwrap();
    let start = Instant::now();
    core.stop();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "stop must not wait for the park timeout"
    );
    assert_eq!(
        Arc::strong_count(&c.tables[0]),
        1,
        "threads released the table"
    );
}

#[test]
fn payload_before_guard_holds_under_a_concurrent_reader() {
    // A ring of NSLOTS slots with flow control, like the small-message ring: the writer reuses a
    // slot only after the reader acknowledged it; the reader checks every message it sees.
    const MESSAGES: u64 = 3000;
    let c = tcp_cluster(2, SstConfig::default());
    let (w, r, row) = (Arc::clone(&c.tables[0]), Arc::clone(&c.tables[1]), c.row);
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let reader = std::thread::spawn(move || {
        let mut checked = 0u64;
        let mut buf = vec![0u8; SLOT];
        let deadline = Instant::now() + Duration::from_secs(60);
        while checked < MESSAGES && Instant::now() < deadline && !st.load(Ordering::Relaxed) {
            let seen = r.get(row.counter, 0);
            while checked < seen {
                checked += 1;
                let at = ((checked - 1) as usize % NSLOTS) * SLOT;
                r.read_bytes(row.slots, 0, at, &mut buf).unwrap();
                assert_eq!(buf, pattern(checked, SLOT), "message {checked} incomplete");
                r.set(row.counter, checked);
                r.push(row.counter).unwrap();
            }
            std::hint::spin_loop();
        }
        checked
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in 1..=MESSAGES {
        while m > NSLOTS as u64 + w.get(row.counter, 1) {
            assert!(Instant::now() < deadline, "reader stalled");
            std::hint::spin_loop();
        }
        let at = ((m - 1) as usize % NSLOTS) * SLOT;
        w.write_bytes(row.slots, at, &pattern(m, SLOT)).unwrap();
        w.push_bytes(row.slots, at, SLOT).unwrap();
        w.set(row.counter, m);
        w.push(row.counter).unwrap();
    }
    let checked = reader.join();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(checked.unwrap(), MESSAGES);
}

#[test]
fn barrier_over_tcp_waits_for_everyone_and_names_the_absent() {
    let c = tcp_cluster(3, SstConfig::default());
    let missing: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = c
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(30 * i as u64));
                    t.sync_with_members(Duration::from_secs(10)).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(missing.iter().all(Vec::is_empty), "{missing:?}");
    let start = Instant::now();
    let absent = c.tables[0]
        .sync_with_members(Duration::from_millis(200))
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(absent, vec![id_of(1), id_of(2)]);
}

#[test]
fn a_crashed_member_is_frozen_and_reported_once_by_each_survivor() {
    let c = tcp_cluster(3, SstConfig::default().with_heartbeat_ms(20));
    let seen: Vec<_> = c.tables.iter().map(|t| record_failures(t)).collect();
    let detectors: Vec<_> = c.tables[..2]
        .iter()
        .map(|t| FailureDetector::start(Arc::clone(t)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    c.fabrics[2].abort();
    assert!(wait_for(Duration::from_secs(5), || {
        c.tables[..2].iter().all(|t| t.is_frozen(2))
    }));
    std::thread::sleep(Duration::from_millis(200));
    for d in detectors {
        assert!(d.stop() >= 3);
    }
    for s in &seen[..2] {
        let s = s.lock().unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].0, id_of(2));
    }
    assert!(!c.tables[0].is_frozen(1));
    assert_eq!(c.fabrics[0].local_id(), id_of(0));
}
