//! The benchmarks under a cluster launcher: `mpirun -np 4 bandwidth_test` on this host with
//! `DERECHO/launcher = mpi`. Each rank takes its node id and ports from Open MPI's
//! environment; rank 0 gathers every rank's result line and prints them.
//!
//! It needs Open MPI's `mpirun`; where it is missing it says so and passes without running
//! (CI installs it and reports a skip otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RANKS: u16 = 4;

/// A base port such that `base..base + RANKS` are free, for each of `kinds` port kinds
/// spaced 100 apart.
fn free_block(kinds: u16) -> u16 {
    let start = derecho_tests::ports::listen_port().unwrap();
    let mut base = start.clamp(10_000, 60_000 - 100 * kinds);
    for _ in 0..200 {
        let free = (0..kinds).all(|k| {
            (0..RANKS).all(|r| TcpListener::bind(("127.0.0.1", base + 100 * k + r)).is_ok())
        });
        if free {
            return base;
        }
        base = 10_000 + (base + 37) % 40_000;
    }
    panic!("no free block of ports");
}

#[test]
fn bandwidth_test_under_mpirun_gathers_every_rank_at_rank_0() {
    if Command::new("mpirun").arg("--version").output().is_err() {
        eprintln!("SKIPPED: mpirun (Open MPI) is not installed; this test did not run");
        return;
    }
    let base = free_block(5);
    let port = |k: u16| (base + 100 * k).to_string();
    let started = Instant::now();
    let mut child = Command::new("timeout")
        .args([
            "120",
            "mpirun",
            "--oversubscribe",
            "-np",
            &RANKS.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_bandwidth_test"))
        .args([
            "--DERECHO/launcher=mpi".to_string(),
            format!("--DERECHO/contact_port={}", port(0)),
            format!("--DERECHO/gms_port={}", port(0)),
            format!("--DERECHO/sst_port={}", port(1)),
            format!("--DERECHO/rdmc_port={}", port(2)),
            format!("--DERECHO/state_transfer_port={}", port(3)),
            format!("--DERECHO/external_port={}", port(4)),
            "--SUBGROUP/DEFAULT/max_payload_size=1024".to_string(),
            "--".to_string(),
            RANKS.to_string(),
            "0".to_string(),
            "2000".to_string(),
            "0".to_string(),
        ])
        // mpirun refuses to start as root unless told it may.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::mem::take(&mut child.stdout);
    let err = std::mem::take(&mut child.stderr);
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut o) = out {
            let _ = std::io::Read::read_to_string(&mut o, &mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let status = child.wait().unwrap();
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(
        status.success(),
        "mpirun failed after {:?}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        started.elapsed()
    );
    assert!(
        stdout.contains(&format!("gathered={RANKS} of {RANKS}")),
        "{stdout}"
    );
    for rank in 0..RANKS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("rank={rank} result node={rank} ")))
            .unwrap_or_else(|| panic!("no line of rank {rank}:\n{stdout}"));
        assert!(
            line.contains(&format!("delivered={}", 2000 * u32::from(RANKS))),
            "{line}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(120));
}
