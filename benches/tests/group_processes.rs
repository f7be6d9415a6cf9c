//! Multicast among real processes on 127.0.0.1, started by `launch --check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn launch(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_launch"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "launch {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn three_processes_deliver_in_total_order_through_slots_and_rdmc() {
    // Small messages through SST slots, then large ones through RDMC.
    for payload in ["500", "20000"] {
        let out = launch(&[
            "--nodes",
            "3",
            "--payload",
            payload,
            "--smc",
            "1024",
            "--window",
            "8",
            "--check",
            "--timeout",
            "120",
            "--",
            "bandwidth_test",
            "3",
            "0",
            "300",
            "0",
        ]);
        assert!(
            out.contains("check=ok views=1 delivered=2700"),
            "payload {payload}: {out}"
        );
        assert!(out.contains("bandwidth_test nodes=3 senders=all"), "{out}");
    }
}

#[test]
fn one_sender_and_raw_mode_across_processes() {
    let out = launch(&[
        "--nodes",
        "2",
        "--payload",
        "100",
        "--check",
        "--timeout",
        "120",
        "--",
        "bandwidth_test",
        "2",
        "2",
        "500",
        "1",
    ]);
    assert!(out.contains("check=ok views=1 delivered=1000"), "{out}");
    assert!(
        out.contains("senders=one") && out.contains("mode=unordered"),
        "{out}"
    );
}
