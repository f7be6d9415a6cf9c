//! A network partition among real processes: three members, each in its own network namespace
//! on one bridge, stream ordered messages; an nftables rule then cuts one of them off. The two
//! that still see each other hold a majority, so they install a view without the third and
//! keep going; the one cut off suspects both others, would be a minority, and stops instead of
//! installing a view of its own (partition safety). The checker verifies every record.
//!
//! It needs root, `ip` (iproute2) and `nft` (nftables); where they are missing or not permitted
//! it says so and passes without running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use benches::group_bench::CHECK_LOG_ENV;
use benches::ChildGuard;
use derecho::config::Config;
use derecho_tests::checker::{Checker, Event, MemberLog};

const NODES: usize = 3;

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The namespaces, veth pairs and bridge of one run; removed on drop.
struct Net {
    bridge: String,
    namespaces: Vec<String>,
    host_ends: Vec<String>,
}

impl Net {
    fn create(tag: u32, subnet: &str) -> Result<Net, String> {
        let mut net = Net {
            bridge: format!("drb{tag}"),
            namespaces: Vec::new(),
            host_ends: Vec::new(),
        };
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for i in 0..NODES {
            let ns = format!("drp{tag}n{i}");
            let (host, inner) = (format!("drh{tag}n{i}"), format!("drv{tag}n{i}"));
            run("ip", &["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            run(
                "ip",
                &["link", "add", &host, "type", "veth", "peer", "name", &inner],
            )?;
            net.host_ends.push(host.clone());
            run("ip", &["link", "set", &inner, "netns", &ns])?;
            run("ip", &["link", "set", &host, "master", &net.bridge])?;
            run("ip", &["link", "set", &host, "up"])?;
            let addr = format!("{subnet}.{}/24", i + 1);
            run_in(&ns, "ip", &["addr", "add", &addr, "dev", &inner])?;
            run_in(&ns, "ip", &["link", "set", &inner, "up"])?;
            run_in(&ns, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        for h in &self.host_ends {
            let _ = run("ip", &["link", "del", h]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    // Root is effective uid 0 in /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!("not root (effective uid {uid})"));
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        if Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

#[test]
fn a_cut_off_member_stops_and_the_majority_continues() {
    if let Some(why) = unsupported() {
        eprintln!("SKIPPED: the partition test needs network namespaces and nftables: {why}");
        return;
    }
    let tag = std::process::id() % 100_000;
    let subnet = format!("10.{}.{}", 200 + tag % 50, (tag / 50) % 250);
    let net = match Net::create(tag, &subnet) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED: network namespaces are not permitted here: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("derecho-partition-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut children = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();
    for i in 0..NODES {
        // Each namespace has its own ports: the same numbers on every node are fine.
        let mut c = Config::default();
        c.derecho.local_id = i as u32;
        c.derecho.local_ip = format!("{subnet}.{}", i + 1).parse().unwrap();
        c.derecho.contact_ip = format!("{subnet}.1").parse().unwrap();
        c.derecho.heartbeat_ms = 50;
        c.derecho.sst_poll_cq_timeout_ms = 1000;
        if let Some(p) = c.subgroups.get_mut("DEFAULT") {
            p.max_payload_size = 1024;
            p.max_smc_payload_size = 1024;
        }
        let cfg = dir.join(format!("n{i}.cfg"));
        std::fs::write(&cfg, c.to_ini_string()).unwrap();
        let log = dir.join(format!("n{i}.jsonl"));
        let child = Command::new("ip")
            .args(["netns", "exec", &net.namespaces[i]])
            .arg(env!("CARGO_BIN_EXE_stream_test"))
            .args(["--", "3", "6000"])
            .env("DERECHO_CONF_FILE", &cfg)
            .env(CHECK_LOG_ENV, &log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(ChildGuard::new(child));
        logs.push(log);
        // Join in id order, so node 0 leads.
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the group form and stream, then cut node 2 off: every packet in or out of its
    // namespace, except loopback, is dropped.
    std::thread::sleep(Duration::from_millis(2500));
    let rules = "table inet cut {
  chain in { type filter hook input priority 0; policy drop; iif lo accept; }
  chain out { type filter hook output priority 0; policy drop; oif lo accept; }
}";
    let cut_at = Instant::now();
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &net.namespaces[2], "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
    }
    assert!(nft.wait().unwrap().success(), "nft refused the rules");
    // Everyone ends within its stream time plus detection; bounded.
    let mut results: HashMap<usize, String> = HashMap::new();
    for (i, c) in children.iter_mut().enumerate() {
        assert!(
            c.wait_bounded(Duration::from_secs(60)),
            "member {i} did not finish"
        );
        let mut out = String::new();
        if let Some(mut s) = c.child_mut().stdout.take() {
            use std::io::Read;
            let _ = s.read_to_string(&mut out);
        }
        results.insert(i, out);
    }
    eprintln!("members finished {:?} after the cut", cut_at.elapsed());
    let field = |i: usize, k: &str| -> String {
        results[&i]
            .split_whitespace()
            .find_map(|p| p.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("member {i} printed no {k}: {:?}", results[&i]))
    };
    // The majority carries on in a view of two; the cut-off member stopped in view 0.
    for i in [0, 1] {
        assert_eq!(field(i, "stopped"), "0", "member {i}: {}", results[&i]);
    }
    assert_eq!(field(2, "stopped"), "1", "member 2: {}", results[&2]);
    assert_eq!(field(2, "vid"), "0", "member 2: {}", results[&2]);
    let logs: Vec<MemberLog> = logs
        .iter()
        .map(|p| MemberLog::read_file(p).unwrap())
        .collect();
    // Both installed the view of the two of them. (Which of them prints its result first is
    // a race: the other may already have left at the end of its run, so the final view size
    // each prints is not checked.)
    for i in [0, 1] {
        assert!(
            logs[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::View { vid: 1, members } if members == &[0, 1])),
            "member {i} installed no view of members 0 and 1: {}",
            results[&i]
        );
    }
    // Node 2 never installs a view beyond the first.
    assert!(
        !logs[2]
            .events
            .iter()
            .any(|e| matches!(e, Event::View { vid, .. } if *vid > 0)),
        "the minority installed a view"
    );
    // Detection takes the completion timeout (1 s here); the majority's deliveries must
    // resume well within a few times that.
    let report = Checker::new()
        .resume_within(Duration::from_secs(10))
        .check(&logs);
    assert!(report.ok(), "{report}");
    drop(children);
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
