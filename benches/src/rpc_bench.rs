//! The replicated-object benchmarks (`typed_subgroup_bw_test`, `p2p_bw_test`,
//! `p2p_latency_test`): one subgroup of a byte-vector type over all members, driven through the
//! public [`derecho::rpc`] API.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use derecho::config::{Config, ConfigLoader};
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::{Group, GroupBuilder, Replicated};
use serde_bytes::ByteBuf;

/// Counts what it applies; the state is the count and the bytes.
#[derive(Debug)]
pub struct Bytes {
    applied: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    first: Arc<Mutex<Option<Instant>>>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Bytes {
    /// A replica with counters of its own (for programs that do not read them).
    pub fn fresh() -> Self {
        Bytes {
            applied: Arc::new(AtomicU64::new(0)),
            bytes: Arc::new(AtomicU64::new(0)),
            first: Arc::new(Mutex::new(None)),
            last: Arc::new(Mutex::new(None)),
        }
    }
}

impl Replicated for Bytes {
    type Update = ByteBuf;
    type Query = ByteBuf;
    type Reply = u64;

    fn apply(&mut self, update: ByteBuf) -> u64 {
        let now = Instant::now();
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        self.bytes.fetch_add(update.len() as u64, Ordering::SeqCst);
        self.applied.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn query(&self, query: ByteBuf) -> u64 {
        query.len() as u64
    }

    fn save(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.applied.load(Ordering::SeqCst).to_le_bytes())
    }

    fn load(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut b = [0u8; 8];
        input.read_exact(&mut b)?;
        self.applied.store(u64::from_le_bytes(b), Ordering::SeqCst);
        Ok(())
    }
}

/// A started member and its counters.
pub struct Member {
    /// The group.
    pub group: Group,
    /// Updates applied by this member's replica.
    pub applied: Arc<AtomicU64>,
    /// Payload bytes applied.
    pub bytes: Arc<AtomicU64>,
    first: Arc<Mutex<Option<Instant>>>,
    last: Arc<Mutex<Option<Instant>>>,
    /// The configuration.
    pub config: Config,
    /// Group size.
    pub nodes: usize,
    /// Messages (per sender).
    pub messages: usize,
}

impl Member {
    /// Seconds between the first and the last applied update.
    pub fn applied_secs(&self) -> f64 {
        let f = *self.first.lock().unwrap_or_else(|p| p.into_inner());
        let l = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        match (f, l) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64().max(1e-9),
            _ => 1e-9,
        }
    }

    /// Waits until every member is here (bounded).
    pub fn barrier(&self) -> Result<(), String> {
        barrier(&self.group, Duration::from_secs(120))
    }
}

/// Waits (up to `bound`) until every member of `group`'s view has reached this point.
pub fn barrier(group: &Group, bound: Duration) -> Result<(), String> {
    group
        .node()
        .multicast()
        .map_err(|e| e.to_string())?
        .sst()
        .sync_with_members(bound)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parses `[derecho options --] <num_nodes> <num_messages>` and starts a member of a group
/// whose one subgroup holds every member in one shard.
pub fn start(args: impl IntoIterator<Item = String>) -> Result<Member, String> {
    start_with(args, false)
}

/// Like [`start`]; with `persistent` the subgroup is persistent, its logs in
/// `<[PERS] file_path>/n<id>`, emptied first (every run starts from fresh logs).
pub fn start_with(
    args: impl IntoIterator<Item = String>,
    persistent: bool,
) -> Result<Member, String> {
    let mut config = ConfigLoader::new()
        .args(args)
        .load()
        .map_err(|e| e.to_string())?;
    if persistent {
        let dir = config
            .pers
            .file_path
            .join(format!("n{}", config.derecho.local_id));
        config.pers.file_path = dir;
        config.pers.reset = true;
    }
    let rest = config.app_args().to_vec();
    if rest.len() != 2 {
        return Err(format!(
            "usage: [derecho options --] <num_nodes> <num_messages> (got {rest:?})"
        ));
    }
    let num = |i: usize| {
        rest[i]
            .parse::<usize>()
            .map_err(|e| format!("{:?}: {e}", rest[i]))
    };
    let (nodes, messages) = (num(0)?.max(1), num(1)?);
    let (applied, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (first, last) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
    let (a, b, f, l) = (
        Arc::clone(&applied),
        Arc::clone(&bytes),
        Arc::clone(&first),
        Arc::clone(&last),
    );
    let policy = LayoutPolicy {
        types: vec![TypePolicy::new(
            "Bytes",
            vec![SubgroupPolicy::flexible_even(1, nodes, nodes)],
        )],
    };
    let factory = move |_| Bytes {
        applied: Arc::clone(&a),
        bytes: Arc::clone(&b),
        first: Arc::clone(&f),
        last: Arc::clone(&l),
    };
    let builder = GroupBuilder::new(&config);
    let builder = if persistent {
        builder.persistent::<Bytes>("Bytes", factory)
    } else {
        builder.replicated::<Bytes>("Bytes", factory)
    };
    let group = builder
        .layout(policy)
        .timeout(Duration::from_secs(120))
        .start()
        .map_err(|e| e.to_string())?;
    Ok(Member {
        group,
        applied,
        bytes,
        first,
        last,
        config,
        nodes,
        messages,
    })
}

/// The update size: the profile's payload limit minus the RPC headers and the byte vector's
/// length prefix.
pub fn update_len(config: &Config) -> Result<usize, String> {
    let max = config
        .profile("DEFAULT")
        .map(|p| p.max_payload_size as usize)
        .ok_or("no DEFAULT profile")?;
    Ok(max
        .saturating_sub(derecho::rpc::wire::ORDERED_HEADER + 8)
        .max(1))
}

/// Every member sends `messages` ordered updates, keeping up to `pipeline` reply maps open;
/// returns when this replica has applied every member's updates.
pub fn ordered_stream(m: &Member, pipeline: usize) -> Result<(), String> {
    let len = update_len(&m.config)?;
    let sg = m.group.subgroup::<Bytes>(0).map_err(|e| e.to_string())?;
    let update = ByteBuf::from(vec![0x5a; len]);
    let mut open = VecDeque::with_capacity(pipeline);
    for _ in 0..m.messages {
        if open.len() >= pipeline {
            if let Some(r) = open.pop_front() {
                let r: derecho::rpc::ReplyMap<u64> = r;
                r.wait().map_err(|e| e.to_string())?;
            }
        }
        open.push_back(sg.ordered_send(&update).map_err(|e| e.to_string())?);
    }
    for r in open {
        r.wait().map_err(|e| e.to_string())?;
    }
    let expected = (m.messages * m.nodes) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while m.applied.load(Ordering::SeqCst) < expected {
        if Instant::now() > deadline {
            return Err(format!(
                "applied {} of {expected} within 300 s",
                m.applied.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Every member sends `messages` ordered updates like [`ordered_stream`], then waits until its
/// last update is on every member's disk. Returns the seconds from the first applied update
/// until the shard's global persistence frontier covered this member's last update.
pub fn persistent_stream(m: &Member, pipeline: usize) -> Result<f64, String> {
    let len = update_len(&m.config)?;
    let sg = m.group.subgroup::<Bytes>(0).map_err(|e| e.to_string())?;
    let update = ByteBuf::from(vec![0x5a; len]);
    let mut open: VecDeque<derecho::rpc::ReplyMap<u64>> = VecDeque::with_capacity(pipeline);
    let mut last = None;
    for i in 0..m.messages {
        if open.len() >= pipeline {
            if let Some(r) = open.pop_front() {
                r.wait().map_err(|e| e.to_string())?;
            }
        }
        let r = sg.ordered_send(&update).map_err(|e| e.to_string())?;
        if i + 1 == m.messages {
            last = Some(r);
        } else {
            open.push_back(r);
        }
    }
    if let Some(r) = &last {
        r.await_global_persistence(Duration::from_secs(300))
            .map_err(|e| e.to_string())?;
    }
    let durable = Instant::now();
    for r in open.into_iter().chain(last) {
        r.wait().map_err(|e| e.to_string())?;
    }
    let f = *m.first.lock().unwrap_or_else(|p| p.into_inner());
    Ok(f.map_or(1e-9, |f| durable.duration_since(f).as_secs_f64().max(1e-9)))
}

/// The disk's own figures in `dir`, measured the way persistence uses it: the median latency
/// of `n` 4 KiB appends each followed by `fdatasync`, and the bandwidth of writing `mib` MiB
/// in 1 MiB appends followed by one `fdatasync`. Returns (seconds per synced 4 KiB write,
/// bytes per second of the synced sequential write).
pub fn disk_figures(dir: &std::path::Path, n: usize, mib: usize) -> Result<(f64, f64), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("disk-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let block = vec![0xa5u8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_secs_f64());
    }
    lat.sort_by(f64::total_cmp);
    let big = vec![0x3cu8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        f.write_all(&big).map_err(|e| e.to_string())?;
    }
    f.sync_data().map_err(|e| e.to_string())?;
    let bw = (mib << 20) as f64 / t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((lat.get(n / 2).copied().unwrap_or(0.0), bw))
}

/// Ends a member's run: waits for the others (so nobody leaves while others still measure),
/// leaves the group, and hands back its `result` line.
pub fn finish(m: &Member, line: String) -> Result<String, String> {
    m.barrier()?;
    let _ = m.group.leave(Duration::from_secs(5));
    Ok(line)
}

/// Prints a benchmark's `result` line, or its error prefixed with `name`.
pub fn exit_with(name: &str, result: Result<String, String>) -> std::process::ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
