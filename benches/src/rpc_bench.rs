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
        self.group
            .node()
            .multicast()
            .map_err(|e| e.to_string())?
            .sst()
            .sync_with_members(Duration::from_secs(120))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Parses `[derecho options --] <num_nodes> <num_messages>` and starts a member of a group
/// whose one subgroup holds every member in one shard.
pub fn start(args: impl IntoIterator<Item = String>) -> Result<Member, String> {
    let config = ConfigLoader::new()
        .args(args)
        .load()
        .map_err(|e| e.to_string())?;
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
    let group = GroupBuilder::new(&config)
        .replicated::<Bytes>("Bytes", move |_| Bytes {
            applied: Arc::clone(&a),
            bytes: Arc::clone(&b),
            first: Arc::clone(&f),
            last: Arc::clone(&l),
        })
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
