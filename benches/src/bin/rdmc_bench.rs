//! RDMC bandwidth between local processes, with the fabric's raw 1 MiB write bandwidth from
//! the same run for comparison.
//!
//! ```text
//! cargo run --release -p benches --bin rdmc_bench -- [--receivers 1,2,3] \
//!     [--sizes 1048576,16777216,104857600] [--algorithms binomial_send,sequential_send] \
//!     [--total-mib 512] [--block 1048576] [--window 3]
//! ```
//!
//! For every (algorithm, receivers, size) it starts `receivers + 1` processes (this program in
//! `node` mode), sends enough messages of that size to move about `--total-mib`, and prints one
//! line with the bandwidth at the sender (bytes sent / time until every receiver released the
//! last message) and its ratio to the raw write bandwidth.
//!
//! `node` mode is also what the multi-process tests use: it prints `listening <addr>`, reads one
//! line of `key=value` settings on stdin (`members=id@addr,... rank= alg= block= max= window=
//! sizes=a,b,c repeat= verify=0|1`), runs the group, and prints `sent ...` (rank 0),
//! `received count=<n> verified=<n>` (receivers) or `failed: <error>` (exit status 3).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use benches::ChildGuard;
use derecho_fabric::probe;
use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::Fabric;
use derecho_rdmc::schedule::Algorithm;
use derecho_rdmc::{GroupSpec, Handler, Message, RdmcError, RdmcGroup};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("node") => node(&args[1..]),
        Some("probe-echo") => probe_echo(&args[1..]),
        _ => lead(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rdmc_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Deterministic message contents (the tests verify them byte for byte).
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ len as u64 ^ 0x5555;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Counter {
    sizes: Vec<usize>,
    verify: bool,
    got: AtomicUsize,
    verified: AtomicUsize,
    failure: Mutex<Option<String>>,
    done: AtomicBool,
}

impl Handler for Counter {
    fn on_message(&self, m: Message) {
        let i = m.seq() as usize;
        let expected = self.sizes[i % self.sizes.len()];
        if self.verify && m.len() == expected && m.to_vec() == payload(m.seq(), expected) {
            self.verified.fetch_add(1, Ordering::SeqCst);
        }
        self.got.fetch_add(1, Ordering::SeqCst);
    }

    fn on_failure(&self, e: &RdmcError) {
        if !self.done.load(Ordering::SeqCst) {
            let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

fn node(args: &[String]) -> Res<ExitCode> {
    let id: u32 = args.first().ok_or("node needs an id")?.parse()?;
    let fabric: Arc<dyn Fabric> = Arc::new(TcpFabric::start(TcpConfig::new(
        id,
        "127.0.0.1:0".parse()?,
    ))?);
    println!("listening {}", fabric.local_addr().ok_or("no address")?);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let kv: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .collect();
    let get = |k: &str| kv.get(k).copied().ok_or_else(|| format!("missing {k}="));
    let members: Vec<(u32, SocketAddr)> = get("members")?
        .split(',')
        .map(|m| -> Res<(u32, SocketAddr)> {
            let (i, a) = m.split_once('@').ok_or("member needs id@addr")?;
            Ok((i.parse()?, a.parse()?))
        })
        .collect::<Res<_>>()?;
    let rank: usize = get("rank")?.parse()?;
    let sizes: Vec<usize> = get("sizes")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let repeat: usize = get("repeat")?.parse()?;
    let total = sizes.len() * repeat;
    let max = *sizes.iter().max().ok_or("no sizes")?;
    let mut spec = GroupSpec::new(
        1,
        members,
        rank,
        get("block")?.parse()?,
        max,
        get("window")?.parse()?,
    );
    spec.algorithm = get("alg")?.parse()?;
    let counter = Arc::new(Counter {
        sizes: sizes.clone(),
        verify: get("verify")? == "1",
        got: AtomicUsize::new(0),
        verified: AtomicUsize::new(0),
        failure: Mutex::new(None),
        done: AtomicBool::new(false),
    });
    let mut group = RdmcGroup::create(Arc::clone(&fabric), spec, counter.clone())?;
    group.start()?;
    let failed = |c: &Counter| c.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if rank == 0 {
        // Without verification one buffer per size is reused, so only the copy into the group's
        // buffer is timed; with it each message is generated as it is sent.
        let fixed: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0x5a; n]).collect();
        let start = Instant::now();
        let mut bytes = 0usize;
        for i in 0..total {
            let generated;
            let m: &[u8] = if counter.verify {
                generated = payload(i as u64, sizes[i % sizes.len()]);
                &generated
            } else {
                &fixed[i % sizes.len()]
            };
            if let Err(e) = group.send(m, Duration::from_secs(60)) {
                return Ok(fail(&e.to_string()));
            }
            bytes += m.len();
        }
        match group.wait_released(total as u64, Duration::from_secs(120)) {
            Ok(true) => {}
            Ok(false) => {
                return Ok(fail("receivers did not finish in time"));
            }
            Err(e) => {
                return Ok(fail(&e.to_string()));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        counter.done.store(true, Ordering::SeqCst);
        println!(
            "sent count={total} bytes={bytes} secs={secs:.6} gbps={:.3}",
            bytes as f64 / secs / 1e9
        );
    } else {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counter.got.load(Ordering::SeqCst) < total {
            if let Some(f) = failed(&counter) {
                return Ok(fail(&f));
            }
            if Instant::now() > deadline {
                let got = counter.got.load(Ordering::SeqCst);
                return Ok(fail(&format!("timed out with {got} of {total}")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        counter.done.store(true, Ordering::SeqCst);
        println!(
            "received count={} verified={}",
            counter.got.load(Ordering::SeqCst),
            counter.verified.load(Ordering::SeqCst)
        );
        // Stay until the sender has seen our release (it exits first, or we are told to stop).
        let mut rest = String::new();
        let _ = std::io::stdin().lock().read_line(&mut rest);
    }
    std::io::stdout().flush()?;
    drop(group);
    fabric.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Reports a failure, then stays (links open) until told to stop, so that a survivor's exit is
/// never mistaken by the others for a second failure.
fn fail(reason: &str) -> ExitCode {
    println!("failed: {reason}");
    let _ = std::io::stdout().flush();
    let mut rest = String::new();
    let _ = std::io::stdin().lock().read_line(&mut rest);
    ExitCode::from(3)
}

/// Echo side of the raw write-bandwidth measurement: keeps a probe region until stdin closes.
fn probe_echo(args: &[String]) -> Res<ExitCode> {
    let lead: SocketAddr = args
        .first()
        .ok_or("probe-echo needs the lead's address")?
        .parse()?;
    let fabric = TcpFabric::start(TcpConfig::new(2, "127.0.0.1:0".parse()?))?;
    let _region = probe::register(&fabric, 16 << 20)?;
    let _link = fabric.connect(1, lead, Duration::from_secs(20))?;
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    fabric.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// One running node process.
pub struct Node {
    guard: ChildGuard,
    out: BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
}

fn spawn_node(id: u32) -> Res<Node> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["node", &id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut out = BufReader::new(out);
    let guard = ChildGuard::new(child);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| format!("node said {line:?}"))?
        .parse()?;
    Ok(Node { guard, out, addr })
}

fn raw_write_gbps() -> Res<f64> {
    let fabric = TcpFabric::start(TcpConfig::new(1, "127.0.0.1:0".parse()?))?;
    let region = probe::register(&fabric, 16 << 20)?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "probe-echo",
            &fabric.local_addr().ok_or("no address")?.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut guard = ChildGuard::new(child);
    let link = fabric.connect(2, "127.0.0.1:1".parse()?, Duration::from_secs(20))?;
    let total = 1usize << 30;
    let t = probe::stream(&region, link.as_ref(), 1 << 20, total)?;
    if let Some(s) = guard.stdin() {
        let _ = s.write_all(b"stop\n");
    }
    guard.wait_bounded(Duration::from_secs(5));
    fabric.shutdown();
    Ok(total as f64 / t.as_secs_f64() / 1e9)
}

fn list<T: std::str::FromStr>(args: &[String], flag: &str, default: &str) -> Res<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    let v = args
        .iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    v.split(',')
        .map(|x| {
            x.parse::<T>()
                .map_err(|e| format!("{flag} {x}: {e}").into())
        })
        .collect()
}

fn lead(args: &[String]) -> Res<ExitCode> {
    let receivers: Vec<usize> = list(args, "--receivers", "1,2,3")?;
    let sizes: Vec<usize> = list(args, "--sizes", "1048576,16777216,104857600")?;
    let algs: Vec<Algorithm> = list(
        args,
        "--algorithms",
        "binomial_send,chain_send,sequential_send,tree_send",
    )?;
    let total_mib: usize = list(args, "--total-mib", "512")?[0];
    let block: usize = list(args, "--block", "1048576")?[0];
    let window: usize = list(args, "--window", "3")?[0];
    let raw = raw_write_gbps()?;
    println!("rdmc_bench on {}", benches::machine_line());
    println!("raw fabric tcp 1 MiB writes: {raw:.2} GB/s");
    println!("| algorithm | receivers | message | messages | GB/s | ratio to raw |");
    println!("|---|---|---|---|---|---|");
    for alg in &algs {
        for &r in &receivers {
            for &size in &sizes {
                let repeat = ((total_mib << 20) / size).max(2);
                let gbps = run_group(*alg, r, size, repeat, block, window, false)?;
                println!(
                    "| {alg} | {r} | {} | {repeat} | {gbps:.3} | {:.2} |",
                    human(size),
                    gbps / raw
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

/// Runs one group of `receivers + 1` processes and returns the sender's GB/s.
pub fn run_group(
    alg: Algorithm,
    receivers: usize,
    size: usize,
    repeat: usize,
    block: usize,
    window: usize,
    verify: bool,
) -> Res<f64> {
    let mut nodes: Vec<Node> = (0..=receivers)
        .map(|i| spawn_node(100 + i as u32))
        .collect::<Res<_>>()?;
    let members: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}@{}", 100 + i, n.addr))
        .collect();
    for (rank, n) in nodes.iter_mut().enumerate() {
        let line = format!(
            "members={} rank={rank} alg={alg} block={block} window={window} sizes={size} repeat={repeat} verify={}\n",
            members.join(","),
            u8::from(verify)
        );
        n.guard
            .stdin()
            .ok_or("no stdin")?
            .write_all(line.as_bytes())?;
    }
    let mut line = String::new();
    nodes[0].out.read_line(&mut line)?;
    let gbps = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("gbps="))
        .ok_or_else(|| format!("sender said {line:?}"))?
        .parse()?;
    for n in nodes.iter_mut() {
        if let Some(s) = n.guard.stdin() {
            let _ = s.write_all(b"stop\n");
        }
        n.guard.wait_bounded(Duration::from_secs(10));
    }
    Ok(gbps)
}
