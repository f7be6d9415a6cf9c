//! Runs the `replicated_kv` example as a user would: 4 member processes on 127.0.0.1, puts and
//! gets from every node, and both replicas of each shard must report the same digest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the example with `args` (bounded to 150 s, killed after) and returns its output; a
/// failed run fails the test.
fn run_example(args: &[&str]) -> String {
    // Cargo builds the examples next to the test binaries' folder.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("replicated_kv"))
        .unwrap();
    assert!(example.exists(), "{} was not built", example.display());
    let out_file = std::env::temp_dir().join(format!(
        "replicated-kv-{}-{}.out",
        std::process::id(),
        args.len()
    ));
    let mut child = Command::new(&example)
        .args(args)
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
    out
}

#[test]
fn the_example_runs_four_processes_and_the_replicas_agree() {
    let out = run_example(&["--local", "4"]);
    let replicas: Vec<&str> = out.lines().filter(|l| l.starts_with("replica ")).collect();
    assert_eq!(replicas.len(), 4, "{out}");
    assert!(out.contains("all 2 shards agree"), "{out}");
    for l in replicas {
        assert!(l.contains("keys=400"), "{l}");
    }
}

/// Runs the example with `--persist` twice on one directory: the first run ends with every
/// member killed; the second restarts the group from the logs, and every member has its
/// shard's 400 keys before it puts anything (issue #15).
#[test]
fn with_persist_the_map_survives_killing_every_member() {
    let dir = std::env::temp_dir().join(format!("replicated-kv-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_string_lossy().into_owned();
    let first = run_example(&["--local", "4", "--persist", &dir_arg]);
    // Fresh logs: a member reports before its shard has its keys (a fast peer may have put
    // one or two already).
    let fresh = restored(&first);
    assert!(
        fresh.len() == 4 && fresh.iter().all(|k| *k < 400),
        "{first}"
    );
    let second = run_example(&["--local", "4", "--persist", &dir_arg]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(restored(&second), vec![400; 4], "{second}");
    assert!(second.contains("all 2 shards agree"), "{second}");
}

/// The keys each member reported restoring, in report order.
fn restored(out: &str) -> Vec<usize> {
    out.lines()
        .filter_map(|l| l.strip_prefix("restored "))
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("keys=")))
        .map(|k| k.parse().unwrap())
        .collect()
}
