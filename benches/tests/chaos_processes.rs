//! kill -9 of a member in the middle of a continuous ordered stream among real processes:
//! the survivors install a view without it and the checker finds every property intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn kill_9_of_any_rank_mid_stream_keeps_virtual_synchrony() {
    for victim in [2, 0, 3, 1] {
        let kill = format!("{victim}@1000");
        let out = Command::new(env!("CARGO_BIN_EXE_launch"))
            .args([
                "--nodes",
                "4",
                "--payload",
                "1024",
                "--check",
                "--timeout",
                "120",
                "--kill",
                &kill,
                "--",
            ])
            .args(["stream_test", "4", "2500"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "victim {victim}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let check = text
            .lines()
            .find(|l| l.starts_with("check="))
            .unwrap_or("no check line");
        // Two views at least: the first, and the one without the victim (members leaving at
        // the end of the run may add more).
        let views: u32 = check
            .split_whitespace()
            .find_map(|p| p.strip_prefix("views="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(
            check.starts_with("check=ok") && views >= 2,
            "victim {victim}: {check}"
        );
    }
}
