//! Making the bundled models: procedural photos ([`generate_photo`]), a seeded training loop on
//! the CPU with candle, a held-out evaluation through the real inference path ([`Classifier`]
//! loaded from the saved files; recorded next to the model as [`EVALUATION_FILE`]), and sample
//! photos whose names start with their true label.
//!
//! The sample photos are chosen by a fixed rule before the model sees them: the first
//! `samples_per_class` photos of each class in the sample stream. The model is not consulted,
//! so how many of them it gets right is a measurement, not a consequence of the choice.
//!
//! Everything is a function of [`TrainConfig::seed`]: photo `i` of a split is drawn from its own
//! random stream, so the data does not depend on how many threads draw it. This module writes
//! only under [`TrainConfig::out_dir`].

mod canvas;
mod net;
mod tasks;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use image::codecs::jpeg::JpegEncoder;

pub use tasks::Task;

use crate::model::rng::SplitMix64;
use crate::model::{
    random_weights, Architecture, BlockKind, Classifier, ModelError, ModelFiles, Preprocess, Synset,
};
use net::TrainNet;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Building, running or saving the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor operation failed.
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A photo could not be encoded.
    #[error("cannot encode a photo: {0}")]
    Encode(#[from] image::ImageError),
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid training configuration: {0}")]
    Config(String),
}

/// Which models to train, with how much data, and where to put them.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Root of the output: models go to `<out_dir>/models/<task>/`, sample photos to
    /// `<out_dir>/photos/<task>/`.
    pub out_dir: PathBuf,
    /// Seed of everything: photos, initial weights, batch order.
    pub seed: u64,
    /// Tasks to train.
    pub tasks: Vec<Task>,
    /// Training photos per class.
    pub train_per_class: usize,
    /// Held-out photos per class for the reported accuracy.
    pub test_per_class: usize,
    /// Passes over the training photos.
    pub epochs: usize,
    /// Photos per optimisation step.
    pub batch_size: usize,
    /// Peak learning rate of AdamW (one warm-up epoch, then cosine decay to zero).
    pub learning_rate: f64,
    /// Side of the generated photos in pixels.
    pub photo_size: u32,
    /// Sample photos written per class.
    pub samples_per_class: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            out_dir: crate::bundled_dir(),
            seed: 2019,
            tasks: Task::ALL.to_vec(),
            train_per_class: 600,
            test_per_class: 200,
            epochs: 6,
            batch_size: 50,
            learning_rate: 4e-3,
            photo_size: 128,
            samples_per_class: 2,
        }
    }
}

/// What training one task produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The task.
    pub task: Task,
    /// Held-out photos classified correctly.
    pub correct: usize,
    /// Held-out photos.
    pub held_out: usize,
    /// Per class: label, correct, total.
    pub per_class: Vec<(String, usize, usize)>,
    /// Bytes of the three model files together.
    pub model_bytes: usize,
    /// Directory of the model.
    pub model_dir: PathBuf,
    /// Sample photos written.
    pub samples: Vec<PathBuf>,
    /// Sample photos the model classifies correctly (measured after they were chosen).
    pub samples_correct: usize,
    /// Wall-clock seconds spent (data, training, evaluation).
    pub seconds: f64,
    /// Mean training loss of the last epoch.
    pub final_loss: f32,
}

impl TrainReport {
    /// Held-out accuracy in [0, 1].
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.held_out.max(1) as f64
    }
}

/// File name, inside a model's directory, of its held-out evaluation ([`HeldOutEvaluation`]).
pub const EVALUATION_FILE: &str = "evaluation.json";

/// How a model did on held-out photos, as recorded next to it by training.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldOutEvaluation {
    /// Seed of the photo streams (the held-out photos are `0..held_out` of their split).
    pub seed: u64,
    /// Held-out photos classified.
    pub held_out: usize,
    /// Of which classified correctly.
    pub correct: usize,
    /// Per class: label, correct, total.
    pub per_class: Vec<(String, usize, usize)>,
}

impl HeldOutEvaluation {
    /// Held-out accuracy in [0, 1].
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.held_out.max(1) as f64
    }

    /// Reads `<model_dir>/evaluation.json`; `None` if the model has no recorded evaluation.
    pub fn read(model_dir: &Path) -> Result<Option<Self>, TrainError> {
        let path = model_dir.join(EVALUATION_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TrainError::Io {
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TrainError::Io { path, source }),
        }
    }

    /// Writes `<model_dir>/evaluation.json`.
    pub fn write(&self, model_dir: &Path) -> Result<(), TrainError> {
        let path = model_dir.join(EVALUATION_FILE);
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| TrainError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        std::fs::write(&path, json).map_err(|source| TrainError::Io { path, source })
    }
}

/// The small ResNet of the bundled models: basic blocks in three stages of widths 16, 32, 64,
/// a 3×3 stride-2 stem with max pool, 64×64 input cropped from the photo resized to 72.
pub fn bundled_architecture(task: Task) -> Architecture {
    Architecture {
        family: "resnet".into(),
        block: BlockKind::Basic,
        layers: vec![1, 1, 1],
        widths: vec![16, 32, 64],
        stem_width: 16,
        stem_kernel: 3,
        stem_stride: 2,
        stem_pool: true,
        num_classes: task.labels().len(),
        input_size: 64,
        resize_size: Some(72),
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    }
}

/// The random streams of the generated photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Photos the model learns from.
    Train,
    /// Photos the accuracy is measured on.
    HeldOut,
    /// Candidates for the bundled sample photos.
    Sample,
}

impl Split {
    fn id(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::HeldOut => 2,
            Split::Sample => 3,
        }
    }
}

/// Photo `index` of a split as a JPEG file: its class is `index % classes`. The same
/// arguments always give the same bytes.
pub fn generate_photo(
    task: Task,
    split: Split,
    index: usize,
    seed: u64,
    size: u32,
) -> Result<(usize, Vec<u8>), TrainError> {
    let class = index % task.labels().len();
    let stream = (task.id() << 48) | (split.id() << 40) | index as u64;
    let mut rng = SplitMix64::derive(seed, stream);
    let img = task.draw(class, size, &mut rng);
    let quality = 80 + rng.below(16) as u8;
    let mut buf = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut buf), quality).encode_image(&img)?;
    Ok((class, buf))
}

/// Generates photos `0..count` of a split and preprocesses them: `[count, 3, s, s]` inputs and
/// their `u32` classes. Uses every core; the result does not depend on how many there are.
fn dataset(
    task: Task,
    split: Split,
    count: usize,
    cfg: &TrainConfig,
    pre: &Preprocess,
) -> Result<(Tensor, Tensor), TrainError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let work = |t: usize| -> Result<Vec<(usize, u32, Tensor)>, TrainError> {
        (t..count)
            .step_by(threads)
            .map(|i| {
                let (class, jpeg) = generate_photo(task, split, i, cfg.seed, cfg.photo_size)?;
                Ok((i, class as u32, pre.photo_to_tensor(&jpeg)?))
            })
            .collect()
    };
    let mut all: Vec<(usize, u32, Tensor)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || work(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Config("a photo thread panicked".into())))
            })
            .collect::<Result<Vec<_>, _>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    all.sort_by_key(|(i, _, _)| *i);
    let labels: Vec<u32> = all.iter().map(|(_, c, _)| *c).collect();
    let inputs: Vec<Tensor> = all.into_iter().map(|(_, _, t)| t).collect();
    Ok((
        Tensor::stack(&inputs, 0)?,
        Tensor::from_vec(labels, count, &Device::Cpu)?,
    ))
}

fn learning_rate(cfg: &TrainConfig, step: usize, steps_per_epoch: usize, total: usize) -> f64 {
    let warm = steps_per_epoch.max(1);
    if step < warm {
        cfg.learning_rate * (step + 1) as f64 / warm as f64
    } else {
        let t = (step - warm) as f64 / (total.saturating_sub(warm)).max(1) as f64;
        cfg.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// Trains the model of one task, writes it and its sample photos, and measures it.
pub fn train_task(task: Task, cfg: &TrainConfig) -> Result<TrainReport, TrainError> {
    let start = Instant::now();
    if cfg.batch_size == 0 || cfg.train_per_class == 0 || cfg.test_per_class == 0 {
        return Err(TrainError::Config(
            "batch size and photo counts must be positive".into(),
        ));
    }
    let arch = bundled_architecture(task);
    let labels = task.labels();
    let synset = Synset::from_labels(labels.iter().map(|s| s.to_string()).collect());
    let pre = Preprocess::for_architecture(&arch);

    let n_train = cfg.train_per_class * labels.len();
    let (train_x, train_y) = dataset(task, Split::Train, n_train, cfg, &pre)?;
    tracing::info!(
        task = task.name(),
        photos = n_train,
        secs = start.elapsed().as_secs_f32(),
        "training photos drawn"
    );

    let init = random_weights(&arch, cfg.seed ^ task.id(), true)?;
    let mut net = TrainNet::new(&arch, &init)?;
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: 5e-4,
            ..ParamsAdamW::default()
        },
    )?;
    let steps_per_epoch = n_train / cfg.batch_size;
    let total = steps_per_epoch * cfg.epochs;
    let mut order: Vec<u32> = (0..n_train as u32).collect();
    let mut rng = SplitMix64::derive(cfg.seed, (task.id() << 48) | 0xBA7C);
    let mut step = 0;
    let mut final_loss = f32::NAN;
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let (mut loss_sum, mut hits) = (0f32, 0usize);
        for b in 0..steps_per_epoch {
            let idx = &order[b * cfg.batch_size..(b + 1) * cfg.batch_size];
            let idx = Tensor::from_slice(idx, idx.len(), &Device::Cpu)?;
            let x = train_x.index_select(&idx, 0)?;
            let y = train_y.index_select(&idx, 0)?;
            let logits = net.forward_train(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.set_learning_rate(learning_rate(cfg, step, steps_per_epoch, total));
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()?;
            hits += logits
                .argmax(1)?
                .eq(&y)?
                .to_dtype(DType::U32)?
                .sum_all()?
                .to_scalar::<u32>()? as usize;
            step += 1;
        }
        final_loss = loss_sum / steps_per_epoch.max(1) as f32;
        tracing::info!(
            task = task.name(),
            epoch = epoch + 1,
            loss = final_loss,
            train_acc = hits as f32 / (steps_per_epoch * cfg.batch_size).max(1) as f32,
            secs = start.elapsed().as_secs_f32(),
            "epoch done"
        );
    }
    drop((train_x, train_y));

    // Save, then measure the saved model exactly as the service will load it.
    let files = ModelFiles::from_parts(&synset, &arch, &net.weights())?;
    let model_dir = cfg.out_dir.join("models").join(task.name());
    files.write_dir(&model_dir)?;
    let classifier = Classifier::from_files(&ModelFiles::read_dir(&model_dir)?)?;

    let evaluation = evaluate_held_out(task, cfg, &classifier)?;
    evaluation.write(&model_dir)?;
    let samples = write_samples(task, cfg)?;
    let mut samples_correct = 0;
    for path in &samples {
        let jpeg = std::fs::read(path).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        let truth = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .unwrap_or_default();
        if classifier.classify(&jpeg)?.label == truth {
            samples_correct += 1;
        }
    }
    let report = TrainReport {
        task,
        correct: evaluation.correct,
        held_out: evaluation.held_out,
        per_class: evaluation.per_class,
        model_bytes: files.len(),
        model_dir,
        samples,
        samples_correct,
        seconds: start.elapsed().as_secs_f64(),
        final_loss,
    };
    tracing::info!(
        task = task.name(),
        accuracy = report.accuracy(),
        held_out = report.held_out,
        "model measured"
    );
    Ok(report)
}

/// Classifies held-out photos `0..test_per_class × classes` of the task with `classifier`.
pub fn evaluate_held_out(
    task: Task,
    cfg: &TrainConfig,
    classifier: &Classifier,
) -> Result<HeldOutEvaluation, TrainError> {
    let labels = task.labels();
    let n_test = cfg.test_per_class * labels.len();
    let (test_x, test_y) = dataset(task, Split::HeldOut, n_test, cfg, classifier.preprocess())?;
    let truth = test_y.to_vec1::<u32>()?;
    let mut per_class: Vec<(String, usize, usize)> =
        labels.iter().map(|l| (l.to_string(), 0, 0)).collect();
    let mut correct = 0;
    for start_i in (0..n_test).step_by(100) {
        let len = 100.min(n_test - start_i);
        let guesses = classifier.classify_batch(&test_x.narrow(0, start_i, len)?)?;
        for (g, &t) in guesses.iter().zip(&truth[start_i..start_i + len]) {
            let row = &mut per_class[t as usize];
            row.2 += 1;
            if g.class == t as usize {
                row.1 += 1;
                correct += 1;
            }
        }
    }
    Ok(HeldOutEvaluation {
        seed: cfg.seed,
        held_out: n_test,
        correct,
        per_class,
    })
}

/// Writes `samples_per_class` photos per class named `<label>-<k>.jpg`: photos
/// `0..samples_per_class × classes` of the sample stream (photo `i` is of class
/// `i % classes`). The rule is fixed before any model exists; no photo is passed over.
pub fn write_samples(task: Task, cfg: &TrainConfig) -> Result<Vec<PathBuf>, TrainError> {
    let dir = cfg.out_dir.join("photos").join(task.name());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
        path: dir.clone(),
        source,
    })?;
    let labels = task.labels();
    let mut paths = Vec::new();
    for index in 0..cfg.samples_per_class * labels.len() {
        let (class, jpeg) = generate_photo(task, Split::Sample, index, cfg.seed, cfg.photo_size)?;
        let k = index / labels.len() + 1;
        let path = dir.join(format!("{}-{k}.jpg", labels[class]));
        std::fs::write(&path, &jpeg).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        paths.push(path);
    }
    Ok(paths)
}

/// Trains every task of the configuration in turn.
pub fn train_all(cfg: &TrainConfig) -> Result<Vec<TrainReport>, TrainError> {
    cfg.tasks.iter().map(|&t| train_task(t, cfg)).collect()
}

/// The model directory of a task under an output root.
pub fn model_dir(out_dir: &Path, task: Task) -> PathBuf {
    out_dir.join("models").join(task.name())
}
