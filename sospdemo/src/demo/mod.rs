//! `sospdemo demo`: a whole local cluster, driven end to end from one command.
//!
//! **Owns**: the per-node configurations of a 2-, 4- or 6-node cluster on this host
//! ([`node_config`], the same settings as `test-configs/test-<n>-nodes/n<i>/derecho.cfg`), the
//! server processes (started in id order from their own folders in a temporary directory,
//! watched until the group forms, stopped with ENTER and killed if they linger), and the
//! script run against them: install the bundled models (flowers as tag [`FLOWERS_TAG`], pets as
//! [`PETS_TAG`]) through the function tier, classify every bundled photo, print one row per
//! photo, the line `correct <k>/<n>` and each model's held-out accuracy as recorded by
//! training (the sample photos are few and chosen by a fixed rule, so `correct <k>/<n>` is an
//! anecdote; the held-out accuracy is the measurement).
//! **Does not touch**: the group or the gRPC service itself; it runs `sospdemo server` as a
//! child process and talks to it only as a client would.
//!
//! Server processes never outlive the runner: [`Cluster`] kills whatever is still running when
//! it is dropped, on success, error or panic alike. When the run fails, the temporary directory
//! (configurations and the servers' `stdout.log` / `stderr.log`) is kept for inspection.
//!
//! The script itself, [`run_workload`], needs only function-tier addresses, so it also runs
//! against a service started in-process.

mod cluster;
mod config;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cluster::{Cluster, ServerCommand, Stopped};
pub use config::{certificate_section, node_config, secure_section, ClusterSize};

use crate::client::{Client, ClientError, ClientOptions, NodeAddr};
use crate::model::{ModelError, ModelFiles};
use crate::train::{HeldOutEvaluation, Task};

/// The line a server prints once the group has formed.
pub const READY_LINE: &str = "Finished constructing derecho group.";
/// Tag under which the demo installs the flowers model.
pub const FLOWERS_TAG: u32 = 1;
/// Tag under which the demo installs the pets model.
pub const PETS_TAG: u32 = 2;

/// Why the demo could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The asked node does not exist in the cluster.
    #[error("a {nodes}-node cluster has no node {id}")]
    NoSuchNode {
        /// The node id asked for.
        id: u16,
        /// Nodes in the cluster.
        nodes: u16,
    },
    /// No function-tier node was given to the workload.
    #[error("no function-tier node to talk to")]
    NoFunctionTier,
    /// A bundled model's recorded held-out evaluation cannot be read.
    #[error("the {task} model's held-out evaluation cannot be read: {reason}")]
    Evaluation {
        /// The task's name.
        task: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A file or folder of the run could not be created or read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The path of the running program is unknown.
    #[error("cannot find this program's own path to start the servers: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// A port the cluster needs is taken.
    #[error(
        "port {port} ({purpose}) is already in use on 127.0.0.1; is another sospdemo cluster running?"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// What the cluster needs it for.
        purpose: String,
    },
    /// A server could not be started.
    #[error("cannot start node {id} ({program}): {source}")]
    Spawn {
        /// The node.
        id: u16,
        /// The program.
        program: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A server exited before the group formed.
    #[error(
        "node {id} exited ({status}) before the group formed (does this build have the `server` \
         subcommand?); last lines of {logs}:\n{tail}"
    )]
    NodeExited {
        /// The node.
        id: u16,
        /// How it ended.
        status: String,
        /// Its folder, holding `stdout.log` and `stderr.log`.
        logs: PathBuf,
        /// The last lines of its logs.
        tail: String,
    },
    /// The group did not form in time.
    #[error(
        "the group did not form within {waited:?}: node(s) {missing:?} never printed {READY_LINE:?}; \
         last lines of node {first_missing}'s logs:\n{tail}"
    )]
    StartupTimeout {
        /// How long the runner waited.
        waited: Duration,
        /// Nodes that did not report the group.
        missing: Vec<u16>,
        /// The first of them.
        first_missing: u16,
        /// The last lines of its logs.
        tail: String,
    },
    /// A bundled model could not be read.
    #[error("cannot read the bundled {task} model: {source}")]
    Model {
        /// The task's name.
        task: &'static str,
        /// What went wrong.
        #[source]
        source: ModelError,
    },
    /// The function tier refused a model.
    #[error("installing the {task} model as tag {tag} failed (code {code}): {desc}")]
    Install {
        /// The task's name.
        task: &'static str,
        /// The tag.
        tag: u32,
        /// The reply's error code.
        code: i32,
        /// The reply's description.
        desc: String,
    },
    /// A gRPC call failed outright.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The table could not be written.
    #[error("cannot write the demo's output: {0}")]
    Output(#[source] std::io::Error),
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Cluster shape.
    pub size: ClusterSize,
    /// How to start a server (by default `<this program> server`).
    pub server: ServerCommand,
    /// Pause between starting two servers, so that they join in id order.
    pub spawn_interval: Duration,
    /// How long to wait for the group to form.
    pub startup_timeout: Duration,
    /// How long the servers get to exit after ENTER before they are killed.
    pub stop_timeout: Duration,
    /// Keep the temporary directory (configurations and logs) even when the run succeeds.
    pub keep_dir: bool,
    /// Run the nodes in a secure `[SECURITY] mode`, with credentials made for this run.
    pub secure: Option<Security>,
}

/// The secure mode a demo cluster runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Security {
    /// `mode = certificate`: a group CA made for the run issues each node a certificate
    /// naming its id; every connection runs mutual TLS 1.3.
    Certificate,
    /// `mode = secret`: one group secret made for the run; every connection runs a Noise
    /// handshake keyed by it.
    Secret,
}

impl DemoOptions {
    /// Defaults for a cluster of `size`: this program's `server`, 1 s between starts, 60 s to
    /// form the group, 20 s to stop.
    pub fn new(size: ClusterSize) -> Result<Self, DemoError> {
        Ok(Self {
            size,
            server: ServerCommand::current_exe()?,
            spawn_interval: Duration::from_secs(1),
            startup_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(20),
            keep_dir: false,
            secure: None,
        })
    }
}

/// One classified photo.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoOutcome {
    /// `<task>/<file name>`.
    pub photo: String,
    /// The label the file name starts with.
    pub truth: String,
    /// The tag asked.
    pub tag: u32,
    /// The function-tier node asked.
    pub node: NodeAddr,
    /// The answer, or the error's text.
    pub answer: Result<String, String>,
    /// Round-trip time in milliseconds.
    pub latency_ms: f64,
}

impl PhotoOutcome {
    /// Whether the answer is the true label.
    pub fn is_correct(&self) -> bool {
        self.answer.as_ref().is_ok_and(|a| *a == self.truth)
    }
}

/// The result of a demo run.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSummary {
    /// One entry per bundled photo, in table order.
    pub photos: Vec<PhotoOutcome>,
    /// Per task, the model's held-out evaluation recorded by training (`None` if the model
    /// directory has none).
    pub held_out: Vec<(Task, Option<HeldOutEvaluation>)>,
}

fn correct_count(photos: &[PhotoOutcome]) -> usize {
    photos.iter().filter(|p| p.is_correct()).count()
}

impl DemoSummary {
    /// Photos classified as their true label.
    pub fn correct(&self) -> usize {
        correct_count(&self.photos)
    }

    /// Whether every photo got an answer (right or wrong).
    pub fn all_answered(&self) -> bool {
        self.photos.iter().all(|p| p.answer.is_ok())
    }
}

/// Runs the demo: starts the cluster in a temporary directory, runs [`run_workload`] against
/// its function tier, and stops the cluster. On failure the temporary directory is kept and
/// its path written to standard error.
pub fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary, DemoError> {
    let dir = tempfile::Builder::new()
        .prefix("sospdemo-demo-")
        .tempdir()
        .map_err(|source| DemoError::Io {
            what: "cannot create a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let mut cluster = Cluster::new();
    let result = start_cluster(options, dir.path(), &mut cluster, out).and_then(|()| {
        run_workload(
            &options.size.function_tier_addrs(),
            FUNCTION_TIER_CONNECT_WINDOW,
            out,
        )
    });
    let stopped = cluster.stop(options.stop_timeout);
    for (id, end) in &stopped {
        match end {
            // After a failed run, an exit status was already part of the error.
            Stopped::Exited(status) if !status.success() && result.is_ok() => {
                eprintln!("sospdemo demo: node {id} exited with {status}")
            }
            Stopped::Exited(_) => {}
            Stopped::Killed => eprintln!(
                "sospdemo demo: node {id} did not stop within {:?} after ENTER and was killed",
                options.stop_timeout
            ),
        }
    }
    if result.is_err() || options.keep_dir {
        let kept = dir.keep();
        eprintln!(
            "sospdemo demo: configurations and logs kept in {}",
            kept.display()
        );
    }
    result
}

/// How long the demo retries connecting to a function-tier node whose group just formed.
const FUNCTION_TIER_CONNECT_WINDOW: Duration = Duration::from_secs(10);

fn say(out: &mut dyn Write, text: &str) -> Result<(), DemoError> {
    writeln!(out, "{text}").map_err(DemoError::Output)
}

/// Writes the configurations into `dir/n<i>/`, starts the servers in id order and waits for
/// the group.
fn start_cluster(
    options: &DemoOptions,
    dir: &Path,
    cluster: &mut Cluster,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let size = options.size;
    config::check_ports_free(size)?;
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e: String| DemoError::Io {
            what,
            path,
            source: std::io::Error::other(e),
        }
    };
    // One `[SECURITY]` section per node (the certificate mode gives each its own).
    let security: Vec<String> = match options.secure {
        None => vec![String::new(); usize::from(size.nodes())],
        Some(Security::Secret) => {
            let key = dir.join("group.key");
            derecho::secure::Secret::generate()
                .map_err(|e| e.to_string())
                .and_then(|s| s.save(&key).map_err(|e| e.to_string()))
                .map_err(io("cannot write the group secret", &key))?;
            say(
                out,
                &format!(
                    "secure mode: every connection between the nodes authenticates with {}",
                    key.display()
                ),
            )?;
            vec![config::secure_section(&key); usize::from(size.nodes())]
        }
        Some(Security::Certificate) => {
            let pki = dir.join("pki");
            std::fs::create_dir_all(&pki).map_err(|source| DemoError::Io {
                what: "cannot create",
                path: pki.clone(),
                source,
            })?;
            let ca_file = pki.join("ca.pem");
            let ca = derecho::secure::GroupCa::new("sospdemo", 2)
                .and_then(|ca| ca.save(&ca_file, &pki.join("ca.key")).map(|()| ca))
                .map_err(|e| e.to_string())
                .map_err(io("cannot make the group CA", &pki))?;
            let mut sections = Vec::new();
            for id in 0..size.nodes() {
                let (cert, key) = (
                    pki.join(format!("member-{id}.pem")),
                    pki.join(format!("member-{id}.key")),
                );
                ca.issue(&derecho::secure::Identity::Member(u32::from(id)), 2)
                    .and_then(|issued| issued.save(&cert, &key))
                    .map_err(|e| e.to_string())
                    .map_err(io("cannot issue a certificate", &cert))?;
                sections.push(config::certificate_section(&ca_file, &cert, &key));
            }
            say(
                out,
                &format!(
                    "secure mode: every connection between the nodes runs mutual TLS under the \
                     group CA {} (one certificate per node)",
                    ca_file.display()
                ),
            )?;
            sections
        }
    };
    say(
        out,
        &format!(
            "starting {} nodes in {} ({} function tier, {} categorizer shard(s))",
            size.nodes(),
            dir.display(),
            size.function_tier_nodes(),
            size.categorizer_shards()
        ),
    )?;
    for id in 0..size.nodes() {
        let node_dir = dir.join(format!("n{id}"));
        std::fs::create_dir_all(&node_dir).map_err(|source| DemoError::Io {
            what: "cannot create",
            path: node_dir.clone(),
            source,
        })?;
        let cfg = node_dir.join("derecho.cfg");
        let text = node_config(size, id)? + &security[usize::from(id)];
        std::fs::write(&cfg, text).map_err(|source| DemoError::Io {
            what: "cannot write",
            path: cfg,
            source,
        })?;
        if id > 0 {
            std::thread::sleep(options.spawn_interval);
        }
        cluster.spawn(id, &node_dir, &options.server)?;
    }
    let took = cluster.wait_for_group(options.startup_timeout)?;
    say(out, &format!("group formed ({:.1} s)", took.as_secs_f64()))
}

/// The demo's script against a running function tier: installs the bundled models (flowers as
/// [`FLOWERS_TAG`], pets as [`PETS_TAG`]) through the first node of `function_tier`, classifies
/// every bundled photo with its task's tag (spreading the photos over the nodes), and writes one
/// row per photo (photo, tag, node, answer, latency), the line `correct <k>/<n>` and one line
/// per model with its recorded held-out accuracy to `out`.
///
/// A photo that gets no answer is a row, not an error; see [`DemoSummary::all_answered`].
pub fn run_workload(
    function_tier: &[NodeAddr],
    connect_window: Duration,
    out: &mut dyn Write,
) -> Result<DemoSummary, DemoError> {
    let options = ClientOptions {
        connect_window,
        progress: false,
    };
    let mut clients = function_tier
        .iter()
        .map(|addr| Client::connect_with(addr, options))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(installer) = clients.first_mut() else {
        return Err(DemoError::NoFunctionTier);
    };

    let tasks = [(Task::Flowers, FLOWERS_TAG), (Task::Pets, PETS_TAG)];
    for (task, tag) in tasks {
        let model = ModelFiles::read_dir(&crate::bundled_model_dir(task)).map_err(|source| {
            DemoError::Model {
                task: task.name(),
                source,
            }
        })?;
        let (code, desc) = installer.install_model(tag, &model)?;
        if code != 0 {
            return Err(DemoError::Install {
                task: task.name(),
                tag,
                code,
                desc,
            });
        }
        say(
            out,
            &format!(
                "installed the {} model as tag {tag} via {}: {desc}",
                task.name(),
                installer.addr()
            ),
        )?;
    }

    say(
        out,
        &format!(
            "{:<24} {:>4}  {:<16} {:<16} {:>10}",
            "photo", "tag", "node", "answer", "latency ms"
        ),
    )?;
    let mut photos = Vec::new();
    for (task, tag) in tasks {
        for path in bundled_photos(task)? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let truth = name.split('-').next().unwrap_or_default().to_owned();
            let bytes = std::fs::read(&path).map_err(|source| DemoError::Io {
                what: "cannot read",
                path: path.clone(),
                source,
            })?;
            let turn = photos.len() % clients.len();
            let client = &mut clients[turn];
            let start = Instant::now();
            let answer = client.inference(&[tag], &bytes).map_err(|e| match e {
                ClientError::Rpc { message, .. } => message,
                other => other.to_string(),
            });
            let outcome = PhotoOutcome {
                photo: format!("{}/{name}", task.name()),
                truth,
                tag,
                node: client.addr().clone(),
                answer,
                latency_ms: start.elapsed().as_secs_f64() * 1e3,
            };
            let shown = match &outcome.answer {
                Ok(a) if outcome.is_correct() => a.clone(),
                Ok(a) => format!("{a} (wrong)"),
                Err(e) => format!("error: {e}"),
            };
            say(
                out,
                &format!(
                    "{:<24} {:>4}  {:<16} {:<16} {:>10.1}",
                    outcome.photo,
                    outcome.tag,
                    outcome.node.to_string(),
                    shown,
                    outcome.latency_ms
                ),
            )?;
            photos.push(outcome);
        }
    }
    say(
        out,
        &format!("correct {}/{}", correct_count(&photos), photos.len()),
    )?;
    let mut held_out = Vec::new();
    for (task, _) in tasks {
        let evaluation = HeldOutEvaluation::read(&crate::bundled_model_dir(task)).map_err(|e| {
            DemoError::Evaluation {
                task: task.name(),
                reason: e.to_string(),
            }
        })?;
        let line = match &evaluation {
            Some(e) => format!(
                "held-out accuracy of the {} model: {:.1}% ({}/{} photos not seen in training)",
                task.name(),
                100.0 * e.accuracy(),
                e.correct,
                e.held_out
            ),
            None => format!(
                "held-out accuracy of the {} model: not recorded (`sospdemo train` measures it)",
                task.name()
            ),
        };
        say(out, &line)?;
        held_out.push((task, evaluation));
    }
    Ok(DemoSummary { photos, held_out })
}

/// The bundled photos of a task, sorted by name.
fn bundled_photos(task: Task) -> Result<Vec<PathBuf>, DemoError> {
    let dir = crate::bundled_photo_dir(task);
    let entries = std::fs::read_dir(&dir).map_err(|source| DemoError::Io {
        what: "cannot list",
        path: dir.clone(),
        source,
    })?;
    let mut photos = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| DemoError::Io {
                what: "cannot list",
                path: dir.clone(),
                source,
            })?
            .path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("png"))
        {
            photos.push(path);
        }
    }
    photos.sort();
    Ok(photos)
}
