//! The architecture file: which ResNet to build, how large its input is, and how a photo is
//! normalised before it enters the network. Also the list of parameters (names and shapes)
//! that an architecture implies, with the names torchvision gives them.

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Epsilon of every batch normalisation (torchvision's default).
pub const BN_EPS: f64 = 1e-5;

/// The residual block a ResNet is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet18/34); a stage's output width is its width.
    Basic,
    /// 1×1, 3×3 (carrying the stride), 1×1 convolutions (ResNet50 and deeper, "v1.5");
    /// a stage's output width is four times its width.
    Bottleneck,
}

impl BlockKind {
    /// Ratio of a block's output channels to its inner width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

fn default_family() -> String {
    "resnet".to_owned()
}
fn default_stem_width() -> usize {
    64
}
fn default_stem_kernel() -> usize {
    7
}
fn default_stem_stride() -> usize {
    2
}
fn default_true() -> bool {
    true
}
fn default_input_size() -> usize {
    224
}
fn default_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}
fn default_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

/// Contents of an architecture file (JSON).
///
/// Only `block`, `layers`, `widths` and `num_classes` are required; the rest defaults to the
/// torchvision ImageNet ResNet: a 7×7 stride-2 stem of 64 channels followed by a 3×3 stride-2
/// max pool, 224×224 input cropped from a photo resized to a shorter side of 256, ImageNet mean
/// and standard deviation. Unknown fields are refused so that a typo does not go unnoticed.
///
/// ```json
/// {"family": "resnet", "block": "bottleneck", "layers": [3, 4, 6, 3],
///  "widths": [64, 128, 256, 512], "num_classes": 1000}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Network family; only `"resnet"` exists.
    #[serde(default = "default_family")]
    pub family: String,
    /// Residual block type.
    pub block: BlockKind,
    /// Number of blocks in each stage (`layer1`, `layer2`, …); ResNet50 has `[3, 4, 6, 3]`.
    pub layers: Vec<usize>,
    /// Inner width of each stage; ResNet50 has `[64, 128, 256, 512]`.
    pub widths: Vec<usize>,
    /// Output channels of the stem convolution `conv1`.
    #[serde(default = "default_stem_width")]
    pub stem_width: usize,
    /// Kernel size of `conv1` (odd; padding is half of it).
    #[serde(default = "default_stem_kernel")]
    pub stem_kernel: usize,
    /// Stride of `conv1`.
    #[serde(default = "default_stem_stride")]
    pub stem_stride: usize,
    /// Whether a 3×3 stride-2 max pool follows the stem.
    #[serde(default = "default_true")]
    pub stem_pool: bool,
    /// Number of classes (rows of `fc.weight`); must equal the synset's line count.
    pub num_classes: usize,
    /// Side of the square network input in pixels.
    #[serde(default = "default_input_size")]
    pub input_size: usize,
    /// Shorter side the photo is resized to before the centre crop; defaults to
    /// `input_size * 8 / 7` (256 for 224).
    #[serde(default)]
    pub resize_size: Option<usize>,
    /// Per-channel (RGB) mean subtracted from pixel values in `[0, 1]`.
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel (RGB) standard deviation the centred values are divided by.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

/// Upper bound on any width or class count, so that a hostile architecture file cannot make
/// the loader allocate absurd amounts before the weights are even looked at.
const MAX_CHANNELS: usize = 1 << 16;
/// Upper bound on blocks per stage.
const MAX_BLOCKS: usize = 256;
/// Upper bound on the input side.
const MAX_INPUT: usize = 2048;

impl Architecture {
    /// torchvision's `resnet50` for `num_classes` classes.
    pub fn resnet50(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Bottleneck, vec![3, 4, 6, 3], num_classes)
    }

    /// torchvision's `resnet18` for `num_classes` classes.
    pub fn resnet18(num_classes: usize) -> Self {
        Self::imagenet(BlockKind::Basic, vec![2, 2, 2, 2], num_classes)
    }

    fn imagenet(block: BlockKind, layers: Vec<usize>, num_classes: usize) -> Self {
        Self {
            family: default_family(),
            block,
            layers,
            widths: vec![64, 128, 256, 512],
            stem_width: 64,
            stem_kernel: 7,
            stem_stride: 2,
            stem_pool: true,
            num_classes,
            input_size: 224,
            resize_size: Some(256),
            mean: default_mean(),
            std: default_std(),
        }
    }

    /// Parses and checks an architecture file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let arch: Self = serde_json::from_slice(bytes).map_err(ModelError::ArchitectureJson)?;
        arch.validate()?;
        Ok(arch)
    }

    /// The architecture as pretty-printed JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain numbers, strings and vectors cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Shorter side of the photo after resizing.
    pub fn resize_side(&self) -> usize {
        self.resize_size.unwrap_or(self.input_size * 8 / 7)
    }

    /// Checks that the numbers describe a network that can be built.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |why: String| Err(ModelError::InvalidArchitecture(why));
        if self.family != "resnet" {
            return bad(format!(
                "unknown family {:?} (only \"resnet\")",
                self.family
            ));
        }
        if self.layers.is_empty() {
            return bad("`layers` is empty: a ResNet needs at least one stage".into());
        }
        if self.layers.len() != self.widths.len() {
            return bad(format!(
                "`layers` has {} stages but `widths` has {}",
                self.layers.len(),
                self.widths.len()
            ));
        }
        if let Some(i) = self.layers.iter().position(|&n| n == 0 || n > MAX_BLOCKS) {
            return bad(format!("stage {} must have 1..={MAX_BLOCKS} blocks", i + 1));
        }
        let widths_ok = self
            .widths
            .iter()
            .chain([&self.stem_width, &self.num_classes])
            .all(|&w| (1..=MAX_CHANNELS).contains(&w));
        if !widths_ok {
            return bad(format!(
                "widths, `stem_width` and `num_classes` must be in 1..={MAX_CHANNELS}"
            ));
        }
        if self.stem_kernel.is_multiple_of(2) || self.stem_kernel > 15 {
            return bad("`stem_kernel` must be odd and at most 15".into());
        }
        if !(1..=4).contains(&self.stem_stride) {
            return bad("`stem_stride` must be in 1..=4".into());
        }
        if !(8..=MAX_INPUT).contains(&self.input_size) {
            return bad(format!("`input_size` must be in 8..={MAX_INPUT}"));
        }
        if self.resize_side() < self.input_size || self.resize_side() > 2 * MAX_INPUT {
            return bad(format!(
                "`resize_size` {} must be at least `input_size` {} and at most {}",
                self.resize_side(),
                self.input_size,
                2 * MAX_INPUT
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return bad("`mean` must be finite and `std` finite and positive".into());
        }
        if self.feature_side() == 0 {
            return bad(format!(
                "input of {} pixels shrinks to nothing before the last stage",
                self.input_size
            ));
        }
        Ok(())
    }

    /// Side of the last stage's feature map for the configured input size.
    fn feature_side(&self) -> usize {
        let conv = |side: usize, k: usize, s: usize| (side + 2 * (k / 2)).saturating_sub(k) / s + 1;
        let mut side = conv(self.input_size, self.stem_kernel, self.stem_stride);
        if self.stem_pool {
            side = conv(side, 3, 2);
        }
        for _ in 1..self.layers.len() {
            side = conv(side, 3, 2);
        }
        side
    }

    /// Channels entering the classifier `fc`.
    pub fn feature_width(&self) -> usize {
        self.widths.last().copied().unwrap_or(0) * self.block.expansion()
    }

    /// The network's layers in order, with their torchvision names.
    pub(crate) fn layout(&self) -> Layout {
        let stem = ConvSpec {
            name: "conv1".into(),
            bn: "bn1".into(),
            c_in: 3,
            c_out: self.stem_width,
            kernel: self.stem_kernel,
            stride: self.stem_stride,
        };
        let exp = self.block.expansion();
        let mut blocks = Vec::new();
        let mut c_in = self.stem_width;
        for (stage, (&n, &width)) in self.layers.iter().zip(&self.widths).enumerate() {
            for b in 0..n {
                let prefix = format!("layer{}.{b}", stage + 1);
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let c_out = width * exp;
                let conv =
                    |i: usize, c_in: usize, c_out: usize, kernel: usize, stride: usize| ConvSpec {
                        name: format!("{prefix}.conv{i}"),
                        bn: format!("{prefix}.bn{i}"),
                        c_in,
                        c_out,
                        kernel,
                        stride,
                    };
                let convs = match self.block {
                    BlockKind::Basic => {
                        vec![conv(1, c_in, width, 3, stride), conv(2, width, width, 3, 1)]
                    }
                    BlockKind::Bottleneck => vec![
                        conv(1, c_in, width, 1, 1),
                        conv(2, width, width, 3, stride),
                        conv(3, width, c_out, 1, 1),
                    ],
                };
                let downsample = (stride != 1 || c_in != c_out).then(|| ConvSpec {
                    name: format!("{prefix}.downsample.0"),
                    bn: format!("{prefix}.downsample.1"),
                    c_in,
                    c_out,
                    kernel: 1,
                    stride,
                });
                blocks.push(BlockSpec { convs, downsample });
                c_in = c_out;
            }
        }
        Layout {
            stem,
            stem_pool: self.stem_pool,
            blocks,
            features: c_in,
            classes: self.num_classes,
        }
    }

    /// Every tensor the weights file must hold, in network order, with torchvision's names.
    /// `num_batches_tracked` counters are not listed: they play no part in inference and are
    /// ignored when present.
    pub fn parameters(&self) -> Vec<ParamSpec> {
        let layout = self.layout();
        let mut out = Vec::new();
        let mut conv_bn = |c: &ConvSpec| {
            out.push(ParamSpec::new(
                format!("{}.weight", c.name),
                vec![c.c_out, c.c_in, c.kernel, c.kernel],
                ParamRole::ConvWeight,
            ));
            for (suffix, role) in [
                ("weight", ParamRole::BnWeight),
                ("bias", ParamRole::BnBias),
                ("running_mean", ParamRole::RunningMean),
                ("running_var", ParamRole::RunningVar),
            ] {
                out.push(ParamSpec::new(
                    format!("{}.{suffix}", c.bn),
                    vec![c.c_out],
                    role,
                ));
            }
        };
        conv_bn(&layout.stem);
        for block in &layout.blocks {
            for c in &block.convs {
                conv_bn(c);
            }
            if let Some(d) = &block.downsample {
                conv_bn(d);
            }
        }
        out.push(ParamSpec::new(
            "fc.weight".into(),
            vec![layout.classes, layout.features],
            ParamRole::FcWeight,
        ));
        out.push(ParamSpec::new(
            "fc.bias".into(),
            vec![layout.classes],
            ParamRole::FcBias,
        ));
        out
    }
}

/// What a tensor of the weights file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// Convolution kernel `[out, in, k, k]` (no bias: batch normalisation follows).
    ConvWeight,
    /// Batch-normalisation scale (γ).
    BnWeight,
    /// Batch-normalisation shift (β).
    BnBias,
    /// Batch-normalisation running mean (a buffer, not trained by gradient).
    RunningMean,
    /// Batch-normalisation running variance (a buffer, not trained by gradient).
    RunningVar,
    /// Classifier matrix `[classes, features]`.
    FcWeight,
    /// Classifier bias `[classes]`.
    FcBias,
}

impl ParamRole {
    /// Whether gradient descent trains this tensor (false for the running statistics).
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// One tensor of the weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// torchvision name, e.g. `layer1.0.downsample.1.running_var`.
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
    /// What the tensor is for.
    pub role: ParamRole,
}

impl ParamSpec {
    fn new(name: String, shape: Vec<usize>, role: ParamRole) -> Self {
        Self { name, shape, role }
    }

    /// Number of scalars in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A convolution followed by its batch normalisation.
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    /// Name prefix of the convolution (`layer1.0.conv1`).
    pub name: String,
    /// Name prefix of the batch normalisation (`layer1.0.bn1`).
    pub bn: String,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl ConvSpec {
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }
}

/// One residual block: its main path and, if the shape changes, the projection shortcut.
#[derive(Debug, Clone)]
pub(crate) struct BlockSpec {
    pub convs: Vec<ConvSpec>,
    pub downsample: Option<ConvSpec>,
}

/// The whole network in order.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub stem: ConvSpec,
    pub stem_pool: bool,
    pub blocks: Vec<BlockSpec>,
    pub features: usize,
    pub classes: usize,
}
