//! The server processes of a local cluster: started from their own folders with their output
//! in log files, watched until the group forms, stopped with ENTER, and killed by a guard if
//! anything goes wrong.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{DemoError, READY_LINE};

/// Lines of a failed node's logs quoted in an error.
const LOG_TAIL_LINES: usize = 15;
/// How often the runner looks at the servers while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How to start one server: `program args...` run from the node's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl ServerCommand {
    /// `<this program> server`.
    pub fn current_exe() -> Result<Self, DemoError> {
        Ok(Self {
            program: std::env::current_exe().map_err(DemoError::CurrentExe)?,
            args: vec![OsString::from("server")],
        })
    }
}

/// One running server.
#[derive(Debug)]
struct ServerProcess {
    id: u16,
    dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    fn stdout_log(&self) -> PathBuf {
        self.dir.join("stdout.log")
    }

    fn stderr_log(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    fn is_ready(&self) -> bool {
        std::fs::read_to_string(self.stdout_log())
            .map(|out| out.lines().any(|l| l.trim() == READY_LINE))
            .unwrap_or(false)
    }

    /// The last lines of stdout and stderr.
    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for (name, path) in [("stdout", self.stdout_log()), ("stderr", self.stderr_log())] {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let _ = writeln!(tail, "  --- {} ({name})", path.display());
            for l in &lines[start..] {
                let _ = writeln!(tail, "  {l}");
            }
        }
        tail
    }
}

/// The server processes of a run. Dropping it kills every server still running.
#[derive(Debug, Default)]
pub struct Cluster {
    servers: Vec<ServerProcess>,
}

/// How a server ended when the cluster was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It exited by itself after ENTER.
    Exited(ExitStatus),
    /// It was still running after the timeout and was killed.
    Killed,
}

impl Cluster {
    /// No servers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts server `id` in `dir` (which must hold its configuration): stdin piped, stdout and
    /// stderr to `dir/stdout.log` and `dir/stderr.log`.
    pub fn spawn(&mut self, id: u16, dir: &Path, command: &ServerCommand) -> Result<(), DemoError> {
        let log = |name: &str| {
            let path = dir.join(name);
            File::create(&path).map_err(|source| DemoError::Io {
                what: "cannot create",
                path,
                source,
            })
        };
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                id,
                program: command.program.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        self.servers.push(ServerProcess {
            id,
            dir: dir.to_owned(),
            child,
            stdin,
        });
        Ok(())
    }

    /// Waits until every server printed [`READY_LINE`], for at most `timeout`; fails as soon as
    /// a server exits. Returns how long it took.
    pub fn wait_for_group(&mut self, timeout: Duration) -> Result<Duration, DemoError> {
        let start = Instant::now();
        loop {
            for s in &mut self.servers {
                if let Ok(Some(status)) = s.child.try_wait() {
                    return Err(DemoError::NodeExited {
                        id: s.id,
                        status: status.to_string(),
                        logs: s.dir.clone(),
                        tail: s.log_tail(),
                    });
                }
            }
            let missing: Vec<&ServerProcess> =
                self.servers.iter().filter(|s| !s.is_ready()).collect();
            let Some(first) = missing.first() else {
                return Ok(start.elapsed());
            };
            if start.elapsed() >= timeout {
                return Err(DemoError::StartupTimeout {
                    waited: timeout,
                    missing: missing.iter().map(|s| s.id).collect(),
                    first_missing: first.id,
                    tail: first.log_tail(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Presses ENTER on every server, waits up to `timeout` for all of them to exit and kills
    /// the rest. Returns how each ended, by node id.
    pub fn stop(&mut self, timeout: Duration) -> Vec<(u16, Stopped)> {
        for s in &mut self.servers {
            if let Some(mut stdin) = s.stdin.take() {
                // A server that already exited has closed its end; that is fine.
                let _ = stdin.write_all(b"\n").and_then(|()| stdin.flush());
            }
        }
        let deadline = Instant::now() + timeout;
        let mut ended: Vec<Option<Stopped>> = vec![None; self.servers.len()];
        loop {
            for (s, end) in self.servers.iter_mut().zip(ended.iter_mut()) {
                if end.is_none() {
                    if let Ok(Some(status)) = s.child.try_wait() {
                        *end = Some(Stopped::Exited(status));
                    }
                }
            }
            if ended.iter().all(Option::is_some) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let mut out = Vec::with_capacity(self.servers.len());
        for (s, end) in self.servers.iter_mut().zip(ended) {
            let end = end.unwrap_or_else(|| {
                let _ = s.child.kill();
                let _ = s.child.wait();
                Stopped::Killed
            });
            out.push((s.id, end));
        }
        self.servers.clear();
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Ok(None) = s.child.try_wait() {
                let _ = s.child.kill();
            }
            let _ = s.child.wait();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ServerCommand {
        ServerCommand {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
        }
    }

    fn node_dirs(root: &Path, n: u16) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let d = root.join(format!("n{i}"));
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    }

    #[test]
    fn servers_that_form_a_group_are_stopped_with_enter() {
        let root = tempfile::tempdir().unwrap();
        let dirs = node_dirs(root.path(), 3);
        let mut cluster = Cluster::new();
        let server = sh(&format!(
            "echo starting; echo '{READY_LINE}'; read line; exit 0"
        ));
        for (id, d) in dirs.iter().enumerate() {
            cluster.spawn(id as u16, d, &server).unwrap();
        }
        cluster.wait_for_group(Duration::from_secs(10)).unwrap();
        let stopped = cluster.stop(Duration::from_secs(10));
        assert_eq!(stopped.len(), 3);
        for (_, end) in stopped {
            assert!(matches!(end, Stopped::Exited(s) if s.success()), "{end:?}");
        }
    }

    #[test]
    fn a_server_that_exits_early_is_reported_with_its_log() {
        let root = tempfile::tempdir().unwrap();
        let dirs = node_dirs(root.path(), 2);
        let mut cluster = Cluster::new();
        cluster.spawn(0, &dirs[0], &sh("read line")).unwrap();
        cluster
            .spawn(1, &dirs[1], &sh("echo 'no such subcommand' >&2; exit 2"))
            .unwrap();
        let err = cluster.wait_for_group(Duration::from_secs(10)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DemoError::NodeExited { id: 1, .. }), "{text}");
        assert!(text.contains("no such subcommand"), "{text}");
        // Node 0 ignores nothing but ENTER; stop() gets it out.
        let stopped = cluster.stop(Duration::from_secs(10));
        assert!(matches!(stopped[0], (0, Stopped::Exited(_))), "{stopped:?}");
    }

    #[test]
    fn a_group_that_never_forms_times_out_and_the_guard_kills_the_servers() {
        let root = tempfile::tempdir().unwrap();
        let dirs = node_dirs(root.path(), 2);
        let mut cluster = Cluster::new();
        cluster
            .spawn(
                0,
                &dirs[0],
                &sh(&format!("echo '{READY_LINE}'; exec sleep 600")),
            )
            .unwrap();
        cluster
            .spawn(
                1,
                &dirs[1],
                &sh("echo 'waiting for the leader'; exec sleep 600"),
            )
            .unwrap();
        let err = cluster
            .wait_for_group(Duration::from_millis(500))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, DemoError::StartupTimeout { missing, .. } if missing == &[1]),
            "{text}"
        );
        assert!(text.contains("waiting for the leader"), "{text}");
        let pids: Vec<u32> = cluster.servers.iter().map(|s| s.child.id()).collect();
        drop(cluster);
        for pid in pids {
            // A killed and reaped child no longer exists.
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} survived the guard"
            );
        }
    }
}
