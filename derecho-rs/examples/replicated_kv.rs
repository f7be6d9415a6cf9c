//! A replicated key-value map over two shards.
//!
//! ```text
//! cargo run --release -p derecho --example replicated_kv -- --local 4
//! ```
//!
//! starts 4 member processes on 127.0.0.1 (this program again, with `--member`). The layout
//! puts them into one subgroup of type `KvStore` with two shards of two replicas. Every member
//! puts 200 keys into its own shard with `ordered_send` (all members at once, so the shard's
//! total order interleaves two senders) and reads keys of the other shard with `p2p_send`.
//! When its replica has applied all 400 puts of its shard, each member prints
//!
//! ```text
//! replica node=<id> shard=<s> keys=<n> digest=<hash of the sorted map>
//! ```
//!
//! and the two replicas of a shard must print the same digest; the launcher checks that and
//! exits non-zero if they differ.
//!
//! With `--persist DIR` the map is a persistent subgroup: each member keeps its log in
//! `DIR/n<id>`, prints `restored node=<id> keys=<n>` once it is in the group, reports its
//! replica only once its last put is globally persisted (on the disk of every member of its
//! shard), and at the end the launcher kills every member (`kill -9`) instead of letting them
//! leave. Run it twice with
//! the same `DIR`: the second run restarts the group from the logs, and every member reports
//! the 400 keys of its shard before it puts anything.
//!
//! ```text
//! cargo run --release -p derecho --example replicated_kv -- --local 4 --persist /tmp/kv
//! cargo run --release -p derecho --example replicated_kv -- --local 4 --persist /tmp/kv
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use derecho::config::Config;
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::{GroupBuilder, Replicated};
use serde::{Deserialize, Serialize};

/// Puts per member.
const PUTS: usize = 200;

/// The replicated map.
#[derive(Default)]
struct KvStore {
    map: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
enum Update {
    Put { key: String, value: String },
}

#[derive(Serialize, Deserialize)]
enum Query {
    Get(String),
    Count,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Done,
    Value(Option<String>),
    Count(usize),
}

impl Replicated for KvStore {
    type Update = Update;
    type Query = Query;
    type Reply = Reply;

    fn apply(&mut self, update: Update) -> Reply {
        let Update::Put { key, value } = update;
        self.map.insert(key, value);
        Reply::Done
    }

    fn query(&self, query: Query) -> Reply {
        match query {
            Query::Get(k) => Reply::Value(self.map.get(&k).cloned()),
            Query::Count => Reply::Count(self.map.len()),
        }
    }

    fn save(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(out, &self.map).map_err(io::Error::other)
    }

    fn load(&mut self, input: &mut dyn Read) -> io::Result<()> {
        self.map = serde_json::from_reader(input).map_err(io::Error::other)?;
        Ok(())
    }
}

/// FNV-1a over the sorted entries.
fn digest(map: &BTreeMap<String, String>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in map {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `count` distinct ports on 127.0.0.1 that are free now, taken below the kernel's ephemeral
/// range (outgoing connections draw from that range, so a port from it may be taken again
/// before a member binds it). The listeners that prove them free stay open until all are
/// chosen, so no port is handed out twice.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (from, span) = if low > 12_000 {
        (10_000, low - 10_000)
    } else {
        (61_000, 4_000)
    };
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    let mut held = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    for k in 0..span {
        if ports.len() == count {
            break;
        }
        let candidate = from + seed.wrapping_add(k.wrapping_mul(7919)) % span;
        let Ok(port) = u16::try_from(candidate) else {
            continue;
        };
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    if ports.len() < count {
        return Err(format!("found only {} of {count} free ports", ports.len()));
    }
    Ok(ports)
}

/// Kills the children that are still running when the launcher returns.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

fn launch(n: usize, persist: Option<&str>) -> Result<(), String> {
    if n < 4 || !n.is_multiple_of(2) {
        return Err(
            "--local needs an even number of nodes, at least 4 (two shards of two or more)".into(),
        );
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Four ports per member: GMS (member 0's is the contact), fabric, state transfer, P2P.
    let all = free_ports(4 * n)?;
    let contact = all[0];
    let mut children = Children(Vec::new());
    for (id, ports) in all.chunks(4).enumerate() {
        let child = Command::new(&exe)
            .args([
                "--member".to_string(),
                id.to_string(),
                n.to_string(),
                contact.to_string(),
            ])
            .args(ports.iter().map(u16::to_string))
            .args(persist)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting member {id}: {e}"))?;
        children.0.push(child);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for c in &mut children.0 {
        let out = c.stdout.take().ok_or("no stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut by_shard: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut replicas = 0;
    while replicas < n {
        if Instant::now() >= deadline {
            return Err(format!(
                "only {replicas} of {n} replicas reported within 120 s"
            ));
        }
        // A member that exits before reporting (it could not start, or failed) ends the run.
        for (id, c) in children.0.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("member {id} exited ({status}) before reporting"));
            }
        }
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        println!("{line}");
        if let Some(rest) = line.strip_prefix("replica ") {
            let field = |name: &str| {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or("?")
                    .to_string()
            };
            by_shard
                .entry(field("shard="))
                .or_default()
                .push(field("digest="));
            replicas += 1;
        }
    }
    // Everyone has reported: let the members leave, or, with logs, crash them all.
    for c in &mut children.0 {
        if persist.is_some() {
            let _ = c.kill();
        } else if let Some(mut stdin) = c.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
    }
    for c in &mut children.0 {
        let _ = c.wait();
    }
    for (shard, digests) in &by_shard {
        if digests.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("the replicas of shard {shard} differ: {digests:?}"));
        }
    }
    println!("all {} shards agree", by_shard.len());
    Ok(())
}

fn member(args: &[String]) -> Result<(), String> {
    let num = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad member argument {i}"))
    };
    // The launcher closes our stdin when it exits, even if it is killed: stop with it.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        match io::stdin().read_line(&mut line) {
            Ok(n) if n > 0 => {
                let _ = stop_tx.send(());
            }
            _ => std::process::exit(2),
        }
    });
    let id = num(0)? as u32;
    let n = num(1)? as usize;
    let port = |i| -> Result<u16, String> { u16::try_from(num(i)?).map_err(|e| e.to_string()) };
    let mut config = Config::default();
    config.derecho.local_id = id;
    config.derecho.contact_port = port(2)?;
    config.derecho.gms_port = port(3)?;
    config.derecho.sst_port = port(4)?;
    config.derecho.state_transfer_port = port(5)?;
    config.derecho.external_port = port(6)?;
    let half = n / 2;
    let policy = LayoutPolicy {
        types: vec![TypePolicy::new(
            "KvStore",
            vec![SubgroupPolicy::flexible_even(2, half, half)],
        )],
    };
    let persist = args.get(7);
    if let Some(dir) = persist {
        config.pers.file_path = std::path::Path::new(dir).join(format!("n{id}"));
    }
    let builder = GroupBuilder::new(&config);
    let builder = if persist.is_some() {
        builder.persistent::<KvStore>("KvStore", |_| KvStore::default())
    } else {
        builder.replicated::<KvStore>("KvStore", |_| KvStore::default())
    };
    let group = builder.layout(policy).start().map_err(|e| e.to_string())?;
    let kv = group.subgroup::<KvStore>(0).map_err(|e| e.to_string())?;
    if persist.is_some() {
        let keys = kv.with_local(|s| s.map.len()).unwrap_or(0);
        println!("restored node={id} keys={keys}");
    }
    let shards = kv.shard_members();
    let mine = kv.my_shard().ok_or("this member holds no shard")?;
    let other = &shards[1 - mine];
    // Puts into my shard (ordered) and gets from the other shard (point to point), at once.
    for i in 0..PUTS {
        let key = format!("n{id}-k{i:03}");
        let pending = kv
            .ordered_send(&Update::Put {
                key,
                value: format!("value {i} from node {id}"),
            })
            .map_err(|e| e.to_string())?;
        // With logs, delivered is not yet durable: the report (after which the launcher may
        // kill every member) comes after my last put is on every disk of the shard. Each
        // member waits for its own, so once all have reported every put is durable.
        if persist.is_some() && i + 1 == PUTS {
            pending
                .await_global_persistence(Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
        }
        pending.wait().map_err(|e| e.to_string())?;
        if i % 20 == 0 {
            let peer = other[i / 20 % other.len()];
            let probe = format!("n{peer}-k{:03}", i / 2);
            kv.p2p_send(peer, &Query::Get(probe))
                .map_err(|e| e.to_string())?;
        }
    }
    // Wait until my replica has every put of my shard.
    let expected = PUTS * shards[mine].len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = kv.with_local(|s| s.map.len()).unwrap_or(0);
        if have >= expected {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("replica has {have} of {expected} keys after 60 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (keys, d) = kv
        .with_local(|s| (s.map.len(), digest(&s.map)))
        .ok_or("no local replica")?;
    println!("replica node={id} shard={mine} keys={keys} digest={d:016x}");
    let _ = io::stdout().flush();
    // Stay until the launcher says every replica has reported.
    let _ = stop_rx.recv();
    group
        .leave(Duration::from_secs(5))
        .map_err(|e| e.to_string())
}

const USAGE: &str = "usage: replicated_kv --local <nodes> [--persist <dir>]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--local") => match (
            args.get(1).map(|s| s.parse::<usize>()),
            args.get(2).map(String::as_str),
            args.get(3),
        ) {
            (Some(Ok(n)), None, _) => launch(n, None),
            (Some(Ok(n)), Some("--persist"), Some(dir)) => launch(n, Some(dir)),
            _ => Err(USAGE.into()),
        },
        Some("--member") => member(&args[1..]),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replicated_kv: {e}");
            ExitCode::FAILURE
        }
    }
}
