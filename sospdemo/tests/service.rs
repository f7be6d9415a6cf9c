//! The function tier's gRPC service end to end over loopback, with the categorizer tier
//! replaced by test doubles: [`InProcessCategorizersDouble`] keeps real classifiers in a map in
//! this process, [`UnreachableCategorizersDouble`] fails every call as a broken group would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sospdemo::client::{self, Client, ClientError, ClientOptions, NodeAddr};
use sospdemo::model::{Classifier, ModelFiles};
use sospdemo::service::{
    serve, CategorizerError, Categorizers, Guess, ServerHandle, ServiceLimits, INSTALL_OK,
    REMOVE_OK,
};
use sospdemo::train::{HeldOutEvaluation, Task};
use sospdemo_proto::function_tier_service_client::FunctionTierServiceClient;
use sospdemo_proto::photo_request::PhotoChunk;
use sospdemo_proto::{PhotoMetadata, PhotoRequest};

/// Test double of the categorizer tier: one replica, in this process, classifiers in a map.
#[derive(Default)]
struct InProcessCategorizersDouble {
    models: Mutex<HashMap<u32, Arc<Classifier>>>,
    /// Extra time every classification takes, to keep calls in flight.
    classify_delay: Duration,
}

impl Categorizers for InProcessCategorizersDouble {
    fn install_model(&self, tag: u32, model: ModelFiles) -> Result<(), CategorizerError> {
        let classifier = Classifier::from_files(&model)?;
        let mut models = self.models.lock().unwrap();
        if models.contains_key(&tag) {
            return Err(CategorizerError::TagInUse { tag });
        }
        models.insert(tag, Arc::new(classifier));
        Ok(())
    }

    fn remove_model(&self, tag: u32) -> Result<(), CategorizerError> {
        match self.models.lock().unwrap().remove(&tag) {
            Some(_) => Ok(()),
            None => Err(CategorizerError::NoModel { tag }),
        }
    }

    fn classify(&self, tag: u32, photo: Vec<u8>) -> Result<Guess, CategorizerError> {
        let model = self
            .models
            .lock()
            .unwrap()
            .get(&tag)
            .cloned()
            .ok_or(CategorizerError::NoModel { tag })?;
        std::thread::sleep(self.classify_delay);
        Ok(model.classify(&photo)?)
    }
}

/// Test double of a categorizer tier that cannot be reached.
struct UnreachableCategorizersDouble;

impl Categorizers for UnreachableCategorizersDouble {
    fn install_model(&self, _tag: u32, _model: ModelFiles) -> Result<(), CategorizerError> {
        Err(CategorizerError::Unavailable(
            "shard 0 has no members".into(),
        ))
    }

    fn remove_model(&self, _tag: u32) -> Result<(), CategorizerError> {
        Err(CategorizerError::Unavailable(
            "shard 0 has no members".into(),
        ))
    }

    fn classify(&self, _tag: u32, _photo: Vec<u8>) -> Result<Guess, CategorizerError> {
        Err(CategorizerError::Unavailable(
            "shard 0 has no members".into(),
        ))
    }
}

fn start(categorizers: Arc<dyn Categorizers>, limits: ServiceLimits) -> (ServerHandle, NodeAddr) {
    let handle = serve(SocketAddr::from(([127, 0, 0, 1], 0)), categorizers, limits).unwrap();
    let addr = NodeAddr::new("127.0.0.1", handle.local_addr().port());
    (handle, addr)
}

fn start_default() -> (ServerHandle, NodeAddr) {
    start(
        Arc::new(InProcessCategorizersDouble::default()),
        ServiceLimits::default(),
    )
}

fn bundled_model(task: Task) -> ModelFiles {
    ModelFiles::read_dir(&sospdemo::bundled_model_dir(task)).unwrap()
}

/// The bundled photos of a task with their true labels.
fn bundled_photos(task: Task) -> Vec<(String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(sospdemo::bundled_photo_dir(task))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let truth = name.split('-').next().unwrap().to_owned();
            (truth, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn photo_of(task: Task, label: &str) -> Vec<u8> {
    bundled_photos(task)
        .into_iter()
        .find(|(truth, _)| truth == label)
        .unwrap()
        .1
}

fn connect(addr: &NodeAddr) -> Client {
    Client::connect_with(
        addr,
        ClientOptions {
            connect_window: Duration::from_secs(5),
            progress: false,
        },
    )
    .unwrap()
}

/// A raw gRPC client, for streams the real client never sends.
fn raw_call<T>(
    addr: &NodeAddr,
    call: impl AsyncFnOnce(
        &mut FunctionTierServiceClient<tonic::transport::Channel>,
    ) -> Result<T, tonic::Status>,
) -> Result<T, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut grpc = FunctionTierServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        call(&mut grpc).await
    })
}

#[test]
fn installed_model_classifies_the_bundled_photos() {
    let (server, addr) = start_default();
    let (code, desc) = client::install_model(&addr, 1, &bundled_model(Task::Flowers)).unwrap();
    assert_eq!((code, desc.as_str()), (0, "install model successfully."));
    assert_eq!(desc, INSTALL_OK);

    let mut client = connect(&addr);
    for (truth, photo) in bundled_photos(Task::Flowers) {
        assert_eq!(client.inference(&[1], &photo).unwrap(), truth);
    }
    // The one-shot function gives the same answer as the kept connection.
    let rose = photo_of(Task::Flowers, "rose");
    assert_eq!(client::inference(&addr, &[1], &rose).unwrap(), "rose");
    server.shutdown().unwrap();
}

#[test]
fn several_tags_are_answered_together() {
    let (server, addr) = start_default();
    let mut client = connect(&addr);
    assert_eq!(
        client
            .install_model(1, &bundled_model(Task::Flowers))
            .unwrap()
            .0,
        0
    );
    assert_eq!(
        client
            .install_model(2, &bundled_model(Task::Pets))
            .unwrap()
            .0,
        0
    );
    let cat = photo_of(Task::Pets, "cat");
    let answer = client.inference(&[1, 2], &cat).unwrap();
    let parts: Vec<&str> = answer.split("; ").collect();
    assert_eq!(parts.len(), 2, "{answer}");
    assert!(parts[0].ends_with(" (tag 1)"), "{answer}");
    assert_eq!(parts[1], "cat (tag 2)", "{answer}");

    // Repeated tags are asked once; a tag without a model is reported in its place.
    let answer = client.inference(&[2, 9, 2], &cat).unwrap();
    assert_eq!(
        answer,
        "cat (tag 2); error (tag 9): no model installed for tag 9"
    );

    // When no tag can answer, the call fails.
    let e = client.inference(&[8, 9], &cat).unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::NotFound), "{e}");
    assert!(
        e.to_string().contains("no model installed for tag 8"),
        "{e}"
    );
    server.shutdown().unwrap();
}

#[test]
fn install_remove_and_the_no_model_answer() {
    let (server, addr) = start_default();
    let mut client = connect(&addr);
    let flowers = bundled_model(Task::Flowers);
    assert_eq!(client.install_model(1, &flowers).unwrap().0, 0);

    let (code, desc) = client.install_model(1, &flowers).unwrap();
    assert_ne!(code, 0);
    assert!(desc.contains("tag 1 is already in use"), "{desc}");

    let (code, desc) = client::remove_model(&addr, 1).unwrap();
    assert_eq!((code, desc.as_str()), (0, "remove model successfully."));
    assert_eq!(desc, REMOVE_OK);

    let e = client
        .inference(&[1], &photo_of(Task::Flowers, "rose"))
        .unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::NotFound), "{e}");
    assert!(
        e.to_string().contains("no model installed for tag 1"),
        "{e}"
    );

    let (code, desc) = client.remove_model(1).unwrap();
    assert_ne!(code, 0);
    assert_eq!(desc, "no model installed for tag 1");

    // The tag is free again.
    assert_eq!(client.install_model(1, &flowers).unwrap().0, 0);
    server.shutdown().unwrap();
}

#[test]
fn bad_photos_and_bad_models_get_clear_errors() {
    let (server, addr) = start_default();
    let mut client = connect(&addr);
    assert_eq!(
        client
            .install_model(2, &bundled_model(Task::Pets))
            .unwrap()
            .0,
        0
    );

    let e = client
        .inference(&[2], b"this is not a photo at all")
        .unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("cannot be decoded"), "{e}");

    let mut corrupt = bundled_model(Task::Flowers);
    corrupt.weights.truncate(100);
    let (code, desc) = client.install_model(3, &corrupt).unwrap();
    assert_ne!(code, 0);
    assert!(desc.contains("corrupt"), "{desc}");

    // The service is still answering.
    assert_eq!(
        client
            .inference(&[2], &photo_of(Task::Pets, "dog"))
            .unwrap(),
        "dog"
    );
    server.shutdown().unwrap();
}

#[test]
fn malformed_streams_are_refused_and_the_server_stays_up() {
    let (server, addr) = start_default();

    // The metadata promises 1000 bytes; the stream carries 10.
    let truncated = raw_call(&addr, async |grpc| {
        let requests = vec![
            PhotoRequest {
                photo_chunk: Some(PhotoChunk::Metadata(PhotoMetadata {
                    photo_size: 1000,
                    tags: vec![1],
                })),
            },
            PhotoRequest {
                photo_chunk: Some(PhotoChunk::FileData(vec![7; 10])),
            },
        ];
        grpc.whatsthis(tokio_stream::iter(requests)).await
    })
    .unwrap_err();
    assert_eq!(truncated.code(), tonic::Code::InvalidArgument);
    assert!(
        truncated.message().contains("10 of the 1000 bytes"),
        "{truncated:?}"
    );

    // Data without metadata.
    let headless = raw_call(&addr, async |grpc| {
        let requests = vec![PhotoRequest {
            photo_chunk: Some(PhotoChunk::FileData(vec![7; 10])),
        }];
        grpc.whatsthis(tokio_stream::iter(requests)).await
    })
    .unwrap_err();
    assert_eq!(headless.code(), tonic::Code::InvalidArgument);
    assert!(headless.message().contains("metadata"), "{headless:?}");

    // An empty model stream.
    let empty = raw_call(&addr, async |grpc| {
        grpc.install_model(tokio_stream::iter(Vec::new())).await
    })
    .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert!(empty.message().contains("empty"), "{empty:?}");

    // Still up.
    let (code, desc) = client::remove_model(&addr, 5).unwrap();
    assert_eq!((code, desc.as_str()), (-1, "no model installed for tag 5"));
    server.shutdown().unwrap();
}

#[test]
fn size_limits_are_enforced() {
    let limits = ServiceLimits {
        max_photo_bytes: 1000,
        max_model_bytes: 1000,
        max_tags: 2,
        ..ServiceLimits::default()
    };
    let (server, addr) = start(Arc::new(InProcessCategorizersDouble::default()), limits);
    let mut client = connect(&addr);

    let e = client.inference(&[1], &[0u8; 2000]).unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(
        e.to_string().contains("exceeds the limit of 1000 bytes"),
        "{e}"
    );

    let e = client
        .install_model(1, &bundled_model(Task::Flowers))
        .unwrap_err();
    assert!(
        e.to_string().contains("exceeds the limit of 1000 bytes"),
        "{e}"
    );

    let e = client.inference(&[1, 2, 3], &[0u8; 10]).unwrap_err();
    assert!(e.to_string().contains("at most 2"), "{e}");
    server.shutdown().unwrap();
}

#[test]
fn an_unreachable_categorizer_tier_is_reported() {
    let (server, addr) = start(
        Arc::new(UnreachableCategorizersDouble),
        ServiceLimits::default(),
    );
    let mut client = connect(&addr);
    let (code, desc) = client
        .install_model(1, &bundled_model(Task::Flowers))
        .unwrap();
    assert_eq!(code, -3);
    assert_eq!(
        desc,
        "the categorizer tier is unavailable: shard 0 has no members"
    );
    let e = client
        .inference(&[1], &photo_of(Task::Flowers, "rose"))
        .unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::Unavailable), "{e}");
    server.shutdown().unwrap();
}

#[test]
fn a_stopped_server_refuses_connections() {
    let (server, addr) = start_default();
    assert!(server.is_running());
    server.shutdown().unwrap();
    let e = Client::connect_with(
        &addr,
        ClientOptions {
            connect_window: Duration::from_millis(300),
            progress: false,
        },
    )
    .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[test]
fn shutdown_lets_a_running_call_finish() {
    let double = InProcessCategorizersDouble {
        classify_delay: Duration::from_millis(800),
        ..InProcessCategorizersDouble::default()
    };
    let (server, addr) = start(Arc::new(double), ServiceLimits::default());
    let mut client = connect(&addr);
    assert_eq!(
        client
            .install_model(2, &bundled_model(Task::Pets))
            .unwrap()
            .0,
        0
    );
    let caller = std::thread::spawn(move || client.inference(&[2], &photo_of(Task::Pets, "fish")));
    std::thread::sleep(Duration::from_millis(300));
    server.shutdown().unwrap();
    assert_eq!(caller.join().unwrap().unwrap(), "fish");
}

#[test]
fn the_demo_workload_runs_against_two_function_tier_nodes() {
    // Two front ends over one categorizer tier, as in the 4- and 6-node clusters.
    let tier: Arc<dyn Categorizers> = Arc::new(InProcessCategorizersDouble::default());
    let (first, addr0) = start(Arc::clone(&tier), ServiceLimits::default());
    let (second, addr1) = start(tier, ServiceLimits::default());
    let mut out = Vec::new();
    let summary = sospdemo::demo::run_workload(
        &[addr0.clone(), addr1.clone()],
        Duration::from_secs(5),
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let n = summary.photos.len();
    assert!(summary.all_answered(), "{out}");
    assert_eq!(summary.correct(), n, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == format!("correct {n}/{n}"))
        .unwrap_or_else(|| panic!("no `correct` line: {out}"));
    // Then each model's held-out accuracy, as training recorded it.
    assert_eq!(lines.len(), at + 3, "{out}");
    for (line, task) in lines[at + 1..].iter().zip([Task::Flowers, Task::Pets]) {
        let e = HeldOutEvaluation::read(&sospdemo::bundled_model_dir(task))
            .unwrap()
            .unwrap();
        assert_eq!(
            *line,
            format!(
                "held-out accuracy of the {} model: {:.1}% ({}/{} photos not seen in training)",
                task.name(),
                100.0 * e.accuracy(),
                e.correct,
                e.held_out
            )
        );
    }
    assert_eq!(summary.held_out.len(), 2);
    assert!(summary.held_out.iter().all(|(_, e)| e.is_some()));
    assert!(out.contains("install model successfully."), "{out}");
    for addr in [&addr0, &addr1] {
        assert!(
            summary.photos.iter().any(|p| &p.node == addr),
            "no photo went to {addr}"
        );
    }
    assert!(summary.photos.iter().all(|p| p.tag
        == if p.photo.starts_with("flowers/") {
            1
        } else {
            2
        }));
    print!("{out}");
    first.shutdown().unwrap();
    second.shutdown().unwrap();
}

fn mxnet_fixture(net: &str) -> ModelFiles {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mxnet");
    ModelFiles::read(
        &dir.join("synset.txt"),
        &dir.join(format!("{net}-symbol.json")),
        &dir.join(format!("{net}-0000.params")),
    )
    .unwrap()
}

#[test]
fn mxnet_model_installs_and_answers_through_the_service() {
    let (server, addr) = start_default();
    let model = mxnet_fixture("resnet50_v1");
    let local = Classifier::from_files(&model).unwrap();
    let (code, desc) = client::install_model(&addr, 3, &model).unwrap();
    assert_eq!((code, desc.as_str()), (0, INSTALL_OK));
    let mut client = connect(&addr);
    for (_, photo) in bundled_photos(Task::Pets).into_iter().take(3) {
        let answer = client.inference(&[3], &photo).unwrap();
        assert_eq!(answer, local.classify(&photo).unwrap().label);
    }
    // A photo that is not an image, sent to an MXNet model.
    let e = client.inference(&[3], b"not an image at all").unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("send a JPEG or PNG"), "{e}");
    // Mixed-up files are refused before anything is installed, with advice.
    let mut mixed = mxnet_fixture("resnet18_v1");
    mixed.weights = bundled_model(Task::Flowers).weights;
    let (code, desc) = client.install_model(4, &mixed).unwrap();
    assert_eq!(code, -2, "{desc}");
    assert!(desc.contains(".params file exported with it"), "{desc}");
    server.shutdown().unwrap();
}

#[test]
fn too_large_model_says_which_setting_to_raise() {
    let limits = ServiceLimits {
        max_model_bytes: 100_000,
        ..ServiceLimits::default()
    };
    let (server, addr) = start(Arc::new(InProcessCategorizersDouble::default()), limits);
    let model = mxnet_fixture("resnet18_v1");
    assert!(model.len() > 100_000);
    let e = client::install_model(&addr, 1, &model).unwrap_err();
    assert_eq!(e.rpc_code(), Some(tonic::Code::InvalidArgument), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("the model is {} bytes", model.len())),
        "{text}"
    );
    assert!(text.contains("max_p2p_request_payload_size"), "{text}");
    assert!(text.contains("derecho.cfg"), "{text}");
    server.shutdown().unwrap();
}
