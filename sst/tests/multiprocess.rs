//! Three `sst-node` processes over the tcp backend: convergence with the payload-before-guard
//! check, kill -9 of a member, a stopped (hung) member, and idle CPU.
//!
//! Every test is bounded in time, and a [`Cluster`] guard kills and reaps every child on every
//! exit path (including a failed assertion).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: Vec<String>,
}

struct Cluster {
    nodes: Vec<Node>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stdin.take();
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

impl Cluster {
    /// Starts `n` nodes in `mode`, exchanges their addresses, and returns once all were told.
    fn launch(n: usize, mode: &str, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster { nodes: Vec::new() };
        for rank in 0..n {
            let mut child = Command::new(env!("CARGO_BIN_EXE_sst-node"))
                .args(["--rank", &rank.to_string(), "--n", &n.to_string()])
                .args(["--mode", mode])
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn sst-node");
            let stdout = child.stdout.take().unwrap();
            let stdin = child.stdin.take();
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            cluster.nodes.push(Node {
                child,
                stdin,
                lines: rx,
                log: Vec::new(),
            });
        }
        let addrs: Vec<String> = (0..n)
            .map(|i| {
                let l = cluster.expect(i, "ADDR ", Duration::from_secs(20));
                l["ADDR ".len()..].to_string()
            })
            .collect();
        let peers = format!("PEERS {}", addrs.join(" "));
        for i in 0..n {
            cluster.send(i, &peers);
        }
        cluster
    }

    fn send(&mut self, i: usize, line: &str) {
        if let Some(s) = self.nodes[i].stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// Waits for a line of node `i` starting with `prefix`; every line read is kept in its log.
    fn expect(&mut self, i: usize, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let node = &mut self.nodes[i];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match node.lines.recv_timeout(left) {
                Ok(line) => {
                    node.log.push(line.clone());
                    assert!(!line.starts_with("ERROR"), "node {i}: {line}");
                    assert!(!line.starts_with("BAD"), "node {i}: {line}");
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "node {i}: no {prefix:?} within {timeout:?}; log {:?}",
                        node.log
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("node {i} exited before {prefix:?}; log {:?}", node.log)
                }
            }
        }
    }

    /// Lines of node `i` that start with `prefix`, among those read so far plus any pending.
    fn drain(&mut self, i: usize, prefix: &str) -> Vec<String> {
        let node = &mut self.nodes[i];
        while let Ok(line) = node.lines.try_recv() {
            node.log.push(line);
        }
        node.log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Asks every listed node to exit and checks that each does, cleanly, in time.
    fn exit(&mut self, which: &[usize]) {
        for &i in which {
            self.send(i, "EXIT");
            self.nodes[i].stdin.take();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for &i in which {
            loop {
                if let Some(status) = self.nodes[i].child.try_wait().unwrap() {
                    assert!(status.success(), "node {i} exited with {status}");
                    break;
                }
                assert!(Instant::now() < deadline, "node {i} did not exit");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn counters_and_payloads_converge_across_three_processes() {
    let mut c = Cluster::launch(3, "converge", &["--count", "3000"]);
    for i in 0..3 {
        let done = c.expect(i, "DONE", Duration::from_secs(45));
        assert_eq!(done, "DONE checked=6000", "node {i}");
    }
    for i in 0..3 {
        assert!(c.drain(i, "FAILED").is_empty(), "node {i}");
    }
    c.exit(&[0, 1, 2]);
}

#[test]
fn kill_minus_nine_freezes_the_row_and_reports_once() {
    let mut c = Cluster::launch(3, "kill", &["--heartbeat-ms", "50"]);
    for i in 0..3 {
        c.expect(i, "READY", Duration::from_secs(20));
    }
    c.nodes[2].child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    for i in 0..2 {
        let line = c.expect(i, "FAILED 12 ", Duration::from_secs(5));
        // Over tcp the kernel closes the dead process's sockets: detection is immediate, well
        // inside the 2 s completion timeout.
        assert!(killed.elapsed() < Duration::from_millis(2500), "{line}");
    }
    // Give duplicates (heartbeat failures after the link failure) time to show up.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..2 {
        c.send(i, "REPORT");
        let report = c.expect(i, "REPORT", Duration::from_secs(5));
        assert_eq!(report, "REPORT failures=1 frozen=2", "node {i}");
        assert_eq!(c.drain(i, "FAILED").len(), 1, "node {i}");
    }
    c.exit(&[0, 1]);
}

#[test]
fn a_hung_member_is_frozen_after_the_completion_timeout() {
    // The default 2 s completion timeout: a shorter one risks false suspicions between the
    // survivors when the machine is loaded (see the failure module's docs).
    let mut c = Cluster::launch(3, "kill", &["--heartbeat-ms", "50"]);
    for i in 0..3 {
        c.expect(i, "READY", Duration::from_secs(20));
    }
    let pid = c.nodes[2].child.id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stopped.success());
    let start = Instant::now();
    for i in 0..2 {
        let line = c.expect(i, "FAILED 12 ", Duration::from_secs(10));
        assert!(line.contains("no write completion"), "{line}");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "detected after {took:?}"
    );
    for i in 0..2 {
        c.send(i, "REPORT");
        let report = c.expect(i, "REPORT", Duration::from_secs(5));
        assert_eq!(report, "REPORT failures=1 frozen=2", "node {i}");
    }
    c.exit(&[0, 1]);
    // The guard's SIGKILL ends the stopped process too.
}

#[test]
fn three_idle_processes_cost_under_one_percent_cpu() {
    let mut c = Cluster::launch(3, "idle", &["--seconds", "3"]);
    let mut worst = 0.0f64;
    for i in 0..3 {
        let line = c.expect(i, "IDLE", Duration::from_secs(30));
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        let (cpu_ns, ticks, wall_ns) = (field("cpu_ns="), field("ticks="), field("wall_ns="));
        let share = cpu_ns / wall_ns;
        let tick_share = ticks * 1e7 / wall_ns;
        eprintln!(
            "node {i}: {line} -> {:.3}% (ticks {:.2}%)",
            share * 100.0,
            tick_share * 100.0
        );
        assert!(share < 0.01, "node {i} used {:.3}% CPU", share * 100.0);
        assert!(
            tick_share < 0.01,
            "node {i} used {:.3}% CPU (ticks)",
            tick_share * 100.0
        );
        worst = worst.max(share);
    }
    eprintln!("idle CPU, worst process: {:.3}%", worst * 100.0);
    c.exit(&[0, 1, 2]);
}
