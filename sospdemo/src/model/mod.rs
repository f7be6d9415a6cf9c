//! The inference engine: a ResNet classifier on the CPU with candle.
//!
//! A model is three files, like the original sospdemo's: a **synset** (one label per line, line
//! `i` naming class `i`), an **architecture** (JSON, [`Architecture`]) and **weights**
//! (safetensors, with torchvision's parameter names, so an ImageNet ResNet50 exported from
//! torchvision loads unchanged). [`ModelFiles`] holds the three as bytes, which is the form a
//! model travels and is replicated in; [`Classifier::from_files`] checks them and builds the
//! network; [`Classifier::classify`] turns a JPEG or PNG photo into a [`Guess`].
//!
//! Nothing here panics on bad input: every way a file can be wrong is a [`ModelError`].
//! This module owns no threads and no state beyond the loaded tensors; a [`Classifier`] is
//! `Send + Sync` and can be shared between request handlers.

mod arch;
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
    #[error("the architecture has {classes} classes but the synset has {labels} labels")]
    ClassCountMismatch {
        /// Classes of the architecture (rows of `fc.weight`).
        classes: usize,
        /// Lines of the synset.
        labels: usize,
    },
    /// The photo is not a decodable JPEG or PNG file (wrong format, corrupt or truncated).
    #[error("the photo cannot be decoded: {0}")]
    NotAPhoto(String),
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
    /// The architecture: JSON.
    pub architecture: Vec<u8>,
    /// The weights: safetensors.
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

/// A loaded model, ready to classify photos.
#[derive(Debug, Clone)]
pub struct Classifier {
    arch: Architecture,
    synset: Synset,
    preprocess: Preprocess,
    net: FoldedResNet,
}

impl Classifier {
    /// Checks the three files against each other and builds the network.
    pub fn from_files(files: &ModelFiles) -> Result<Self, ModelError> {
        Self::from_bytes(&files.synset, &files.architecture, &files.weights)
    }

    /// Same as [`from_files`](Self::from_files) for borrowed bytes.
    pub fn from_bytes(
        synset: &[u8],
        architecture: &[u8],
        weights: &[u8],
    ) -> Result<Self, ModelError> {
        let synset = Synset::parse(synset)?;
        let arch = Architecture::from_json(architecture)?;
        check_class_count(&arch, &synset)?;
        let weights = load_weights(&arch, weights)?;
        Self::from_parts(arch, synset, &weights)
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
            arch,
            synset,
            preprocess,
            net,
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
        let probs = resnet::softmax(&self.net.forward(batch)?)?;
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

    /// Logits `[n, classes]` of a batch of preprocessed inputs.
    pub fn logits(&self, batch: &Tensor) -> Result<Tensor, ModelError> {
        self.net.forward(batch)
    }

    /// The photo transform this model expects.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
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
