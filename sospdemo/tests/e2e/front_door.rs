//! The client side of a scenario: a gRPC client whose every call is bounded, the bundled
//! models and photos, and the command-line client.
//!
//! **Owns**: talking to function-tier nodes as a client would, and checking answers.
//! **Does not touch**: the server processes; see `cluster`.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sospdemo::model::ModelFiles;
use sospdemo::service::INSTALL_OK;
use sospdemo::train::Task;
use sospdemo_proto::function_tier_service_client::FunctionTierServiceClient;
use sospdemo_proto::{
    install_model_requests, photo_requests, InstallModelRequest, PhotoRequest, RemoveModelRequest,
    FUNCTION_TIER_GRPC_PORT_BASE,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Bound on one gRPC call, model installs included.
pub const CALL_LIMIT: Duration = Duration::from_secs(60);
/// How long a client retries connecting to a front end that has just started.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// A gRPC client of one function-tier node whose every call is bounded by [`CALL_LIMIT`].
pub struct FrontDoor {
    pub node: u16,
    pub runtime: tokio::runtime::Runtime,
    pub grpc: FunctionTierServiceClient<Channel>,
}

impl FrontDoor {
    /// Connects to function-tier node `node` (gRPC port 28000 + node), retrying for
    /// [`CONNECT_LIMIT`].
    pub fn connect(node: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let uri = format!("http://127.0.0.1:{}", FUNCTION_TIER_GRPC_PORT_BASE + node);
        let endpoint = Endpoint::from_shared(uri.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_LIMIT);
        let channel = runtime.block_on(async {
            let deadline = Instant::now() + CONNECT_LIMIT;
            loop {
                match endpoint.connect().await {
                    Ok(c) => return c,
                    Err(e) if Instant::now() >= deadline => {
                        panic!("cannot connect to {uri} within {CONNECT_LIMIT:?}: {e:?}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self {
            node,
            runtime,
            grpc: FunctionTierServiceClient::new(channel),
        }
    }

    /// Runs one call to completion, or panics after [`CALL_LIMIT`] (plus a margin over the
    /// channel's own deadline).
    pub fn run<T>(
        &mut self,
        what: &str,
        call: impl AsyncFnOnce(&mut FunctionTierServiceClient<Channel>) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut grpc = self.grpc.clone();
        let limit = CALL_LIMIT + Duration::from_secs(5);
        // The timer must be made inside the runtime.
        match self
            .runtime
            .block_on(async { tokio::time::timeout(limit, call(&mut grpc)).await })
        {
            Ok(r) => r,
            Err(_) => panic!(
                "{what} on node {} got no answer within {limit:?}",
                self.node
            ),
        }
    }

    pub fn infer(&mut self, tags: &[u32], photo: &[u8]) -> Result<String, Status> {
        let requests = photo_requests(tags.to_vec(), photo).unwrap();
        self.whatsthis_raw(requests)
    }

    pub fn whatsthis_raw(&mut self, requests: Vec<PhotoRequest>) -> Result<String, Status> {
        self.run("Whatsthis", async |g| {
            Ok(g.whatsthis(tokio_stream::iter(requests))
                .await?
                .into_inner()
                .desc)
        })
    }

    pub fn install(&mut self, tag: u32, model: &ModelFiles) -> (i32, String) {
        let requests =
            install_model_requests(tag, &model.synset, &model.architecture, &model.weights)
                .unwrap();
        self.install_raw(requests)
            .unwrap_or_else(|s| panic!("InstallModel of tag {tag} failed: {s:?}"))
    }

    pub fn install_raw(
        &mut self,
        requests: Vec<InstallModelRequest>,
    ) -> Result<(i32, String), Status> {
        self.run("InstallModel", async |g| {
            let r = g
                .install_model(tokio_stream::iter(requests))
                .await?
                .into_inner();
            Ok((r.error_code, r.error_desc))
        })
    }

    pub fn remove(&mut self, tag: u32) -> (i32, String) {
        self.run("RemoveModel", async |g| {
            let r = g
                .remove_model(RemoveModelRequest { tag })
                .await?
                .into_inner();
            Ok((r.error_code, r.error_desc))
        })
        .unwrap_or_else(|s| panic!("RemoveModel of tag {tag} failed: {s:?}"))
    }
}

pub fn bundled_model(task: Task) -> ModelFiles {
    ModelFiles::read_dir(&sospdemo::bundled_model_dir(task)).unwrap()
}

/// A bundled photo: file name, true label (the name's first word), bytes.
pub struct Photo {
    pub name: String,
    pub truth: String,
    pub bytes: Vec<u8>,
    pub path: PathBuf,
}

pub fn bundled_photos(task: Task) -> Vec<Photo> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(sospdemo::bundled_photo_dir(task))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "too few bundled {} photos", task.name());
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let truth = name.split('-').next().unwrap().to_owned();
            Photo {
                name,
                truth,
                bytes: std::fs::read(&path).unwrap(),
                path,
            }
        })
        .collect()
}

pub fn photo(task: Task, label: &str) -> Photo {
    bundled_photos(task)
        .into_iter()
        .find(|p| p.truth == label)
        .unwrap()
}

/// Asks `front` about every bundled photo of `task` under `tag` and checks each answer.
pub fn classify_all(front: &mut FrontDoor, task: Task, tag: u32) {
    for p in bundled_photos(task) {
        let answer = front
            .infer(&[tag], &p.bytes)
            .unwrap_or_else(|s| panic!("{} via node {}: {s:?}", p.name, front.node));
        assert_eq!(
            answer, p.truth,
            "{} via node {} (tag {tag})",
            p.name, front.node
        );
    }
}

pub fn install_ok(front: &mut FrontDoor, tag: u32, task: Task) {
    let (code, desc) = front.install(tag, &bundled_model(task));
    assert_eq!(
        (code, desc.as_str()),
        (0, INSTALL_OK),
        "installing {} as tag {tag}",
        task.name()
    );
}

/// Runs `sospdemo client <args>` to its end (bounded by [`CALL_LIMIT`]); exit status and
/// standard output.
pub fn run_cli(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sospdemo"))
        .arg("client")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + CALL_LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr);
            return (status, format!("{stdout}{stderr}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`sospdemo client {}` did not end within {CALL_LIMIT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn expect_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} containing {needle:?}, got the answer {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(s.message().contains(needle), "{needle:?} not in {s:?}");
        }
    }
}
