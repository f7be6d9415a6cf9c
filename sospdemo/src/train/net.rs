//! A trainable ResNet: the same layout and forward pass as inference, with batch
//! normalisation computed from batch statistics and the running statistics updated as torch
//! does (momentum 0.1, unbiased variance).
//!
//! For speed on the CPU the training pass keeps activations channel-major, `[c, n, h, w]`:
//! a convolution is then one matrix product over unfolded patches (whose gradient is cheap,
//! unlike candle's transposed convolution), and batch statistics reduce contiguous rows.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::model::{
    forward, Architecture, ConvSpec, LayerOps, Layout, ModelError, Weights, BN_EPS,
};

/// Momentum of the running statistics (torch's default).
const BN_MOMENTUM: f64 = 0.1;

/// Parameters being trained and the running statistics being tracked.
pub(crate) struct TrainNet {
    layout: Layout,
    vars: HashMap<String, Var>,
    running: HashMap<String, Tensor>,
}

impl TrainNet {
    /// Starts from `init` (every tensor of `arch`).
    pub fn new(arch: &Architecture, init: &Weights) -> Result<Self, ModelError> {
        let mut vars = HashMap::new();
        let mut running = HashMap::new();
        for spec in arch.parameters() {
            let t = init
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingParameter {
                    name: spec.name.clone(),
                })?;
            if spec.role.is_trainable() {
                vars.insert(spec.name, Var::from_tensor(t)?);
            } else {
                running.insert(spec.name, t.clone());
            }
        }
        Ok(Self {
            layout: arch.layout(),
            vars,
            running,
        })
    }

    /// The trained tensors, for the optimiser.
    pub fn vars(&self) -> Vec<Var> {
        let mut named: Vec<(&String, &Var)> = self.vars.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// Logits `[n, classes]` of a batch `[n, 3, h, w]` in training mode (batch statistics;
    /// running statistics updated).
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor, ModelError> {
        let x = x.transpose(0, 1)?.contiguous()?;
        let mut ops = TrainOps {
            vars: &self.vars,
            running: &mut self.running,
        };
        Ok(forward(&self.layout, &mut ops, &x)?)
    }

    /// All tensors, named as in the weights file.
    pub fn weights(&self) -> Weights {
        let mut out: Weights = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        out.extend(self.running.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

struct TrainOps<'a> {
    vars: &'a HashMap<String, Var>,
    running: &'a mut HashMap<String, Tensor>,
}

impl TrainOps<'_> {
    fn var(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.vars
            .get(name)
            .map(|v| v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter {name}")))
    }

    fn update_running(&mut self, name: String, batch: &Tensor) -> candle_core::Result<()> {
        let old = self
            .running
            .get(&name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no buffer {name}")))?;
        let new = ((old * (1.0 - BN_MOMENTUM))? + (batch.detach() * BN_MOMENTUM)?)?;
        self.running.insert(name, new);
        Ok(())
    }
}

impl LayerOps for TrainOps<'_> {
    fn conv_bn(&mut self, x: &Tensor, spec: &ConvSpec) -> candle_core::Result<Tensor> {
        let w = self.var(&format!("{}.weight", spec.name))?;
        let y = conv_channel_major(x, w, spec.stride, spec.padding())?;
        let (c, n, h, wd) = y.dims4()?;
        let count = (n * h * wd) as f64;
        let rows = y.reshape((c, n * h * wd))?;
        let mean = rows.mean_keepdim(1)?;
        let var = rows.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?;
        let gamma = self.var(&format!("{}.weight", spec.bn))?.unsqueeze(1)?;
        let beta = self.var(&format!("{}.bias", spec.bn))?.unsqueeze(1)?;
        // y·a + b with a = γ/√(σ²+ε) and b = β − μ·a: batch normalisation in two broadcasts.
        let a = gamma.broadcast_div(&(var.clone() + BN_EPS)?.sqrt()?)?;
        let b = (beta - mean.broadcast_mul(&a)?)?;
        let out = y
            .broadcast_mul(&a.reshape((c, 1, 1, 1))?)?
            .broadcast_add(&b.reshape((c, 1, 1, 1))?)?;
        let unbiased = (var.flatten_all()? * (count / (count - 1.0).max(1.0)))?;
        self.update_running(format!("{}.running_mean", spec.bn), &mean.flatten_all()?)?;
        self.update_running(format!("{}.running_var", spec.bn), &unbiased)?;
        Ok(out)
    }

    /// candle has no gradient for overlapping max pools, so the 3×3 stride-2 pool is the
    /// elementwise maximum of its nine shifted, stride-2 subsampled views (same values).
    fn stem_pool(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        // One extra zero row/column on the far side keeps every view in range for odd sides;
        // it only ever lands in the discarded half of the subsampling.
        let xp = x.pad_with_zeros(2, 1, 2)?.pad_with_zeros(3, 1, 2)?;
        let mut out: Option<Tensor> = None;
        for dy in 0..3 {
            let rows = xp
                .narrow(2, dy, 2 * oh)?
                .reshape((c, n, oh, 2, w + 3))?
                .narrow(3, 0, 1)?
                .squeeze(3)?;
            for dx in 0..3 {
                let view = rows
                    .narrow(3, dx, 2 * ow)?
                    .reshape((c, n, oh, ow, 2))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?;
                out = Some(match out {
                    Some(m) => m.maximum(&view)?,
                    None => view,
                });
            }
        }
        out.ok_or_else(|| candle_core::Error::Msg("empty pool".into()))
    }

    fn global_pool(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.mean((2, 3))?.t()
    }

    fn fc(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.var("fc.weight")?;
        let b = self.var("fc.bias")?;
        x.matmul(&w.t()?)?.broadcast_add(&b.unsqueeze(0)?)
    }
}

/// Every `stride`-th element of `len` elements of dimension `dim`, starting at `offset`.
fn strided(
    x: &Tensor,
    dim: usize,
    offset: usize,
    len: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, offset, len);
    }
    let t = x.narrow(dim, offset, stride * len)?;
    let mut shape = t.dims().to_vec();
    shape[dim] = len;
    shape.insert(dim + 1, stride);
    t.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Convolution of a channel-major batch `[c, n, h, w]` with a kernel `[o, c, k, k]`, as one
/// matrix product `[o, c·k·k] × [c·k·k, n·oh·ow]`; returns `[o, n, oh, ow]`. Same numbers as
/// `conv2d` on the batch-major layout.
pub(crate) fn conv_channel_major(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    let (c, n, h, wd) = x.dims4()?;
    let (o, _, k, _) = w.dims4()?;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let w2 = w.reshape((o, c * k * k))?;
    if k == 1 && stride == 1 && pad == 0 {
        return w2
            .matmul(&x.reshape((c, n * h * wd))?)?
            .reshape((o, n, h, wd));
    }
    // Pad, plus a little extra at the far end so that every strided view is in range.
    let extra_h = ((k - 1) + stride * oh).saturating_sub(h + 2 * pad);
    let extra_w = ((k - 1) + stride * ow).saturating_sub(wd + 2 * pad);
    let xp = if pad + extra_h + extra_w > 0 {
        x.pad_with_zeros(2, pad, pad + extra_h)?
            .pad_with_zeros(3, pad, pad + extra_w)?
    } else {
        x.clone()
    };
    let mut views = Vec::with_capacity(k * k);
    for dy in 0..k {
        let rows = strided(&xp, 2, dy, oh, stride)?;
        for dx in 0..k {
            views.push(strided(&rows, 3, dx, ow, stride)?);
        }
    }
    let cols = Tensor::stack(&views, 1)?.reshape((c * k * k, n * oh * ow))?;
    w2.matmul(&cols)?.reshape((o, n, oh, ow))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn channel_major_conv_matches_conv2d() {
        for (k, stride, pad, side) in [
            (3, 1, 1, 9),
            (3, 2, 1, 9),
            (3, 2, 1, 8),
            (1, 2, 0, 7),
            (1, 1, 0, 5),
            (7, 2, 3, 16),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, side, side), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (4, 3, k, k), &Device::Cpu).unwrap();
            let want = x.conv2d(&w, pad, stride, 1, 1).unwrap();
            let xc = x.transpose(0, 1).unwrap().contiguous().unwrap();
            let got = conv_channel_major(&xc, &w, stride, pad)
                .unwrap()
                .transpose(0, 1)
                .unwrap();
            let diff = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff < 1e-4,
                "k {k} stride {stride} pad {pad} side {side}: {diff}"
            );
        }
    }

    #[test]
    fn training_pool_matches_max_pool() {
        for side in [8, 9, 16] {
            let x = Tensor::rand(0f32, 1.0, (3, 2, side, side), &Device::Cpu).unwrap();
            let mut running = HashMap::new();
            let vars = HashMap::new();
            let mut ops = TrainOps {
                vars: &vars,
                running: &mut running,
            };
            let got = ops.stem_pool(&x).unwrap();
            let want = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap()
                .max_pool2d_with_stride(3, 2)
                .unwrap();
            let diff = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "side {side}");
        }
    }
}
