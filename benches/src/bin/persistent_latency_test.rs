//! `persistent_latency_test`: latency from `ordered_send` to global persistence (the update is
//! on every member's disk), one sender (node 0) with one update in flight, on a persistent
//! subgroup over all members. `[derecho options --] <num_nodes> <num_messages>`; logs go to
//! `<[PERS] file_path>/n<id>`, emptied first. Node 0's `result` line has the sequential rate
//! (`msgs_per_s`), the median and 99th percentile (`lat_p50_us`, `lat_p99_us`) and the disk's
//! own median 4 KiB write + `fdatasync` latency measured after the run in the same directory
//! (`disk_sync_4k_us`); the others report no samples. Run it through `launch`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::rpc_bench::{disk_figures, exit_with, finish, start_with, update_len, Bytes};
use serde_bytes::ByteBuf;

fn main() -> ExitCode {
    let run = || -> Result<String, String> {
        let m = start_with(std::env::args().skip(1), true)?;
        m.barrier()?;
        let id = m.config.derecho.local_id;
        let mut line = format!("result node={id} samples=0");
        if id == 0 {
            let sg = m.group.subgroup::<Bytes>(0).map_err(|e| e.to_string())?;
            let update = ByteBuf::from(vec![7u8; update_len(&m.config)?]);
            let mut lat = Vec::with_capacity(m.messages);
            let began = Instant::now();
            for _ in 0..m.messages {
                let t = Instant::now();
                let r = sg.ordered_send(&update).map_err(|e| e.to_string())?;
                r.await_global_persistence(Duration::from_secs(30))
                    .map_err(|e| e.to_string())?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                r.wait().map_err(|e| e.to_string())?;
            }
            // One update at a time: the sequential rate of durable updates.
            let rate = lat.len() as f64 / began.elapsed().as_secs_f64().max(1e-9);
            lat.sort_by(f64::total_cmp);
            let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
            let (sync, _) = disk_figures(&m.config.pers.file_path, 500, 0)?;
            line = format!(
                "result node=0 samples={} msgs_per_s={rate:.0} lat_p50_us={:.1} lat_p99_us={:.1} disk_sync_4k_us={:.1} cpu_s={:.3}",
                lat.len(),
                at(0.5),
                at(0.99),
                sync * 1e6,
                benches::group_bench::cpu_seconds()
            );
        }
        finish(&m, line)
    };
    exit_with("persistent_latency_test", run())
}
