//! `service_bench`: what a photo costs through the whole service — gRPC to a function-tier node,
//! P2P to a categorizer, candle there, and back — against `Classifier::classify` called in this
//! process on the same models and photos, with one categorizer shard and with two.
//!
//! ```text
//! cargo build --release -p sospdemo
//! target/release/service_bench [--seconds 6] [--clients 4]
//! ```
//!
//! Setups, each measured with one client (latency) and with `--clients` concurrent clients
//! (throughput), half of them asking the flowers model (tag 1) and half the pets model (tag 2):
//!
//! * **in-process**: `Classifier::classify` on threads of this process;
//! * **1 shard**: `test-2-nodes` — n0 function tier, n1 the only categorizer, holding both
//!   models;
//! * **2 shards**: n0 function tier, n1 categorizer shard 0 (tag 2), n2 shard 1 (tag 1).
//!
//! The servers are `sospdemo server` processes started from the `sospdemo` binary next to this
//! one (or `--server PATH`) in a temporary folder, on the ports of `test-configs/`; they are
//! killed when the program ends, on success, error or panic. Every call is bounded (30 s).
//! Prints the machine, the command and markdown table rows; the last column is the CPU each
//! process kept busy while the clients ran (user + system time over wall time, from
//! `/proc/<pid>/stat`), which shows what the two cores were spent on. `RAYON_NUM_THREADS=1`
//! runs candle on one thread per process, here and in the servers (they inherit the
//! environment).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sospdemo::batch::{BatchConfig, BatchedClassifier};
use sospdemo::demo::{node_config, Cluster, ClusterSize, ServerCommand, FLOWERS_TAG, PETS_TAG};
use sospdemo::model::{Classifier, ModelFiles};
use sospdemo::service::INSTALL_OK;
use sospdemo::train::Task;
use sospdemo_proto::function_tier_service_client::FunctionTierServiceClient;
use sospdemo_proto::{install_model_requests, photo_requests, FUNCTION_TIER_GRPC_PORT_BASE};
use tonic::transport::{Channel, Endpoint};

/// Bound on one gRPC call.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Bound on forming the group.
const STARTUP_LIMIT: Duration = Duration::from_secs(90);
/// Calls per client before measuring (the first call of a tag builds its engine), unless
/// `--warm-up` says otherwise.
const WARM_UP_CALLS: usize = 3;

type BenchResult<T> = Result<T, String>;

/// Command-line options.
struct Options {
    seconds: f64,
    clients: usize,
    runs: usize,
    warm_up: usize,
    in_process_only: bool,
    /// `--model SYNSET ARCH WEIGHTS`: one model for every client instead of the bundled two.
    model: Option<[PathBuf; 3]>,
    server: PathBuf,
}

fn parse_options() -> BenchResult<Options> {
    let mut options = Options {
        seconds: 6.0,
        clients: 4,
        runs: 1,
        warm_up: WARM_UP_CALLS,
        in_process_only: false,
        model: None,
        server: std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .with_file_name("sospdemo"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                options.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--clients" => {
                options.clients = value("--clients")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?
            }
            "--runs" => {
                options.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            "--in-process" => options.in_process_only = true,
            "--warm-up" => {
                options.warm_up = value("--warm-up")?
                    .parse()
                    .map_err(|e| format!("--warm-up: {e}"))?
            }
            "--model" => {
                options.model = Some([
                    PathBuf::from(value("--model")?),
                    PathBuf::from(value("--model")?),
                    PathBuf::from(value("--model")?),
                ]);
                options.in_process_only = true;
            }
            "--server" => options.server = PathBuf::from(value("--server")?),
            "-h" | "--help" => {
                println!(
                    "service_bench [--seconds S] [--clients N] [--runs R] [--warm-up CALLS] \
                     [--in-process] \
                     [--model SYNSET ARCH WEIGHTS] [--server PATH-TO-sospdemo]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.clients < 2 || !options.clients.is_multiple_of(2) {
        return Err("--clients must be even and at least 2 (half per tag)".into());
    }
    if options.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if options.seconds.is_nan() || options.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
    if !options.in_process_only && !options.server.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p sospdemo`, or pass --server",
            options.server.display()
        ));
    }
    Ok(options)
}

/// One bundled photo and the tag that classifies it.
#[derive(Clone)]
struct Question {
    tag: u32,
    /// The label the photo should get (`None`: not checked).
    truth: Option<String>,
    photo: Arc<Vec<u8>>,
}

fn questions(task: Task, tag: u32) -> BenchResult<Vec<Question>> {
    let dir = sospdemo::bundled_photo_dir(task);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Question {
                tag,
                truth: Some(name.split('-').next().unwrap_or_default().to_owned()),
                photo: Arc::new(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?),
            })
        })
        .collect()
}

/// What a measurement gives: one latency per answered call, and the wall time.
struct Run {
    latencies_ms: Vec<f64>,
    wall: Duration,
    errors: usize,
    wrong: usize,
    /// Cores each process kept busy while the clients ran, by name.
    cpu: Vec<(String, f64)>,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn per_second(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `clients` workers for `seconds` after a common start; worker `i` asks
/// `asks[i % asks.len()]` in turn with `call`, which answers the label or an error. The CPU time
/// of this process (`self_name`) and of `servers` is sampled over the same window.
#[allow(clippy::too_many_arguments)]
fn measure<C>(
    clients: usize,
    seconds: f64,
    warm_up: usize,
    asks: &[Vec<Question>],
    make_caller: impl Fn(usize) -> BenchResult<C>,
    self_name: &str,
    servers: &[(String, u32)],
) -> BenchResult<Run>
where
    C: FnMut(&Question) -> BenchResult<String> + Send + 'static,
{
    let start = Arc::new(Barrier::new(clients + 1));
    let mut workers = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut call = make_caller(i)?;
        let mine = asks[i % asks.len()].clone();
        let start = Arc::clone(&start);
        workers.push(std::thread::spawn(move || {
            for q in mine.iter().cycle().take(warm_up) {
                let _ = call(q);
            }
            start.wait();
            let begun = Instant::now();
            let until = begun + Duration::from_secs_f64(seconds);
            let (mut latencies, mut errors, mut wrong) = (Vec::new(), 0, 0);
            let mut last = begun;
            for q in mine.iter().cycle() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                let answer = call(q);
                last = Instant::now();
                match answer {
                    Ok(label) => {
                        latencies.push((last - now).as_secs_f64() * 1e3);
                        if q.truth.as_ref().is_some_and(|t| *t != label) {
                            wrong += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors, wrong, begun, last)
        }));
    }
    let mut watched: Vec<(String, String)> = vec![(self_name.to_owned(), "self".to_owned())];
    watched.extend(servers.iter().map(|(n, pid)| (n.clone(), pid.to_string())));
    start.wait();
    let window = Instant::now();
    let before: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(pid)).collect();
    let mut run = Run {
        latencies_ms: Vec::new(),
        wall: Duration::ZERO,
        errors: 0,
        wrong: 0,
        cpu: Vec::new(),
    };
    let mut first: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    for w in workers {
        let (latencies, errors, wrong, begun, last) = w
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?;
        run.latencies_ms.extend(latencies);
        run.errors += errors;
        run.wrong += wrong;
        first = Some(first.map_or(begun, |f| f.min(begun)));
        end = Some(end.map_or(last, |e| e.max(last)));
    }
    let seconds = window.elapsed().as_secs_f64();
    for ((name, pid), before) in watched.iter().zip(before) {
        if let (Some(b), Some(a)) = (before, cpu_ticks(pid)) {
            let busy = a.saturating_sub(b) as f64 / TICKS_PER_SECOND / seconds;
            run.cpu.push((name.clone(), busy));
        }
    }
    if let (Some(f), Some(e)) = (first, end) {
        run.wall = e - f;
    }
    Ok(run)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux/x86-64).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of process `pid` (`self` for this one), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed: utime and stime are the
    // 12th and 13th after the closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The server processes running in `dir`'s node folders: (`n<i>`, pid), by node name.
fn server_pids(dir: &Path) -> Vec<(String, u32)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
            if cwd.parent() == Some(dir.as_path()) {
                let name = cwd
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                found.push((name, pid));
            }
        }
    }
    found.sort();
    found
}

/// A gRPC client of a function-tier node with every call bounded by [`CALL_LIMIT`].
fn grpc_caller(node: u16) -> BenchResult<impl FnMut(&Question) -> BenchResult<String> + Send> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let uri = format!("http://127.0.0.1:{}", FUNCTION_TIER_GRPC_PORT_BASE + node);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_LIMIT);
    let channel = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match endpoint.connect().await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(format!("{uri}: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })?;
    let grpc: FunctionTierServiceClient<Channel> = FunctionTierServiceClient::new(channel);
    Ok(move |q: &Question| {
        let requests = photo_requests(vec![q.tag], &q.photo).map_err(|e| e.to_string())?;
        let mut grpc = grpc.clone();
        runtime
            .block_on(async move { grpc.whatsthis(tokio_stream::iter(requests)).await })
            .map(|r| r.into_inner().desc)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    })
}

fn install(node: u16, tag: u32, model: &ModelFiles) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let requests = install_model_requests(tag, &model.synset, &model.architecture, &model.weights)
        .map_err(|e| e.to_string())?;
    let endpoint = Endpoint::from_shared(format!(
        "http://127.0.0.1:{}",
        FUNCTION_TIER_GRPC_PORT_BASE + node
    ))
    .map_err(|e| e.to_string())?
    .timeout(CALL_LIMIT);
    let reply = runtime.block_on(async move {
        let mut grpc = FunctionTierServiceClient::new(endpoint.connect().await?);
        grpc.install_model(tokio_stream::iter(requests))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)
    });
    match reply {
        Ok(r) if r.error_code == 0 && r.error_desc == INSTALL_OK => Ok(()),
        Ok(r) => Err(format!(
            "installing tag {tag}: code {}: {}",
            r.error_code, r.error_desc
        )),
        Err(e) => Err(format!("installing tag {tag}: {e}")),
    }
}

/// `text` (an INI file) with `keys` of `[section]` set to new values.
fn with_keys(text: &str, section: &str, keys: &[(&str, u32)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut current = "";
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            current = name;
        }
        let key = t.split_once('=').map(|(k, _)| k.trim());
        match keys
            .iter()
            .find(|(k, _)| current == section && key == Some(*k))
        {
            Some((k, v)) => out.push_str(&format!("{k} = {v}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// One function-tier node (n0) and two categorizer shards of one member (n1: shard 0, n2:
/// shard 1).
fn two_shard_config(id: u16) -> BenchResult<String> {
    let base = node_config(ClusterSize::Four, id).map_err(|e| e.to_string())?;
    let text = with_keys(
        &base,
        "SUBGROUP/FUNCTION_TIER",
        &[("min_nodes", 1), ("max_nodes", 1)],
    );
    Ok(with_keys(
        &text,
        "SUBGROUP/CATEGORIZER_TIER",
        &[("num_shards", 2), ("min_nodes", 1), ("max_nodes", 1)],
    ))
}

/// Fails if a port of nodes `0..nodes` (the `test-configs/` scheme) is taken.
fn check_ports(nodes: u16) -> BenchResult<()> {
    for id in 0..nodes {
        for (what, base) in [
            ("gms", 23580),
            ("state transfer", 28366),
            ("sst", 37683),
            ("rdmc", 31675),
            ("external", 32645),
            ("gRPC", FUNCTION_TIER_GRPC_PORT_BASE),
        ] {
            let port = base + id;
            if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    return Err(format!(
                        "port {port} ({what} of node {id}) is taken: is another sospdemo cluster running?"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Starts `configs` (node `i` gets `configs[i]`) in `dir`, one second apart, and waits for the
/// group.
fn start_cluster(
    dir: &Path,
    configs: &[String],
    server: &Path,
    args: Vec<String>,
) -> BenchResult<Cluster> {
    check_ports(configs.len() as u16)?;
    let command = ServerCommand {
        program: server.to_owned(),
        args: args.into_iter().map(Into::into).collect(),
    };
    let mut cluster = Cluster::new();
    for (id, cfg) in configs.iter().enumerate() {
        let node_dir = dir.join(format!("n{id}"));
        std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        std::fs::write(node_dir.join("derecho.cfg"), cfg).map_err(|e| e.to_string())?;
        if id > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        cluster
            .spawn(id as u16, &node_dir, &command)
            .map_err(|e| e.to_string())?;
    }
    cluster
        .wait_for_group(STARTUP_LIMIT)
        .map_err(|e| e.to_string())?;
    Ok(cluster)
}

/// Median and range of `values`, as `median (min–max)`.
fn spread(mut values: Vec<f64>, decimals: usize) -> String {
    values.sort_by(f64::total_cmp);
    match (values.first(), values.get(values.len() / 2), values.last()) {
        (Some(lo), Some(mid), Some(hi)) if values.len() > 1 => {
            format!("{mid:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
        }
        (_, Some(mid), _) => format!("{mid:.decimals$}"),
        _ => "-".into(),
    }
}

/// A table row over the runs of one setup: medians and ranges of photos/s, p50 and p99.
fn row(setup: &str, clients: usize, runs: &[Run]) -> String {
    let mut flags = String::new();
    let errors: usize = runs.iter().map(|r| r.errors).sum();
    let wrong: usize = runs.iter().map(|r| r.wrong).sum();
    if errors > 0 {
        flags.push_str(&format!(" ({errors} errors)"));
    }
    if wrong > 0 {
        flags.push_str(&format!(" ({wrong} wrong)"));
    }
    let photos: usize = runs.iter().map(|r| r.latencies_ms.len()).sum();
    let cpu = |run: &Run| run.cpu.iter().map(|(_, c)| c).sum::<f64>();
    format!(
        "| {setup} | {clients} | {} | {photos} | {} | {} | {}{flags} | {} |",
        runs.len(),
        spread(runs.iter().map(|r| r.percentile(50.0)).collect(), 2),
        spread(runs.iter().map(|r| r.percentile(99.0)).collect(), 2),
        spread(runs.iter().map(Run::per_second).collect(), 1),
        spread(runs.iter().map(cpu).collect(), 2),
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The models to ask and, per model, the photos its clients send.
type Workload = (Vec<(u32, ModelFiles)>, Vec<Vec<Question>>);

/// The bundled flowers and pets models, or the one model of `--model` (asked with the bundled
/// photos of both tasks, labels not checked).
fn workload(options: &Options) -> BenchResult<Workload> {
    let flowers = questions(Task::Flowers, FLOWERS_TAG)?;
    let pets = questions(Task::Pets, PETS_TAG)?;
    if let Some([synset, arch, weights]) = &options.model {
        let files = ModelFiles::read(synset, arch, weights).map_err(|e| e.to_string())?;
        let mut photos: Vec<Question> = flowers.into_iter().chain(pets).collect();
        for q in &mut photos {
            q.tag = FLOWERS_TAG;
            q.truth = None;
        }
        return Ok((vec![(FLOWERS_TAG, files)], vec![photos]));
    }
    let model = |task: Task| {
        ModelFiles::read_dir(&sospdemo::bundled_model_dir(task)).map_err(|e| e.to_string())
    };
    Ok((
        vec![
            (FLOWERS_TAG, model(Task::Flowers)?),
            (PETS_TAG, model(Task::Pets)?),
        ],
        vec![flowers, pets],
    ))
}

/// The engine of each tag, shared by the clients.
type Engines = Arc<Vec<(u32, Engine)>>;

/// How an in-process client calls the engine.
enum Engine {
    /// `Classifier::classify` on the client's thread.
    Direct(Box<Classifier>),
    /// Through a batch worker.
    Batched(BatchedClassifier),
}

fn run() -> BenchResult<()> {
    let options = parse_options()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs ({}), candle threads per process: {}, load average at start: {}",
        cpu_model(),
        candle_core::utils::get_num_threads(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let (models, asks) = workload(&options)?;
    let batching = BatchConfig::default();
    let mut rows = Vec::new();

    // In-process: the engine alone, called directly or through a batch worker. The runs of the
    // two ways alternate, so that a change in the machine's load hits both alike.
    let mut engines: Vec<(String, Engines)> = Vec::new();
    for batched in [false, true] {
        let mut list = Vec::new();
        for (tag, m) in &models {
            let c = Classifier::from_files(m).map_err(|e| e.to_string())?;
            let engine = if batched {
                Engine::Batched(
                    BatchedClassifier::new(&format!("tag{tag}"), Arc::new(c), batching)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                Engine::Direct(Box::new(c))
            };
            list.push((*tag, engine));
        }
        let name = if batched {
            format!(
                "in-process `BatchedClassifier` (≤ {}, ≤ {} µs)",
                batching.max_batch,
                batching.max_wait.as_micros()
            )
        } else {
            "in-process `Classifier::classify`".to_owned()
        };
        engines.push((name, Arc::new(list)));
    }
    for clients in [1, options.clients] {
        let mut runs: Vec<Vec<Run>> = engines.iter().map(|_| Vec::new()).collect();
        for _ in 0..options.runs {
            for ((name, list), runs) in engines.iter().zip(&mut runs) {
                let caller = |_: usize| {
                    let list = Arc::clone(list);
                    Ok(move |q: &Question| {
                        let e = list
                            .iter()
                            .find(|(t, _)| *t == q.tag)
                            .map(|(_, e)| e)
                            .ok_or("no classifier")?;
                        match e {
                            Engine::Direct(c) => c.classify(&q.photo).map_err(|e| e.to_string()),
                            Engine::Batched(b) => b.classify(&q.photo).map_err(|e| e.to_string()),
                        }
                        .map(|g| g.label)
                    })
                };
                let asks = if clients == 1 { &asks[..1] } else { &asks[..] };
                let run = measure(
                    clients,
                    options.seconds,
                    options.warm_up,
                    asks,
                    caller,
                    "this process",
                    &[],
                )?;
                eprintln!("{}", row(name, clients, std::slice::from_ref(&run)));
                runs.push(run);
            }
        }
        for ((name, _), runs) in engines.iter().zip(&runs) {
            rows.push(row(name, clients, runs));
        }
    }
    drop(engines);

    // Through the service, with the servers' batching off (`batch_max_size = 1`) and on (the
    // defaults).
    type ConfigFn = fn(u16) -> BenchResult<String>;
    let setups: [(&str, u16, ConfigFn); 2] = [
        ("service, 1 shard (n1 holds tags 1 and 2)", 2, |id| {
            node_config(ClusterSize::Two, id).map_err(|e| e.to_string())
        }),
        (
            "service, 2 shards (n1: tag 2, n2: tag 1)",
            3,
            two_shard_config,
        ),
    ];
    let setups: &[(&str, u16, ConfigFn)] = if options.in_process_only {
        &[]
    } else {
        &setups
    };
    for (setup, nodes, config) in setups {
        for batched in [false, true] {
            let name = format!("{setup}, batching {}", if batched { "on" } else { "off" });
            let dir = tempfile::Builder::new()
                .prefix("sospdemo-bench-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let configs = (0..*nodes).map(config).collect::<BenchResult<Vec<_>>>()?;
            let mut args = vec!["server".to_owned()];
            if !batched {
                args.push("--SOSPDEMO/batch_max_size=1".into());
            }
            let mut cluster = start_cluster(dir.path(), &configs, &options.server, args)?;
            for (tag, m) in &models {
                install(0, *tag, m)?;
            }
            for clients in [1, options.clients] {
                let asks = if clients == 1 { &asks[..1] } else { &asks[..] };
                let servers = server_pids(dir.path());
                let mut runs = Vec::new();
                for _ in 0..options.runs {
                    let run = measure(
                        clients,
                        options.seconds,
                        options.warm_up,
                        asks,
                        |_| grpc_caller(0),
                        "clients",
                        &servers,
                    )?;
                    eprintln!("{}", row(&name, clients, std::slice::from_ref(&run)));
                    runs.push(run);
                }
                rows.push(row(&name, clients, &runs));
            }
            cluster.stop(Duration::from_secs(20));
        }
    }

    println!();
    println!("| setup | clients | runs | photos | p50 ms | p99 ms | photos/s | CPU busy, cores |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("(median of the runs, min–max in brackets)");
    Ok(())
}

fn main() {
    sospdemo::model::pin_thread_count();
    if let Err(e) = run() {
        eprintln!("service_bench: {e}");
        std::process::exit(1);
    }
}
