//! sospdemo: the image-classification service built on derecho-rs.
//!
//! The finished program has a gRPC function tier that accepts photos and models from clients and
//! forwards them to a sharded categorizer tier running CNN inference on the CPU. Modes:
//! `client` (talk to a function-tier node), `demo` (a whole local cluster, end to end), the
//! inference engine on its own (`classify`, `bench-model`) and the training of the bundled
//! models (`train`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand};
use sospdemo::client::{self, NodeAddr};
use sospdemo::demo::{self, ClusterSize, DemoOptions, Security};
use sospdemo::model::{random_weights, Architecture, Classifier, ModelFiles, ModelFormat, Synset};
use sospdemo::train::{self, Task, TrainConfig};

#[derive(Parser)]
#[command(
    name = "sospdemo",
    about = "Image classification on derecho-rs: a gRPC function tier over a sharded categorizer tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member of the group, configured by ./derecho.cfg; ENTER or Ctrl-C leaves.
    Server {
        /// Configuration overrides, `--SECTION/key=value` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        overrides: Vec<String>,
    },
    /// Talk to a function-tier node: classify a photo, install or remove a model.
    Client {
        /// The function-tier node: host:port, or a node id N meaning 127.0.0.1:(28000+N).
        node: NodeAddr,
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Start a local cluster, install the bundled models, classify every bundled photo, stop.
    Demo {
        /// Cluster size: 2, 4 or 6 nodes (the shapes of test-configs/).
        #[arg(long, default_value = "6", value_parser = parse_cluster_size)]
        nodes: ClusterSize,
        /// Keep the temporary folder with the configurations and server logs.
        #[arg(long)]
        keep: bool,
        /// Run the nodes in a secure `[SECURITY] mode` with credentials made for the run:
        /// `certificate` (the default: a group CA and a certificate per node, mutual TLS) or
        /// `secret` (one group secret).
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "certificate")]
        secure: Option<Security>,
    },
    /// Regenerate the bundled models and sample photos (procedural photos, seeded training).
    Train {
        /// Output root: models go to DIR/models/<task>, photos to DIR/photos/<task>.
        #[arg(long, default_value_os_t = sospdemo::bundled_dir())]
        out: PathBuf,
        /// Seed of the photos, the initial weights and the batch order.
        #[arg(long, default_value_t = TrainConfig::default().seed)]
        seed: u64,
        /// Train only this task (flowers or pets); all by default.
        #[arg(long)]
        task: Option<String>,
        /// Passes over the training photos.
        #[arg(long, default_value_t = TrainConfig::default().epochs)]
        epochs: usize,
        /// Training photos per class.
        #[arg(long, default_value_t = TrainConfig::default().train_per_class)]
        train_per_class: usize,
        /// Held-out photos per class.
        #[arg(long, default_value_t = TrainConfig::default().test_per_class)]
        test_per_class: usize,
    },
    /// Classify photos with a model directory (synset.txt, arch.json, weights.safetensors).
    Classify {
        /// The model directory.
        model: PathBuf,
        /// JPEG or PNG photos.
        #[arg(required = true)]
        photos: Vec<PathBuf>,
    },
    /// Time the forward pass of a model directory, or of ResNet50 with random weights.
    BenchModel {
        /// Model directories (ours, or an MXNet export: synset.txt, one *-symbol.json and one
        /// *.params); `resnet50` stands for an ImageNet ResNet50 with random weights.
        #[arg(required = true)]
        models: Vec<String>,
        /// Timed forward passes per model.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Also time whole classifications (decode, preprocess, forward) of this photo.
        #[arg(long)]
        photo: Option<PathBuf>,
        /// Images per forward pass; the time printed is per image.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// A Python with onnxruntime, onnx and numpy: also time onnxruntime on the same
        /// weights in this run (`sospdemo/bench/onnx_compare.py`; our model format only).
        #[arg(long)]
        onnx_python: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClientAction {
    /// Ask the models of one or more tags what a photo shows.
    Inference {
        /// One tag, or several separated by commas: 1,2,3.
        tags: Tags,
        /// A JPEG or PNG photo.
        photo: PathBuf,
    },
    /// Install a model under a tag: ours (synset.txt arch.json weights.safetensors) or an
    /// MXNet export (synset.txt model-symbol.json model-0000.params); the format is recognised
    /// from the files' contents.
    #[command(name = "installmodel")]
    InstallModel {
        /// The tag to install the model under.
        tag: u32,
        /// The synset file (one label per line).
        synset: PathBuf,
        /// The architecture: arch.json, or an MXNet symbol file (*-symbol.json).
        arch: PathBuf,
        /// The weights: weights.safetensors, or an MXNet .params file.
        weights: PathBuf,
    },
    /// Remove the model of a tag.
    #[command(name = "removemodel")]
    RemoveModel {
        /// The tag whose model to remove.
        tag: u32,
    },
}

/// A comma-separated tag list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tags(Vec<u32>);

impl FromStr for Tags {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        client::parse_tags(s).map(Tags)
    }
}

fn parse_cluster_size(s: &str) -> Result<ClusterSize, String> {
    s.parse::<usize>()
        .ok()
        .and_then(ClusterSize::from_nodes)
        .ok_or_else(|| format!("{s:?}: the demo runs 2, 4 or 6 nodes"))
}

fn main() -> ExitCode {
    sospdemo::model::pin_thread_count();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Server { overrides } => {
            sospdemo::server::run(overrides).map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        }
        Command::Client { node, action } => run_client(node, action),
        Command::Demo {
            nodes,
            keep,
            secure,
        } => run_demo(nodes, keep, secure),
        Command::Train {
            out,
            seed,
            task,
            epochs,
            train_per_class,
            test_per_class,
        } => run_train(out, seed, task, epochs, train_per_class, test_per_class),
        Command::Classify { model, photos } => run_classify(model, photos),
        Command::BenchModel {
            models,
            iterations,
            photo,
            batch,
            onnx_python,
        } => run_bench(models, iterations, photo, batch, onnx_python),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sospdemo: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult = Result<(), Box<dyn std::error::Error>>;

fn run_client(node: NodeAddr, action: ClientAction) -> AnyResult {
    println!("Use function tier node: {node}");
    let (code, desc) = match action {
        ClientAction::Inference { tags, photo } => {
            let bytes = client::read_photo(&photo)?;
            let desc = client::inference(&node, &tags.0, &bytes)?;
            println!("photo description:{desc}");
            return Ok(());
        }
        ClientAction::InstallModel {
            tag,
            synset,
            arch,
            weights,
        } => client::install_model_files(&node, tag, &synset, &arch, &weights)?,
        ClientAction::RemoveModel { tag } => client::remove_model(&node, tag)?,
    };
    println!("return code:{code}");
    println!("description:{desc}");
    if code != 0 {
        return Err(format!("the function tier refused the request (code {code}): {desc}").into());
    }
    Ok(())
}

fn run_demo(size: ClusterSize, keep: bool, secure: Option<Security>) -> AnyResult {
    let options = DemoOptions {
        keep_dir: keep,
        secure,
        ..DemoOptions::new(size)?
    };
    let summary = demo::run(&options, &mut std::io::stdout().lock())?;
    if !summary.all_answered() {
        let failed = summary.photos.iter().filter(|p| p.answer.is_err()).count();
        return Err(format!("{failed} photo(s) got no answer").into());
    }
    Ok(())
}

fn run_train(
    out: PathBuf,
    seed: u64,
    task: Option<String>,
    epochs: usize,
    train_per_class: usize,
    test_per_class: usize,
) -> AnyResult {
    let tasks = match task {
        None => Task::ALL.to_vec(),
        Some(name) => {
            vec![Task::from_name(&name).ok_or(format!("unknown task {name:?} (flowers or pets)"))?]
        }
    };
    let cfg = TrainConfig {
        out_dir: out,
        seed,
        tasks,
        epochs,
        train_per_class,
        test_per_class,
        ..TrainConfig::default()
    };
    let reports = train::train_all(&cfg)?;
    println!(
        "{:<8} {:>9} {:>9} {:>11} {:>8} {:>8}",
        "task", "accuracy", "held-out", "model size", "samples", "seconds"
    );
    for r in &reports {
        println!(
            "{:<8} {:>8.2}% {:>9} {:>9} B {:>8} {:>8.1}",
            r.task.name(),
            100.0 * r.accuracy(),
            r.held_out,
            r.model_bytes,
            r.samples.len(),
            r.seconds
        );
        let classes: Vec<String> = r
            .per_class
            .iter()
            .map(|(l, c, n)| format!("{l} {c}/{n}"))
            .collect();
        println!("         per class: {}", classes.join(", "));
        println!(
            "         sample photos (first {} per class, chosen before training): {}/{} classified correctly",
            r.samples.len() / r.task.labels().len().max(1),
            r.samples_correct,
            r.samples.len()
        );
    }
    Ok(())
}

fn run_classify(model: PathBuf, photos: Vec<PathBuf>) -> AnyResult {
    let classifier = Classifier::load_dir(&model)?;
    for photo in photos {
        let bytes = std::fs::read(&photo).map_err(|e| format!("{}: {e}", photo.display()))?;
        match classifier.classify(&bytes) {
            Ok(g) => println!("{}: {} ({:.3})", photo.display(), g.label, g.score),
            Err(e) => println!("{}: error: {e}", photo.display()),
        }
    }
    Ok(())
}

/// Runs `bench/onnx_compare.py` on a model directory with `python` (the same batch size and
/// thread count as ours) and prints its line.
fn onnx_compare(
    python: &std::path::Path,
    dir: &std::path::Path,
    iterations: usize,
    batch: usize,
) -> AnyResult {
    let script = sospdemo::bundled_dir()
        .join("bench")
        .join("onnx_compare.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(dir)
        .args(["--iterations", &iterations.max(1).to_string()])
        .args(["--batch", &batch.to_string()])
        .args([
            "--threads",
            &candle_core::utils::get_num_threads().to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn median_ms(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    (median, mean, times.first().copied().unwrap_or(f64::NAN))
}

/// Loads a model directory: ours (`synset.txt`, `arch.json`, `weights.safetensors`) or an
/// MXNet export (`synset.txt`, one `*-symbol.json` and one `*.params`).
fn load_model_dir(dir: &Path) -> Result<Classifier, Box<dyn std::error::Error>> {
    if dir.join(sospdemo::model::ARCH_FILE).exists() {
        return Ok(Classifier::load_dir(dir)?);
    }
    let mut symbols = Vec::new();
    let mut params = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with("-symbol.json") {
            symbols.push(path);
        } else if name.ends_with(".params") {
            params.push(path);
        }
    }
    match (symbols.as_slice(), params.as_slice()) {
        ([symbol], [params]) => {
            let synset = dir.join(sospdemo::model::SYNSET_FILE);
            Ok(Classifier::from_files(&ModelFiles::read(
                &synset, symbol, params,
            )?)?)
        }
        _ => Err(format!(
            "{}: expected arch.json, or one *-symbol.json and one *.params (found {} and {})",
            dir.display(),
            symbols.len(),
            params.len()
        )
        .into()),
    }
}

fn run_bench(
    models: Vec<String>,
    iterations: usize,
    photo: Option<PathBuf>,
    batch: usize,
    onnx_python: Option<PathBuf>,
) -> AnyResult {
    let batch = batch.clamp(1, 256);
    let photo = match photo {
        Some(p) => Some(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    for name in models {
        // For `resnet50`, the random weights are written out so that onnxruntime gets them too.
        let mut scratch = None;
        let (classifier, dir) = if name == "resnet50" {
            let arch = Architecture::resnet50(1000);
            let synset = Synset::from_labels((0..1000).map(|i| format!("class{i}")).collect());
            let weights = random_weights(&arch, 1, false)?;
            let dir = if onnx_python.is_some() {
                let tmp = tempfile::tempdir()?;
                ModelFiles::from_parts(&synset, &arch, &weights)?.write_dir(tmp.path())?;
                let path = tmp.path().to_owned();
                scratch = Some(tmp);
                Some(path)
            } else {
                None
            };
            (Classifier::from_parts(arch, synset, &weights)?, dir)
        } else {
            let dir = PathBuf::from(&name);
            (load_model_dir(&dir)?, Some(dir))
        };
        let side = classifier.preprocess().crop as usize;
        let x = Tensor::randn(0f32, 1.0, (batch, 3, side, side), &Device::Cpu)?;
        for _ in 0..2 {
            classifier.logits(&x)?;
        }
        let times: Vec<f64> = (0..iterations.max(1))
            .map(|_| {
                let t = Instant::now();
                classifier
                    .logits(&x)
                    .map(|_| t.elapsed().as_secs_f64() * 1e3 / batch as f64)
            })
            .collect::<Result<_, _>>()?;
        let n = times.len();
        let max = times.iter().copied().fold(f64::NAN, f64::max);
        let (median, mean, min) = median_ms(times);
        println!(
            "{name}: {side}x{side} input, batch {batch}, forward per image median {median:.2} ms, mean {mean:.2} ms, min–max {min:.2}–{max:.2} ms over {n} runs ({} threads)",
            candle_core::utils::get_num_threads()
        );
        match (&onnx_python, &dir, classifier.format()) {
            (Some(python), Some(dir), ModelFormat::ResNet) => {
                onnx_compare(python, dir, iterations, batch)?;
            }
            (Some(_), _, _) => println!("{name}: onnxruntime comparison only for arch.json models"),
            (None, _, _) => {}
        }
        drop(scratch);
        if let Some(bytes) = &photo {
            let times: Vec<f64> = (0..iterations.max(1))
                .map(|_| {
                    let t = Instant::now();
                    classifier
                        .classify(bytes)
                        .map(|_| t.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<Result<_, _>>()?;
            let (median, mean, min) = median_ms(times);
            println!(
                "{name}: classify photo ({} bytes) median {median:.2} ms, mean {mean:.2} ms, min {min:.2} ms",
                bytes.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("sospdemo").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn client_node_is_an_address_or_a_node_id() {
        let Command::Client { node, action } =
            parse(&["client", "3", "inference", "1,2", "rose.jpg"]).unwrap()
        else {
            panic!("not the client command");
        };
        assert_eq!(node, NodeAddr::new("127.0.0.1", 28003));
        let ClientAction::Inference { tags, photo } = action else {
            panic!("not inference");
        };
        assert_eq!(tags, Tags(vec![1, 2]));
        assert_eq!(photo, PathBuf::from("rose.jpg"));

        let Command::Client { node, action } = parse(&[
            "client",
            "10.0.0.7:28001",
            "installmodel",
            "1",
            "synset.txt",
            "arch.json",
            "weights.safetensors",
        ])
        .unwrap() else {
            panic!("not the client command");
        };
        assert_eq!(node, NodeAddr::new("10.0.0.7", 28001));
        assert!(matches!(action, ClientAction::InstallModel { tag: 1, .. }));

        let Command::Client { action, .. } =
            parse(&["client", "127.0.0.1:28000", "removemodel", "2"]).unwrap()
        else {
            panic!("not the client command");
        };
        assert!(matches!(action, ClientAction::RemoveModel { tag: 2 }));
    }

    #[test]
    fn bad_client_arguments_are_refused() {
        for args in [
            &["client", "localhost", "removemodel", "1"][..],
            &["client", "127.0.0.1:99999", "removemodel", "1"],
            &["client", "0", "inference", "1,x", "rose.jpg"],
            &["client", "0", "removemodel", "-1"],
            &["client", "0", "installmodel", "1", "synset.txt"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn demo_sizes() {
        assert!(matches!(
            parse(&["demo"]).unwrap(),
            Command::Demo {
                nodes: ClusterSize::Six,
                keep: false,
                secure: None
            }
        ));
        assert!(matches!(
            parse(&["demo", "--secure"]).unwrap(),
            Command::Demo {
                secure: Some(Security::Certificate),
                ..
            }
        ));
        assert!(matches!(
            parse(&["demo", "--secure", "secret"]).unwrap(),
            Command::Demo {
                secure: Some(Security::Secret),
                ..
            }
        ));
        assert!(parse(&["demo", "--secure", "tls"]).is_err());
        assert!(matches!(
            parse(&["demo", "--nodes", "2"]).unwrap(),
            Command::Demo {
                nodes: ClusterSize::Two,
                ..
            }
        ));
        assert!(parse(&["demo", "--nodes", "3"]).is_err());
    }
}
