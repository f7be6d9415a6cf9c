//! RDMC across real processes on 127.0.0.1 (tcp backend), driven through `rdmc_bench node`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use benches::ChildGuard;

struct Node {
    guard: ChildGuard,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

fn reader(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn spawn(id: u32) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdmc_bench"))
        .args(["node", &id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = reader(child.stdout.take().unwrap());
    let guard = ChildGuard::new(child);
    let first = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    let addr = first.strip_prefix("listening ").unwrap().parse().unwrap();
    Node { guard, lines, addr }
}

/// Starts `receivers + 1` nodes and hands them their settings.
fn group(receivers: usize, settings: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..=receivers).map(|i| spawn(100 + i as u32)).collect();
    let members: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}@{}", 100 + i, n.addr))
        .collect();
    for (rank, n) in nodes.iter_mut().enumerate() {
        let line = format!("members={} rank={rank} {settings}\n", members.join(","));
        n.guard.stdin().unwrap().write_all(line.as_bytes()).unwrap();
    }
    nodes
}

fn stop(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        if let Some(s) = n.guard.stdin() {
            let _ = s.write_all(b"stop\n");
        }
        n.guard.wait_bounded(Duration::from_secs(10));
    }
}

const MIB: usize = 1 << 20;

#[test]
fn edge_and_large_sizes_reach_one_two_and_three_receivers() {
    let sizes = [1, MIB, MIB + 1, 100 * MIB];
    let list: Vec<String> = sizes.iter().map(usize::to_string).collect();
    for receivers in 1..=3 {
        let settings = format!(
            "alg=binomial_send block={MIB} window=2 sizes={} repeat=1 verify=1",
            list.join(",")
        );
        let mut nodes = group(receivers, &settings);
        let sent = nodes[0]
            .lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap();
        assert!(
            sent.starts_with("sent count=4"),
            "{receivers} receivers: sender said {sent}"
        );
        for (rank, n) in nodes.iter().enumerate().skip(1) {
            let got = n.lines.recv_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(
                got, "received count=4 verified=4",
                "{receivers} receivers, rank {rank}"
            );
        }
        stop(&mut nodes);
    }
}

#[test]
fn every_algorithm_moves_many_messages_through_a_small_window() {
    for alg in [
        "binomial_send",
        "chain_send",
        "sequential_send",
        "tree_send",
    ] {
        let settings =
            format!("alg={alg} block=4096 window=2 sizes=1,4096,10000,70000 repeat=8 verify=1");
        let mut nodes = group(3, &settings);
        let sent = nodes[0]
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap();
        assert!(
            sent.starts_with("sent count=32"),
            "{alg}: sender said {sent}"
        );
        for n in nodes.iter().skip(1) {
            assert_eq!(
                n.lines.recv_timeout(Duration::from_secs(30)).unwrap(),
                "received count=32 verified=32",
                "{alg}"
            );
        }
        stop(&mut nodes);
    }
}

#[test]
fn a_receiver_killed_mid_transfer_aborts_it_on_every_survivor() {
    let settings = format!(
        "alg=binomial_send block={MIB} window=2 sizes={} repeat=400 verify=0",
        8 * MIB
    );
    let mut nodes = group(3, &settings);
    std::thread::sleep(Duration::from_millis(300));
    nodes[2].guard.child_mut().kill().unwrap();
    for (rank, n) in nodes.iter().enumerate() {
        if rank == 2 {
            continue;
        }
        let line = n
            .lines
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("rank {rank} hangs"));
        assert!(
            line.starts_with("failed:") && line.contains("node 102"),
            "rank {rank} said {line:?}"
        );
    }
    stop(&mut nodes);
}
