//! End to end: real `sospdemo server` processes on loopback, driven through the gRPC front door
//! the way a client drives them.
//!
//! Each scenario starts its own cluster in a temporary folder, one sub-folder and
//! `derecho.cfg` per node, from [`node_config`] (the shapes of `test-configs/`) or from it with
//! the shard sizes changed where a scenario needs a shard to outlive one of its members.
//!
//! * **Ports.** The configurations use fixed ports (GMS 23580+i, …, gRPC 28000+i), so two
//!   clusters cannot run at once: every scenario holds [`cluster::CLUSTER_LOCK`] while its
//!   cluster runs, and is skipped, with a note written straight to standard error, when another
//!   program holds one of its ports.
//! * **Time.** Every wait is bounded: forming the group, each gRPC call
//!   ([`front_door::CALL_LIMIT`]), each run of the command-line client, each view change, the
//!   final stop.
//! * **Processes.** Every server a scenario started is killed when its
//!   [`cluster::LocalCluster`] is dropped, on success and on panic alike. After a failure the
//!   folder (configurations and each node's `stdout.log` / `stderr.log`) is kept, and its path
//!   and the last log lines are printed.
//!
//! The ignored scenarios state behaviour the service does not have yet; each `ignore` reason
//! names the bug. Run them with `cargo test --release -p sospdemo --test e2e -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod front_door;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{
    as_node, inadequate_views_in, node_ports, one_front_end_and_a_growing_shard,
    six_nodes_one_member_per_shard_suffices, strip_ansi, take_ports, LocalCluster, VIEW_LIMIT,
};
use front_door::{
    bundled_model, bundled_photos, classify_all, expect_status, install_ok, photo, run_cli,
    FrontDoor, Photo,
};
use sospdemo::demo::{certificate_section, node_config, ClusterSize, FLOWERS_TAG, PETS_TAG};
use sospdemo::service::REMOVE_OK;
use sospdemo::train::Task;
use sospdemo_proto::install_model_request::ModelChunk;
use sospdemo_proto::photo_request::PhotoChunk;
use sospdemo_proto::{InstallModelRequest, ModelMetadata, PhotoMetadata, PhotoRequest};
use tokio_stream::StreamExt as _;
use tonic::{Code, Status};

/// `test-2-nodes`: install both bundled models, classify every bundled photo, ask two tags at
/// once (through gRPC and through `sospdemo client`), remove a model and get the "no model"
/// answer for it while the other tag still answers.
#[test]
fn two_nodes_install_classify_several_tags_and_remove() {
    let Some(_ports) = take_ports("two_nodes", 2, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("two-nodes");
    cluster.start_in_order(0..2, |id| node_config(ClusterSize::Two, id).unwrap());
    cluster.wait_ready(&[0, 1]);
    cluster.assert_front_ends(&[0]);
    let mut front = FrontDoor::connect(0);

    install_ok(&mut front, FLOWERS_TAG, Task::Flowers);
    install_ok(&mut front, PETS_TAG, Task::Pets);
    classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    classify_all(&mut front, Task::Pets, PETS_TAG);

    // Two tags at once: one part per tag, in the order asked.
    let cat = photo(Task::Pets, "cat");
    let answer = front.infer(&[FLOWERS_TAG, PETS_TAG], &cat.bytes).unwrap();
    let parts: Vec<&str> = answer.split("; ").collect();
    assert_eq!(parts.len(), 2, "{answer}");
    assert!(parts[0].ends_with(" (tag 1)"), "{answer}");
    assert_eq!(parts[1], "cat (tag 2)", "{answer}");
    // The same through the command-line client.
    let rose = photo(Task::Flowers, "rose");
    let (status, out) = run_cli(&["0", "inference", "1,2", rose.path.to_str().unwrap()]);
    assert!(status.success(), "{out}");
    assert!(out.contains("photo description:rose (tag 1); "), "{out}");

    // Removing pets: tag 2 now has no model, tag 1 still answers.
    assert_eq!(front.remove(PETS_TAG), (0, REMOVE_OK.to_owned()));
    expect_status(
        front.infer(&[PETS_TAG], &cat.bytes),
        Code::NotFound,
        "no model installed for tag 2",
    );
    assert_eq!(
        front.infer(&[FLOWERS_TAG, PETS_TAG], &rose.bytes).unwrap(),
        "rose (tag 1); error (tag 2): no model installed for tag 2"
    );
    assert_eq!(
        front.remove(PETS_TAG),
        (-1, "no model installed for tag 2".to_owned())
    );
    classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    let (status, out) = run_cli(&["0", "removemodel", "2"]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("return code:-1"), "{out}");

    cluster.stop_cleanly();
}

/// `test-2-nodes`, total restart: the installed models are persistent; after both servers are
/// killed and started again in their folders, they restart from their logs and classify with
/// the models installed before, without installing them again (issue #15).
#[test]
fn two_nodes_keep_their_models_across_a_restart_of_every_member() {
    let Some(_ports) = take_ports("two_nodes_restart", 2, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("two-nodes-restart");
    cluster.start_in_order(0..2, |id| node_config(ClusterSize::Two, id).unwrap());
    cluster.wait_ready(&[0, 1]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers);
    install_ok(&mut front, PETS_TAG, Task::Pets);
    classify_all(&mut front, Task::Pets, PETS_TAG);
    drop(front);
    cluster.kill(0);
    cluster.kill(1);
    for id in 0..2 {
        cluster.restart_in_place(id, &node_config(ClusterSize::Two, id).unwrap());
    }
    cluster.wait_ready(&[0, 1]);
    let node0 = cluster.node(0);
    assert!(
        node0.log("stderr.log").contains("restarting from the logs"),
        "{}",
        node0.tail()
    );
    let mut front = FrontDoor::connect(0);
    classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    classify_all(&mut front, Task::Pets, PETS_TAG);
    cluster.stop_cleanly();
}

/// `test-2-nodes` under concurrent load: twelve clients at once, asking both tags, share
/// batches in the function tier and the categorizer; every photo still gets its own right
/// answer, and a photo that is not an image, sent in the middle of the load, fails alone.
#[test]
fn two_nodes_concurrent_clients_share_batches_and_keep_their_answers() {
    let Some(_ports) = take_ports("two_nodes_concurrent", 2, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("two-nodes-concurrent");
    cluster.start_in_order(0..2, |id| node_config(ClusterSize::Two, id).unwrap());
    cluster.wait_ready(&[0, 1]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers);
    install_ok(&mut front, PETS_TAG, Task::Pets);

    let clients: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let (task, tag) = if i % 2 == 0 {
                    (Task::Flowers, FLOWERS_TAG)
                } else {
                    (Task::Pets, PETS_TAG)
                };
                let mut front = FrontDoor::connect(0);
                for round in 0..3 {
                    for p in bundled_photos(task) {
                        if i == 5 && round == 1 {
                            expect_status(
                                front.infer(&[tag], b"this is not a photo at all"),
                                Code::InvalidArgument,
                                "the photo cannot be decoded",
                            );
                        }
                        let answer = front
                            .infer(&[tag], &p.bytes)
                            .unwrap_or_else(|s| panic!("client {i}, {}: {s:?}", p.name));
                        assert_eq!(answer, p.truth, "client {i}, {}", p.name);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    cluster.stop_cleanly();
}

/// `test-6-nodes`: the two models land on different shards (tag % 2) and every photo is
/// answered correctly through each of the two function-tier nodes.
#[test]
fn six_nodes_serve_both_shards_through_both_front_ends() {
    let Some(_ports) = take_ports("six_nodes", 6, 2) else {
        return;
    };
    let mut cluster = LocalCluster::new("six-nodes");
    cluster.start_in_order(0..6, |id| node_config(ClusterSize::Six, id).unwrap());
    cluster.wait_ready(&[0, 1, 2, 3, 4, 5]);
    cluster.assert_front_ends(&[0, 1]);
    let mut fronts = [FrontDoor::connect(0), FrontDoor::connect(1)];

    install_ok(&mut fronts[0], FLOWERS_TAG, Task::Flowers);
    // The second model through the other front end.
    install_ok(&mut fronts[1], PETS_TAG, Task::Pets);
    // Each shard refuses a second model under its tag, whichever front end asks.
    let (code, desc) = fronts[1].install(FLOWERS_TAG, &bundled_model(Task::Flowers));
    assert_eq!(code, -1, "{desc}");
    assert!(desc.contains("tag 1 is already in use"), "{desc}");
    for front in &mut fronts {
        classify_all(front, Task::Flowers, FLOWERS_TAG);
        classify_all(front, Task::Pets, PETS_TAG);
    }
    cluster.assert_all_running();
    cluster.stop_cleanly();
}

/// Six nodes whose categorizer shards need one member: kill -9 one member of each shard while a
/// client keeps asking; every later question is answered by the shard's survivor, and no
/// answer is ever wrong.
#[test]
fn six_nodes_a_killed_categorizer_is_covered_by_its_shard_peer() {
    let Some(_ports) = take_ports("six_nodes_failover", 6, 2) else {
        return;
    };
    let mut cluster = LocalCluster::new("six-nodes-failover");
    // The first view needs n0..n3 (two front ends, one member per shard: n2 → shard 0,
    // n3 → shard 1); n4 and n5 then join one at a time and take the second seats in shard
    // order, so shard 0 = {n2, n4} and shard 1 = {n3, n5}.
    cluster.start_in_order(0..4, six_nodes_one_member_per_shard_suffices);
    cluster.wait_ready(&[0, 1, 2, 3]);
    for id in [4, 5] {
        cluster.start(id, &six_nodes_one_member_per_shard_suffices(id));
        cluster.wait_ready(&[id]);
    }
    cluster.wait_view(0, &[0, 1, 2, 3, 4, 5]);
    cluster.assert_front_ends(&[0, 1]);

    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers); // shard 1
    install_ok(&mut front, PETS_TAG, Task::Pets); // shard 0
    classify_all(&mut front, Task::Pets, PETS_TAG);

    // A client asks through node 1 all along.
    struct Asked {
        started: Instant,
        tag: u32,
        truth: String,
        answer: Result<String, Status>,
    }
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let stop = Arc::clone(&stop);
        let questions: Vec<(u32, Photo)> = bundled_photos(Task::Pets)
            .into_iter()
            .map(|p| (PETS_TAG, p))
            .chain(
                bundled_photos(Task::Flowers)
                    .into_iter()
                    .map(|p| (FLOWERS_TAG, p)),
            )
            .collect();
        std::thread::spawn(move || {
            let mut front = FrontDoor::connect(1);
            let mut asked = Vec::new();
            // Bounded: the scenario stops it long before.
            for (tag, p) in questions.iter().cycle().take(5000) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let started = Instant::now();
                let answer = front.infer(&[*tag], &p.bytes);
                asked.push(Asked {
                    started,
                    tag: *tag,
                    truth: p.truth.clone(),
                    answer,
                });
            }
            asked
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    cluster.kill(2); // shard 0: pets
    let took = cluster.wait_view(1, &[0, 1, 3, 4, 5]);
    cluster.wait_view(0, &[0, 1, 3, 4, 5]);
    eprintln!("view without n2 seen after {took:?}");
    std::thread::sleep(Duration::from_secs(2));
    cluster.kill(3); // shard 1: flowers
    let took = cluster.wait_view(1, &[0, 1, 4, 5]);
    cluster.wait_view(0, &[0, 1, 4, 5]);
    eprintln!("view without n3 seen after {took:?}");
    let settled = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let asked = asker.join().unwrap();

    let failed: Vec<String> = asked
        .iter()
        .filter_map(|a| {
            a.answer
                .as_ref()
                .err()
                .map(|s| format!("tag {}: {s:?}", a.tag))
        })
        .collect();
    eprintln!(
        "{} questions during the failures, {} failed: {failed:#?}",
        asked.len(),
        failed.len()
    );
    for a in &asked {
        if let Ok(answer) = &a.answer {
            assert_eq!(*answer, a.truth, "a wrong answer for tag {}", a.tag);
        }
    }
    let after: Vec<&Asked> = asked.iter().filter(|a| a.started >= settled).collect();
    assert!(
        !after.is_empty(),
        "no question was asked after the failures"
    );
    assert!(
        after.iter().all(|a| a.answer.is_ok()),
        "questions asked after the last view change failed: {failed:#?}"
    );
    // Only the survivors (n4 for pets, n5 for flowers) hold the models now.
    for id in [0, 1] {
        let mut front = FrontDoor::connect(id);
        classify_all(&mut front, Task::Pets, PETS_TAG);
        classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    }
    cluster.assert_all_running();
    cluster.stop_cleanly();
}

/// A categorizer that joins a running group receives the installed models by state transfer:
/// after the only member that saw the install is killed, the newcomer answers alone.
#[test]
fn a_joining_categorizer_receives_the_models_and_answers_alone() {
    let Some(_ports) = take_ports("join", 3, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("join");
    cluster.start_in_order(0..2, one_front_end_and_a_growing_shard);
    cluster.wait_ready(&[0, 1]);
    cluster.wait_view(0, &[0, 1]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers);
    assert_eq!(
        front
            .infer(&[FLOWERS_TAG], &photo(Task::Flowers, "tulip").bytes)
            .unwrap(),
        "tulip"
    );

    cluster.start(2, &one_front_end_and_a_growing_shard(2));
    cluster.wait_ready(&[2]);
    cluster.wait_view(0, &[0, 1, 2]);
    cluster.assert_front_ends(&[0]);
    let joined = strip_ansi(&cluster.node(2).log("stderr.log"));
    assert!(
        joined.contains("received replica state"),
        "node 2 logged no state transfer:\n{joined}"
    );

    cluster.kill(1);
    cluster.wait_view(0, &[0, 2]);
    classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    // The newcomer also takes new updates alone.
    install_ok(&mut front, PETS_TAG, Task::Pets);
    classify_all(&mut front, Task::Pets, PETS_TAG);
    cluster.assert_all_running();
    cluster.stop_cleanly();
}

/// Bad input against a live `test-2-nodes` cluster: photos that are not images, corrupt and
/// mismatched models, streams shorter or longer than their metadata, streams without metadata,
/// a stream the client abandons. Each gets a clear error, nothing bad is installed, and the
/// service keeps answering.
#[test]
fn bad_input_gets_clear_errors_and_the_service_stays_up() {
    let Some(_ports) = take_ports("bad_input", 2, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("bad-input");
    cluster.start_in_order(0..2, |id| node_config(ClusterSize::Two, id).unwrap());
    cluster.wait_ready(&[0, 1]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, PETS_TAG, Task::Pets);
    let dog = photo(Task::Pets, "dog");

    // Photos that are not images.
    expect_status(
        front.infer(&[PETS_TAG], b"this is not a photo at all"),
        Code::InvalidArgument,
        "the photo cannot be decoded",
    );
    expect_status(
        front.infer(&[PETS_TAG], &dog.bytes[..dog.bytes.len() / 3]),
        Code::InvalidArgument,
        "the photo cannot be decoded",
    );
    assert_eq!(front.infer(&[PETS_TAG], &dog.bytes).unwrap(), "dog");

    // Truncated weights: refused with a description, and nothing is installed.
    let mut corrupt = bundled_model(Task::Flowers);
    corrupt.weights.truncate(corrupt.weights.len() / 2);
    let (code, desc) = front.install(FLOWERS_TAG, &corrupt);
    assert_eq!(code, -2, "{desc}");
    assert!(desc.contains("weights file is corrupt"), "{desc}");
    expect_status(
        front.infer(&[FLOWERS_TAG], &photo(Task::Flowers, "rose").bytes),
        Code::NotFound,
        "no model installed for tag 1",
    );
    // A synset that does not match the architecture.
    let mut mismatched = bundled_model(Task::Flowers);
    mismatched.synset = b"only\ntwo\n".to_vec();
    let (code, desc) = front.install(FLOWERS_TAG, &mismatched);
    assert_eq!(code, -2, "{desc}");
    assert!(desc.contains("synset has 2 labels"), "{desc}");
    // The tag is still free for the real model.
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers);
    assert_eq!(
        front
            .infer(&[FLOWERS_TAG], &photo(Task::Flowers, "rose").bytes)
            .unwrap(),
        "rose"
    );

    // Streams that do not match their metadata.
    let meta = |size: u32| PhotoRequest {
        photo_chunk: Some(PhotoChunk::Metadata(PhotoMetadata {
            photo_size: size,
            tags: vec![PETS_TAG],
        })),
    };
    let data = |len: usize| PhotoRequest {
        photo_chunk: Some(PhotoChunk::FileData(vec![7; len])),
    };
    expect_status(
        front.whatsthis_raw(vec![meta(1000), data(10)]),
        Code::InvalidArgument,
        "ended after 10 of the 1000 bytes",
    );
    expect_status(
        front.whatsthis_raw(vec![meta(10), data(1000)]),
        Code::InvalidArgument,
        "more than the 10 bytes",
    );
    expect_status(
        front.whatsthis_raw(vec![data(10)]),
        Code::InvalidArgument,
        "must carry the metadata",
    );
    expect_status(
        front.whatsthis_raw(Vec::new()),
        Code::InvalidArgument,
        "empty",
    );
    let model_meta = InstallModelRequest {
        model_chunk: Some(ModelChunk::Metadata(ModelMetadata {
            tag: 7,
            synset_size: 100,
            symbol_size: 100,
            params_size: 800,
        })),
    };
    let model_data = InstallModelRequest {
        model_chunk: Some(ModelChunk::FileData(vec![1; 10])),
    };
    expect_status(
        front.install_raw(vec![model_meta, model_data]),
        Code::InvalidArgument,
        "ended after 10 of the 1000 bytes",
    );
    expect_status(
        front.install_raw(Vec::new()),
        Code::InvalidArgument,
        "empty",
    );
    assert_eq!(
        front.remove(7),
        (-1, "no model installed for tag 7".to_owned())
    );

    // A client that sends the metadata and then goes quiet, and gives up after a while.
    let abandoned =
        front.runtime.block_on({
            let mut grpc = front.grpc.clone();
            let requests =
                tokio_stream::iter(vec![meta(1000), data(10)]).chain(tokio_stream::pending());
            async move {
                tokio::time::timeout(Duration::from_millis(500), grpc.whatsthis(requests)).await
            }
        });
    assert!(
        abandoned.is_err(),
        "a stream that never ended was answered: {abandoned:?}"
    );

    // Still up and still right, on a new connection too.
    assert_eq!(front.infer(&[PETS_TAG], &dog.bytes).unwrap(), "dog");
    let mut again = FrontDoor::connect(0);
    classify_all(&mut again, Task::Pets, PETS_TAG);
    cluster.assert_all_running();
    cluster.stop_cleanly();
}

/// `test-6-nodes` shards need both their members (min_nodes = max_nodes = 2). When one
/// categorizer is lost the survivors keep running and wait for a node to join; a new node
/// (id 6) takes the empty seat, receives the shard's models, and the service takes updates and
/// answers every photo again.
#[test]
fn six_nodes_a_lost_categorizer_is_replaced_by_a_new_node() {
    let Some(_ports) = take_ports("six_nodes_replacement", 7, 2) else {
        return;
    };
    let mut cluster = LocalCluster::new("six-nodes-replacement");
    cluster.start_in_order(0..6, |id| node_config(ClusterSize::Six, id).unwrap());
    cluster.wait_ready(&[0, 1, 2, 3, 4, 5]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers); // shard 1: n4, n5
    install_ok(&mut front, PETS_TAG, Task::Pets); // shard 0: n2, n3

    cluster.kill(2);
    // Shard 0 is below its minimum: the survivors install an inadequate view (no tiers, the
    // membership protocol only) and no adequate one until a node joins.
    std::thread::sleep(Duration::from_secs(2));
    cluster.assert_all_running();
    assert_eq!(
        cluster.last_view(0),
        Some(vec![0, 1, 2, 3, 4, 5]),
        "an adequate view without node 2 was installed although shard 0 cannot be filled"
    );
    let waiting = inadequate_views_in(&cluster.node(0).log("stderr.log"));
    assert_eq!(
        waiting.last(),
        Some(&vec![0, 1, 3, 4, 5]),
        "no inadequate view without node 2 was installed"
    );

    let newcomer = as_node(&node_config(ClusterSize::Six, 5).unwrap(), 6);
    cluster.start(6, &newcomer);
    cluster.wait_ready(&[6]);
    cluster.wait_view(0, &[0, 1, 3, 4, 5, 6]);
    let joined = strip_ansi(&cluster.node(6).log("stderr.log"));
    assert!(
        joined.contains("received replica state"),
        "node 6 logged no state transfer:\n{joined}"
    );
    for id in [0, 1] {
        let mut front = FrontDoor::connect(id);
        classify_all(&mut front, Task::Pets, PETS_TAG);
        classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    }
    // Ordered updates go through again, on the repaired shard too.
    assert_eq!(front.remove(PETS_TAG), (0, REMOVE_OK.to_owned()));
    install_ok(&mut front, PETS_TAG, Task::Pets);
    classify_all(&mut front, Task::Pets, PETS_TAG);
    cluster.assert_all_running();
    cluster.stop_cleanly();
}

/// A member that stops (here: the only survivor of three, a minority under partition safety)
/// should say so and exit, so that its front end stops answering from a replica that no longer
/// takes updates.
#[test]
fn a_member_that_stops_exits() {
    let Some(_ports) = take_ports("stopped_member", 3, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("stopped-member");
    cluster.start_in_order(0..2, one_front_end_and_a_growing_shard);
    cluster.wait_ready(&[0, 1]);
    cluster.start(2, &one_front_end_and_a_growing_shard(2));
    cluster.wait_ready(&[2]);
    cluster.wait_view(0, &[0, 1, 2]);
    cluster.kill(1);
    cluster.kill(2);
    for (id, status) in cluster.wait_exited(&[0], VIEW_LIMIT) {
        let out = cluster.node(id).log("stdout.log");
        assert!(
            out.contains("This node has left the group"),
            "node {id} exited ({status}) without saying why:\n{out}"
        );
    }
}

/// ENTER on every node: each leaves and exits with status 0, the last one too (it finds its
/// group gone: the others left first).
#[test]
fn a_whole_cluster_stop_exits_zero_on_every_node() {
    let Some(_ports) = take_ports("whole_cluster_stop", 2, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("whole-cluster-stop");
    cluster.start_in_order(0..2, |id| node_config(ClusterSize::Two, id).unwrap());
    cluster.wait_ready(&[0, 1]);
    cluster.stop_strictly();
}

/// `test-6-nodes`: a categorizer killed and restarted with its old id (in a fresh folder, same
/// configuration) fills the seat it left empty, receives the shard's models and answers
/// correctly.
#[test]
fn a_categorizer_restarted_with_its_old_id_fills_its_empty_seat() {
    let Some(_ports) = take_ports("rejoin_same_id", 6, 2) else {
        return;
    };
    let mut cluster = LocalCluster::new("rejoin-same-id");
    cluster.start_in_order(0..6, |id| node_config(ClusterSize::Six, id).unwrap());
    cluster.wait_ready(&[0, 1, 2, 3, 4, 5]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, PETS_TAG, Task::Pets); // shard 0: n2, n3
    cluster.kill(2);
    std::thread::sleep(Duration::from_secs(2));
    cluster.start(2, &node_config(ClusterSize::Six, 2).unwrap());
    cluster.wait_ready(&[2]);
    cluster.wait_view(0, &[0, 1, 3, 4, 5, 2]);
    std::thread::sleep(Duration::from_secs(2));
    cluster.assert_all_running();
    assert_eq!(cluster.last_view(0), Some(vec![0, 1, 3, 4, 5, 2]));
    for id in [0, 1] {
        classify_all(&mut FrontDoor::connect(id), Task::Pets, PETS_TAG);
    }
    cluster.stop_cleanly();
}

/// `test-2-nodes` in `[SECURITY] mode = certificate` (what `sospdemo demo --secure` runs): the
/// nodes authenticate each other by mutual TLS under a group CA and serve as usual, while strangers on every port (bytes in
/// clear on each, and 300 idle connections held over all of them) are refused in the logs,
/// and inference still answers; afterwards the cluster stops cleanly.
#[test]
fn a_secure_cluster_serves_while_strangers_hold_300_connections_to_its_ports() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let Some(_ports) = take_ports("secure", 2, 1) else {
        return;
    };
    let mut cluster = LocalCluster::new("secure");
    let pki = cluster.root().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = derecho::secure::GroupCa::new("e2e", 1).unwrap();
    let ca_file = pki.join("ca.pem");
    ca.save(&ca_file, &pki.join("ca.key")).unwrap();
    let config = |id: u16| {
        let (cert, key) = (pki.join(format!("{id}.pem")), pki.join(format!("{id}.key")));
        if !cert.exists() {
            ca.issue(&derecho::secure::Identity::Member(u32::from(id)), 1)
                .unwrap()
                .save(&cert, &key)
                .unwrap();
        }
        node_config(ClusterSize::Two, id).unwrap() + &certificate_section(&ca_file, &cert, &key)
    };
    cluster.start_in_order(0..2, config);
    cluster.wait_ready(&[0, 1]);
    let mut front = FrontDoor::connect(0);
    install_ok(&mut front, FLOWERS_TAG, Task::Flowers);

    // Every derecho port of both nodes, and the front end's gRPC port.
    let mut ports: Vec<u16> = (0..2)
        .flat_map(|id| node_ports(id).map(|(_, p)| p))
        .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        .collect();
    assert!(ports.len() >= 8, "the nodes listen on {ports:?}");
    // Bytes in clear, answered by nothing but a closed connection (or, on a GMS port, which
    // tells open-mode nodes why, a GMS refusal).
    for &p in &ports {
        let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(b"{\"Join\":{\"version\":1}} and more bytes in clear");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let refused = answer.is_empty()
            || matches!(
                derecho::gms::wire::read_msg(&mut &answer[..]),
                Ok(derecho::gms::GmsMessage::Refused(_))
            );
        assert!(refused, "port {p} answered a stranger: {answer:?}");
    }
    ports.push(sospdemo_proto::FUNCTION_TIER_GRPC_PORT_BASE);
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|i| TcpStream::connect(("127.0.0.1", ports[i % ports.len()])).ok())
        .collect();
    assert!(
        idle.len() >= 290,
        "only {} idle connections opened",
        idle.len()
    );
    classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    drop(idle);
    classify_all(&mut front, Task::Flowers, FLOWERS_TAG);
    let logs = cluster.node(1).log("stderr.log");
    assert!(
        logs.contains("does not speak the authenticated protocol"),
        "{}",
        cluster.node(1).tail()
    );
    cluster.stop_cleanly();
}
