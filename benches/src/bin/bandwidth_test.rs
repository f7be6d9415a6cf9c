//! `bandwidth_test`: ordered or raw multicast throughput in one shard, with the original's
//! arguments: `[derecho options --] <num_nodes> <sender_selector 0=all|1=half|2=one>
//! <num_messages> <delivery_mode 0=ordered|1=unordered>`. Message size:
//! `SUBGROUP/DEFAULT/max_payload_size`. Prints one `result ...` line per member; the `launch`
//! program starts the members and combines their lines.

use std::process::ExitCode;

use benches::group_bench::{cpu_seconds, parse_args, report, run};

fn main() -> ExitCode {
    let outcome = parse_args(std::env::args().skip(1)).and_then(|a| run(&a, false).map(|o| (a, o)));
    match outcome {
        Ok((a, o)) => {
            let line = format!(
                "result node={} delivered={} bytes={} secs={:.6} gbps={:.4} msgs_per_s={:.0} cpu_s={:.3}",
                a.config.derecho.local_id,
                o.delivered,
                o.bytes,
                o.secs,
                o.bytes as f64 / o.secs / 1e9,
                o.delivered as f64 / o.secs,
                cpu_seconds()
            );
            if let Err(e) = report(&a.config, &line) {
                eprintln!("bandwidth_test: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bandwidth_test: {e}");
            ExitCode::FAILURE
        }
    }
}
