//! The weights file (safetensors): reading it against the parameter list of an architecture,
//! writing it, and making seeded random weights.

use std::collections::{BTreeMap, HashMap};

use candle_core::safetensors::{Load, SliceSafetensors};
use candle_core::{DType, Device, Tensor};

use super::arch::{Architecture, ParamRole};
use super::rng::SplitMix64;
use super::ModelError;

/// Named f32 tensors, as stored in a weights file.
pub type Weights = HashMap<String, Tensor>;

/// Reads a safetensors buffer and returns exactly the tensors `arch` needs, as f32.
///
/// Tensors may be stored as f32, f16, bf16 or f64. Extra tensors (such as torchvision's
/// `num_batches_tracked` counters) are ignored; a missing tensor or one of the wrong shape is
/// an error that names it.
pub fn load_weights(arch: &Architecture, bytes: &[u8]) -> Result<Weights, ModelError> {
    let file =
        SliceSafetensors::new(bytes).map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
    let mut views: HashMap<String, _> = file.tensors().into_iter().collect();
    let mut out = HashMap::new();
    for spec in arch.parameters() {
        let view = views
            .remove(&spec.name)
            .ok_or_else(|| ModelError::MissingParameter {
                name: spec.name.clone(),
            })?;
        if view.shape() != spec.shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                name: spec.name,
                expected: spec.shape,
                found: view.shape().to_vec(),
            });
        }
        let dtype = format!("{:?}", view.dtype());
        let tensor = view
            .load(&Device::Cpu)
            .map_err(|e| ModelError::CorruptWeights(format!("tensor {}: {e}", spec.name)))?;
        if !matches!(
            tensor.dtype(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            return Err(ModelError::UnsupportedDtype {
                name: spec.name,
                dtype,
            });
        }
        out.insert(spec.name, tensor.to_dtype(DType::F32)?);
    }
    let extra: Vec<&String> = views
        .keys()
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .collect();
    if !extra.is_empty() {
        tracing::warn!(count = extra.len(), first = ?extra.first(), "weights file has tensors the architecture does not use; ignored");
    }
    Ok(out)
}

/// Serialises weights as a safetensors buffer (tensors sorted by name).
pub fn save_weights(weights: &Weights) -> Result<Vec<u8>, ModelError> {
    let sorted: BTreeMap<&str, Tensor> = weights
        .iter()
        .map(|(k, v)| Ok((k.as_str(), v.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    safetensors::serialize(sorted, None).map_err(|e| ModelError::CorruptWeights(e.to_string()))
}

/// Seeded initial weights for `arch`, the way torchvision initialises a ResNet: Kaiming-normal
/// convolution kernels (fan-out, ReLU gain), batch normalisation γ = 1 and β = 0 (γ = 0 on the
/// last normalisation of each residual branch when `zero_init_residual`), running statistics
/// 0 and 1, and a uniform classifier in ±1/√features.
pub fn random_weights(
    arch: &Architecture,
    seed: u64,
    zero_init_residual: bool,
) -> Result<Weights, ModelError> {
    let mut rng = SplitMix64::new(seed);
    let layout = arch.layout();
    let last_bns: Vec<String> = layout
        .blocks
        .iter()
        .filter_map(|b| b.convs.last().map(|c| format!("{}.weight", c.bn)))
        .collect();
    let mut out = HashMap::new();
    for spec in arch.parameters() {
        let n = spec.numel();
        let data: Vec<f32> = match spec.role {
            ParamRole::ConvWeight => {
                let fan_out = spec.shape[0] * spec.shape[2] * spec.shape[3];
                let std = (2.0 / fan_out as f64).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
            ParamRole::BnWeight => {
                let v = if zero_init_residual && last_bns.contains(&spec.name) {
                    0.0
                } else {
                    1.0
                };
                vec![v; n]
            }
            ParamRole::BnBias | ParamRole::RunningMean => vec![0.0; n],
            ParamRole::RunningVar => vec![1.0; n],
            ParamRole::FcWeight | ParamRole::FcBias => {
                let bound = 1.0 / (layout.features as f64).sqrt();
                (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            }
        };
        let t = Tensor::from_vec(data, spec.shape.as_slice(), &Device::Cpu)?;
        out.insert(spec.name, t);
    }
    Ok(out)
}
