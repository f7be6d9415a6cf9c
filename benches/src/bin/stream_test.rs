//! `stream_test`: every member sends a continuous ordered stream for a while, through
//! failures and view changes; used with `launch --kill ... --check` to reproduce a fault
//! scenario with one command.
//!
//! Arguments: `[derecho options --] <num_nodes> <duration_ms>`. Message size:
//! `SUBGROUP/DEFAULT/max_payload_size` (at least 20 bytes). The first view needs all
//! `num_nodes` members; later views continue with the survivors. With `DERECHO_CHECK_LOG` set,
//! the member appends its views, sends and deliveries to that file as they happen (so a
//! member killed with `kill -9` leaves a usable log). Prints one `result ...` line at the end.
//! With `DERECHO_STREAM_RECORD` set (`launch --persist`), the stream goes into a persistent
//! subgroup instead: see `benches::persist_stream`. With `DERECHO_BENCH_SAMPLES=DIR` set
//! (`launch --samples DIR`), the member writes its delivery times (as many as it keeps for the
//! dip figures) and the times it installed each view to `DIR/deliveries-n<id>.csv` at the end
//! (see `benches::figures`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use benches::figures::{rel_ms, Deliveries, SAMPLES_DIR_ENV, SAMPLES_EPOCH_ENV};
use benches::group_bench::{cpu_seconds, CHECK_LOG_ENV};
use derecho::config::ConfigLoader;
use derecho::layout::{LayoutError, SubgroupId};
use derecho::multicast::{Mode, ShardSpec, Sizes, SubgroupSpec};
use derecho::node::{GroupError, GroupNode};
use derecho_tests::checker::{digest, Event, MessageId};

/// Appends events to the check log, one JSON line each, flushed often.
struct LogFile {
    out: Option<std::io::BufWriter<std::fs::File>>,
    since_flush: usize,
}

impl LogFile {
    fn push(&mut self, e: &Event) {
        if let Some(out) = &mut self.out {
            if let Ok(line) = serde_json::to_string(e) {
                let _ = writeln!(out, "{line}");
                self.since_flush += 1;
                // A send is recorded before the message leaves (write-ahead), so a member killed
                // with kill -9 never leaves a delivered message without its send record.
                if self.since_flush >= 64 || !matches!(e, Event::Delivered { .. }) {
                    let _ = out.flush();
                    self.since_flush = 0;
                }
            }
        }
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn lock(l: &Mutex<LogFile>) -> std::sync::MutexGuard<'_, LogFile> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn run() -> Result<String, String> {
    let config = ConfigLoader::new()
        .args(std::env::args().skip(1))
        .load()
        .map_err(|e| e.to_string())?;
    let rest = config.app_args().to_vec();
    if rest.len() != 2 {
        return Err(format!(
            "usage: [derecho options --] <num_nodes> <duration_ms> (got {rest:?})"
        ));
    }
    let nodes: usize = rest[0].parse().map_err(|e| format!("num_nodes: {e}"))?;
    let duration = Duration::from_millis(rest[1].parse().map_err(|e| format!("duration_ms: {e}"))?);
    // Started by `launch --persist`: stream into a persistent subgroup instead.
    if std::env::var_os(benches::persist_stream::RECORD_ENV).is_some() {
        return benches::persist_stream::run(&config, nodes, duration);
    }
    let me = config.derecho.local_id;
    // The raw series for the plots: where, and the time origin (launch's, or this start).
    let samples = std::env::var_os(SAMPLES_DIR_ENV).map(|dir| {
        let epoch = std::env::var(SAMPLES_EPOCH_ENV)
            .ok()
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or_else(unix_ns);
        (std::path::PathBuf::from(dir), epoch)
    });
    // View installs (vid, Unix ns), kept only for the samples.
    let views = samples
        .as_ref()
        .map(|_| Arc::new(Mutex::new(Vec::<(u64, u64)>::new())));
    let views2 = views.clone();
    let sizes = config
        .profile("DEFAULT")
        .map(Sizes::from_profile)
        .ok_or("no DEFAULT profile")?;
    let payload = sizes.max_payload.max(MessageId::LEN + 8);
    let layout: derecho::gms::LayoutFn = Arc::new(move |ids: &[u32], previous| {
        let need = if previous.is_none() { nodes } else { 1 };
        if ids.len() < need {
            return Err(LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: ids.len(),
                need,
            });
        }
        Ok(vec![SubgroupSpec {
            shards: vec![ShardSpec {
                members: ids.to_vec(),
                senders: ids.to_vec(),
                mode: Mode::Ordered,
                sizes: sizes.clone(),
            }],
        }])
    });
    let out = match std::env::var_os(CHECK_LOG_ENV) {
        Some(path) => {
            let mut f = std::fs::File::create(&path).map_err(|e| format!("check log: {e}"))?;
            writeln!(f, "{me}").map_err(|e| format!("check log: {e}"))?;
            Some(std::io::BufWriter::new(f))
        }
        None => None,
    };
    let log = Arc::new(Mutex::new(LogFile {
        out,
        since_flush: 0,
    }));
    let (l1, l2) = (Arc::clone(&log), Arc::clone(&log));
    // Clock readings for the checker's liveness check: after the first delivery of each view,
    // then about every millisecond of deliveries.
    let view_fresh = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let last_clock_us = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (fresh2, fresh3) = (Arc::clone(&view_fresh), Arc::clone(&view_fresh));
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d2 = Arc::clone(&delivered);
    // Delivery times, for the throughput dip around a view change (bounded).
    let times = Arc::new(Mutex::new(Vec::<u64>::with_capacity(1 << 16)));
    let t2 = Arc::clone(&times);
    // `leave` on stdin (from `launch --leave`) makes this member leave gracefully.
    let leave = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l3 = Arc::clone(&leave);
    std::thread::spawn(move || {
        let mut line = String::new();
        while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
            if line.trim() == "leave" {
                l3.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            line.clear();
        }
    });
    // When view 1 was installed here (Unix ns), for the launcher's kill-to-view figure.
    let view1_at = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let v1 = Arc::clone(&view1_at);
    let node = GroupNode::start_with(
        &config,
        layout,
        Box::new(move |d| {
            d2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let now = unix_ns();
            {
                let mut t = t2.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() < MAX_TIMES {
                    t.push(now);
                }
            }
            let mut log = lock(&l1);
            log.push(&Event::delivered(&d));
            let unix_us = now / 1000;
            let due = unix_us
                .saturating_sub(last_clock_us.load(std::sync::atomic::Ordering::Relaxed))
                >= 1000;
            if fresh2.swap(false, std::sync::atomic::Ordering::Relaxed) || due {
                last_clock_us.store(unix_us, std::sync::atomic::Ordering::Relaxed);
                log.push(&Event::Clock { unix_us });
            }
        }),
        Some(Box::new(move |v| {
            if v.vid == 1 {
                v1.store(unix_ns(), std::sync::atomic::Ordering::SeqCst);
            }
            if let Some(views) = &views2 {
                views
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((v.vid, unix_ns()));
            }
            fresh3.store(true, std::sync::atomic::Ordering::Relaxed);
            lock(&l2).push(&Event::View {
                vid: v.vid,
                members: v.ids(),
            })
        })),
    )
    .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut data = vec![0u8; payload];
    let mut serial = 0u64;
    let mut stopped = None;
    let mut left = false;
    while start.elapsed() < duration {
        if leave.load(std::sync::atomic::Ordering::SeqCst) {
            node.leave(Duration::from_secs(5))
                .map_err(|e| format!("leaving: {e}"))?;
            left = true;
            break;
        }
        let id = MessageId { sender: me, serial };
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u64 ^ serial) as u8;
        }
        id.stamp(&mut data);
        lock(&log).push(&Event::Sent {
            subgroup: 0,
            shard: 0,
            id,
            digest: digest(&data),
        });
        match node.send(0, &data, Duration::from_secs(30)) {
            Ok(_) => serial += 1,
            Err(GroupError::Stopped(why)) => {
                stopped = Some(why);
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    // Let the last messages settle everywhere before leaving.
    if !left {
        std::thread::sleep(Duration::from_millis(1500));
    }
    let view = node.view();
    let dip = dip(
        &times.lock().unwrap_or_else(|p| p.into_inner()),
        view1_at.load(std::sync::atomic::Ordering::SeqCst),
    );
    if let Some(out) = &mut lock(&log).out {
        let _ = out.flush();
    }
    if let (Some((dir, epoch)), Some(views)) = (&samples, &views) {
        let series = Deliveries {
            deliveries: times
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|&t| (rel_ms(t, *epoch), 1))
                .collect(),
            views: views
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|&(vid, t)| (vid, rel_ms(t, *epoch)))
                .collect(),
        };
        let path = dir.join(format!("deliveries-n{me}.csv"));
        std::fs::write(&path, series.to_csv()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let line = format!(
        "result node={me} sent={serial} delivered={} vid={} members={} stopped={} left={} view1_at_ns={} cpu_s={:.3}{dip}",
        delivered.load(std::sync::atomic::Ordering::Relaxed),
        view.vid,
        view.members.len(),
        u8::from(stopped.is_some()),
        u8::from(left),
        view1_at.load(std::sync::atomic::Ordering::SeqCst),
        cpu_seconds()
    );
    node.shutdown();
    Ok(line)
}

/// Most delivery times recorded.
const MAX_TIMES: usize = 1 << 22;

/// The throughput dip around view 1 (installed at `v1` Unix ns): the longest pause between
/// deliveries within 2 s of it, and the delivery rates in the second before and after that
/// pause. Empty if view 1 never came.
fn dip(times: &[u64], v1: u64) -> String {
    const S: u64 = 1_000_000_000;
    if v1 == 0 || times.len() < 2 {
        return String::new();
    }
    let (lo, hi) = (v1.saturating_sub(2 * S), v1 + 2 * S);
    let (mut gap, mut from, mut to) = (0, 0, 0);
    for w in times.windows(2) {
        if w[1] >= lo && w[0] <= hi && w[1] - w[0] > gap {
            (gap, from, to) = (w[1] - w[0], w[0], w[1]);
        }
    }
    let rate = |a: u64, b: u64| {
        times.iter().filter(|&&t| t >= a && t < b).count() as f64 * S as f64 / (b - a) as f64
    };
    format!(
        " stall_ms={:.1} rate_before={:.0} rate_after={:.0}",
        gap as f64 / 1e6,
        rate(from.saturating_sub(S), from),
        rate(to, to + S)
    )
}

fn main() -> ExitCode {
    benches::log_to_stderr();
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stream_test: {e}");
            ExitCode::FAILURE
        }
    }
}
