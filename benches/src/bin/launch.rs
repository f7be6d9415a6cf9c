//! `launch`: runs a group benchmark on N local processes and prints one result line.
//!
//! ```text
//! cargo run --release -p benches --bin launch -- --nodes N [--transport tcp] [--payload BYTES] \
//!     [--window W] [--smc BYTES] [--timeout SECS] [--check [--max-pause MS]] \
//!     [--kill RANK@MS]... [--leave RANK@MS]... [--join @MS]... \
//!     [--persist DIR [--crash-all @MS --restart-all @MS]] [--csv FILE] [--samples DIR] \
//!     [--secret FILE | --certificates [--intrude @MS]...] -- <bench> <bench args>
//! ```
//!
//! It writes a configuration per node (free ports on 127.0.0.1, node 0 as the contact, the
//! `[SUBGROUP/DEFAULT]` sizes from the options) into a temporary folder, starts `<bench>` (a
//! program next to this one, e.g. `bandwidth_test`) once per node with `DERECHO_CONF_FILE`
//! pointing at its file, waits for all of them (bounded), kills any that remain, and combines
//! their `result` lines into:
//!
//! ```text
//! <bench> nodes=N senders=all|half|one payload=B msgs=M mode=ordered|unordered gbps=<GB/s>
//!     msgs_per_s=<n> lat_p50_us=<n> lat_p99_us=<n> cpu_s=<CPU seconds of all processes>
//! ```
//!
//! `--secret FILE` runs the group in `[SECURITY] mode = secret` with FILE as the group secret
//! (make one with `derecho-secret new FILE`). `--certificates` runs it in `mode = certificate`
//! under a CA made for the run, with one certificate per member. With either, `--intrude @MS`
//! (repeatable) starts, at MS, a node that asks to join with credentials the group did not
//! issue (another secret, or a certificate from another CA for an unused id); it must be
//! refused. The line `intruders=<n> refused=<n> admitted=<n> members_at_first_report=<n>`
//! before the result counts them: an intruder is refused if it exits with an error that names
//! the refusal (its output is kept in `i<k>.log` of its folder); `admitted` counts the views
//! (in the members' `--check` records) that held one; the last field is the view size the
//! first member to finish saw (nobody evicted: all the members). launch fails if an intruder
//! is not refused or is admitted.
//!
//! `--stop RANK@MS` (repeatable) freezes member RANK with SIGSTOP instead (a hung process:
//! its sockets stay open, so only timeouts reveal it; it is killed at the end of the run).
//! `--kill RANK@MS` (repeatable) kills member RANK with SIGKILL MS milliseconds after the
//! start; the killed members are not expected to report. `--leave RANK@MS` asks member RANK to
//! leave gracefully (a `leave` line on its stdin), and `--join @MS` starts one more member
//! (ids after the first `--nodes`) that joins the running group; with `stream_test` it streams
//! for what is left of the run. Around the first view change the line adds the throughput dip:
//! `stall_ms` (the longest pause in deliveries on any member), `members_at_end` (the view size
//! the first member to finish saw: what the faults left, before members leave at the end of
//! the run) and `rate_before`/`rate_after`
//! (deliveries per second in the second before and after it). With `stream_test` this reproduces a
//! fault scenario with one command:
//!
//! ```text
//! launch --nodes 4 --check --kill 2@3000 -- stream_test 4 6000
//! ```
//!
//! With `--check`, every member records its views, sends and deliveries, and the checker of
//! `derecho-tests` runs over them at the end, printing
//! `check=ok|FAIL views=<n> delivered=<n> reason=<first violation or ->` before the result
//! line (and the exit status is non-zero on FAIL, and the members' folders with their records
//! are kept for inspection; the error names the folder). Members that record clock readings
//! (`stream_test`) are also held to liveness: after each view change their deliveries must
//! resume within `--max-pause` milliseconds (default 5000) of the last delivery before it.
//!
//! `--persist DIR` gives member `i` the logs `DIR/n<i>` (kept between runs; empty `DIR` for a
//! fresh group), and `stream_test` then streams into a persistent subgroup
//! ([`benches::persist_stream`]). `--crash-all @MS` kills every member with SIGKILL at MS and
//! `--restart-all @MS` starts them all again from their logs; they stream for what is left of
//! the run. With `--check` the line before the result is
//! `check=ok|FAIL durable=<n> lost=<n> diverged=<n> chains=<n> unreadable=<n>`: every update a
//! member saw reach the global persistence frontier, in any run, must be in every final
//! replica at the same position with the same content (`lost` counts those that are not), the
//! replicas must be prefixes of one another (`diverged` counts pairs that are not), every
//! member's files must be readable, and there must be at least one such update. SIGKILL
//! leaves the page cache intact, so this checks the protocol (what is logged, synced and
//! restored), not the disk: a missing `fsync` only shows with a power cut, which the
//! simulated disks of the persistence tests model. For a total restart in one command:
//!
//! ```text
//! launch --nodes 3 --persist /tmp/p --crash-all @3000 --restart-all @3500 --check -- stream_test 3 6000
//! ```
//!
//! `--csv FILE` also appends the result as one row to the table FILE (header first when the
//! file is new; columns in [`benches::figures::RESULT_COLUMNS`]), for the `plot` program.
//! `--samples DIR` has the members write their raw series into DIR: `latency_test`'s node 0 its
//! sorted latencies, `stream_test` every member its delivery and view-install times, in ms
//! since launch started the members (see [`benches::figures`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use benches::ChildGuard;
use derecho::config::Config;

/// What `--check` concluded.
enum Verdict {
    /// The virtual-synchrony checker over the members' records.
    Stream(derecho_tests::checker::Report),
    /// The persistent stream's records against its final replicas.
    Persist(benches::persist_stream::Verdict),
}

impl Verdict {
    fn ok(&self) -> bool {
        match self {
            Verdict::Stream(r) => r.ok(),
            Verdict::Persist(v) => v.ok(),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Stream(r) => r.fmt(f),
            Verdict::Persist(v) => v.fmt(f),
        }
    }
}

enum Event {
    CrashAll,
    RestartAll,
    Kill(usize),
    Stop(usize),
    Leave(usize),
    Join(usize),
    Intrude(usize),
}

struct Opts {
    nodes: usize,
    transport: String,
    payload: u64,
    window: u32,
    smc: u64,
    timeout: u64,
    check: bool,
    max_pause_ms: u64,
    kills: Vec<(usize, u64)>,
    joins: Vec<u64>,
    leaves: Vec<(usize, u64)>,
    /// Ranks of `kills` that get SIGSTOP instead of SIGKILL.
    stops: Vec<usize>,
    /// Where the members keep their logs (`--persist`).
    persist: Option<PathBuf>,
    /// When every member is killed (`--crash-all`).
    crash_all: Option<u64>,
    /// When every member is started again (`--restart-all`).
    restart_all: Option<u64>,
    /// The result table to append a row to (`--csv`).
    csv: Option<PathBuf>,
    /// Where the members write their raw series (`--samples`).
    samples: Option<PathBuf>,
    /// `[SECURITY] mode = secret` with this group secret file.
    secret: Option<PathBuf>,
    /// `[SECURITY] mode = certificate` with a CA made for the run.
    certificates: bool,
    /// When to start intruders (`--intrude`).
    intrusions: Vec<u64>,
    bench: String,
    bench_args: Vec<String>,
}

fn parse() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or("usage: launch --nodes N [options] -- <bench> <args>")?;
    let (ours, theirs) = (&args[..split], &args[split + 1..]);
    let mut o = Opts {
        nodes: 2,
        transport: "tcp".into(),
        payload: 10240,
        window: 64,
        smc: 10240,
        timeout: 600,
        check: false,
        max_pause_ms: 5000,
        kills: Vec::new(),
        joins: Vec::new(),
        leaves: Vec::new(),
        stops: Vec::new(),
        persist: None,
        crash_all: None,
        restart_all: None,
        csv: None,
        samples: None,
        secret: None,
        certificates: false,
        intrusions: Vec::new(),
        bench: theirs
            .first()
            .cloned()
            .ok_or("no benchmark named after --")?,
        bench_args: theirs[1..].to_vec(),
    };
    let mut it = ours.iter();
    while let Some(flag) = it.next() {
        if flag == "--check" {
            o.check = true;
            continue;
        }
        if flag == "--certificates" {
            o.certificates = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--nodes" => o.nodes = v.parse().map_err(|e| bad(&e))?,
            "--transport" => o.transport = v.clone(),
            "--secret" => {
                let p = PathBuf::from(v);
                o.secret = Some(std::fs::canonicalize(&p).map_err(|e| bad(&e))?);
            }
            "--payload" => o.payload = v.parse().map_err(|e| bad(&e))?,
            "--window" => o.window = v.parse().map_err(|e| bad(&e))?,
            "--smc" => o.smc = v.parse().map_err(|e| bad(&e))?,
            "--timeout" => o.timeout = v.parse().map_err(|e| bad(&e))?,
            "--max-pause" => o.max_pause_ms = v.parse().map_err(|e| bad(&e))?,
            "--kill" | "--leave" | "--stop" => {
                let (rank, ms) = v.split_once('@').ok_or_else(|| bad(&"expected RANK@MS"))?;
                let event = (
                    rank.parse().map_err(|e| bad(&e))?,
                    ms.parse().map_err(|e| bad(&e))?,
                );
                if flag == "--kill" {
                    o.kills.push(event);
                } else if flag == "--stop" {
                    o.kills.push(event);
                    o.stops.push(event.0);
                } else {
                    o.leaves.push(event);
                }
            }
            "--join" | "--crash-all" | "--restart-all" | "--intrude" => {
                let ms = v.strip_prefix('@').ok_or_else(|| bad(&"expected @MS"))?;
                let ms = ms.parse().map_err(|e| bad(&e))?;
                match flag.as_str() {
                    "--join" => o.joins.push(ms),
                    "--intrude" => o.intrusions.push(ms),
                    "--crash-all" => o.crash_all = Some(ms),
                    _ => o.restart_all = Some(ms),
                }
            }
            "--persist" => o.persist = Some(PathBuf::from(v)),
            "--csv" => o.csv = Some(PathBuf::from(v)),
            "--samples" => o.samples = Some(PathBuf::from(v)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let built = derecho_fabric::backends::compiled();
    if !built.contains(&o.transport.as_str()) {
        return Err(format!(
            "transport {} is not in this build (built: {}); libfabric and verbs need the cargo features of derecho-fabric",
            o.transport,
            built.join(", ")
        ));
    }
    if o.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    if !o.intrusions.is_empty() && o.secret.is_none() && !o.certificates {
        return Err(
            "--intrude needs --secret FILE or --certificates (an open group admits anyone)".into(),
        );
    }
    match (o.crash_all, o.restart_all) {
        (Some(_), _) | (_, Some(_)) if o.persist.is_none() => {
            return Err("--crash-all and --restart-all need --persist DIR".into())
        }
        (None, Some(_)) => return Err("--restart-all needs --crash-all".into()),
        (Some(_), None) => return Err("--crash-all needs --restart-all".into()),
        (Some(c), Some(r)) if r <= c => {
            return Err(format!(
                "--restart-all @{r} must come after --crash-all @{c}"
            ))
        }
        _ => {}
    }
    if o.persist.is_some() {
        if o.bench != "stream_test" {
            return Err("--persist runs stream_test".into());
        }
        if !o.joins.is_empty() || !o.kills.is_empty() || !o.leaves.is_empty() {
            return Err("--persist does not combine with --join, --kill, --stop or --leave".into());
        }
        if o.samples.is_some() {
            return Err("--persist does not record --samples".into());
        }
        let duration = o.bench_args.get(1).and_then(|d| d.parse::<u64>().ok());
        if let (Some(c), Some(d)) = (o.crash_all, duration) {
            if c >= d {
                return Err(format!(
                    "--crash-all @{c} must come before the stream ends ({d} ms)"
                ));
            }
        }
    }
    Ok(o)
}

fn free_port() -> Result<u16, String> {
    derecho_tests::ports::listen_port()
}

fn configs(o: &Opts, dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    let contact = free_port()?;
    let ca = if o.certificates {
        Some(derecho::secure::GroupCa::new("launch", 2).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut paths = Vec::new();
    // Joiners get ids after the first members, in the order of their times.
    let members = o.nodes + o.joins.len();
    // The rogue credentials intruders hold: another CA, or another secret.
    let rogue_ca = if o.intrusions.is_empty() || !o.certificates {
        None
    } else {
        Some(derecho::secure::GroupCa::new("launch", 2).map_err(|e| e.to_string())?)
    };
    for i in 0..members + o.intrusions.len() {
        let mut c = Config::default();
        c.derecho.local_id = i as u32;
        c.derecho.contact_port = contact;
        c.derecho.gms_port = if i == 0 { contact } else { free_port()? };
        c.derecho.sst_port = free_port()?;
        c.derecho.state_transfer_port = free_port()?;
        c.derecho.external_port = free_port()?;
        // The P2P benchmarks send payload-sized queries.
        c.derecho.max_p2p_request_payload_size =
            c.derecho.max_p2p_request_payload_size.max(o.payload + 64);
        c.derecho.max_p2p_reply_payload_size = c.derecho.max_p2p_reply_payload_size.max(1024);
        c.rdma.backend = o
            .transport
            .parse()
            .map_err(|e| format!("--transport {}: {e}", o.transport))?;
        let intruder = i >= members;
        if let Some(secret) = &o.secret {
            c.security.mode = derecho::config::SecurityMode::Secret;
            c.security.group_secret_file = secret.clone();
            if intruder {
                let wrong = dir.join(format!("rogue-{i}.key"));
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                derecho::secure::Secret::generate()
                    .map_err(|e| e.to_string())?
                    .save(&wrong)
                    .map_err(|e| format!("{}: {e}", wrong.display()))?;
                c.security.group_secret_file = wrong;
            }
        }
        match (&ca, &rogue_ca) {
            (Some(_), Some(rogue)) if intruder => {
                benches::use_certificate(&mut c, rogue, &dir.join("rogue-pki"))?;
            }
            (Some(ca), _) => benches::use_certificate(&mut c, ca, &dir.join("pki"))?,
            _ => {}
        }
        if let Some(dir) = &o.persist {
            c.pers.file_path = dir.join(format!("n{i}"));
        }
        if let Some(p) = c.subgroups.get_mut("DEFAULT") {
            p.max_payload_size = o.payload;
            p.max_smc_payload_size = o.smc.min(o.payload);
            p.window_size = o.window;
            p.max_reply_payload_size = p.max_reply_payload_size.max(128);
        }
        let folder = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
        let path = folder.join("derecho.cfg");
        std::fs::write(&path, c.to_ini_string()).map_err(|e| e.to_string())?;
        paths.push(path);
    }
    Ok(paths)
}

fn run(o: &Opts) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bench = exe.parent().ok_or("no folder")?.join(&o.bench);
    if !bench.exists() {
        return Err(format!(
            "{} not found (build it: cargo build --release -p benches)",
            bench.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("derecho-launch-{}", std::process::id()));
    let paths = configs(o, &dir)?;
    // Members run in their own folders: they get the samples folder as an absolute path, and
    // the common time origin of their series.
    let samples = match &o.samples {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("--samples {}: {e}", d.display()))?;
            let d = d
                .canonicalize()
                .map_err(|e| format!("--samples {}: {e}", d.display()))?;
            Some((d, unix_ns()))
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let spawn = {
        let (bench, paths, check, args) =
            (bench.clone(), paths.clone(), o.check, o.bench_args.clone());
        let is_stream = o.bench == "stream_test";
        let persist = o.persist.is_some();
        let samples = samples.clone();
        move |i: usize,
              late_ms: u64,
              tx: &mpsc::Sender<(usize, String)>|
              -> Result<ChildGuard, String> {
            let path = &paths[i];
            let mut args = args.clone();
            // A member that starts late streams for what is left of the run.
            if is_stream && late_ms > 0 {
                if let Some(d) = args.get(1).and_then(|d| d.parse::<u64>().ok()) {
                    args[1] = d.saturating_sub(late_ms).max(500).to_string();
                }
            }
            let mut cmd = Command::new(&bench);
            cmd.arg("--")
                .args(&args)
                .env("DERECHO_CONF_FILE", path)
                .env_remove("DERECHO_NODE_CONF_FILE")
                .env_remove(benches::group_bench::CHECK_LOG_ENV)
                .env_remove(benches::persist_stream::RECORD_ENV)
                .env_remove(benches::persist_stream::CHAIN_ENV)
                .env_remove(benches::figures::SAMPLES_DIR_ENV)
                .env_remove(benches::figures::SAMPLES_EPOCH_ENV)
                .current_dir(path.parent().ok_or("no folder")?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            if let Some((dir, epoch)) = &samples {
                cmd.env(benches::figures::SAMPLES_DIR_ENV, dir)
                    .env(benches::figures::SAMPLES_EPOCH_ENV, epoch.to_string());
            }
            if persist {
                cmd.env(
                    benches::persist_stream::RECORD_ENV,
                    path.with_file_name("durable.txt"),
                )
                .env(
                    benches::persist_stream::CHAIN_ENV,
                    path.with_file_name("chain.bin"),
                );
            } else if check {
                // Recording costs a digest of every delivered byte: only when checking.
                cmd.env(
                    benches::group_bench::CHECK_LOG_ENV,
                    path.with_file_name("check.jsonl"),
                );
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bench.display()))?;
            let out = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send((i, line));
                }
            });
            Ok(ChildGuard::new(child))
        }
    };
    let mut children = Vec::new();
    for i in 0..o.nodes {
        children.push(spawn(i, 0, &tx)?);
    }
    // Intruders: their output goes to a log of their own, read at the end.
    let intruders = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(ChildGuard, PathBuf)>::new()));
    let intrude = {
        let (bench, paths, args) = (bench.clone(), paths.clone(), o.bench_args.clone());
        let members = o.nodes + o.joins.len();
        move |k: usize| -> Result<(ChildGuard, PathBuf), String> {
            let path = &paths[members + k];
            let folder = path.parent().ok_or("no folder")?;
            let log_path = folder.join(format!("i{k}.log"));
            let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(&bench)
                .arg("--")
                .args(&args)
                .env("DERECHO_CONF_FILE", path)
                .env_remove("DERECHO_NODE_CONF_FILE")
                .env_remove(benches::group_bench::CHECK_LOG_ENV)
                .current_dir(folder)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bench.display()))?;
            Ok((ChildGuard::new(child), log_path))
        }
    };
    let started = Instant::now();
    let children = std::sync::Arc::new(std::sync::Mutex::new(children));
    let first_kill_at = std::sync::Arc::new(AtomicU64::new(0));
    // Kills, leaves and joins, in time order, on one thread.
    let killer = {
        let children = std::sync::Arc::clone(&children);
        let intruders = std::sync::Arc::clone(&intruders);
        let first_kill = std::sync::Arc::clone(&first_kill_at);
        let nodes = o.nodes;
        let mut events: Vec<(u64, Event)> = o
            .kills
            .iter()
            .map(|&(r, ms)| {
                if o.stops.contains(&r) {
                    (ms, Event::Stop(r))
                } else {
                    (ms, Event::Kill(r))
                }
            })
            .chain(o.leaves.iter().map(|&(r, ms)| (ms, Event::Leave(r))))
            .chain(
                o.joins
                    .iter()
                    .enumerate()
                    .map(|(k, &ms)| (ms, Event::Join(k))),
            )
            .chain(
                o.intrusions
                    .iter()
                    .enumerate()
                    .map(|(k, &ms)| (ms, Event::Intrude(k))),
            )
            .chain(o.crash_all.map(|ms| (ms, Event::CrashAll)))
            .chain(o.restart_all.map(|ms| (ms, Event::RestartAll)))
            .collect();
        events.sort_by_key(|e| e.0);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for (ms, event) in events {
                let at = started + Duration::from_millis(ms);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let mut c = children.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Event::CrashAll => {
                        for g in c.iter_mut() {
                            // SIGKILL: nothing is flushed or synced on the way out. Reaped
                            // before the restart, so no old process still writes its logs.
                            let _ = g.child_mut().kill();
                            let _ = g.child_mut().wait();
                        }
                        note_first_fault(&first_kill);
                        eprintln!("launch: killed every member at {ms} ms");
                    }
                    Event::RestartAll => {
                        for rank in 0..nodes {
                            match spawn(rank, ms, &tx) {
                                Ok(g) => {
                                    if let Some(old) = c.get_mut(rank) {
                                        *old = g;
                                    }
                                }
                                Err(e) => eprintln!("launch: could not restart member {rank}: {e}"),
                            }
                        }
                        eprintln!("launch: restarted every member at {ms} ms");
                    }
                    Event::Kill(rank) => {
                        if let Some(g) = c.get_mut(rank) {
                            // SIGKILL: no chance to say goodbye.
                            let _ = g.child_mut().kill();
                            note_first_fault(&first_kill);
                            eprintln!("launch: killed member {rank} at {ms} ms");
                        }
                    }
                    Event::Stop(rank) => {
                        if let Some(g) = c.get_mut(rank) {
                            let pid = g.child_mut().id().to_string();
                            let stopped = std::process::Command::new("kill")
                                .args(["-STOP", &pid])
                                .status()
                                .is_ok_and(|st| st.success());
                            note_first_fault(&first_kill);
                            eprintln!("launch: stopped member {rank} at {ms} ms (SIGSTOP sent: {stopped})");
                        }
                    }
                    Event::Leave(rank) => {
                        if let Some(stdin) = c.get_mut(rank).and_then(ChildGuard::stdin) {
                            let _ = writeln!(stdin, "leave");
                            let _ = stdin.flush();
                            eprintln!("launch: asked member {rank} to leave at {ms} ms");
                        }
                    }
                    Event::Intrude(k) => match intrude(k) {
                        Ok(g) => {
                            intruders.lock().unwrap_or_else(|p| p.into_inner()).push(g);
                            eprintln!("launch: started intruder {k} at {ms} ms");
                        }
                        Err(e) => eprintln!("launch: could not start an intruder: {e}"),
                    },
                    Event::Join(k) => match spawn(nodes + k, ms, &tx) {
                        Ok(g) => {
                            c.push(g);
                            eprintln!("launch: started member {} at {ms} ms to join", nodes + k);
                        }
                        Err(e) => eprintln!("launch: could not start a joiner: {e}"),
                    },
                }
            }
        })
    };
    drop(tx);
    let killed: std::collections::BTreeSet<usize> = o.kills.iter().map(|k| k.0).collect();
    let expected = o.nodes + o.joins.len()
        - killed
            .iter()
            .filter(|r| **r < o.nodes + o.joins.len())
            .count();
    let deadline = Instant::now() + Duration::from_secs(o.timeout);
    let mut results: HashMap<usize, HashMap<String, f64>> = HashMap::new();
    // The view size the first member to finish saw: members leave at the end of a run, but
    // none before the first one finishes, so this counts what the faults removed.
    let mut first_report_members: Option<f64> = None;
    while results.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, line)) => {
                if let Some(rest) = line.strip_prefix("result ") {
                    let kv = rest
                        .split_whitespace()
                        .filter_map(|p| p.split_once('='))
                        .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v)))
                        .collect::<HashMap<String, f64>>();
                    // A member that was removed and stopped reports the view it was cut from.
                    if first_report_members.is_none() && kv.get("stopped") == Some(&0.0) {
                        first_report_members = kv.get("members").copied();
                    }
                    results.insert(i, kv);
                }
            }
            Err(_) => break,
        }
    }
    let _ = killer.join();
    for c in children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter_mut()
    {
        c.wait_bounded(Duration::from_secs(10));
    }
    let intrusion = (!o.intrusions.is_empty()).then(|| {
        let mut list = intruders.lock().unwrap_or_else(|p| p.into_inner());
        let mut refused = 0;
        for (g, log) in list.iter_mut() {
            let exited = g.wait_bounded(Duration::from_secs(30));
            let failed = exited
                && g.child_mut()
                    .try_wait()
                    .ok()
                    .flatten()
                    .is_some_and(|st| !st.success());
            let said = std::fs::read_to_string(log.as_path()).unwrap_or_default();
            let named = ["refused", "certificate", "authenticat"]
                .iter()
                .any(|w| said.contains(w));
            if failed && named {
                refused += 1;
                let why = said
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                eprintln!("launch: an intruder was refused: {why}");
            } else {
                eprintln!(
                    "launch: intruder was not refused (exit failed: {failed}); its log:\n{said}"
                );
            }
        }
        (list.len(), refused)
    });
    // The members' records of views, sends and deliveries (with --check, for a stream).
    let logs: Vec<derecho_tests::checker::MemberLog> = if o.check && o.persist.is_none() {
        paths
            .iter()
            .filter_map(|p| {
                derecho_tests::checker::MemberLog::read_file(&p.with_file_name("check.jsonl")).ok()
            })
            .collect()
    } else {
        Vec::new()
    };
    let verdict = o.check.then(|| {
        if o.persist.is_some() {
            return persist_verdict(&paths);
        }
        let mut checker = derecho_tests::checker::Checker::new()
            .resume_within(Duration::from_millis(o.max_pause_ms));
        if logs.len() == o.nodes && o.kills.is_empty() && o.bench != "stream_test" {
            checker = checker.expect_complete();
        }
        if o.bench_args.get(3).map(String::as_str) == Some("1") {
            checker = checker.fifo_subgroups([0]);
        } else {
            checker = checker.expect_sender_fifo();
        }
        Verdict::Stream(checker.check(&logs))
    });
    if let Some((n, refused)) = intrusion {
        // Views that held an intruder, in any member's record (with --check).
        let members = o.nodes + o.joins.len();
        let admitted = logs
            .iter()
            .flat_map(|log| &log.events)
            .filter(|e| {
                matches!(e, derecho_tests::checker::Event::View { members: m, .. }
                    if m.iter().any(|id| *id as usize >= members))
            })
            .count();
        let at_first_report = first_report_members.map_or(-1.0, |m| m);
        println!(
            "intruders={n} refused={refused} admitted={admitted} members_at_first_report={at_first_report:.0}"
        );
        if refused < n || n < o.intrusions.len() || admitted > 0 {
            return Err(format!(
                "{refused} of {} intruders were refused and {admitted} views held one; the \
                 folders are kept in {}",
                o.intrusions.len(),
                dir.display()
            ));
        }
    }
    if let Some(v) = &verdict {
        println!("{v}");
        if !v.ok() {
            // Keep the evidence: every member's configuration and recorded views, sends and
            // deliveries.
            return Err(format!(
                "the checker found a violation; the members' records are kept in {}",
                dir.display()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if results.len() < expected {
        return Err(format!(
            "only {} of {expected} members reported a result",
            results.len()
        ));
    }
    let all = |k: &str| {
        results
            .values()
            .filter_map(|r| r.get(k).copied())
            .collect::<Vec<f64>>()
    };
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let senders_lat = |k: &str| {
        results
            .values()
            .filter(|r| r.get("samples").is_some_and(|s| *s > 0.0))
            .filter_map(|r| r.get(k).copied())
            .collect::<Vec<f64>>()
    };
    // The original's four arguments name the senders second; the two-argument benchmarks
    // (`<num_nodes> <num_messages>`) have every member send, except the latency and P2P ones.
    let sel = match o.bench_args.len() {
        2 if o.bench.ends_with("latency_test") || o.bench.starts_with("p2p_") => "2",
        2 => "0",
        _ => o.bench_args.get(1).map(String::as_str).unwrap_or("0"),
    };
    let senders = match sel {
        "1" => "half",
        "2" => "one",
        _ => "all",
    };
    let mode = if o.bench_args.get(3).map(String::as_str) == Some("1") {
        "unordered"
    } else {
        "ordered"
    };
    // kill -9 to view 1 on every survivor: the latest view-1 time minus the first kill.
    let killed_at = first_kill_at.load(Ordering::SeqCst) as f64;
    let view1: Vec<f64> = all("view1_at_ns")
        .into_iter()
        .filter(|t| *t > 0.0)
        .collect();
    let kill_to_view = if killed_at > 0.0 && !view1.is_empty() {
        let last = view1.iter().fold(0.0_f64, |a, b| a.max(*b));
        format!(" kill_to_view_ms={:.1}", (last - killed_at) / 1e6)
    } else {
        String::new()
    };
    let kill_to_view = match first_report_members {
        Some(m) if killed_at > 0.0 => format!("{kill_to_view} members_at_end={m:.0}"),
        _ => kill_to_view,
    };
    // The throughput dip around the first view change, as the members saw it.
    let stalls = all("stall_ms");
    let dip = if stalls.is_empty() {
        String::new()
    } else {
        format!(
            " stall_ms={:.1} rate_before={:.0} rate_after={:.0}",
            stalls.iter().fold(0.0_f64, |a, b| a.max(*b)),
            mean(all("rate_before")),
            mean(all("rate_after"))
        )
    };
    Ok(format!(
        "{} nodes={} senders={senders} payload={} msgs={} mode={mode} gbps={:.4} msgs_per_s={:.0} lat_p50_us={:.1} lat_p99_us={:.1} cpu_s={:.2}",
        o.bench,
        o.nodes,
        o.payload,
        // The message count: third of the original's four arguments, second of two.
        o.bench_args
            .get(if o.bench_args.len() == 2 { 1 } else { 2 })
            .map(String::as_str)
            .unwrap_or("?"),
        mean(all("gbps")),
        mean(all("msgs_per_s")),
        mean(senders_lat("lat_p50_us")),
        senders_lat("lat_p99_us").into_iter().fold(0.0, f64::max),
        all("cpu_s").iter().sum::<f64>()
    ) + &kill_to_view
        + &dip
        + &persistence_figures(&all))
}

/// The verdict of a persistent stream: every member's durable records against every member's
/// final chain.
fn persist_verdict(paths: &[PathBuf]) -> Verdict {
    use benches::persist_stream::{read_chain, read_records, verdict};
    let mut records = Vec::new();
    let mut chains = Vec::new();
    let mut unreadable = 0;
    for p in paths {
        match (
            read_records(&p.with_file_name("durable.txt")),
            read_chain(&p.with_file_name("chain.bin")),
        ) {
            (Ok(r), Ok(c)) => {
                records.extend(r);
                chains.push(c);
            }
            _ => unreadable += 1,
        }
    }
    let mut v = verdict(&records, &chains);
    v.unreadable = unreadable;
    Verdict::Persist(v)
}

/// The persistence benchmarks' extra figures (mean over the members that report each):
/// durable throughput, and the disk's own synced-write latency and bandwidth.
fn persistence_figures(all: &dyn Fn(&str) -> Vec<f64>) -> String {
    let mut out = String::new();
    // The persistent stream: updates made durable, the smallest chain a restarted member
    // found on its disk, and the longest a member took to be in the group.
    let restored = all("restored");
    if !restored.is_empty() {
        out.push_str(&format!(
            " durable={:.0} restored_min={:.0} started_ms_max={:.1}",
            all("durable").iter().sum::<f64>(),
            restored.iter().fold(f64::INFINITY, |a, b| a.min(*b)),
            all("started_ms").iter().fold(0.0_f64, |a, b| a.max(*b))
        ));
    }
    for (key, decimals) in [
        ("durable_gbps", 4),
        ("durable_msgs_per_s", 0),
        ("disk_sync_4k_us", 1),
        ("disk_seq_synced_gbps", 4),
    ] {
        let v = all(key);
        if !v.is_empty() {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            out.push_str(&format!(" {key}={m:.decimals$}"));
        }
    }
    out
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("launch: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&opts) {
        Ok(line) => {
            println!("{line}");
            if let Some(path) = &opts.csv {
                let row = benches::figures::result_row(
                    &line,
                    &opts.transport,
                    opts.window,
                    unix_ns() / 1_000_000_000,
                )
                .and_then(|row| benches::figures::append_row(path, &row));
                if let Err(e) = row {
                    eprintln!("launch: --csv: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("launch: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Now, Unix nanoseconds.
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Records now (Unix ns) as the time of the first kill or stop, unless one came before.
fn note_first_fault(first: &AtomicU64) {
    let _ = first.compare_exchange(0, unix_ns(), Ordering::SeqCst, Ordering::SeqCst);
}
