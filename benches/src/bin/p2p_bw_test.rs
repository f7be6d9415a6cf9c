//! `p2p_bw_test`: throughput of `p2p_send` from the member of rank 0 to the member of rank 1,
//! with `p2p_window_size` calls in flight: `[derecho options --] <num_nodes> <num_messages>`.
//! Queries are byte vectors of `max_p2p_request_payload_size` minus framing. Run through
//! `launch`; only the sender reports figures.

use std::process::ExitCode;
use std::time::Instant;

use benches::group_bench::cpu_seconds;
use benches::rpc_bench::{exit_with, finish, start, Bytes};
use serde_bytes::ByteBuf;

fn main() -> ExitCode {
    let run = || -> Result<String, String> {
        let m = start(std::env::args().skip(1))?;
        let me = m.config.derecho.local_id;
        let members = m.group.members();
        m.barrier()?;
        let mut line = format!("result node={me} cpu_s={:.3}", cpu_seconds());
        if members.len() >= 2 && members[0] == me {
            let target = members[1];
            let sg = m.group.subgroup::<Bytes>(0).map_err(|e| e.to_string())?;
            let len = (m.config.derecho.max_p2p_request_payload_size as usize).saturating_sub(64);
            let window = m.config.derecho.p2p_window_size.max(1) as usize;
            let per = m.messages.div_ceil(window);
            let start = Instant::now();
            std::thread::scope(|s| -> Result<(), String> {
                let workers: Vec<_> = (0..window)
                    .map(|_| {
                        let sg = sg.clone();
                        s.spawn(move || -> Result<(), String> {
                            let q = ByteBuf::from(vec![1u8; len]);
                            for _ in 0..per {
                                sg.p2p_send(target, &q).map_err(|e| e.to_string())?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().map_err(|_| "a sender panicked".to_string())??;
                }
                Ok(())
            })?;
            let secs = start.elapsed().as_secs_f64();
            let calls = per * window;
            line = format!(
                "result node={me} delivered={calls} bytes={} secs={secs:.6} gbps={:.4} msgs_per_s={:.0} cpu_s={:.3}",
                calls * len,
                (calls * len) as f64 / secs / 1e9,
                calls as f64 / secs,
                cpu_seconds()
            );
        }
        finish(&m, line)
    };
    exit_with("p2p_bw_test", run())
}
