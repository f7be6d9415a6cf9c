//! `p2p_latency_test`: round trip of an 8-byte `p2p_send` from the member of rank 0 to the
//! member of rank 1, one call at a time: `[derecho options --] <num_nodes> <num_messages>`.
//! Run through `launch`; the sender reports p50 and p99 in microseconds.

use std::process::ExitCode;
use std::time::Instant;

use benches::group_bench::{cpu_seconds, pct};
use benches::rpc_bench::{exit_with, finish, start, Bytes};
use serde_bytes::ByteBuf;

fn main() -> ExitCode {
    let run = || -> Result<String, String> {
        let m = start(std::env::args().skip(1))?;
        let me = m.config.derecho.local_id;
        let members = m.group.members();
        m.barrier()?;
        let mut line = format!("result node={me} samples=0 cpu_s={:.3}", cpu_seconds());
        if members.len() >= 2 && members[0] == me {
            let target = members[1];
            let sg = m.group.subgroup::<Bytes>(0).map_err(|e| e.to_string())?;
            let q = ByteBuf::from(vec![7u8; 8]);
            // Warm the connection first.
            for _ in 0..100 {
                sg.p2p_send(target, &q).map_err(|e| e.to_string())?;
            }
            let mut us = Vec::with_capacity(m.messages);
            let start = Instant::now();
            for _ in 0..m.messages {
                let t = Instant::now();
                sg.p2p_send(target, &q).map_err(|e| e.to_string())?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let secs = start.elapsed().as_secs_f64();
            let n = us.len();
            line = format!(
                "result node={me} samples={n} lat_p50_us={:.1} lat_p99_us={:.1} msgs_per_s={:.0} cpu_s={:.3}",
                pct(&mut us, 50.0),
                pct(&mut us, 99.0),
                n as f64 / secs,
                cpu_seconds()
            );
        }
        finish(&m, line)
    };
    exit_with("p2p_latency_test", run())
}
