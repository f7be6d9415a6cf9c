//! `persistent_bw_test`: throughput of durable updates: every member `ordered_send`s
//! `<num_messages>` byte-vector updates (filling `SUBGROUP/DEFAULT/max_payload_size`) to a
//! persistent subgroup over all members, then waits until its last update is on every
//! member's disk (the global persistence frontier). `[derecho options --] <num_nodes>
//! <num_messages>`; logs go to `<[PERS] file_path>/n<id>`, emptied first. Each member prints
//! one `result` line with the applied rate and the durable rate (from the first applied update
//! until the frontier covered its last one); node 0's line also carries the disk's own figures
//! measured after the run in the same directory (`disk_sync_4k_us`: median 4 KiB write +
//! `fdatasync`; `disk_seq_synced_gbps`: 256 MiB written and synced). Run it through `launch`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use benches::group_bench::cpu_seconds;
use benches::rpc_bench::{disk_figures, exit_with, finish, persistent_stream, start_with};

fn main() -> ExitCode {
    let run = || -> Result<String, String> {
        let m = start_with(std::env::args().skip(1), true)?;
        m.barrier()?;
        let durable = persistent_stream(&m, 64)?;
        let secs = m.applied_secs();
        let (applied, bytes) = (
            m.applied.load(Ordering::SeqCst),
            m.bytes.load(Ordering::SeqCst),
        );
        m.barrier()?;
        let mut line = format!(
            "result node={} delivered={applied} bytes={bytes} secs={secs:.6} gbps={:.4} msgs_per_s={:.0} durable_secs={durable:.6} durable_gbps={:.4} durable_msgs_per_s={:.0} cpu_s={:.3}",
            m.config.derecho.local_id,
            bytes as f64 / secs / 1e9,
            applied as f64 / secs,
            bytes as f64 / durable / 1e9,
            applied as f64 / durable,
            cpu_seconds()
        );
        if m.config.derecho.local_id == 0 {
            let (sync, bw) = disk_figures(&m.config.pers.file_path, 200, 256)?;
            line.push_str(&format!(
                " disk_sync_4k_us={:.1} disk_seq_synced_gbps={:.4}",
                sync * 1e6,
                bw / 1e9
            ));
        }
        finish(&m, line)
    };
    exit_with("persistent_bw_test", run())
}
