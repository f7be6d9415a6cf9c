//! kill -9 of every member of a persistent stream, then a restart of all of them from their
//! logs: every update a member saw reach the global persistence frontier is in every restarted
//! replica, and the group goes on streaming.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn a_total_crash_and_restart_keeps_every_globally_persisted_update() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_launch"))
        .args([
            "--nodes",
            "3",
            "--payload",
            "1024",
            "--check",
            "--timeout",
            "120",
        ])
        .arg("--persist")
        .arg(dir.path())
        .args(["--crash-all", "@1500", "--restart-all", "@2000"])
        .args(["--", "stream_test", "3", "3500"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = text
        .lines()
        .find(|l| l.starts_with("check="))
        .unwrap_or("no check line");
    let field = |line: &str, key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(check.starts_with("check=ok"), "{check}");
    assert_eq!(field(check, "chains="), 3.0, "{check}");
    assert!(field(check, "durable=") > 0.0, "{check}");
    // The restarted members found the first run's updates on their disks, and streamed more.
    let result = text
        .lines()
        .find(|l| l.starts_with("stream_test"))
        .unwrap_or("no result line");
    assert!(field(result, "restored_min=") > 0.0, "{result}");
    assert!(field(result, "durable=") > 0.0, "{result}");
}
