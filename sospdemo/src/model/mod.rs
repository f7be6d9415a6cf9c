//! The inference engine: CNN classifiers on the CPU with candle.
//!
//! A model is three files, like the original sospdemo's: a **synset** (one label per line, line
//! `i` naming class `i`), an **architecture** and **weights**, in one of two formats:
//!
//! * ours: `arch.json` ([`Architecture`], a ResNet's depth and widths) and
//!   `weights.safetensors` (torchvision's parameter names, so an ImageNet ResNet50 exported
//!   from torchvision loads unchanged);
//! * MXNet's, unchanged ([`mxnet`]): the `*-symbol.json` graph and the `*.params` arrays that
//!   Gluon's `export()` writes, as in the original tutorial.
//!
//! The format is recognised from the files' contents ([`FileKind::sniff`]), never from their
//! names, so either kind travels and is replicated as the same three byte strings
//! ([`ModelFiles`]). [`Classifier::from_files`] checks them and builds the network;
//! [`Classifier::classify`] turns a JPEG or PNG photo into a [`Guess`].
//!
//! Nothing here panics on bad input: every way a file can be wrong is a [`ModelError`].
//! This module owns no threads and no state beyond the loaded tensors; a [`Classifier`] is
//! `Send + Sync` and can be shared between request handlers.

mod arch;
mod kernels;
pub mod mxnet;
mod photo;
mod resnet;
pub(crate) mod rng;
mod weights;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

pub use arch::{Architecture, BlockKind, ParamRole, ParamSpec, BN_EPS};
pub(crate) use arch::{ConvSpec, Layout};
pub use mxnet::{MxNetError, MxNetModel};
pub use photo::{decode_photo, Preprocess, ResizeStyle, MAX_PHOTO_SIDE};
pub use resnet::FoldedResNet;
pub(crate) use resnet::{forward, LayerOps};
pub use weights::{load_weights, random_weights, save_weights, Weights};

/// Fixes the number of threads candle's matrix products use, once, to the number candle would
/// find itself. Without `RAYON_NUM_THREADS` set, candle counts the physical cores before every
/// matrix product, which on Linux machines that do not report core capacities means parsing
/// `/proc/cpuinfo` (about 40 µs; a ResNet50 forward runs about a hundred products). The same
/// count also sizes rayon's pool, which runs the rest of the inference kernels.
///
/// Call it first thing in `main`, before any thread is started: it sets an environment
/// variable. Does nothing if `RAYON_NUM_THREADS` is already set.
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// File name of the synset inside a model directory.
pub const SYNSET_FILE: &str = "synset.txt";
/// File name of the architecture inside a model directory.
pub const ARCH_FILE: &str = "arch.json";
/// File name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// Everything that can be wrong with a model or a photo.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The synset has no labels.
    #[error("the synset is empty: it must have one label per line")]
    EmptySynset,
    /// The synset is not UTF-8 text or has a blank line between labels.
    #[error("the synset is malformed: {0}")]
    BadSynset(String),
    /// The architecture file is not valid JSON or misses a required field.
    #[error("the architecture file is not a valid description: {0}")]
    ArchitectureJson(#[source] serde_json::Error),
    /// The architecture file describes a network that cannot be built.
    #[error("the architecture is invalid: {0}")]
    InvalidArchitecture(String),
    /// The weights file is not a readable safetensors file.
    #[error("the weights file is corrupt or unreadable: {0}")]
    CorruptWeights(String),
    /// The weights file lacks a tensor the architecture needs.
    #[error("the weights file has no tensor `{name}`")]
    MissingParameter {
        /// torchvision name of the tensor.
        name: String,
    },
    /// A tensor of the weights file has the wrong shape.
    #[error("tensor `{name}` has shape {found:?} but the architecture needs {expected:?}")]
    ShapeMismatch {
        /// torchvision name of the tensor.
        name: String,
        /// Shape implied by the architecture.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a type that is not a float.
    #[error("tensor `{name}` is stored as {dtype}; only f32, f16, bf16 and f64 are accepted")]
    UnsupportedDtype {
        /// torchvision name of the tensor.
        name: String,
        /// The stored type.
        dtype: String,
    },
    /// The network's class count differs from the number of synset labels.
    #[error(
        "the network's output layer has {classes} classes but the synset has {labels} labels; \
         the synset needs one line per class, in class order (is it this model's synset.txt?)"
    )]
    ClassCountMismatch {
        /// Classes of the architecture (rows of `fc.weight`).
        classes: usize,
        /// Lines of the synset.
        labels: usize,
    },
    /// The photo is not a decodable JPEG or PNG file (wrong format, corrupt or truncated).
    #[error("the photo cannot be decoded: {0}; send a JPEG or PNG image file")]
    NotAPhoto(String),
    /// A model file is of the wrong kind for its place (files swapped, or an architecture of
    /// one format with weights of the other).
    #[error("the {role} file is {found}; {advice}")]
    WrongFile {
        /// Which of the three files: `synset`, `architecture` or `weights`.
        role: &'static str,
        /// What it actually is.
        found: FileKind,
        /// What to give instead.
        advice: String,
    },
    /// The MXNet model (symbol and `.params`) cannot be loaded.
    #[error("the MXNet model cannot be loaded: {0}")]
    MxNet(#[source] Box<MxNetError>),
    /// The photo's dimensions cannot be classified (empty or absurdly elongated).
    #[error("the photo is {width}×{height} pixels: too elongated or empty to classify")]
    PhotoShape {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A tensor operation failed (a bug rather than bad input).
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl From<MxNetError> for ModelError {
    fn from(e: MxNetError) -> Self {
        Self::MxNet(Box::new(e))
    }
}

/// What a model file looks like, judged from its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An MXNet `.params` file (NDArray-list magic).
    MxNetParams,
    /// A safetensors file (a length-prefixed JSON header).
    Safetensors,
    /// An MXNet symbol file (JSON with `nodes` and `heads`).
    MxNetSymbol,
    /// Any other JSON object, such as our `arch.json`.
    Json,
    /// A JPEG or PNG image.
    Image,
    /// UTF-8 text that is none of the above (a synset, for instance).
    Text,
    /// Anything else.
    Binary,
}

impl FileKind {
    /// Classifies a file by its first bytes and, for JSON, its top-level keys.
    pub fn sniff(bytes: &[u8]) -> Self {
        if mxnet::looks_like_params(bytes) {
            return Self::MxNetParams;
        }
        if looks_like_safetensors(bytes) {
            return Self::Safetensors;
        }
        if bytes.starts_with(&[0xFF, 0xD8]) || bytes.starts_with(b"\x89PNG") {
            return Self::Image;
        }
        let text = bytes.trim_ascii_start();
        if text.starts_with(b"{") {
            if mxnet::looks_like_symbol(bytes) {
                return Self::MxNetSymbol;
            }
            if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() {
                return Self::Json;
            }
        }
        if std::str::from_utf8(bytes).is_ok() {
            Self::Text
        } else {
            Self::Binary
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MxNetParams => "an MXNet .params file",
            Self::Safetensors => "a safetensors weights file",
            Self::MxNetSymbol => "an MXNet symbol file (*-symbol.json)",
            Self::Json => "a JSON architecture file (arch.json)",
            Self::Image => "an image",
            Self::Text => "a text file",
            Self::Binary => "a binary file of unknown format",
        })
    }
}

/// Whether `bytes` start with a safetensors header: a little-endian length and a JSON object
/// of that length.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    let Some(head) = bytes.get(..8) else {
        return false;
    };
    let mut word = [0u8; 8];
    word.copy_from_slice(head);
    let n = u64::from_le_bytes(word);
    n >= 2 && n <= (bytes.len() - 8) as u64 && bytes.get(8) == Some(&b'{')
}

/// The argument order of `installmodel`, for error messages.
const FILE_ORDER: &str = "installmodel takes <synset.txt> then <arch.json> <weights.safetensors> \
                          for our models or <model-symbol.json> <model-0000.params> for MXNet's";

/// The two model formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// `arch.json` and `weights.safetensors`.
    ResNet,
    /// MXNet's symbol JSON and `.params`.
    MxNet,
}

impl ModelFormat {
    /// Decides the format of a model from its three files, or says which file is out of place
    /// and what to give instead.
    pub fn detect(synset: &[u8], architecture: &[u8], weights: &[u8]) -> Result<Self, ModelError> {
        let wrong = |role, found, advice: String| {
            Err(ModelError::WrongFile {
                role,
                found,
                advice,
            })
        };
        let s = FileKind::sniff(synset);
        if matches!(
            s,
            FileKind::MxNetParams
                | FileKind::Safetensors
                | FileKind::MxNetSymbol
                | FileKind::Json
                | FileKind::Image
        ) {
            return wrong(
                "synset",
                s,
                format!("it must be a text file with one label per line ({FILE_ORDER})"),
            );
        }
        let a = FileKind::sniff(architecture);
        let w = FileKind::sniff(weights);
        match (a, w) {
            (FileKind::MxNetSymbol, FileKind::MxNetParams) => Ok(Self::MxNet),
            (FileKind::Json, FileKind::Safetensors) => Ok(Self::ResNet),
            (FileKind::MxNetSymbol, FileKind::Safetensors) => wrong(
                "weights",
                w,
                "the architecture is an MXNet symbol file, so the weights must be the .params \
                 file exported with it"
                    .into(),
            ),
            (FileKind::Json, FileKind::MxNetParams) => wrong(
                "weights",
                w,
                "the architecture is an arch.json, which goes with weights.safetensors; for an \
                 MXNet model give its *-symbol.json instead of arch.json"
                    .into(),
            ),
            (FileKind::MxNetParams | FileKind::Safetensors, _) => wrong(
                "architecture",
                a,
                format!("the files seem to be out of order: {FILE_ORDER}"),
            ),
            (_, FileKind::MxNetSymbol | FileKind::Json) => wrong(
                "weights",
                w,
                format!("the files seem to be out of order: {FILE_ORDER}"),
            ),
            // An MXNet symbol with unreadable params, or anything with unreadable weights:
            // let the format's own loader say what is wrong.
            (FileKind::MxNetSymbol, _) => Ok(Self::MxNet),
            (_, FileKind::MxNetParams) => Ok(Self::MxNet),
            _ => Ok(Self::ResNet),
        }
    }
}

/// The labels of a model's classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synset {
    labels: Vec<String>,
}

impl Synset {
    /// Parses a synset file: UTF-8, one label per line (surrounding whitespace and `\r`
    /// trimmed); trailing blank lines are ignored, a blank line between labels is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ModelError::BadSynset(format!("not UTF-8 text ({e})")))?;
        let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        while labels.last().is_some_and(|l| l.is_empty()) {
            labels.pop();
        }
        if labels.is_empty() {
            return Err(ModelError::EmptySynset);
        }
        if let Some(i) = labels.iter().position(|l| l.is_empty()) {
            return Err(ModelError::BadSynset(format!(
                "line {} is blank; every class needs a label",
                i + 1
            )));
        }
        Ok(Self { labels })
    }

    /// A synset from labels.
    pub fn from_labels(labels: Vec<String>) -> Self {
        Self { labels }
    }

    /// The labels, class 0 first.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The file contents: one label per line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = self.labels.join("\n");
        s.push('\n');
        s.into_bytes()
    }
}

/// The three files of a model, as bytes: the form in which a model is uploaded, replicated and
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFiles {
    /// The synset: one label per line.
    pub synset: Vec<u8>,
    /// The architecture: our `arch.json` or an MXNet symbol file.
    pub architecture: Vec<u8>,
    /// The weights: safetensors, or an MXNet `.params` file.
    pub weights: Vec<u8>,
}

impl ModelFiles {
    /// Reads `synset.txt`, `arch.json` and `weights.safetensors` from a directory.
    pub fn read_dir(dir: &Path) -> Result<Self, ModelError> {
        Self::read(
            &dir.join(SYNSET_FILE),
            &dir.join(ARCH_FILE),
            &dir.join(WEIGHTS_FILE),
        )
    }

    /// Reads the three files from wherever they are.
    pub fn read(synset: &Path, architecture: &Path, weights: &Path) -> Result<Self, ModelError> {
        Ok(Self {
            synset: read_file(synset)?,
            architecture: read_file(architecture)?,
            weights: read_file(weights)?,
        })
    }

    /// Writes the three files into a directory, creating it if needed.
    pub fn write_dir(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for (name, bytes) in [
            (SYNSET_FILE, &self.synset),
            (ARCH_FILE, &self.architecture),
            (WEIGHTS_FILE, &self.weights),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|source| ModelError::Io { path, source })?;
        }
        Ok(())
    }

    /// Bundles a synset, an architecture and weights.
    pub fn from_parts(
        synset: &Synset,
        arch: &Architecture,
        weights: &Weights,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            synset: synset.to_bytes(),
            architecture: arch.to_json(),
            weights: save_weights(weights)?,
        })
    }

    /// Total size of the three files in bytes.
    pub fn len(&self) -> usize {
        self.synset.len() + self.architecture.len() + self.weights.len()
    }

    /// Whether all three files are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_class_count(arch: &Architecture, synset: &Synset) -> Result<(), ModelError> {
    if arch.num_classes != synset.labels().len() {
        return Err(ModelError::ClassCountMismatch {
            classes: arch.num_classes,
            labels: synset.labels().len(),
        });
    }
    Ok(())
}

/// Checks that in-memory weights have every tensor of `arch` with the right shape.
fn check_weights(arch: &Architecture, weights: &Weights) -> Result<(), ModelError> {
    for spec in arch.parameters() {
        let t = weights
            .get(&spec.name)
            .ok_or_else(|| ModelError::MissingParameter {
                name: spec.name.clone(),
            })?;
        if t.dims() != spec.shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                name: spec.name,
                expected: spec.shape,
                found: t.dims().to_vec(),
            });
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })
}

/// What a classifier sees in a photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    /// The most likely class's label.
    pub label: String,
    /// Its index in the synset.
    pub class: usize,
    /// Its softmax probability, in [0, 1].
    pub score: f32,
}

/// The network of a loaded model.
#[derive(Debug, Clone)]
enum Network {
    /// One of ours: a ResNet described by an [`Architecture`].
    ResNet {
        arch: Box<Architecture>,
        net: FoldedResNet,
    },
    /// An MXNet graph.
    MxNet(MxNetModel),
}

/// A loaded model, ready to classify photos.
#[derive(Debug, Clone)]
pub struct Classifier {
    synset: Synset,
    preprocess: Preprocess,
    network: Network,
}

impl Classifier {
    /// Checks the three files against each other and builds the network.
    pub fn from_files(files: &ModelFiles) -> Result<Self, ModelError> {
        Self::from_bytes(&files.synset, &files.architecture, &files.weights)
    }

    /// Same as [`from_files`](Self::from_files) for borrowed bytes. The format (ours or
    /// MXNet's) is recognised from the contents ([`ModelFormat::detect`]).
    pub fn from_bytes(
        synset: &[u8],
        architecture: &[u8],
        weights: &[u8],
    ) -> Result<Self, ModelError> {
        let format = ModelFormat::detect(synset, architecture, weights)?;
        let synset = Synset::parse(synset)?;
        match format {
            ModelFormat::ResNet => {
                let arch = Architecture::from_json(architecture)?;
                check_class_count(&arch, &synset)?;
                let weights = load_weights(&arch, weights)?;
                Self::from_parts(arch, synset, &weights)
            }
            ModelFormat::MxNet => {
                Self::from_mxnet(synset, MxNetModel::from_bytes(architecture, weights)?)
            }
        }
    }

    /// A classifier over a loaded MXNet network; its class count must match the synset.
    pub fn from_mxnet(synset: Synset, model: MxNetModel) -> Result<Self, ModelError> {
        if model.num_classes() != synset.labels().len() {
            return Err(ModelError::ClassCountMismatch {
                classes: model.num_classes(),
                labels: synset.labels().len(),
            });
        }
        let preprocess = Preprocess::mxnet(model.input_side());
        tracing::debug!(
            classes = model.num_classes(),
            side = model.input_side(),
            "MXNet model loaded"
        );
        Ok(Self {
            synset,
            preprocess,
            network: Network::MxNet(model),
        })
    }

    /// Loads the model in a directory holding `synset.txt`, `arch.json` and
    /// `weights.safetensors`.
    pub fn load_dir(dir: &Path) -> Result<Self, ModelError> {
        Self::from_files(&ModelFiles::read_dir(dir)?)
    }

    /// Builds a classifier from parsed parts; the weights must match the architecture.
    pub fn from_parts(
        arch: Architecture,
        synset: Synset,
        weights: &Weights,
    ) -> Result<Self, ModelError> {
        arch.validate()?;
        check_class_count(&arch, &synset)?;
        check_weights(&arch, weights)?;
        let net = FoldedResNet::new(arch.layout(), weights)?;
        let preprocess = Preprocess::for_architecture(&arch);
        tracing::debug!(classes = arch.num_classes, blocks = ?arch.layers, "model loaded");
        Ok(Self {
            synset,
            preprocess,
            network: Network::ResNet {
                arch: Box::new(arch),
                net,
            },
        })
    }

    /// Classifies a JPEG or PNG photo.
    pub fn classify(&self, photo: &[u8]) -> Result<Guess, ModelError> {
        let x = self.preprocess.photo_to_tensor(photo)?;
        let mut guesses = self.classify_batch(&x.unsqueeze(0)?)?;
        guesses
            .pop()
            .ok_or_else(|| ModelError::Tensor(candle_core::Error::Msg("empty batch".into())))
    }

    /// Classifies a batch of preprocessed inputs `[n, 3, side, side]` (see
    /// [`preprocess`](Self::preprocess)); one guess per input, in order.
    pub fn classify_batch(&self, batch: &Tensor) -> Result<Vec<Guess>, ModelError> {
        let probs = self.probabilities(batch)?;
        let best = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let rows = probs.to_vec2::<f32>()?;
        best.into_iter()
            .zip(rows)
            .map(|(class, row)| {
                let class = class as usize;
                let label = self.synset.labels().get(class).cloned().ok_or_else(|| {
                    ModelError::Tensor(candle_core::Error::Msg(format!(
                        "class {class} out of range"
                    )))
                })?;
                Ok(Guess {
                    label,
                    class,
                    score: row.get(class).copied().unwrap_or(0.0),
                })
            })
            .collect()
    }

    /// Class probabilities `[n, classes]` of a batch of preprocessed inputs.
    pub fn probabilities(&self, batch: &Tensor) -> Result<Tensor, ModelError> {
        match &self.network {
            Network::ResNet { net, .. } => Ok(resnet::softmax(&net.forward(batch)?)?),
            Network::MxNet(m) => Ok(m.probabilities(batch)?),
        }
    }

    /// The network's output `[n, classes]` for a batch of preprocessed inputs: logits, except
    /// for an MXNet graph that ends in a softmax, whose output is already probabilities.
    pub fn logits(&self, batch: &Tensor) -> Result<Tensor, ModelError> {
        match &self.network {
            Network::ResNet { net, .. } => net.forward(batch),
            Network::MxNet(m) => Ok(m.forward(batch)?),
        }
    }

    /// The photo transform this model expects.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The format the model was given in.
    pub fn format(&self) -> ModelFormat {
        match self.network {
            Network::ResNet { .. } => ModelFormat::ResNet,
            Network::MxNet(_) => ModelFormat::MxNet,
        }
    }

    /// The architecture, for one of our models (`None` for an MXNet model).
    pub fn architecture(&self) -> Option<&Architecture> {
        match &self.network {
            Network::ResNet { arch, .. } => Some(arch),
            Network::MxNet(_) => None,
        }
    }

    /// The class labels.
    pub fn labels(&self) -> &[String] {
        self.synset.labels()
    }

    /// The device the model runs on (always the CPU).
    pub fn device(&self) -> Device {
        Device::Cpu
    }
}
