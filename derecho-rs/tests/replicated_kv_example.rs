//! Runs the `replicated_kv` example as a user would: 4 member processes on 127.0.0.1, puts and
//! gets from every node, and both replicas of each shard must report the same digest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_example_runs_four_processes_and_the_replicas_agree() {
    // Cargo builds the examples next to the test binaries' folder.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("replicated_kv"))
        .unwrap();
    assert!(example.exists(), "{} was not built", example.display());
    let out_file = std::env::temp_dir().join(format!("replicated-kv-{}.out", std::process::id()));
    let mut child = Command::new(&example)
        .args(["--local", "4"])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            // Its members stop by themselves when their stdin (the launcher's pipe) closes.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    let status = status.unwrap_or_else(|| panic!("the example did not finish in 150 s:\n{out}"));
    assert!(status.success(), "{status}:\n{out}");
    let replicas: Vec<&str> = out.lines().filter(|l| l.starts_with("replica ")).collect();
    assert_eq!(replicas.len(), 4, "{out}");
    assert!(out.contains("all 2 shards agree"), "{out}");
    for l in replicas {
        assert!(l.contains("keys=400"), "{l}");
    }
}
