//! `sst-node`: one member of a test cluster, run as its own process by the multi-process tests.
//!
//! ```text
//! sst-node --rank R --n N --mode converge|idle|kill [--count K] [--seconds S]
//!          [--heartbeat-ms H] [--timeout-ms T]
//! ```
//!
//! Node ids are `10 + rank`. The process starts a tcp fabric on a free loopback port, prints
//! `ADDR <addr>`, and reads `PEERS <addr0> <addr1> ...` (every member's address in rank order)
//! from stdin. Then, by mode:
//!
//! * `converge`: each node sends `K` messages through a ring of slots in its row (payload push,
//!   then counter push, reusing a slot only after every peer acknowledged it) while its core loop
//!   checks every message of every peer; prints `DONE checked=<n>` when all rows reached `K` and
//!   every message was complete, or `BAD <rank> <msg>` for an incomplete payload;
//! * `idle`: runs the core loop and heartbeats, passes a barrier, and prints
//!   `IDLE cpu_ns=<n> ticks=<n> wall_ns=<n>`: CPU time of this process over `S` seconds;
//! * `kill`: runs the core loop and heartbeats, passes a barrier and prints `READY`.
//!
//! Every failure upcall prints `FAILED <id> <reason>`. Afterwards the node answers `REPORT` on
//! stdin with `REPORT failures=<n> frozen=<ranks>` and exits cleanly on `EXIT` or end of input.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::{Fabric, RegionId};
use derecho_sst::{
    ArrayField, BytesField, CoreLoop, CoreLoopConfig, FailureDetector, Field, Member,
    SchemaBuilder, Sst, SstConfig,
};

const SLOT: usize = 128;
const NSLOTS: usize = 16;
const TABLE: RegionId = RegionId(0x5353_5400_0000_0001);

struct Args {
    rank: usize,
    n: usize,
    mode: String,
    count: u64,
    seconds: f64,
    heartbeat_ms: u64,
    timeout_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rank: 0,
        n: 0,
        mode: String::new(),
        count: 1000,
        seconds: 3.0,
        heartbeat_ms: 100,
        timeout_ms: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--rank" => a.rank = v.parse().map_err(|e| bad(&e))?,
            "--n" => a.n = v.parse().map_err(|e| bad(&e))?,
            "--mode" => a.mode = v,
            "--count" => a.count = v.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = v.parse().map_err(|e| bad(&e))?,
            "--heartbeat-ms" => a.heartbeat_ms = v.parse().map_err(|e| bad(&e))?,
            "--timeout-ms" => a.timeout_ms = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.rank >= a.n {
        return Err("--rank must be below --n".into());
    }
    Ok(a)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[derive(Clone, Copy)]
struct Row {
    counter: Field<u64>,
    acks: ArrayField<u64>,
    slots: BytesField,
}

fn pattern(rank: usize, msg: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((msg as usize * 131 + rank * 17 + j * 7) % 251 + 1) as u8)
        .collect()
}

fn run(a: &Args) -> Result<(), String> {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let id = |rank: usize| 10 + rank as u32;
    let fabric = TcpFabric::start(TcpConfig::new(id(a.rank), any)).map_err(|e| e.to_string())?;
    say(&format!(
        "ADDR {}",
        fabric.local_addr().ok_or("no local address")?
    ));
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(|e| e.to_string())?;
    let addrs: Vec<SocketAddr> = line
        .strip_prefix("PEERS ")
        .ok_or_else(|| format!("expected PEERS, got {line:?}"))?
        .split_whitespace()
        .map(|s| s.parse().map_err(|e| format!("{s}: {e}")))
        .collect::<Result<_, String>>()?;
    if addrs.len() != a.n {
        return Err(format!("{} addresses for {} members", addrs.len(), a.n));
    }
    let members: Vec<Member> = addrs
        .iter()
        .enumerate()
        .map(|(r, addr)| Member::new(id(r), *addr))
        .collect();

    let mut b = SchemaBuilder::new();
    let row = Row {
        counter: b.field("counter"),
        acks: b.array("acks", a.n),
        slots: b.bytes("slots", SLOT * NSLOTS),
    };
    let schema = b.build().map_err(|e| e.to_string())?;
    let config = SstConfig::default()
        .with_heartbeat_ms(a.heartbeat_ms)
        .with_poll_cq_timeout_ms(a.timeout_ms);
    let shared: Arc<dyn Fabric> = Arc::new(fabric.clone());
    let sst =
        Sst::prepare(shared, &members, a.rank, schema, TABLE, config).map_err(|e| e.to_string())?;
    sst.on_failure(|node, reason| say(&format!("FAILED {node} {reason}")));
    sst.connect(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;

    let core =
        CoreLoop::start(Arc::clone(&sst), CoreLoopConfig::default()).map_err(|e| e.to_string())?;
    let detector = FailureDetector::start(Arc::clone(&sst)).map_err(|e| e.to_string())?;
    let missing = sst
        .sync_with_members(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    if !missing.is_empty() {
        return Err(format!("barrier: missing {missing:?}"));
    }

    match a.mode.as_str() {
        "converge" => converge(&sst, row, a)?,
        "idle" => idle(a.seconds)?,
        "kill" => say("READY"),
        other => return Err(format!("unknown mode {other}")),
    }

    loop {
        line.clear();
        match stdin.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match line.trim() {
            "REPORT" => {
                let frozen: Vec<String> =
                    sst.frozen_ranks().iter().map(ToString::to_string).collect();
                say(&format!(
                    "REPORT failures={} frozen={}",
                    sst.failures().len(),
                    frozen.join(",")
                ));
            }
            "EXIT" => break,
            _ => {}
        }
    }
    detector.stop();
    core.stop();
    fabric.shutdown();
    Ok(())
}

/// Sends `count` messages through the slot ring while the core loop checks the peers'.
fn converge(sst: &Arc<Sst>, row: Row, a: &Args) -> Result<(), String> {
    let (n, me, count) = (a.n, a.rank, a.count);
    let checked = Arc::new(std::sync::Mutex::new(vec![0u64; n]));
    let bad = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (checker, bad) = (Arc::clone(&checked), Arc::clone(&bad));
        let mut buf = vec![0u8; SLOT];
        sst.predicates()
            .recurrent(
                move |s| {
                    (0..n).any(|r| r != me && s.get_elem(row.acks, me, r) < s.get(row.counter, r))
                },
                move |s| {
                    let mut c = checker.lock().unwrap_or_else(|p| p.into_inner());
                    for r in (0..n).filter(|r| *r != me) {
                        let seen = s.get(row.counter, r);
                        while c[r] < seen {
                            let m = c[r] + 1;
                            let at = ((m - 1) as usize % NSLOTS) * SLOT;
                            let complete = s.read_bytes(row.slots, r, at, &mut buf).is_ok()
                                && buf == pattern(r, m, SLOT);
                            if !complete && !bad.swap(true, Ordering::SeqCst) {
                                say(&format!("BAD {r} {m}"));
                            }
                            c[r] = m;
                        }
                        if s.get_elem(row.acks, me, r) < c[r] {
                            s.set_elem(row.acks, r, c[r]);
                            let _ = s.push_to(
                                row.acks.elems_range(r, 1).unwrap_or(row.acks.range()),
                                &[r],
                            );
                        }
                    }
                },
            )
            .map_err(|e| e.to_string())?;
        let (checker, done) = (Arc::clone(&checked), Arc::clone(&done));
        sst.predicates()
            .one_time(
                move |s| {
                    let c = checker.lock().unwrap_or_else(|p| p.into_inner());
                    (0..n).all(|r| s.get(row.counter, r) >= count && (r == me || c[r] >= count))
                },
                move |_| done.store(true, Ordering::SeqCst),
            )
            .map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in 1..=count {
        // Flow control: reuse a slot only after every live peer acknowledged its last message.
        loop {
            let acked = (0..n)
                .filter(|r| *r != me && !sst.is_frozen(*r))
                .map(|r| sst.get_elem(row.acks, r, me))
                .min()
                .unwrap_or(u64::MAX);
            if m <= acked.saturating_add(NSLOTS as u64) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("flow control stalled at message {m}"));
            }
            let seen = sst.doorbell().epoch();
            sst.doorbell().wait(seen, Duration::from_millis(10));
        }
        let at = ((m - 1) as usize % NSLOTS) * SLOT;
        let push = |r: derecho_sst::SstError| r.to_string();
        sst.write_bytes(row.slots, at, &pattern(me, m, SLOT))
            .map_err(push)?;
        sst.push_bytes(row.slots, at, SLOT).map_err(push)?;
        sst.set(row.counter, m);
        sst.push(row.counter).map_err(push)?;
    }
    while !done.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return Err("did not converge".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let total: u64 = checked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .sum();
    if !bad.load(Ordering::SeqCst) {
        say(&format!("DONE checked={total}"));
    }
    Ok(())
}

/// CPU time of this process: (sum of the threads' schedstat run time in ns, utime + stime in
/// clock ticks of 10 ms).
fn cpu_now() -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed /proc/self/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks: u64 = f
        .get(11..13)
        .ok_or("short /proc/self/stat")?
        .iter()
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())? {
        let path = task.map_err(|e| e.to_string())?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok((ns, ticks))
}

fn idle(seconds: f64) -> Result<(), String> {
    std::thread::sleep(Duration::from_millis(200));
    let (ns0, t0) = cpu_now()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (ns1, t1) = cpu_now()?;
    let wall = start.elapsed();
    say(&format!(
        "IDLE cpu_ns={} ticks={} wall_ns={}",
        ns1.saturating_sub(ns0),
        t1.saturating_sub(t0),
        wall.as_nanos()
    ));
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sst-node: {e}");
            say(&format!("ERROR {e}"));
            ExitCode::FAILURE
        }
    }
}
