//! SST push-to-visible latency between local processes, next to the fabric's raw 8-byte write
//! round trip measured between the same processes in the same run.
//!
//! ```text
//! cargo run --release -p benches --bin sst_latency -- [--procs 2,3] [--rounds 5000] [--warmup 500]
//!     [--backends tcp,shm,libfabric] [--modes spin,park,park-both,default]
//! ```
//!
//! For each backend (default: every backend compiled into `derecho-fabric`; `libfabric` needs
//! `--features derecho-fabric/libfabric` and uses its `tcp` provider on `lo`), each process
//! count and each reader mode it starts `procs - 1` peer processes (this program in `peer`
//! mode). First the raw figure: rank 0 pings rank 1 with
//! [`derecho_fabric::probe::ping`] (rank 1 echoes with [`derecho_fabric::probe::echo`]). Then
//! the SST round trip: rank 0 increments a counter in its row and pushes it to everyone; in
//! every peer a recurrent predicate on the core loop sees it, copies it into an answer counter
//! and pushes that back to rank 0; rank 0 waits until every peer's answer arrived. Reader modes:
//!
//! * `spin`: the peers' core loops keep spinning (10 s spin window) and rank 0 spins on memory;
//! * `park`: the readers are parked: the peers' core loops park on the table's doorbell as soon
//!   as nothing fires (spin window 0), so every ping goes through their wake-up path; rank 0
//!   (the measuring side) spins;
//! * `park-both`: as `park`, and rank 0 parks too while it waits for the answers;
//! * `default`: the core loop's default configuration (200 µs spin window, then park), and
//!   rank 0 spins 200 µs before parking.
//!
//! One line per configuration: p50/p99 in µs and the ratio of p50 to the raw p50 with both
//! sides spinning, from the same processes; the other modes also give the raw figure with the
//! echo and the pinger waiting the same way as the readers and rank 0, and the ratio to it.
//!
//! `peer` mode: prints `ADDR <addr>`, reads `PEERS <addr0> ...`, builds the table, starts the
//! echo (rank 1, spinning) and prints `READY`; on `SWITCH` it restarts the echo in the run's
//! mode and prints `SWITCHED`; on `SST` it stops the echo, starts the core loop and prints `GO`;
//! it exits on `EXIT` or end of input.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{machine_line, percentile, ChildGuard};
use derecho_fabric::backends::{self, BackendConfig, RdmaSettings};
use derecho_fabric::probe::{self, Wait};
use derecho_fabric::{Fabric, RegionId};
use derecho_sst::{CoreLoop, CoreLoopConfig, Field, Member, SchemaBuilder, Sst};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The core loop's default spin window, used by rank 0's wait in `default` mode too.
const DEFAULT_SPIN: Duration = Duration::from_micros(200);

const TABLE: RegionId = RegionId(0x4c41_5400_0000_0001);

#[derive(Clone, Copy)]
struct Row {
    ping: Field<u64>,
    answer: Field<u64>,
}

fn schema() -> Res<(derecho_sst::Schema, Row)> {
    let mut b = SchemaBuilder::new();
    let row = Row {
        ping: b.field("ping"),
        answer: b.field("answer"),
    };
    Ok((b.build()?, row))
}

fn id(rank: usize) -> u32 {
    rank as u32
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Spin,
    Park,
    ParkBoth,
    Default,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Spin, Mode::Park, Mode::ParkBoth, Mode::Default];

    fn parse(s: &str) -> Res<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown reader mode {s} (spin, park, park-both, default)").into()
            })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Park => "park",
            Mode::ParkBoth => "park-both",
            Mode::Default => "default",
        }
    }

    /// How the readers (the echo, the peers' core loops) wait.
    fn reader_wait(self) -> Wait {
        match self {
            Mode::Spin => Wait::Spin,
            Mode::Park | Mode::ParkBoth => Wait::SpinThenPark(Duration::ZERO),
            Mode::Default => Wait::SpinThenPark(DEFAULT_SPIN),
        }
    }

    /// How rank 0 waits for the answers.
    fn writer_wait(self) -> Wait {
        match self {
            Mode::Park => Wait::Spin,
            other => other.reader_wait(),
        }
    }

    fn core(self) -> CoreLoopConfig {
        match self {
            Mode::Spin => CoreLoopConfig::default().with_spin(Duration::from_secs(10)),
            Mode::Park | Mode::ParkBoth => CoreLoopConfig::default().with_spin(Duration::ZERO),
            Mode::Default => CoreLoopConfig::default(),
        }
    }
}

/// Starts a fabric of `backend` for node `rank` on a free loopback port.
fn start_fabric(backend: &str, rank: usize) -> Res<Arc<dyn Fabric>> {
    let settings = RdmaSettings {
        backend: backend.to_string(),
        provider: "tcp".to_string(),
        domain: "lo".to_string(),
        tx_depth: 256,
        rx_depth: 256,
        shm_dir: None,
    };
    let config = BackendConfig::from_rdma(&settings, id(rank), "127.0.0.1:0".parse()?)?;
    Ok(backends::start(config)?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("peer") => peer(&args[1..]),
        _ => lead(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sst_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn lead(args: &[String]) -> Res<()> {
    let rounds: usize = flag(args, "--rounds").unwrap_or("5000").parse()?;
    let warmup: usize = flag(args, "--warmup").unwrap_or("500").parse()?;
    let procs: Vec<usize> = flag(args, "--procs")
        .unwrap_or("2,3")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let compiled = backends::compiled().join(",");
    let backends: Vec<&str> = flag(args, "--backends")
        .unwrap_or(&compiled)
        .split(',')
        .collect();
    let modes: Vec<Mode> = match flag(args, "--modes") {
        Some(list) => list.split(',').map(Mode::parse).collect::<Res<_>>()?,
        None => Mode::ALL.to_vec(),
    };
    println!("# sst_latency: {}", machine_line());
    println!("# rounds={rounds} warmup={warmup}; times are round trips in microseconds");
    for backend in backends {
        for &n in &procs {
            if n < 2 {
                return Err("--procs values must be at least 2".into());
            }
            for &mode in &modes {
                run_config(backend, n, mode, rounds, warmup)?;
            }
        }
    }
    Ok(())
}

struct PeerProc {
    guard: ChildGuard,
    out: BufReader<ChildStdout>,
}

impl PeerProc {
    fn expect(&mut self, prefix: &str) -> Res<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                return Err(format!("peer exited before {prefix}").into());
            }
            if line.starts_with(prefix) {
                return Ok(line.trim().to_string());
            }
        }
    }

    fn send(&mut self, line: &str) -> Res<()> {
        let stdin = self.guard.stdin().ok_or("peer stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }
}

fn run_config(backend: &str, n: usize, mode: Mode, rounds: usize, warmup: usize) -> Res<()> {
    let exe = std::env::current_exe()?;
    let mut peers = Vec::new();
    for rank in 1..n {
        let mut child = Command::new(&exe)
            .args(["peer", "--rank", &rank.to_string(), "--n", &n.to_string()])
            .args(["--mode", mode.name(), "--backend", backend])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        peers.push(PeerProc {
            guard: ChildGuard::new(child),
            out,
        });
    }
    let fabric = start_fabric(backend, 0)?;
    let mut addrs = vec![fabric.local_addr().ok_or("no address")?.to_string()];
    for p in &mut peers {
        let line = p.expect("ADDR ")?;
        addrs.push(line["ADDR ".len()..].to_string());
    }
    let line = format!("PEERS {}", addrs.join(" "));
    for p in &mut peers {
        p.send(&line)?;
    }
    let probe_region = probe::register(fabric.as_ref(), 4096)?;
    let (sst, row) = build_table(Arc::clone(&fabric), &addrs, 0)?;
    for p in &mut peers {
        p.expect("READY")?;
    }

    // The raw figure, between the same two processes, first with both sides spinning.
    let link = fabric.link(id(1)).ok_or("no link to rank 1")?;
    probe::ping(&probe_region, link.as_ref(), warmup, Wait::Spin)?;
    let mut raw = probe::ping(&probe_region, link.as_ref(), rounds, Wait::Spin)?;
    let raw_p50 = percentile(&mut raw, 50.0);
    let raw_p99 = percentile(&mut raw, 99.0);
    let raw_same = if mode != Mode::Spin {
        peers[0].send("SWITCH")?;
        peers[0].expect("SWITCHED")?;
        probe::ping(&probe_region, link.as_ref(), warmup, mode.writer_wait())?;
        let mut t = probe::ping(&probe_region, link.as_ref(), rounds, mode.writer_wait())?;
        Some((percentile(&mut t, 50.0), percentile(&mut t, 99.0)))
    } else {
        None
    };

    for p in &mut peers {
        p.send("SST")?;
    }
    for p in &mut peers {
        p.expect("GO")?;
    }
    let mut next = sst.get(row.ping, 0);
    let mut round_trip = || -> Res<Duration> {
        next += 1;
        let start = Instant::now();
        sst.set(row.ping, next);
        sst.push(row.ping)?;
        let deadline = start + Duration::from_secs(10);
        loop {
            let seen = sst.doorbell().epoch();
            if (1..n).all(|r| sst.get(row.answer, r) >= next) {
                return Ok(start.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer to ping {next}").into());
            }
            let spin = match mode.writer_wait() {
                Wait::Spin => true,
                Wait::SpinThenPark(window) => start.elapsed() < window,
            };
            if spin {
                // Like the core loop: a spinning waiter drives the links' progress where the
                // backend needs it (libfabric's tcp provider).
                if !sst.poll_links() {
                    std::hint::spin_loop();
                }
            } else {
                sst.doorbell().wait(seen, Duration::from_millis(100));
            }
        }
    };
    for _ in 0..warmup {
        round_trip()?;
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        times.push(round_trip()?);
    }
    let p50 = percentile(&mut times, 50.0);
    let p99 = percentile(&mut times, 99.0);

    println!(
        "raw_write_rtt backend={backend} procs=2 wait=spin p50_us={raw_p50:.1} p99_us={raw_p99:.1}"
    );
    if let Some((rp50, rp99)) = raw_same {
        println!(
            "raw_write_rtt backend={backend} procs=2 wait={} p50_us={rp50:.1} p99_us={rp99:.1}",
            mode.name()
        );
    }
    let mut line = format!(
        "sst_push_to_visible backend={backend} procs={n} reader={} p50_us={p50:.1} \
         p99_us={p99:.1} ratio_to_raw_spin_p50={:.2}",
        mode.name(),
        p50 / raw_p50
    );
    if let Some((rp50, _)) = raw_same {
        line.push_str(&format!(
            " ratio_to_raw_{}_p50={:.2}",
            mode.name(),
            p50 / rp50
        ));
    }
    println!("{line}");

    for p in &mut peers {
        p.send("EXIT")?;
    }
    for p in &mut peers {
        p.guard.wait_bounded(Duration::from_secs(10));
    }
    drop(sst);
    fabric.shutdown();
    Ok(())
}

/// Builds the table for `addrs` (rank order) as `rank`.
fn build_table(fabric: Arc<dyn Fabric>, addrs: &[String], rank: usize) -> Res<(Arc<Sst>, Row)> {
    let members = addrs
        .iter()
        .enumerate()
        .map(|(r, a)| Ok(Member::new(id(r), a.parse()?)))
        .collect::<Res<Vec<Member>>>()?;
    let (schema, row) = schema()?;
    let sst = Sst::new(
        fabric,
        &members,
        rank,
        schema,
        TABLE,
        Duration::from_secs(20),
    )?;
    Ok((sst, row))
}

fn say(line: &str) -> Res<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn peer(args: &[String]) -> Res<()> {
    let rank: usize = flag(args, "--rank").ok_or("--rank")?.parse()?;
    let mode = Mode::parse(flag(args, "--mode").ok_or("--mode")?)?;
    let fabric = start_fabric(flag(args, "--backend").ok_or("--backend")?, rank)?;
    say(&format!(
        "ADDR {}",
        fabric.local_addr().ok_or("no address")?
    ))?;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let addrs: Vec<String> = line
        .strip_prefix("PEERS ")
        .ok_or("expected PEERS")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let probe_region = probe::register(fabric.as_ref(), 4096)?;
    let (sst, row) = build_table(Arc::clone(&fabric), &addrs, rank)?;

    // Rank 1 echoes the raw pings, spinning, then in this run's mode after `SWITCH`, until
    // `SST`.
    let stop = Arc::new(AtomicBool::new(false));
    let phase_over = Arc::new(AtomicBool::new(false));
    let switched = Arc::new(AtomicBool::new(false));
    let mut echo = if rank == 1 {
        let link = fabric.link(id(0)).ok_or("no link to rank 0")?;
        let (stop, phase_over, switched) = (
            Arc::clone(&stop),
            Arc::clone(&phase_over),
            Arc::clone(&switched),
        );
        let region = Arc::clone(&probe_region);
        Some(std::thread::spawn(move || {
            let mut wait = Mode::Spin.reader_wait();
            loop {
                let _ = probe::echo(&region, link.as_ref(), wait, &phase_over);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                wait = mode.reader_wait();
                phase_over.store(false, Ordering::SeqCst);
                switched.store(true, Ordering::SeqCst);
            }
        }))
    } else {
        None
    };
    say("READY")?;

    let mut core = None;
    loop {
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        match line.trim() {
            "SWITCH" => {
                phase_over.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(5);
                while echo.is_some() && !switched.load(Ordering::SeqCst) {
                    if Instant::now() > deadline {
                        return Err("echo did not switch to parking".into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                say("SWITCHED")?;
            }
            "SST" => {
                stop.store(true, Ordering::SeqCst);
                phase_over.store(true, Ordering::SeqCst);
                if let Some(e) = echo.take() {
                    let _ = e.join();
                }
                sst.predicates().recurrent(
                    move |s| s.get(row.ping, 0) > s.get(row.answer, s.my_rank()),
                    move |s| {
                        s.set(row.answer, s.get(row.ping, 0));
                        let _ = s.push_to(row.answer, &[0]);
                    },
                )?;
                core = Some(CoreLoop::start(Arc::clone(&sst), mode.core())?);
                say("GO")?;
            }
            "EXIT" => break,
            _ => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    phase_over.store(true, Ordering::SeqCst);
    if let Some(c) = core {
        c.stop();
    }
    if let Some(e) = echo {
        let _ = e.join();
    }
    fabric.shutdown();
    Ok(())
}
