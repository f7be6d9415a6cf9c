//! `typed_subgroup_bw_test`: throughput of `ordered_send` on a replicated byte-vector type,
//! every member sending: `[derecho options --] <num_nodes> <num_messages>`. The update is a
//! byte vector filling `SUBGROUP/DEFAULT/max_payload_size`. Each member prints one `result`
//! line (bytes its replica applied per second); run it through `launch`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use benches::group_bench::cpu_seconds;
use benches::rpc_bench::{ordered_stream, start};

fn main() -> ExitCode {
    let run = || -> Result<String, String> {
        let m = start(std::env::args().skip(1))?;
        m.barrier()?;
        ordered_stream(&m, 64)?;
        let secs = m.applied_secs();
        let (applied, bytes) = (
            m.applied.load(Ordering::SeqCst),
            m.bytes.load(Ordering::SeqCst),
        );
        m.barrier()?;
        let line = format!(
            "result node={} delivered={applied} bytes={bytes} secs={secs:.6} gbps={:.4} msgs_per_s={:.0} cpu_s={:.3}",
            m.config.derecho.local_id,
            bytes as f64 / secs / 1e9,
            applied as f64 / secs,
            cpu_seconds()
        );
        let _ = m.group.leave(std::time::Duration::from_secs(5));
        Ok(line)
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("typed_subgroup_bw_test: {e}");
            ExitCode::FAILURE
        }
    }
}
