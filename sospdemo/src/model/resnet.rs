//! The ResNet forward pass, written once for any way of running a convolution with its batch
//! normalisation: inference folds each normalisation into its convolution ([`FoldedResNet`]);
//! training (in `crate::train`) normalises with batch statistics.

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};

use super::arch::{ConvSpec, Layout, BN_EPS};
use super::kernels::PackedConv;
use super::ModelError;

/// How the layers are computed; the order and wiring of the layers is [`forward`]'s.
pub(crate) trait LayerOps {
    /// Convolution `spec` followed by its batch normalisation (no activation).
    fn conv_bn(&mut self, x: &Tensor, spec: &ConvSpec) -> candle_core::Result<Tensor>;
    /// `relu?(conv_bn(x) + residual)`: what a convolution of a block is followed by. The
    /// default computes the three steps one after the other; an implementation may fuse them.
    fn conv_bn_then(
        &mut self,
        x: &Tensor,
        spec: &ConvSpec,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let mut y = self.conv_bn(x, spec)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        if relu {
            y = y.relu()?;
        }
        Ok(y)
    }

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
    let mut x = ops.conv_bn_then(x, &layout.stem, None, true)?;
    if layout.stem_pool {
        x = ops.stem_pool(&x)?;
    }
    for block in &layout.blocks {
        // The shortcut first, so that the last convolution can add it as it writes its output.
        let shortcut = match &block.downsample {
            Some(d) => ops.conv_bn(&x, d)?,
            None => x.clone(),
        };
        let mut y = x;
        let last = block.convs.len().saturating_sub(1);
        for (i, conv) in block.convs.iter().enumerate() {
            let residual = (i == last).then_some(&shortcut);
            y = ops.conv_bn_then(&y, conv, residual, true)?;
        }
        x = y;
    }
    let pooled = ops.global_pool(&x)?;
    ops.fc(&pooled)
}

/// A ResNet ready for inference: every batch normalisation folded into the convolution before
/// it (a scaled kernel plus a bias), each kernel packed for GEMM once, and the bias, the
/// residual sum and the ReLU applied in the pass that writes a convolution's output, so a
/// block costs its convolutions and nothing else.
#[derive(Debug, Clone)]
pub struct FoldedResNet {
    layout: Layout,
    convs: HashMap<String, PackedConv>,
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
            let pad = spec.padding();
            let conv = PackedConv::new(&w, Some(&bias), spec.stride, [pad, pad], 1)?;
            convs.insert(spec.name.clone(), conv);
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
        self.conv_bn_then(x, spec, None, false)
    }

    fn conv_bn_then(
        &mut self,
        x: &Tensor,
        spec: &ConvSpec,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        self.0
            .convs
            .get(&spec.name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no folded conv {}", spec.name)))?
            .forward(x, residual, relu)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{random_weights, Architecture, BlockKind};
    use candle_core::Device;

    /// The straightforward inference pass: candle's convolution, then the batch normalisation
    /// with its running statistics, each step on its own (nothing folded, packed or fused).
    struct Plain<'a>(&'a HashMap<String, Tensor>);

    impl Plain<'_> {
        fn get(&self, name: &str) -> candle_core::Result<&Tensor> {
            self.0
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("no {name}")))
        }
    }

    impl LayerOps for Plain<'_> {
        fn conv_bn(&mut self, x: &Tensor, spec: &ConvSpec) -> candle_core::Result<Tensor> {
            let channel = |name: &str| {
                self.get(&format!("{}.{name}", spec.bn))?
                    .reshape((1, spec.c_out, 1, 1))
            };
            let y = x.conv2d(
                self.get(&format!("{}.weight", spec.name))?,
                spec.padding(),
                spec.stride,
                1,
                1,
            )?;
            let std = (channel("running_var")? + BN_EPS)?.sqrt()?;
            y.broadcast_sub(&channel("running_mean")?)?
                .broadcast_div(&std)?
                .broadcast_mul(&channel("weight")?)?
                .broadcast_add(&channel("bias")?)
        }

        fn fc(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
            x.matmul(&self.get("fc.weight")?.t()?)?
                .broadcast_add(&self.get("fc.bias")?.unsqueeze(0)?)
        }
    }

    /// Seeded weights whose normalisations are far from the identity, so that folding matters.
    fn perturbed_weights(arch: &Architecture) -> HashMap<String, Tensor> {
        let mut weights = random_weights(arch, 7, false).unwrap();
        let mut rng = crate::model::rng::SplitMix64::new(11);
        for spec in arch.parameters() {
            let role_range = match spec.role {
                crate::model::ParamRole::BnWeight => Some((0.5, 1.5)),
                crate::model::ParamRole::BnBias => Some((-0.3, 0.3)),
                crate::model::ParamRole::RunningMean => Some((-0.2, 0.2)),
                crate::model::ParamRole::RunningVar => Some((0.5, 2.0)),
                _ => None,
            };
            if let Some((lo, hi)) = role_range {
                let v: Vec<f32> = (0..spec.numel())
                    .map(|_| (lo + (hi - lo) * rng.uniform()) as f32)
                    .collect();
                let t = Tensor::from_vec(v, spec.shape.as_slice(), &Device::Cpu).unwrap();
                weights.insert(spec.name, t);
            }
        }
        weights
    }

    #[test]
    fn folded_packed_network_matches_the_straightforward_pass() {
        for block in [BlockKind::Bottleneck, BlockKind::Basic] {
            let arch = Architecture {
                block,
                layers: vec![2, 1, 2],
                widths: vec![8, 16, 24],
                stem_width: 8,
                num_classes: 10,
                input_size: 40,
                resize_size: None,
                ..Architecture::resnet18(10)
            };
            arch.validate().unwrap();
            let weights = perturbed_weights(&arch);
            let net = FoldedResNet::new(arch.layout(), &weights).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, 3, 40, 40), &Device::Cpu).unwrap();
            let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let fast = values(net.forward(&x).unwrap());
            let plain = values(forward(&arch.layout(), &mut Plain(&weights), &x).unwrap());
            let scale = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = fast
                .iter()
                .zip(&plain)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(scale > 1e-3, "{block:?}: degenerate logits");
            assert!(
                err <= 1e-4 * scale.max(1.0),
                "{block:?}: folded and packed logits differ by {err} (scale {scale})"
            );
        }
    }
}
