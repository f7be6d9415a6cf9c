//! The servers of one scenario: configurations, ports, processes, logs and views.
//!
//! **Owns**: the `derecho.cfg` texts (those of `node_config`, or with shard sizes changed),
//! the check that the cluster's ports are free, starting `sospdemo server` processes in their
//! folders, reading their logs (ready line, installed views), `kill -9`, stopping with ENTER,
//! and killing whatever is left when a [`LocalCluster`] is dropped.
//! **Does not touch**: gRPC; see `front_door`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sospdemo::demo::{node_config, ClusterSize};
use sospdemo_proto::FUNCTION_TIER_GRPC_PORT_BASE;

/// Held by a scenario while its cluster runs: the clusters share their ports.
pub static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

/// Bound on forming a group (or joining one) on a busy two-core machine.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// Bound on the group installing a view after a member was killed or joined.
pub const VIEW_LIMIT: Duration = Duration::from_secs(60);
/// How long the servers get to leave after ENTER.
pub const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Pause between starting two nodes, so that they join in id order (roles follow join order).
pub const SPAWN_INTERVAL: Duration = Duration::from_secs(1);
/// How long a busy port may take to come free before the scenario is skipped.
pub const PORT_WAIT: Duration = Duration::from_secs(5);
/// Log lines of each node quoted after a failure.
pub const TAIL_LINES: usize = 12;
/// The line a member prints once it is in the group.
pub const READY: &str = "Finished constructing derecho group.";

/// The `[DERECHO]` ports of node `id` in every configuration of this file (those of
/// `node_config`), with the key each belongs to.
pub fn node_ports(id: u16) -> [(&'static str, u16); 5] {
    [
        ("gms_port", 23580 + id),
        ("state_transfer_port", 28366 + id),
        ("sst_port", 37683 + id),
        ("rdmc_port", 31675 + id),
        ("external_port", 32645 + id),
    ]
}

/// The first port in `nodes` (and the gRPC ports of `front_ends`) that another program holds.
pub fn busy_port(nodes: u16, front_ends: u16) -> Option<String> {
    let mut ports: Vec<(u16, String)> = Vec::new();
    for id in 0..nodes {
        for (key, port) in node_ports(id) {
            ports.push((port, format!("{key} of node {id}")));
        }
    }
    for id in 0..front_ends {
        ports.push((
            FUNCTION_TIER_GRPC_PORT_BASE + id,
            format!("gRPC of node {id}"),
        ));
    }
    ports.into_iter().find_map(|(port, purpose)| {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                Some(format!("port {port} ({purpose})"))
            }
            _ => None,
        }
    })
}

/// Takes [`CLUSTER_LOCK`] and checks the ports of a cluster of `nodes` nodes whose first
/// `front_ends` serve gRPC. `None` (after a note on standard error) when a port stays taken:
/// the scenario is skipped.
pub fn take_ports(scenario: &str, nodes: u16, front_ends: u16) -> Option<MutexGuard<'static, ()>> {
    // A scenario that failed poisons the lock; the next one still runs on its own cluster.
    let guard = CLUSTER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        match busy_port(nodes, front_ends) {
            None => return Some(guard),
            Some(port) if Instant::now() >= deadline => {
                // Straight to the file descriptor: the test harness does not capture it, so the
                // skip shows even when the test passes.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED e2e scenario `{scenario}`: {port} is taken by another program \
                     (another sospdemo cluster?); free it and run again"
                );
                return None;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `text` (an INI file) with `keys` of `[section]` set to new values; every key must exist.
pub fn with_keys(text: &str, section: &str, keys: &[(&str, u32)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut current = String::new();
    let mut replaced = vec![false; keys.len()];
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t[1..t.len() - 1].to_owned();
        }
        let key = t.split_once('=').map(|(k, _)| k.trim());
        match keys
            .iter()
            .position(|(k, _)| current == section && key == Some(*k))
        {
            Some(i) => {
                replaced[i] = true;
                let _ = writeln!(out, "{} = {}", keys[i].0, keys[i].1);
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(
        replaced.iter().all(|r| *r),
        "[{section}] lacks one of {keys:?}"
    );
    out
}

/// Six nodes as in `test-configs/test-6-nodes` (n0, n1 function tier; two categorizer shards
/// of up to two), except that a categorizer shard needs only one member, so that it survives
/// the loss of the other.
pub fn six_nodes_one_member_per_shard_suffices(id: u16) -> String {
    let base = node_config(ClusterSize::Six, id).unwrap();
    let text = with_keys(&base, "SUBGROUP/CATEGORIZER_TIER", &[("min_nodes", 1)]);
    format!("# Changed for an end-to-end test: CATEGORIZER_TIER min_nodes = 1.\n{text}")
}

/// Up to three nodes: one function-tier node and one categorizer shard of one or two members.
pub fn one_front_end_and_a_growing_shard(id: u16) -> String {
    let base = node_config(ClusterSize::Four, id).unwrap();
    let text = with_keys(
        &base,
        "SUBGROUP/FUNCTION_TIER",
        &[("min_nodes", 1), ("max_nodes", 1)],
    );
    let text = with_keys(
        &text,
        "SUBGROUP/CATEGORIZER_TIER",
        &[("num_shards", 1), ("min_nodes", 1), ("max_nodes", 2)],
    );
    format!(
        "# Changed for an end-to-end test: n0 is the function tier, n1 and a later n2 share one \
         categorizer shard (min 1, max 2).\n{text}"
    )
}

/// `config` (one node's `derecho.cfg` in the scheme above) moved to node `id`: its `local_id`
/// and every port of the scheme change, the rest stays.
pub fn as_node(config: &str, id: u16) -> String {
    let mut keys: Vec<(&str, u32)> = vec![("local_id", u32::from(id))];
    keys.extend(node_ports(id).map(|(k, p)| (k, u32::from(p))));
    format!(
        "# Changed for an end-to-end test: this is node {id}.\n{}",
        with_keys(config, "DERECHO", &keys)
    )
}

/// One server process.
pub struct Node {
    id: u16,
    dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Node {
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        let mut text = String::new();
        for name in ["stdout.log", "stderr.log"] {
            let log = self.log(name);
            let lines: Vec<&str> = log.lines().collect();
            let _ = writeln!(text, "--- n{} {name}", self.id);
            for l in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
                let _ = writeln!(text, "  {l}");
            }
        }
        text
    }
}

/// The servers of one scenario, each in `<temp>/n<id>/`. Dropping it kills every server still
/// running; after a panic it keeps the folder and prints the logs' tails.
pub struct LocalCluster {
    root: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
}

/// `text` without terminal colour sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The member lists of the views a node logged (`view installed ... members=[0, 1]`), in order.
/// The adequate views a node logged, in order (inadequate ones are left out: see
/// [`inadequate_views_in`]).
pub fn views_in(stderr: &str) -> Vec<Vec<u16>> {
    members_of_views(stderr, false)
}

/// The inadequate views a node logged (installed without subgroups while a shard lacks
/// members), in order.
pub fn inadequate_views_in(stderr: &str) -> Vec<Vec<u16>> {
    members_of_views(stderr, true)
}

fn members_of_views(stderr: &str, inadequate: bool) -> Vec<Vec<u16>> {
    strip_ansi(stderr)
        .lines()
        .filter(|l| l.contains("view installed") && l.contains("inadequate") == inadequate)
        .filter_map(|l| {
            let list = l.split("members=[").nth(1)?.split(']').next()?;
            list.split(',')
                .map(|m| m.trim().parse::<u16>().ok())
                .collect::<Option<Vec<u16>>>()
        })
        .collect()
}

impl LocalCluster {
    pub fn new(scenario: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix(&format!("sospdemo-e2e-{scenario}-"))
            .tempdir()
            .unwrap();
        Self {
            root: Some(root),
            nodes: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.as_ref().map(|r| r.path()).unwrap()
    }

    pub fn node(&self, id: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Writes `config` to `n<id>/derecho.cfg` and starts `sospdemo server` there. A node
    /// started again with an id used before gets a fresh folder, `n<id>-again`.
    pub fn start(&mut self, id: u16, config: &str) {
        let mut dir = self.root().join(format!("n{id}"));
        if dir.exists() {
            dir = self.root().join(format!("n{id}-again"));
        }
        self.start_in(id, config, dir);
    }

    /// Writes `config` to `dir/derecho.cfg` and starts `sospdemo server` there as node `id`.
    fn start_in(&mut self, id: u16, config: &str, dir: PathBuf) {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("derecho.cfg"), config).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sospdemo"))
            .arg("server")
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        self.nodes.push(Node {
            id,
            dir,
            child,
            stdin,
        });
    }

    /// Starts node `id` again in the folder it ran in before (keeping its persistent logs),
    /// with `config`.
    pub fn restart_in_place(&mut self, id: u16, config: &str) {
        let dir = self.root().join(format!("n{id}"));
        assert!(dir.exists(), "node {id} never ran");
        self.start_in(id, config, dir);
    }

    /// Starts `ids` in order, [`SPAWN_INTERVAL`] apart, with `config(id)`.
    pub fn start_in_order(
        &mut self,
        ids: impl IntoIterator<Item = u16>,
        config: impl Fn(u16) -> String,
    ) {
        for (i, id) in ids.into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(SPAWN_INTERVAL);
            }
            self.start(id, &config(id));
        }
    }

    /// Waits until every node in `ids` printed [`READY`]; fails at once if a node exits.
    pub fn wait_ready(&mut self, ids: &[u16]) -> Duration {
        let start = Instant::now();
        loop {
            for n in &mut self.nodes {
                if let Ok(Some(status)) = n.child.try_wait() {
                    panic!("node {} exited ({status}) while the group formed", n.id);
                }
            }
            let missing: Vec<u16> = ids
                .iter()
                .copied()
                .filter(|&id| !self.node(id).log("stdout.log").lines().any(|l| l == READY))
                .collect();
            if missing.is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < STARTUP_LIMIT,
                "node(s) {missing:?} not in the group after {STARTUP_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks that exactly `ids` serve gRPC (roles follow join order).
    pub fn assert_front_ends(&self, ids: &[u16]) {
        for n in &self.nodes {
            let serves = n.log("stdout.log").contains("FunctionTier listening on");
            assert_eq!(
                serves,
                ids.contains(&n.id),
                "node {} {} the function tier",
                n.id,
                if serves {
                    "unexpectedly joined"
                } else {
                    "is not in"
                }
            );
        }
    }

    /// The members of the last view node `observer` logged.
    pub fn last_view(&self, observer: u16) -> Option<Vec<u16>> {
        views_in(&self.node(observer).log("stderr.log")).pop()
    }

    /// Waits until node `observer` logged a view whose members are exactly `members`.
    pub fn wait_view(&self, observer: u16, members: &[u16]) -> Duration {
        let start = Instant::now();
        loop {
            let views = views_in(&self.node(observer).log("stderr.log"));
            if views.last().is_some_and(|v| v == members) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < VIEW_LIMIT,
                "node {observer} did not install a view of {members:?} within {VIEW_LIMIT:?}; \
                 its views: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` node `id` and reaps it.
    pub fn kill(&mut self, id: u16) {
        let i = self.nodes.iter().position(|n| n.id == id).unwrap();
        let mut node = self.nodes.remove(i);
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }

    /// Whether every node still runs.
    pub fn assert_all_running(&mut self) {
        for n in &mut self.nodes {
            assert!(
                matches!(n.child.try_wait(), Ok(None)),
                "node {} is no longer running",
                n.id
            );
        }
    }

    /// Presses ENTER on every node and waits for all of them to leave; kills the rest. Returns
    /// how each ended (`None`: it was killed).
    pub fn stop(&mut self) -> Vec<(u16, Option<ExitStatus>)> {
        for n in &mut self.nodes {
            if let Some(mut stdin) = n.stdin.take() {
                let _ = stdin.write_all(b"\n").and_then(|()| stdin.flush());
            }
        }
        let deadline = Instant::now() + STOP_LIMIT;
        let mut ended: Vec<Option<ExitStatus>> = vec![None; self.nodes.len()];
        while Instant::now() < deadline && ended.iter().any(Option::is_none) {
            for (n, end) in self.nodes.iter_mut().zip(ended.iter_mut()) {
                if end.is_none() {
                    *end = n.child.try_wait().ok().flatten();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = Vec::new();
        for (mut n, end) in self.nodes.drain(..).zip(ended) {
            if end.is_none() {
                let _ = n.child.kill();
                let _ = n.child.wait();
            }
            out.push((n.id, end));
        }
        out
    }

    /// [`stop`](Self::stop), and asserts that every node left by itself, with success.
    pub fn stop_cleanly(&mut self) {
        self.stop_strictly();
    }

    /// [`stop`](Self::stop), asserting that every node exited by itself with success.
    pub fn stop_strictly(&mut self) {
        let dirs: Vec<(u16, PathBuf)> = self.nodes.iter().map(|n| (n.id, n.dir.clone())).collect();
        for (id, end) in self.stop() {
            let dir = &dirs.iter().find(|(i, _)| *i == id).unwrap().1;
            let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            assert!(
                end.is_some_and(|s| s.success()),
                "node {id} ended with {end:?} after ENTER; its stderr:\n{stderr}"
            );
        }
    }

    /// Waits until every node in `ids` has exited by itself; their exit statuses.
    pub fn wait_exited(&mut self, ids: &[u16], limit: Duration) -> Vec<(u16, ExitStatus)> {
        let start = Instant::now();
        let mut ended: Vec<(u16, ExitStatus)> = Vec::new();
        while ended.len() < ids.len() {
            for n in &mut self.nodes {
                if ids.contains(&n.id) && !ended.iter().any(|(id, _)| *id == n.id) {
                    if let Ok(Some(status)) = n.child.try_wait() {
                        ended.push((n.id, status));
                    }
                }
            }
            let running: Vec<u16> = ids
                .iter()
                .copied()
                .filter(|id| !ended.iter().any(|(e, _)| e == id))
                .collect();
            assert!(
                running.is_empty() || start.elapsed() < limit,
                "node(s) {running:?} still run {limit:?} after their group ended"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ended
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let mut tails = String::new();
        for n in &mut self.nodes {
            if let Ok(None) = n.child.try_wait() {
                let _ = n.child.kill();
            }
            let _ = n.child.wait();
            if failed {
                tails.push_str(&n.tail());
            }
        }
        if failed {
            if let Some(root) = self.root.take() {
                let kept = root.keep();
                eprintln!(
                    "configurations and logs kept in {}\n{tails}",
                    kept.display()
                );
            }
        }
    }
}
