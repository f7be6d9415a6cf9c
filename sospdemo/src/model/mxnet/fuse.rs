//! The packed path of a bound graph ([`BuildOptions::fuse`](super::BuildOptions)): after batch
//! normalisations are folded, convolutions become [`PackedConv`]s, inference normalisations
//! per-channel affine passes, same-shape sums and ReLUs the kernels of `crate::model::kernels`;
//! then a sum whose one operand is a convolution read by nothing else is computed by that
//! convolution as it writes its output, and so is a ReLU that alone reads a convolution, a
//! normalisation or a sum. A fused node becomes an alias of the node that now computes it.
//!
//! This pass changes how values are computed, never which: it must not touch a node read by
//! anyone but the node fused into it, nor reorder the graph.

use super::graph::Step;
use super::ops::{Activation, Binary, Op};
use super::MxNetError;
use crate::model::kernels::PackedConv;

/// Rewrites `steps` in place; `consumers[i]` is how many inputs (and heads) read node `i`.
/// Returns how many sums and ReLUs were fused into the node before them.
pub(super) fn apply(steps: &mut [Step], consumers: &[usize]) -> Result<usize, MxNetError> {
    for step in steps.iter_mut() {
        if let Step::Compute { op, .. } = step {
            if let Some(fast) = packed_op(op)? {
                *op = fast;
            }
        }
    }
    let mut fused = 0;
    for i in 0..steps.len() {
        fused += usize::from(fuse_residual(steps, consumers, i));
    }
    for i in 0..steps.len() {
        fused += usize::from(fuse_relu(steps, consumers, i));
    }
    Ok(fused)
}

/// The packed counterpart of an operation, if it has one.
fn packed_op(op: &Op) -> Result<Option<Op>, MxNetError> {
    Ok(match op {
        Op::Conv {
            weight,
            bias,
            pad,
            stride,
            dilate,
            groups: 1,
        } => Some(Op::Packed {
            conv: PackedConv::new(weight, bias.as_ref(), *stride, *pad, *dilate)?,
            relu: false,
        }),
        Op::BatchNorm {
            scale,
            shift,
            axis: 1,
        } => Some(Op::Affine {
            scale: scale.flatten_all()?.to_vec1::<f32>()?,
            shift: shift.flatten_all()?.to_vec1::<f32>()?,
            relu: false,
        }),
        Op::Binary(Binary::Add) => Some(Op::Sum { relu: false }),
        Op::Activation(Activation::Relu) => Some(Op::Relu),
        _ => None,
    })
}

/// The node that computes `node`'s first output, following aliases, provided every node on
/// the way (the result included) is read by exactly one consumer.
fn sole_source(
    steps: &[Step],
    consumers: &[usize],
    (mut node, output): (usize, usize),
) -> Option<usize> {
    if output != 0 {
        return None;
    }
    loop {
        if consumers.get(node) != Some(&1) {
            return None;
        }
        match steps.get(node)? {
            Step::Alias((src, 0)) => node = *src,
            Step::Alias(_) => return None,
            _ => return Some(node),
        }
    }
}

/// A sum of a convolution (read only by the sum) and a value computed before that
/// convolution: the convolution adds the value itself. Returns whether it fused.
fn fuse_residual(steps: &mut [Step], consumers: &[usize], i: usize) -> bool {
    let Some(Step::Compute {
        op: Op::Sum { relu: false },
        inputs,
    }) = steps.get(i)
    else {
        return false;
    };
    let &[a, b] = inputs.as_slice() else {
        return false;
    };
    for (conv_edge, other) in [(a, b), (b, a)] {
        let Some(conv) = sole_source(steps, consumers, conv_edge) else {
            continue;
        };
        // The other operand must exist when the convolution runs.
        if other.0 >= conv {
            continue;
        }
        if let Some(Step::Compute {
            op: Op::Packed { relu: false, .. },
            inputs: conv_inputs,
        }) = steps.get_mut(conv)
        {
            if conv_inputs.len() == 1 {
                conv_inputs.push(other);
                steps[i] = Step::Alias((conv, 0));
                return true;
            }
        }
    }
    false
}

/// A ReLU that alone reads a convolution, a normalisation or a sum: that node applies it.
/// Returns whether it fused.
fn fuse_relu(steps: &mut [Step], consumers: &[usize], i: usize) -> bool {
    let Some(Step::Compute {
        op: Op::Relu,
        inputs,
    }) = steps.get(i)
    else {
        return false;
    };
    let Some(&edge) = inputs.first() else {
        return false;
    };
    let Some(src) = sole_source(steps, consumers, edge) else {
        return false;
    };
    let Some(Step::Compute { op, .. }) = steps.get_mut(src) else {
        return false;
    };
    let flag = match op {
        Op::Packed { relu, .. } | Op::Affine { relu, .. } | Op::Sum { relu } => relu,
        _ => return false,
    };
    if *flag {
        return false;
    }
    *flag = true;
    steps[i] = Step::Alias((src, 0));
    true
}
