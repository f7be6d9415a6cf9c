//! `fabric-probe`: checks a fabric link between two processes.
//!
//! ```text
//! fabric-probe echo --id 1 --listen 127.0.0.1:0 --peer 0
//! fabric-probe ping --id 0 --listen 127.0.0.1:0 --peer 1 --peer-addr 127.0.0.1:PORT [--rounds N]
//! ```
//!
//! `echo` prints `listening <addr>` once bound, waits for the peer, and echoes pings until the
//! link fails or stdin closes. `ping` prints round-trip statistics. Both use the tcp backend.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use derecho_fabric::probe::{self, Wait};
use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::Fabric;

struct Args {
    mode: String,
    id: u32,
    listen: SocketAddr,
    peer: u32,
    peer_addr: Option<SocketAddr>,
    rounds: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("usage: fabric-probe echo|ping --id N --listen ADDR --peer N [--peer-addr ADDR] [--rounds N]")?;
    let mut a = Args {
        mode,
        id: 0,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer: 0,
        peer_addr: None,
        rounds: 10_000,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--id" => a.id = value.parse().map_err(|e| bad(&e))?,
            "--listen" => a.listen = value.parse().map_err(|e| bad(&e))?,
            "--peer" => a.peer = value.parse().map_err(|e| bad(&e))?,
            "--peer-addr" => a.peer_addr = Some(value.parse().map_err(|e| bad(&e))?),
            "--rounds" => a.rounds = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn run(a: Args) -> Result<(), String> {
    let fabric = TcpFabric::start(TcpConfig::new(a.id, a.listen)).map_err(|e| e.to_string())?;
    let addr = fabric.local_addr().ok_or("no local address")?;
    println!("listening {addr}");
    let region = probe::register(&fabric, 1 << 20).map_err(|e| e.to_string())?;
    let peer_addr = a.peer_addr.unwrap_or(addr);
    let link = fabric
        .connect(a.peer, peer_addr, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    println!("connected {}", a.peer);
    match a.mode.as_str() {
        "echo" => {
            let stop = Arc::new(AtomicBool::new(false));
            let s = Arc::clone(&stop);
            // Closing stdin (or a line on it) stops the echo.
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::stdin().lock().read_line(&mut line);
                s.store(true, Ordering::SeqCst);
            });
            let n = probe::echo(
                &region,
                link.as_ref(),
                Wait::SpinThenPark(Duration::from_millis(1)),
                &stop,
            )
            .map_err(|e| e.to_string())?;
            println!("echoed {n}");
        }
        "ping" => {
            let mut t = probe::ping(&region, link.as_ref(), a.rounds, Wait::Spin)
                .map_err(|e| e.to_string())?;
            t.sort();
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "rounds={} p50_us={:.2} p99_us={:.2}",
                t.len(),
                us(t[t.len() / 2]),
                us(t[t.len() * 99 / 100])
            );
        }
        other => return Err(format!("unknown mode {other}")),
    }
    fabric.shutdown();
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fabric-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
