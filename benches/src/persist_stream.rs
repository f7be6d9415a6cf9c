//! `stream_test` on a persistent subgroup: the member half of `launch --persist DIR
//! [--crash-all @MS --restart-all @MS] --check`.
//!
//! Every member streams updates into one persistent subgroup over all members. The replicated
//! object is a hash chain ([`Chain`]): the state after `n` updates is the list of the first
//! `n` chain values, so the state at any position can be compared across replicas and runs.
//! For each of its own updates, once [`derecho::rpc::ReplyMap::await_global_persistence`] says
//! it is on every member's disk, the member appends `durable <version> <count> <hash>` to its
//! record file ([`RECORD_ENV`]): the update's position in the chain and the chain value there.
//! At the end it writes its whole chain to [`CHAIN_ENV`].
//!
//! After `kill -9` of every member and a restart of all of them from their logs, the launcher
//! holds every restarted chain against every record ([`verdict`]): a version that was reported
//! globally persisted must be in every restarted replica, at the same position with the same
//! chain value. Records of updates that never reached that point are not promises, so they
//! are not counted.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use derecho::config::Config;
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::{GroupBuilder, Replicated, ReplyMap};
use serde_bytes::ByteBuf;

/// The file a member appends its durable records to.
pub const RECORD_ENV: &str = "DERECHO_STREAM_RECORD";
/// The file a member writes its chain to at the end.
pub const CHAIN_ENV: &str = "DERECHO_STREAM_CHAIN";
/// Updates each member keeps in flight.
const WINDOW: usize = 32;
/// Most chain values a replica keeps (8 bytes each): a run longer than this stops sending.
const MAX_CHAIN: usize = 1 << 24;

/// A replicated hash chain: each update extends it with `fnv(previous value, update)`.
#[derive(Debug, Default)]
pub struct Chain {
    values: Vec<u64>,
}

impl Chain {
    /// The chain value after `update` following `previous`.
    fn next(previous: u64, update: &[u8]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in previous.to_le_bytes().iter().chain(update) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

impl Replicated for Chain {
    type Update = ByteBuf;
    /// Nothing: the reply is the chain's length and last value.
    type Query = ();
    /// The chain's length and its last value (0 when empty).
    type Reply = (u64, u64);

    fn apply(&mut self, update: ByteBuf) -> (u64, u64) {
        let last = self.values.last().copied().unwrap_or(0);
        let h = Chain::next(last, &update);
        self.values.push(h);
        (self.values.len() as u64, h)
    }

    fn query(&self, (): ()) -> (u64, u64) {
        (
            self.values.len() as u64,
            self.values.last().copied().unwrap_or(0),
        )
    }

    fn save(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&(self.values.len() as u64).to_le_bytes())?;
        for v in &self.values {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    fn load(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let n = read_u64(input)?;
        if n > MAX_CHAIN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a chain of {n} values is longer than {MAX_CHAIN}"),
            ));
        }
        self.values = (0..n).map(|_| read_u64(input)).collect::<io::Result<_>>()?;
        Ok(())
    }
}

fn read_u64(input: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Runs one member for `duration`: `nodes` members form the first view (or restart it from
/// their logs), each streams updates of `payload` bytes, records the ones that became
/// globally persistent, and writes its chain at the end. Returns the member's `result` line.
pub fn run(config: &Config, nodes: usize, duration: Duration) -> Result<String, String> {
    let began = Instant::now();
    let me = config.derecho.local_id;
    let payload = config
        .profile("DEFAULT")
        .map_or(1024, |p| p.max_payload_size as usize)
        .saturating_sub(derecho::rpc::ORDERED_OVERHEAD + 16)
        .max(16);
    let policy = LayoutPolicy {
        types: vec![TypePolicy::new(
            "Chain",
            vec![SubgroupPolicy::flexible_even(1, nodes, nodes)],
        )],
    };
    let group = GroupBuilder::new(config)
        .persistent::<Chain>("Chain", |_| Chain::default())
        .layout(policy)
        .timeout(Duration::from_secs(30))
        .start()
        .map_err(|e| format!("starting: {e}"))?;
    let started_ms = began.elapsed().as_secs_f64() * 1e3;
    let chain = group.subgroup::<Chain>(0).map_err(|e| e.to_string())?;
    let barrier = || crate::rpc_bench::barrier(&group, Duration::from_secs(60));
    // Every member has its state once all are through the first barrier of the view.
    barrier()?;
    let restored = chain.with_local(|c| c.values.len()).unwrap_or(0);
    let mut record = match std::env::var_os(RECORD_ENV) {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("record file: {e}"))?,
        ),
        None => None,
    };
    let mut in_flight: std::collections::VecDeque<ReplyMap<(u64, u64)>> =
        std::collections::VecDeque::new();
    let (mut sent, mut durable) = (0u64, 0u64);
    let mut data = vec![0u8; payload.max(20)];
    // Updates differ between runs, so a group that lost its logs cannot rebuild the same
    // chain by sending the same bytes again.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    data[12..20].copy_from_slice(&run.to_le_bytes());
    let deadline = began + duration;
    loop {
        let room = chain.with_local(|c| c.values.len()).unwrap_or(0) + WINDOW < MAX_CHAIN / 2;
        let sending = Instant::now() < deadline && room;
        if sending && in_flight.len() < WINDOW {
            data[..4].copy_from_slice(&me.to_le_bytes());
            data[4..12].copy_from_slice(&sent.to_le_bytes());
            let update = ByteBuf::from(data.clone());
            match chain.ordered_send(&update) {
                Ok(replies) => in_flight.push_back(replies),
                // A view change or a full window: try again shortly.
                Err(e) if e.is_transient() => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            }
            sent += 1;
            continue;
        }
        let Some(front) = in_flight.pop_front() else {
            break;
        };
        let version = front
            .await_global_persistence(Duration::from_secs(30))
            .map_err(|e| format!("waiting for global persistence: {e}"))?;
        let replies = front.wait().map_err(|e| e.to_string())?;
        let (count, hash) = match replies.get(&me) {
            Some(Ok(r)) => *r,
            other => return Err(format!("no reply of my own: {other:?}")),
        };
        durable += 1;
        if let Some(f) = &mut record {
            // Written only now that every member has it on disk: a promise the restart must
            // keep. The OS keeps what was written if this process is killed.
            writeln!(f, "durable {version} {count} {hash}").map_err(|e| e.to_string())?;
        }
    }
    // Every member has had all its updates applied everywhere: the chains are complete.
    barrier()?;
    let values = chain.with_local(|c| c.values.clone()).unwrap_or_default();
    if let Some(path) = std::env::var_os(CHAIN_ENV) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).map_err(|e| format!("chain file: {e}"))?;
    }
    let view = group.view();
    barrier()?;
    // Leaving is a courtesy at the end of a run; the result is already known.
    let _ = group.leave(Duration::from_secs(5));
    Ok(format!(
        "result node={me} sent={sent} durable={durable} restored={restored} chain={} vid={} members={} started_ms={started_ms:.1} cpu_s={:.3}",
        values.len(),
        view.vid,
        view.members.len(),
        crate::group_bench::cpu_seconds()
    ))
}

/// What the launcher concludes from the members' records and chains.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Records of globally persisted updates, over every member and run.
    pub durable: usize,
    /// Records some restarted chain does not hold (missing, or another value there).
    pub lost: usize,
    /// Pairs of chains where neither is a prefix of the other.
    pub diverged: usize,
    /// Chains read.
    pub chains: usize,
    /// Members whose chain or records could not be read.
    pub unreadable: usize,
}

impl Verdict {
    /// Whether there was something to check, nothing promised was lost, the replicas agree,
    /// and every member's files were read.
    pub fn ok(&self) -> bool {
        self.durable > 0
            && self.chains > 0
            && self.lost == 0
            && self.diverged == 0
            && self.unreadable == 0
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check={} durable={} lost={} diverged={} chains={} unreadable={}",
            if self.ok() { "ok" } else { "FAIL" },
            self.durable,
            self.lost,
            self.diverged,
            self.chains,
            self.unreadable
        )
    }
}

/// Reads a chain file (little-endian `u64` values).
pub fn read_chain(path: &Path) -> io::Result<Vec<u64>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect())
}

/// Reads the `(count, hash)` of every `durable` line of a record file; other lines (a torn
/// last line of a killed member) are skipped.
pub fn read_records(path: &Path) -> io::Result<Vec<(u64, u64)>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["durable", _version, count, hash] = f.as_slice() {
            if let (Ok(c), Ok(h)) = (count.parse(), hash.parse()) {
                out.push((c, h));
            }
        }
    }
    Ok(out)
}

/// Holds every chain against every record: a record `(count, hash)` is kept by a chain whose
/// value at position `count` is `hash`.
pub fn verdict(records: &[(u64, u64)], chains: &[Vec<u64>]) -> Verdict {
    let mut v = Verdict {
        durable: records.len(),
        chains: chains.len(),
        ..Verdict::default()
    };
    for &(count, hash) in records {
        let kept = |c: &Vec<u64>| {
            usize::try_from(count)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| c.get(i))
                == Some(&hash)
        };
        if !chains.iter().all(kept) {
            v.lost += 1;
        }
    }
    for (i, a) in chains.iter().enumerate() {
        for b in &chains[i + 1..] {
            let n = a.len().min(b.len());
            if a[..n] != b[..n] {
                v.diverged += 1;
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_counts_what_a_chain_lost_or_changed() {
        let mut c = Chain::default();
        let replies: Vec<(u64, u64)> = (0..5u8).map(|i| c.apply(ByteBuf::from(vec![i]))).collect();
        let full = c.values.clone();
        assert!(verdict(&replies, &[full.clone(), full[..5].to_vec()]).ok());
        // A replica that came back with one update fewer loses the last record.
        let short = verdict(&replies, &[full.clone(), full[..4].to_vec()]);
        assert_eq!((short.lost, short.diverged), (1, 0), "{short}");
        // One that skipped an update in the middle holds none of the later values.
        let mut skipped = full[..2].to_vec();
        let mut d = Chain {
            values: skipped.clone(),
        };
        d.apply(ByteBuf::from(vec![3u8]));
        skipped = d.values;
        let v = verdict(&replies, &[full, skipped]);
        assert_eq!((v.lost, v.diverged), (3, 1), "{v}");
        assert!(!v.ok());
        assert!(!verdict(&replies, &[]).ok(), "no chain read is no evidence");
        assert!(
            !verdict(&[], &[c.values.clone()]).ok(),
            "no record is no evidence"
        );
    }

    #[test]
    fn a_chain_survives_save_and_load() -> io::Result<()> {
        let mut c = Chain::default();
        for i in 0..10u8 {
            c.apply(ByteBuf::from(vec![i; 3]));
        }
        let mut bytes = Vec::new();
        c.save(&mut bytes)?;
        let mut d = Chain::default();
        d.load(&mut bytes.as_slice())?;
        assert_eq!(c.values, d.values);
        Ok(())
    }
}
