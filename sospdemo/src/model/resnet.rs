//! The ResNet forward pass, written once for any way of running a convolution with its batch
//! normalisation: inference folds each normalisation into its convolution ([`FoldedResNet`]);
//! training (in `crate::train`) normalises with batch statistics.

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};

use super::arch::{ConvSpec, Layout, BN_EPS};
use super::ModelError;

/// How the layers are computed; the order and wiring of the layers is [`forward`]'s.
pub(crate) trait LayerOps {
    /// Convolution `spec` followed by its batch normalisation (no activation).
    fn conv_bn(&mut self, x: &Tensor, spec: &ConvSpec) -> candle_core::Result<Tensor>;
    /// The classifier `fc` applied to pooled features `[n, features]`.
    fn fc(&mut self, x: &Tensor) -> candle_core::Result<Tensor>;

    /// The stem's 3×3 stride-2 max pool with padding 1. The input is a ReLU output (never
    /// negative), so zero padding gives the same maxima as torch's implicit -inf padding.
    fn stem_pool(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.pad_with_zeros(2, 1, 1)?
            .pad_with_zeros(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)
    }

    /// Global average pooling of the last feature map into `[n, features]`.
    fn global_pool(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.mean((2, 3))
    }
}

/// Runs the network on a batch `[n, 3, h, w]` and returns the logits `[n, classes]`.
pub(crate) fn forward<O: LayerOps>(
    layout: &Layout,
    ops: &mut O,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    let mut x = ops.conv_bn(x, &layout.stem)?.relu()?;
    if layout.stem_pool {
        x = ops.stem_pool(&x)?;
    }
    for block in &layout.blocks {
        let mut y = x.clone();
        let last = block.convs.len().saturating_sub(1);
        for (i, conv) in block.convs.iter().enumerate() {
            y = ops.conv_bn(&y, conv)?;
            if i != last {
                y = y.relu()?;
            }
        }
        let shortcut = match &block.downsample {
            Some(d) => ops.conv_bn(&x, d)?,
            None => x,
        };
        x = (y + shortcut)?.relu()?;
    }
    let pooled = ops.global_pool(&x)?;
    ops.fc(&pooled)
}

/// A ResNet ready for inference: every batch normalisation folded into the convolution before
/// it (a scaled kernel plus a bias), so a block costs its convolutions and nothing else.
#[derive(Debug, Clone)]
pub struct FoldedResNet {
    layout: Layout,
    convs: HashMap<String, (Tensor, Tensor)>,
    fc_weight_t: Tensor,
    fc_bias: Tensor,
}

impl FoldedResNet {
    /// Builds the network from checked f32 parameters named as in
    /// [`Architecture::parameters`](super::Architecture::parameters).
    pub(crate) fn new(
        layout: Layout,
        params: &HashMap<String, Tensor>,
    ) -> Result<Self, ModelError> {
        let get = |name: String| match params.get(&name) {
            Some(t) => Ok(t.to_dtype(DType::F32)?),
            None => Err(ModelError::MissingParameter { name }),
        };
        let mut convs = HashMap::new();
        let all = std::iter::once(&layout.stem).chain(
            layout
                .blocks
                .iter()
                .flat_map(|b| b.convs.iter().chain(b.downsample.iter())),
        );
        for spec in all {
            let w = get(format!("{}.weight", spec.name))?;
            let gamma = get(format!("{}.weight", spec.bn))?;
            let beta = get(format!("{}.bias", spec.bn))?;
            let mean = get(format!("{}.running_mean", spec.bn))?;
            let var = get(format!("{}.running_var", spec.bn))?;
            let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
            let bias = (beta - (mean * &scale)?)?;
            let w = w.broadcast_mul(&scale.reshape((spec.c_out, 1, 1, 1))?)?;
            let bias = bias.reshape((1, spec.c_out, 1, 1))?;
            convs.insert(spec.name.clone(), (w.contiguous()?, bias));
        }
        let fc_weight_t = get("fc.weight".into())?.t()?.contiguous()?;
        let fc_bias = get("fc.bias".into())?;
        Ok(Self {
            layout,
            convs,
            fc_weight_t,
            fc_bias,
        })
    }

    /// Logits `[n, classes]` of a normalised batch `[n, 3, side, side]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let x = x.to_dtype(DType::F32)?;
        Ok(forward(&self.layout, &mut Folded(self), &x)?)
    }

    /// Number of classes the network distinguishes.
    pub fn num_classes(&self) -> usize {
        self.layout.classes
    }
}

struct Folded<'a>(&'a FoldedResNet);

impl LayerOps for Folded<'_> {
    fn conv_bn(&mut self, x: &Tensor, spec: &ConvSpec) -> candle_core::Result<Tensor> {
        let (w, b) = self
            .0
            .convs
            .get(&spec.name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no folded conv {}", spec.name)))?;
        x.conv2d(w, spec.padding(), spec.stride, 1, 1)?
            .broadcast_add(b)
    }

    fn fc(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.0.fc_weight_t)?
            .broadcast_add(&self.0.fc_bias.unsqueeze(0)?)
    }
}

/// Softmax over the last dimension.
pub(crate) fn softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(logits, D::Minus1)
}
