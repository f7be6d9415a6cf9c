//! Fabric micro-benchmark between two processes on 127.0.0.1, on every backend present.
//!
//! For each backend it measures, in one pair of processes: a plain TCP socket 8-byte ping-pong
//! and 1 MiB-write stream (the machine's baseline), then the fabric's one-sided 8-byte write
//! round trip and 1 MiB write bandwidth, and prints each fabric figure as a ratio to the baseline
//! of the same run. The round trip is measured twice: with the echo spinning on memory, and with
//! the echo parked on its doorbell between pings.
//!
//! ```text
//! cargo run --release -p benches --bin fabric_bench -- [--rounds 20000] [--mib 2048] \
//!     [--backends tcp,shm,libfabric]
//! cargo run --release -p benches --features derecho-fabric/libfabric --bin fabric_bench
//! ```
//!
//! By default every backend compiled into `derecho-fabric` is measured (`libfabric` uses the
//! `tcp` provider on `lo`; `verbs` needs an RDMA device and is skipped with its error if there is
//! none). The program starts its peer by running itself again with `--peer`.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{percentile, ChildGuard};
use clap::Parser;
use derecho_fabric::backends::{self, BackendConfig, RdmaSettings};
use derecho_fabric::probe::{self, Wait};
use derecho_fabric::Fabric;

const WRITE: usize = 1 << 20;
const PROBE_LEN: usize = 16 << 20;

#[derive(Parser, Debug)]
#[command(about = "fabric backends vs raw TCP: 8-byte round trip and 1 MiB write bandwidth")]
struct Args {
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 20_000)]
    rounds: usize,
    /// MiB streamed per bandwidth measurement.
    #[arg(long, default_value_t = 2048)]
    mib: usize,
    /// Backends to measure, comma separated (default: every backend compiled in).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// libfabric provider.
    #[arg(long, default_value = "tcp")]
    provider: String,
    /// libfabric domain (interface) or verbs device.
    #[arg(long, default_value = "lo")]
    domain: String,
    /// Internal: run as the peer process, connecting to these addresses.
    #[arg(long, num_args = 2, value_names = ["RAW_ADDR", "FABRIC_ADDR"], hide = true)]
    peer: Option<Vec<SocketAddr>>,
    /// Internal: the peer's backend.
    #[arg(long, default_value = "tcp", hide = true)]
    peer_backend: String,
    /// Internal: how the peer's echo waits (spin or park).
    #[arg(long, default_value = "spin", hide = true)]
    peer_wait: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.peer {
        Some(addrs) => peer(&args, addrs[0], addrs[1]),
        None => lead(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fabric_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn start_fabric(args: &Args, backend: &str, id: u32) -> Res<Arc<dyn Fabric>> {
    let settings = RdmaSettings {
        backend: backend.to_string(),
        provider: args.provider.clone(),
        domain: args.domain.clone(),
        tx_depth: 256,
        rx_depth: 256,
        shm_dir: None,
    };
    let config = BackendConfig::from_rdma(&settings, id, "127.0.0.1:0".parse()?)?;
    Ok(backends::start(config)?)
}

/// The peer: echoes raw pings, drains the raw stream, then echoes fabric pings until stdin
/// closes.
fn peer(args: &Args, raw: SocketAddr, fabric_addr: SocketAddr) -> Res<()> {
    let mut s = TcpStream::connect(raw)?;
    s.set_nodelay(true)?;
    let mut word = [0u8; 8];
    loop {
        s.read_exact(&mut word)?;
        if word == [0xff; 8] {
            break;
        }
        s.write_all(&word)?;
    }
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let mut left = u64::from_le_bytes(len) as usize;
    let mut buf = vec![0u8; WRITE];
    while left > 0 {
        let n = s.read(&mut buf[..left.min(WRITE)])?;
        if n == 0 {
            return Err("raw stream ended early".into());
        }
        left -= n;
    }
    s.write_all(&[1])?;

    let fabric = start_fabric(args, &args.peer_backend, 1)?;
    let region = probe::register(fabric.as_ref(), PROBE_LEN)?;
    let link = fabric.connect(0, fabric_addr, Duration::from_secs(20))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        s2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let wait = if args.peer_wait == "park" {
        Wait::SpinThenPark(Duration::ZERO)
    } else {
        Wait::Spin
    };
    let _ = probe::echo(&region, link.as_ref(), wait, &stop);
    fabric.shutdown();
    Ok(())
}

struct Figures {
    raw_rtt: (f64, f64),
    raw_gbps: f64,
    fab_rtt: (f64, f64),
    fab_park_rtt: (f64, f64),
    fab_gbps: f64,
}

fn lead(args: &Args) -> Res<()> {
    let wanted: Vec<String> = if args.backends.is_empty() {
        backends::compiled().iter().map(|s| s.to_string()).collect()
    } else {
        args.backends.clone()
    };
    let mut rows = Vec::new();
    for backend in &wanted {
        eprintln!("fabric_bench: measuring {backend}");
        match measure(args, backend) {
            Ok(f) => rows.push((backend.clone(), Ok(f))),
            Err(e) => {
                eprintln!("fabric_bench: {backend}: {e}");
                rows.push((backend.clone(), Err(e.to_string())));
            }
        }
    }
    let machine = benches::machine_line();
    println!("fabric_bench on {machine}");
    println!(
        "rounds={} mib={} (raw TCP measured in the same pair of processes as each backend)",
        args.rounds, args.mib
    );
    println!(
        "| backend | RTT p50 µs, echo spinning (× raw) | RTT p99 µs, echo spinning (× raw) \
         | RTT p50 µs, echo parked (× raw) | 1 MiB writes GB/s (× raw) | raw TCP: RTT p50 µs, GB/s |"
    );
    println!("|---|---|---|---|---|---|");
    for (backend, row) in rows {
        match row {
            Ok(f) => println!(
                "| {backend} | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.1}, {:.2} |",
                f.fab_rtt.0,
                f.fab_rtt.0 / f.raw_rtt.0,
                f.fab_rtt.1,
                f.fab_rtt.1 / f.raw_rtt.1,
                f.fab_park_rtt.0,
                f.fab_park_rtt.0 / f.raw_rtt.0,
                f.fab_gbps,
                f.fab_gbps / f.raw_gbps,
                f.raw_rtt.0,
                f.raw_gbps,
            ),
            Err(e) => println!("| {backend} | unavailable: {e} | | | | |"),
        }
    }
    Ok(())
}

fn measure(args: &Args, backend: &str) -> Res<Figures> {
    let spin = run_pair(args, backend, "spin")?;
    let park = run_pair(args, backend, "park")?;
    // Bandwidth from the parked run: a spinning echo would take one of the cores the stream
    // needs.
    Ok(Figures {
        raw_rtt: spin.raw_rtt,
        fab_rtt: spin.fab_rtt,
        fab_park_rtt: park.fab_rtt,
        raw_gbps: park.raw_gbps,
        fab_gbps: park.fab_gbps,
    })
}

fn run_pair(args: &Args, backend: &str, wait: &str) -> Res<Figures> {
    let raw_listener = TcpListener::bind("127.0.0.1:0")?;
    let fabric = start_fabric(args, backend, 0)?;
    let fabric_addr = fabric.local_addr().ok_or("no fabric address")?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--peer")
        .arg(raw_listener.local_addr()?.to_string())
        .arg(fabric_addr.to_string())
        .args(["--peer-wait", wait, "--peer-backend", backend])
        .args(["--provider", &args.provider, "--domain", &args.domain])
        .stdin(Stdio::piped());
    let child: Child = cmd.spawn()?;
    let mut child = ChildGuard::new(child);

    // Raw TCP: ping-pong, then a stream of 1 MiB writes.
    let (mut s, _) = raw_listener.accept()?;
    s.set_nodelay(true)?;
    let mut rtts = Vec::with_capacity(args.rounds);
    let mut word = [0u8; 8];
    for i in 0..args.rounds as u64 {
        let t = Instant::now();
        s.write_all(&i.to_le_bytes())?;
        s.read_exact(&mut word)?;
        rtts.push(t.elapsed());
    }
    s.write_all(&[0xff; 8])?;
    let total = args.mib * WRITE;
    let buf = vec![0x5au8; WRITE];
    let t = Instant::now();
    s.write_all(&(total as u64).to_le_bytes())?;
    for _ in 0..args.mib {
        s.write_all(&buf)?;
    }
    s.read_exact(&mut [0u8; 1])?;
    let raw_gbps = total as f64 / t.elapsed().as_secs_f64() / 1e9;
    let raw_rtt = (percentile(&mut rtts, 50.0), percentile(&mut rtts, 99.0));

    // Fabric: one-sided write round trips, then 1 MiB writes.
    let region = probe::register(fabric.as_ref(), PROBE_LEN)?;
    let link = fabric.connect(1, fabric_addr, Duration::from_secs(20))?;
    let mut frtts = probe::ping(&region, link.as_ref(), args.rounds, Wait::Spin)?;
    let fab_rtt = (percentile(&mut frtts, 50.0), percentile(&mut frtts, 99.0));
    let elapsed = probe::stream(&region, link.as_ref(), WRITE, total)?;
    let fab_gbps = total as f64 / elapsed.as_secs_f64() / 1e9;
    if let Some(stdin) = child.stdin() {
        let _ = stdin.write_all(b"stop\n");
    }
    child.wait_bounded(Duration::from_secs(10));
    fabric.shutdown();
    Ok(Figures {
        raw_rtt,
        raw_gbps,
        fab_rtt,
        fab_park_rtt: fab_rtt,
        fab_gbps,
    })
}
