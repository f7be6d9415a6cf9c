//! `latency_test`: send-to-delivery latency at the sender, with the original's arguments
//! (see `bandwidth_test`). Each sender sends a message and waits for its own delivery before
//! the next; every member prints one `result ...` line with its senders' percentiles. With
//! `DERECHO_BENCH_SAMPLES=DIR` set (`launch --samples DIR`), node 0 also writes its sorted
//! latencies (µs, one per line) to `DIR/latency-<transport>-n<nodes>-p<payload>.csv`.

use std::process::ExitCode;

use benches::figures::{write_latencies, SAMPLES_DIR_ENV};
use benches::group_bench::{cpu_seconds, parse_args, pct, report, run, BenchArgs};

fn main() -> ExitCode {
    let outcome = parse_args(std::env::args().skip(1)).and_then(|a| run(&a, true).map(|o| (a, o)));
    match outcome {
        Ok((a, mut o)) => {
            let mean = if o.latencies.is_empty() {
                0.0
            } else {
                o.latencies.iter().sum::<f64>() / o.latencies.len() as f64
            };
            let line = format!(
                "result node={} delivered={} bytes={} secs={:.6} samples={} lat_mean_us={:.1} lat_p50_us={:.1} lat_p99_us={:.1} cpu_s={:.3}",
                a.config.derecho.local_id,
                o.delivered,
                o.bytes,
                o.secs,
                o.latencies.len(),
                mean,
                pct(&mut o.latencies, 50.0),
                pct(&mut o.latencies, 99.0),
                cpu_seconds()
            );
            // `pct` sorted the latencies.
            if let Err(e) = write_samples(&a, &o.latencies) {
                eprintln!("latency_test: {e}");
                return ExitCode::FAILURE;
            }
            if let Err(e) = report(&a.config, &line) {
                eprintln!("latency_test: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("latency_test: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes node 0's sorted latencies into the samples folder, if one is set.
fn write_samples(a: &BenchArgs, sorted_us: &[f64]) -> Result<(), String> {
    let Some(dir) = std::env::var_os(SAMPLES_DIR_ENV) else {
        return Ok(());
    };
    if a.config.derecho.local_id != 0 {
        return Ok(());
    }
    let payload = a
        .config
        .profile("DEFAULT")
        .map_or(0, |p| p.max_payload_size);
    let name = format!(
        "latency-{}-n{}-p{payload}.csv",
        a.config.rdma.backend, a.nodes
    );
    write_latencies(&std::path::Path::new(&dir).join(name), sorted_us)
}
