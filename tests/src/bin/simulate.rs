//! Runs seeded simulations of a group through view changes and checks every run.
//!
//! ```text
//! simulate [--seeds N] [--first S] [--seed S] [--check-determinism] [--verbose]
//! ```
//!
//! `--seeds N` runs seeds `S..S+N` (`--first`, default 1); `--seed S` runs that one seed (and
//! prints what it drew). `--check-determinism` runs every seed twice and fails a seed whose two
//! runs differ. Ends with `simulated N seeds: K ok, F failed`, then one line per failure with
//! the command that replays it; exits non-zero when any seed failed.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use derecho_tests::simulate::{run_seed, summary, SeedResult};

struct Args {
    first: u64,
    count: u64,
    determinism: bool,
    verbose: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        first: 1,
        count: 100,
        determinism: false,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a number"))?;
        v.parse()
            .map_err(|_| format!("{flag}: {v:?} is not a non-negative integer"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => a.count = number(it.next(), "--seeds")?,
            "--first" => a.first = number(it.next(), "--first")?,
            "--seed" => {
                a.first = number(it.next(), "--seed")?;
                a.count = 1;
                a.verbose = true;
            }
            "--check-determinism" => a.determinism = true,
            "--verbose" | "-v" => a.verbose = true,
            "--help" | "-h" => {
                return Err(
                    "usage: simulate [--seeds N] [--first S] [--seed S] [--check-determinism] [--verbose]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut results: Vec<SeedResult> = Vec::new();
    for seed in derecho_tests::simulate::seeds(args.first, args.count) {
        let mut r = run_seed(seed);
        if args.determinism && r.failure.is_none() {
            let again = run_seed(seed);
            if again.trace != r.trace {
                r.failure = Some(format!(
                    "not deterministic: trace {:016x} then {:016x}",
                    r.trace, again.trace
                ));
            }
        }
        if args.verbose || r.failure.is_some() {
            say(&format!(
                "seed {seed}: {} faults={:?} views={} delivered={} trace={:016x} {}",
                r.shape,
                r.faults,
                r.views,
                r.delivered,
                r.trace,
                r.failure.as_deref().unwrap_or("ok")
            ));
        }
        results.push(r);
    }
    let secs = started.elapsed().as_secs_f64();
    say(&format!(
        "{:.1} s, {:.1} seeds/s",
        secs,
        results.len() as f64 / secs.max(1e-9)
    ));
    say(&summary(&results));
    let failed: Vec<&SeedResult> = results.iter().filter(|r| r.failure.is_some()).collect();
    for r in &failed {
        say(&format!(
            "FAILED seed {}: {} — replay: cargo run --release -p derecho-tests --bin simulate -- --seed {}",
            r.seed,
            r.failure.as_deref().unwrap_or(""),
            r.seed
        ));
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints a line; a closed stdout (the output piped into `head`) is not an error worth a panic.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
