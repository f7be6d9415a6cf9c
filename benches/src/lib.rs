//! Shared helpers of the benchmark programs: statistics, child processes, the machine line.
#![forbid(unsafe_code)]

use std::process::{Child, ChildStdin};
use std::time::{Duration, Instant};

/// The `p`-th percentile (0–100) of `samples` in microseconds; sorts `samples` in place.
/// Returns 0 for an empty set.
pub fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)].as_secs_f64() * 1e6
}

/// One line describing this machine (cores, memory, kernel), for result tables.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {kernel}")
}

/// A child process that is killed and reaped when the guard is dropped, so no benchmark or test
/// leaves processes behind on any exit path.
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> Self {
        Self { child }
    }

    /// The child's standard input, if it was piped.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// The child itself.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits up to `limit` for the child to exit by itself; kills it after that. Returns
    /// whether it exited by itself.
    pub fn wait_bounded(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub mod figures;
pub mod group_bench;

/// Logs to standard error through `tracing`: warnings (failures, suspicions) by default,
/// `RUST_LOG` for more.
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Puts `config` in `[SECURITY] mode = certificate` under the CA `ca`, with a certificate for
/// its `local_id` issued into `dir` (made if missing). For benchmarks of the secure mode.
pub fn use_certificate(
    config: &mut derecho::Config,
    ca: &derecho::secure::GroupCa,
    dir: &std::path::Path,
) -> Result<(), String> {
    let id = config.derecho.local_id;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca_file = dir.join("ca.pem");
    if !ca_file.exists() {
        std::fs::write(&ca_file, ca.cert_pem())
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let (cert, key) = (
        dir.join(format!("member-{id}.pem")),
        dir.join(format!("member-{id}.key")),
    );
    if !cert.exists() {
        ca.issue(&derecho::secure::Identity::Member(id), 2)
            .and_then(|issued| issued.save(&cert, &key))
            .map_err(|e| e.to_string())?;
    }
    let s = &mut config.security;
    s.mode = derecho::config::SecurityMode::Certificate;
    s.ca_file = ca_file;
    s.cert_file = cert;
    s.key_file = key;
    Ok(())
}
pub mod persist_stream;
pub mod rpc_bench;
