//! The member side of `bandwidth_test` and `latency_test`: parse the original's arguments, form
//! a group of one shard, and report one `key=value` result line per process.
//!
//! Arguments, as the original's: `[derecho options --] <num_nodes> <sender_selector
//! 0=all|1=half|2=one> <num_messages> <delivery_mode 0=ordered|1=unordered>`. The message size
//! is `SUBGROUP/DEFAULT/max_payload_size`. The configuration comes from `derecho.cfg` /
//! `$DERECHO_CONF_FILE` and the `--SECTION/key=value` options, as for any member.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use derecho::config::{Config, ConfigLoader};
use derecho::gms::LayoutFn;
use derecho::layout::{LayoutError, SubgroupId};
use derecho::multicast::{Mode, ShardSpec, Sizes, SubgroupSpec};
use derecho::node::GroupNode;
use derecho_tests::checker::{digest, Event, MemberLog, MessageId};

/// Environment variable naming the file where a member records its views, sends and
/// deliveries for the checker (set by `launch --check`).
pub const CHECK_LOG_ENV: &str = "DERECHO_CHECK_LOG";

/// Who sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Senders {
    /// Every member.
    All,
    /// The lower half of the ranks (at least one).
    Half,
    /// Rank 0 only.
    One,
}

impl Senders {
    /// The launcher's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Senders::All => "all",
            Senders::Half => "half",
            Senders::One => "one",
        }
    }

    fn count(self, n: usize) -> usize {
        match self {
            Senders::All => n,
            Senders::Half => n.div_ceil(2),
            Senders::One => 1,
        }
    }
}

/// Parsed benchmark arguments.
#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// The member's configuration.
    pub config: Config,
    /// Group size.
    pub nodes: usize,
    /// Who sends.
    pub senders: Senders,
    /// Messages per sender.
    pub messages: usize,
    /// Delivery mode.
    pub mode: Mode,
}

/// Parses `[derecho options --] <num_nodes> <sender_selector> <num_messages> <delivery_mode>`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<BenchArgs, String> {
    let config = ConfigLoader::new()
        .args(args)
        .load()
        .map_err(|e| e.to_string())?;
    let rest = config.app_args().to_vec();
    if rest.len() != 4 {
        return Err(format!(
            "usage: [derecho options --] <num_nodes> <sender_selector 0|1|2> <num_messages> <delivery_mode 0|1> (got {rest:?})"
        ));
    }
    let num = |i: usize, what: &str| {
        rest[i]
            .parse::<usize>()
            .map_err(|e| format!("{what} {:?}: {e}", rest[i]))
    };
    let senders = match num(1, "sender_selector")? {
        0 => Senders::All,
        1 => Senders::Half,
        2 => Senders::One,
        x => return Err(format!("sender_selector must be 0, 1 or 2, not {x}")),
    };
    let mode = match num(3, "delivery_mode")? {
        0 => Mode::Ordered,
        1 => Mode::Raw,
        x => return Err(format!("delivery_mode must be 0 or 1, not {x}")),
    };
    Ok(BenchArgs {
        nodes: num(0, "num_nodes")?.max(1),
        senders,
        messages: num(2, "num_messages")?,
        mode,
        config,
    })
}

/// One shard of exactly `args.nodes` members with the selected senders.
pub fn layout(args: &BenchArgs) -> LayoutFn {
    let (n, senders, mode) = (args.nodes, args.senders.count(args.nodes), args.mode);
    let sizes = args.config.profile("DEFAULT").map(Sizes::from_profile);
    Arc::new(move |ids: &[u32], _previous| {
        if ids.len() < n {
            return Err(LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: ids.len(),
                need: n,
            });
        }
        let sizes = sizes.clone().ok_or_else(|| LayoutError::Profile {
            profile: "DEFAULT".into(),
            at: None,
            problem: "missing".into(),
        })?;
        Ok(vec![SubgroupSpec {
            shards: vec![ShardSpec {
                members: ids[..n].to_vec(),
                senders: ids[..senders].to_vec(),
                mode,
                sizes,
            }],
        }])
    })
}

/// CPU seconds this process has used (user + system), from /proc.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// What a member measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages delivered here.
    pub delivered: usize,
    /// Seconds from the first send (or first delivery) to the last delivery.
    pub secs: f64,
    /// Bytes delivered here.
    pub bytes: usize,
    /// Send-to-delivery latencies of this node's own messages, µs (latency test).
    pub latencies: Vec<f64>,
}

/// Runs the benchmark on this member. `closed_loop` makes each sender wait for its previous
/// message's delivery before sending the next (latency test).
pub fn run(args: &BenchArgs, closed_loop: bool) -> Result<Outcome, String> {
    let payload = args
        .config
        .profile("DEFAULT")
        .map(|p| p.max_payload_size as usize)
        .ok_or("no DEFAULT profile")?;
    let sending = args.senders.count(args.nodes);
    let expected = sending * args.messages;
    let delivered = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let last = Arc::new(Mutex::new(Instant::now()));
    // Own messages carry their send time (nanoseconds since `epoch`) in their first 8 bytes;
    // indices cannot be used, because null messages take indices too.
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let me = args.config.derecho.local_id;
    let check_path = std::env::var_os(CHECK_LOG_ENV);
    let check: Option<Arc<Mutex<MemberLog>>> = check_path
        .as_ref()
        .map(|_| Arc::new(Mutex::new(MemberLog::new(me))));
    if check.is_some() && payload < MessageId::LEN + 8 {
        return Err(format!(
            "checking needs payloads of at least {} bytes",
            MessageId::LEN + 8
        ));
    }
    let deliver = {
        let check = check.clone();
        let (delivered, first, last, latencies) = (
            Arc::clone(&delivered),
            Arc::clone(&first),
            Arc::clone(&last),
            Arc::clone(&latencies),
        );
        Box::new(move |d: derecho::multicast::Delivery<'_>| {
            let now = Instant::now();
            first
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(now);
            *last.lock().unwrap_or_else(|p| p.into_inner()) = now;
            if let Some(log) = &check {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .events
                    .push(Event::delivered(&d));
            }
            if d.sender == me {
                let tail = d.payload.len().saturating_sub(8);
                if let Some(stamp) = d.payload.get(tail..).and_then(|b| b.try_into().ok()) {
                    let sent = epoch + Duration::from_nanos(u64::from_le_bytes(stamp));
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(now.saturating_duration_since(sent).as_secs_f64() * 1e6);
                }
            }
            delivered.fetch_add(1, Ordering::SeqCst);
        })
    };
    let node = GroupNode::start(&args.config, layout(args), deliver).map_err(|e| e.to_string())?;
    let i_send = node.view().subgroups[0].shards[0].senders.contains(&me);
    if let Some(log) = &check {
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .push(Event::View {
                vid: node.view().vid,
                members: node.view().ids(),
            });
    }
    // Everyone starts sending together.
    node.multicast()
        .map_err(|e| e.to_string())?
        .sst()
        .sync_with_members(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let mut data = vec![0x5au8; payload.max(8)];
    let start = Instant::now();
    if i_send {
        first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(start);
        for i in 0..args.messages {
            let id = MessageId {
                sender: me,
                serial: i as u64,
            };
            id.stamp(&mut data);
            let stamp = epoch.elapsed().as_nanos() as u64;
            let tail = data.len() - 8;
            data[tail..].copy_from_slice(&stamp.to_le_bytes());
            if let Some(log) = &check {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .events
                    .push(Event::Sent {
                        subgroup: 0,
                        shard: 0,
                        id,
                        digest: digest(&data),
                    });
            }
            node.send(0, &data, Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            if closed_loop {
                let target = i + 1;
                let deadline = Instant::now() + Duration::from_secs(30);
                while latencies.lock().unwrap_or_else(|p| p.into_inner()).len() < target {
                    if Instant::now() > deadline {
                        return Err(format!("message {i} not delivered within 30 s"));
                    }
                    std::thread::yield_now();
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while delivered.load(Ordering::SeqCst) < expected {
        if Instant::now() > deadline {
            return Err(format!(
                "delivered {} of {expected} within 300 s",
                delivered.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let t0 = first
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(start);
    let t1 = *last.lock().unwrap_or_else(|p| p.into_inner());
    // Nobody leaves before everyone has everything.
    node.multicast()
        .map_err(|e| e.to_string())?
        .sst()
        .sync_with_members(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    if let (Some(path), Some(log)) = (&check_path, &check) {
        let file =
            std::fs::File::create(path).map_err(|e| format!("writing the check log: {e}"))?;
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_jsonl(std::io::BufWriter::new(file))
            .map_err(|e| format!("writing the check log: {e}"))?;
    }
    node.shutdown();
    Ok(Outcome {
        delivered: expected,
        secs: t1.duration_since(t0).as_secs_f64().max(1e-9),
        bytes: expected * payload,
        latencies: lat,
    })
}

/// The `p`-th percentile of `v` (sorted in place); 0 if empty.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// First bytes of a result line sent to rank 0 (see [`report`]).
const GATHER_MAGIC: &[u8; 4] = b"DRGA";

/// How long rank 0 waits for every rank's line, and a rank for rank 0 to take it.
const GATHER_BOUND: Duration = Duration::from_secs(120);

/// Prints this member's result line. When a cluster launcher started the members
/// (`DERECHO/launcher`), rank 0 gathers every rank's line instead, once its own member has
/// left the group, on its GMS port (free by then), and prints them in rank order followed by
/// `gathered=<n> of <size>`; the other ranks send theirs there and print nothing.
pub fn report(config: &derecho::config::Config, line: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let Some(l) = config.launched else {
        println!("{line}");
        return Ok(());
    };
    let d = &config.derecho;
    let at = SocketAddr::new(d.contact_ip, d.contact_port);
    let deadline = Instant::now() + GATHER_BOUND;
    if l.rank != 0 {
        // Rank 0's GMS service may still run and drop the line unanswered: only its "ok"
        // means the line arrived.
        loop {
            let sent = TcpStream::connect_timeout(&at, Duration::from_secs(1)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(GATHER_MAGIC)?;
                s.write_all(format!("{} {line}\n", l.rank).as_bytes())?;
                let mut ok = [0u8; 2];
                s.read_exact(&mut ok)?;
                Ok(&ok == b"ok")
            });
            if matches!(sent, Ok(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "rank 0 at {at} did not take the result within {GATHER_BOUND:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let listener = TcpListener::bind(SocketAddr::new(d.local_ip, d.contact_port))
        .map_err(|e| format!("gathering results on {at}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("gathering results: {e}"))?;
    let mut lines = vec![None; l.size as usize];
    lines[0] = Some(line.to_string());
    while lines.iter().any(Option::is_none) && Instant::now() < deadline {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut magic = [0u8; 4];
        let mut text = String::new();
        let got = s.read_exact(&mut magic).is_ok()
            && &magic == GATHER_MAGIC
            && BufReader::new((&s).take(4096)).read_line(&mut text).is_ok();
        let parsed = text
            .trim_end()
            .split_once(' ')
            .and_then(|(r, rest)| Some((r.parse::<usize>().ok()?, rest.to_string())));
        if let (true, Some((rank, rest))) = (got, parsed) {
            if let Some(slot) = lines.get_mut(rank) {
                *slot = Some(rest);
                let _ = s.write_all(b"ok");
            }
        }
    }
    let gathered = lines.iter().filter(|x| x.is_some()).count();
    for (rank, text) in lines.iter().enumerate() {
        if let Some(text) = text {
            println!("rank={rank} {text}");
        }
    }
    println!("gathered={gathered} of {}", l.size);
    if gathered < lines.len() {
        return Err(format!("{} ranks sent no result", lines.len() - gathered));
    }
    Ok(())
}
