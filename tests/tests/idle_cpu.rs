//! An idle group costs (almost) no CPU: three members with running core loops, heartbeats and
//! RDMC engines, idle for three seconds. This file holds one test so that nothing else runs in
//! the process while it measures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use derecho::multicast::Mode;
use derecho_tests::cluster::{single_shard, Cluster};

/// CPU seconds used by this process so far (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

#[test]
fn an_idle_three_member_group_uses_under_one_percent_cpu_per_member() {
    let c = Cluster::start(3, single_shard(Mode::Ordered, 8, |ids| ids.to_vec())).unwrap();
    // Some traffic first, so every path has run, then let it settle.
    for rank in 0..3 {
        c.send_all(rank, 0, 20, |i| if i % 2 == 0 { 100 } else { 5000 })
            .unwrap();
    }
    assert!(c.wait_delivered(60, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    c.stop();
    let per_member = cpu / wall / 3.0;
    eprintln!(
        "idle group: {:.2}% CPU per member ({cpu:.3} s over {wall:.1} s)",
        per_member * 100.0
    );
    assert!(
        per_member < 0.01,
        "idle members used {:.2}% CPU each ({cpu:.3} s over {wall:.1} s)",
        per_member * 100.0
    );
}
