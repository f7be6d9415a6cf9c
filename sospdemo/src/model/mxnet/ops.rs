//! The operators: what each MXNet operator's attributes mean ([`parse_node`] turns a node into
//! an [`Op`] with its parameters bound, checking attributes and parameter shapes) and how it
//! is computed with candle ([`run`]). Pooling is in [`super::pool`].

use candle_core::{Tensor, D};

use super::graph::Step;
use super::pool::{pool2d, PoolKind, PoolSpec};
use super::symbol::Node;
use super::MxNetError;
use crate::model::kernels::{self, PackedConv};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    SoftRelu,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Softmax {
    /// Over everything but the batch axis (`SoftmaxOutput`, instance-mode
    /// `SoftmaxActivation`).
    Instance,
    /// Over one axis, with a temperature.
    Axis { axis: i64, temperature: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Scalar {
    Mul(f64),
    Div(f64),
    Plus(f64),
    Minus(f64),
    RMinus(f64),
    RDiv(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binary {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Conv {
        weight: Tensor,
        bias: Option<Tensor>,
        pad: [usize; 2],
        stride: usize,
        dilate: usize,
        groups: usize,
    },
    BatchNorm {
        /// γ / √(var + ε), one per channel.
        scale: Tensor,
        /// β − mean · scale.
        shift: Tensor,
        axis: i64,
    },
    Activation(Activation),
    Pool(PoolSpec),
    Binary(Binary),
    Flatten,
    FullyConnected {
        weight_t: Tensor,
        bias: Option<Tensor>,
        flatten: bool,
    },
    Identity,
    Softmax(Softmax),
    Concat {
        dim: i64,
    },
    Clip {
        min: f64,
        max: f64,
    },
    Reshape(Vec<i64>),
    Scalar(Scalar),
    Mean {
        axes: Option<Vec<i64>>,
        keepdims: bool,
        exclude: bool,
    },
    /// A convolution packed for GEMM (groups = 1), adding its second input if it has one,
    /// then applying a ReLU if `relu` (the packed path only, see `fuse`).
    Packed {
        conv: PackedConv,
        relu: bool,
    },
    /// An inference batch normalisation over axis 1, then a ReLU if `relu`.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    /// The sum of two inputs (broadcast if their shapes differ), then a ReLU if `relu`.
    Sum {
        relu: bool,
    },
    /// `max(x, 0)` computed on rayon's pool.
    Relu,
}

/// The parameter tensor input `k` of `node` refers to.
fn constant(node: &Node, k: usize, steps: &[Step], what: &str) -> Result<Tensor, MxNetError> {
    let Some(&(src, _)) = node.inputs.get(k) else {
        return Err(MxNetError::Unsupported {
            node: node.name.clone(),
            op: node.op.clone(),
            what: format!("it has no input for its {what}"),
        });
    };
    match steps.get(src) {
        Some(Step::Constant(t)) => Ok(t.clone()),
        Some(Step::Unbound) => Err(MxNetError::MissingParameter {
            node: node.name.clone(),
            name: format!("its {what}"),
        }),
        _ => Err(MxNetError::Unsupported {
            node: node.name.clone(),
            op: node.op.clone(),
            what: format!("its {what} is computed rather than a parameter"),
        }),
    }
}

fn check_shape(node: &Node, what: &str, t: &Tensor, expected: &[usize]) -> Result<(), MxNetError> {
    if t.dims() != expected {
        return Err(MxNetError::ParamShape {
            node: node.name.clone(),
            what: what.to_owned(),
            expected: expected.to_vec(),
            found: t.dims().to_vec(),
        });
    }
    Ok(())
}

fn data_inputs(node: &Node, n: usize) -> Result<Vec<(usize, usize)>, MxNetError> {
    if node.inputs.len() < n {
        return Err(MxNetError::Unsupported {
            node: node.name.clone(),
            op: node.op.clone(),
            what: format!("it has {} inputs, {n} needed", node.inputs.len()),
        });
    }
    Ok(node.inputs[..n].to_vec())
}

/// Refuses kernels, strides, dilations and paddings above [`MAX_WINDOW`].
fn check_window(node: &Node, sizes: &[&Vec<usize>]) -> Result<(), MxNetError> {
    if sizes.iter().any(|v| v.iter().any(|&d| d > MAX_WINDOW)) {
        return Err(unsupported(
            node,
            format!("a kernel, stride, dilation or padding above {MAX_WINDOW}"),
        ));
    }
    Ok(())
}

fn unsupported(node: &Node, what: impl Into<String>) -> MxNetError {
    MxNetError::Unsupported {
        node: node.name.clone(),
        op: node.op.clone(),
        what: what.into(),
    }
}

pub(super) fn parse_node(node: &Node, steps: &[Step]) -> Result<Step, MxNetError> {
    let compute = |op: Op, inputs: Vec<(usize, usize)>| Ok(Step::Compute { op, inputs });
    match node.op.as_str() {
        "Convolution" => {
            let kernel = node.sizes_attr("kernel", 2, 0)?;
            if node.tuple_attr("kernel")?.map(|k| k.len()) != Some(2) {
                return Err(unsupported(node, "only 2-D convolutions are supported"));
            }
            let layout = node.str_attr("layout", "NCHW");
            if layout != "NCHW" && layout != "None" {
                return Err(unsupported(node, format!("layout {layout}")));
            }
            let stride = node.sizes_attr("stride", 2, 1)?;
            let dilate = node.sizes_attr("dilate", 2, 1)?;
            let pad = node.sizes_attr("pad", 2, 0)?;
            check_window(node, &[&kernel, &stride, &dilate, &pad])?;
            if stride[0] != stride[1] || dilate[0] != dilate[1] {
                return Err(unsupported(
                    node,
                    "different strides or dilations along height and width",
                ));
            }
            if stride[0] == 0 || dilate[0] == 0 {
                return Err(unsupported(node, "a zero stride or dilation"));
            }
            let groups = usize::try_from(node.int_attr("num_group", 1)?)
                .ok()
                .filter(|&g| g >= 1)
                .ok_or_else(|| unsupported(node, "num_group below 1"))?;
            let filters = usize::try_from(node.int_attr("num_filter", 0)?)
                .map_err(|_| unsupported(node, "a negative num_filter"))?;
            let no_bias = node.bool_attr("no_bias", false)?;
            let weight = constant(node, 1, steps, "weight")?;
            let dims = weight.dims().to_vec();
            if dims.len() != 4 || dims[0] != filters || dims[2..] != kernel[..] {
                return Err(MxNetError::ParamShape {
                    node: node.name.clone(),
                    what: "weight".into(),
                    expected: vec![filters, 0, kernel[0], kernel[1]],
                    found: dims,
                });
            }
            if filters % groups != 0 {
                return Err(unsupported(
                    node,
                    format!("{filters} filters in {groups} groups"),
                ));
            }
            let bias = if no_bias {
                None
            } else {
                let b = constant(node, 2, steps, "bias")?;
                check_shape(node, "bias", &b, &[filters])?;
                Some(b.reshape((1, filters, 1, 1))?)
            };
            compute(
                Op::Conv {
                    weight,
                    bias,
                    pad: [pad[0], pad[1]],
                    stride: stride[0],
                    dilate: dilate[0],
                    groups,
                },
                data_inputs(node, 1)?,
            )
        }
        "BatchNorm" => {
            if node.bool_attr("output_mean_var", false)? {
                return Err(unsupported(node, "output_mean_var"));
            }
            let eps = node.f64_attr("eps", 1e-3)?;
            let fix_gamma = node.bool_attr("fix_gamma", true)?;
            // Inference always uses the moving statistics, whatever `use_global_stats` says.
            node.bool_attr("use_global_stats", false)?;
            let axis = node.int_attr("axis", 1)?;
            let gamma = constant(node, 1, steps, "gamma")?;
            let beta = constant(node, 2, steps, "beta")?;
            let mean = constant(node, 3, steps, "moving mean")?;
            let var = constant(node, 4, steps, "moving variance")?;
            let c = gamma.elem_count();
            for (what, t) in [
                ("gamma", &gamma),
                ("beta", &beta),
                ("moving mean", &mean),
                ("moving variance", &var),
            ] {
                check_shape(node, what, t, &[c])?;
            }
            let gamma = if fix_gamma { gamma.ones_like()? } else { gamma };
            let scale = (gamma / (var + eps)?.sqrt()?)?;
            let shift = (beta - (mean * &scale)?)?;
            compute(Op::BatchNorm { scale, shift, axis }, data_inputs(node, 1)?)
        }
        "Activation" => {
            let act = match node.str_attr("act_type", "") {
                "relu" => Activation::Relu,
                "sigmoid" => Activation::Sigmoid,
                "tanh" => Activation::Tanh,
                "softrelu" => Activation::SoftRelu,
                other => return Err(unsupported(node, format!("act_type {other:?}"))),
            };
            compute(Op::Activation(act), data_inputs(node, 1)?)
        }
        "relu" => compute(Op::Activation(Activation::Relu), data_inputs(node, 1)?),
        "sigmoid" => compute(Op::Activation(Activation::Sigmoid), data_inputs(node, 1)?),
        "tanh" => compute(Op::Activation(Activation::Tanh), data_inputs(node, 1)?),
        "Pooling" => {
            let kind = match node.str_attr("pool_type", "max") {
                "max" => PoolKind::Max,
                "avg" => PoolKind::Avg,
                "sum" => PoolKind::Sum,
                other => return Err(unsupported(node, format!("pool_type {other:?}"))),
            };
            let global = node.bool_attr("global_pool", false)?;
            let layout = node.str_attr("layout", "NCHW");
            if layout != "NCHW" && layout != "None" {
                return Err(unsupported(node, format!("layout {layout}")));
            }
            let kernel = node.sizes_attr("kernel", 2, 1)?;
            if !global && node.tuple_attr("kernel")?.map(|k| k.len()) != Some(2) {
                return Err(unsupported(node, "only 2-D pooling is supported"));
            }
            let stride = node.sizes_attr("stride", 2, 1)?;
            let pad = node.sizes_attr("pad", 2, 0)?;
            check_window(node, &[&kernel, &stride, &pad])?;
            let full = match node.str_attr("pooling_convention", "valid") {
                "valid" => false,
                "full" => true,
                other => return Err(unsupported(node, format!("pooling_convention {other:?}"))),
            };
            if !global && (kernel.contains(&0) || stride.contains(&0)) {
                return Err(unsupported(node, "a zero kernel or stride"));
            }
            let count_include_pad = node.bool_attr("count_include_pad", true)?;
            compute(
                Op::Pool(PoolSpec {
                    kind,
                    global,
                    kernel: [kernel[0], kernel[1]],
                    stride: [stride[0], stride[1]],
                    pad: [pad[0], pad[1]],
                    full,
                    count_include_pad,
                }),
                data_inputs(node, 1)?,
            )
        }
        "elemwise_add" | "_plus" | "_Plus" | "_add" | "broadcast_add" | "broadcast_plus" => {
            compute(Op::Binary(Binary::Add), data_inputs(node, 2)?)
        }
        "elemwise_sub" | "_minus" | "_Minus" | "_sub" | "broadcast_sub" | "broadcast_minus" => {
            compute(Op::Binary(Binary::Sub), data_inputs(node, 2)?)
        }
        "elemwise_mul" | "_mul" | "_Mul" | "broadcast_mul" => {
            compute(Op::Binary(Binary::Mul), data_inputs(node, 2)?)
        }
        "Flatten" | "flatten" => compute(Op::Flatten, data_inputs(node, 1)?),
        "FullyConnected" => {
            let hidden = usize::try_from(node.int_attr("num_hidden", 0)?)
                .map_err(|_| unsupported(node, "a negative num_hidden"))?;
            let flatten = node.bool_attr("flatten", true)?;
            let no_bias = node.bool_attr("no_bias", false)?;
            let weight = constant(node, 1, steps, "weight")?;
            if weight.rank() != 2 || weight.dims()[0] != hidden {
                return Err(MxNetError::ParamShape {
                    node: node.name.clone(),
                    what: "weight".into(),
                    expected: vec![hidden, 0],
                    found: weight.dims().to_vec(),
                });
            }
            let bias = if no_bias {
                None
            } else {
                let b = constant(node, 2, steps, "bias")?;
                check_shape(node, "bias", &b, &[hidden])?;
                Some(b.unsqueeze(0)?)
            };
            compute(
                Op::FullyConnected {
                    weight_t: weight.t()?.contiguous()?,
                    bias,
                    flatten,
                },
                data_inputs(node, 1)?,
            )
        }
        "Dropout" | "_copy" | "identity" | "BlockGrad" | "stop_gradient" => {
            compute(Op::Identity, data_inputs(node, 1)?)
        }
        "SoftmaxOutput" | "Softmax" => {
            let op = if node.bool_attr("multi_output", false)? {
                Softmax::Axis {
                    axis: 1,
                    temperature: 1.0,
                }
            } else {
                Softmax::Instance
            };
            compute(Op::Softmax(op), data_inputs(node, 1)?)
        }
        "softmax" => {
            let axis = node.int_attr("axis", -1)?;
            let temperature = node.f64_attr("temperature", 1.0)?;
            if temperature == 0.0 || !temperature.is_finite() {
                return Err(unsupported(node, "a zero or infinite temperature"));
            }
            compute(
                Op::Softmax(Softmax::Axis { axis, temperature }),
                data_inputs(node, 1)?,
            )
        }
        "SoftmaxActivation" => {
            let op = match node.str_attr("mode", "instance") {
                "instance" => Softmax::Instance,
                "channel" => Softmax::Axis {
                    axis: 1,
                    temperature: 1.0,
                },
                other => return Err(unsupported(node, format!("mode {other:?}"))),
            };
            compute(Op::Softmax(op), data_inputs(node, 1)?)
        }
        "Concat" | "concat" => {
            let dim = node.int_attr("dim", 1)?;
            if node.inputs.is_empty() {
                return Err(unsupported(node, "no inputs"));
            }
            compute(Op::Concat { dim }, node.inputs.clone())
        }
        "clip" => {
            let min = node.f64_attr("a_min", f64::NEG_INFINITY)?;
            let max = node.f64_attr("a_max", f64::INFINITY)?;
            compute(Op::Clip { min, max }, data_inputs(node, 1)?)
        }
        "Reshape" | "reshape" => {
            if node.bool_attr("reverse", false)? {
                return Err(unsupported(node, "reverse"));
            }
            let shape = node
                .tuple_attr("shape")?
                .ok_or_else(|| unsupported(node, "no `shape` attribute"))?;
            if shape.iter().any(|&d| d < -3) {
                return Err(unsupported(node, "shape code -4"));
            }
            compute(Op::Reshape(shape), data_inputs(node, 1)?)
        }
        "_mul_scalar" | "_div_scalar" | "_plus_scalar" | "_minus_scalar" | "_rminus_scalar"
        | "_rdiv_scalar" => {
            let s = node.f64_attr("scalar", f64::NAN)?;
            if s.is_nan() {
                return Err(unsupported(node, "no `scalar` attribute"));
            }
            let op = match node.op.as_str() {
                "_mul_scalar" => Scalar::Mul(s),
                "_div_scalar" => Scalar::Div(s),
                "_plus_scalar" => Scalar::Plus(s),
                "_minus_scalar" => Scalar::Minus(s),
                "_rminus_scalar" => Scalar::RMinus(s),
                _ => Scalar::RDiv(s),
            };
            compute(Op::Scalar(op), data_inputs(node, 1)?)
        }
        "mean" => compute(
            Op::Mean {
                axes: node.tuple_attr("axis")?,
                keepdims: node.bool_attr("keepdims", false)?,
                exclude: node.bool_attr("exclude", false)?,
            },
            data_inputs(node, 1)?,
        ),
        _ => Err(MxNetError::UnknownOp {
            op: node.op.clone(),
            node: node.name.clone(),
        }),
    }
}

/// An axis attribute (negative counts from the end) as an index.
fn axis_index(axis: i64, rank: usize) -> candle_core::Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(candle_core::Error::Msg(format!(
            "axis {axis} out of range for {rank} dimensions"
        )));
    }
    Ok(a as usize)
}

fn arg(args: &[Tensor], i: usize) -> candle_core::Result<&Tensor> {
    args.get(i)
        .ok_or_else(|| candle_core::Error::Msg(format!("missing input {i}")))
}

/// Most elements an intermediate tensor may have (256 MiB of f32; ResNet50's largest activation
/// at 224×224 has 0.8 M per photo): a graph whose attributes or parameters would make one
/// larger is refused instead of exhausting memory.
pub(super) const MAX_ELEMENTS: usize = 1 << 26;
/// Largest kernel, stride, dilation or padding accepted from an attribute.
const MAX_WINDOW: usize = 4096;

/// Refuses a tensor of `elems` elements (`None`: the count overflowed) above [`MAX_ELEMENTS`].
pub(super) fn guard_elements(what: &str, elems: Option<usize>) -> candle_core::Result<()> {
    match elems {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(candle_core::Error::Msg(format!(
            "{what} would have more than {MAX_ELEMENTS} elements"
        ))),
    }
}

fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The shape two operands broadcast to, if they do.
fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |d: &[usize], i: usize| {
        let off = rank - d.len();
        if i < off {
            1
        } else {
            d[i - off]
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

pub(super) fn run(op: &Op, args: &[Tensor]) -> candle_core::Result<Tensor> {
    let x = arg(args, 0)?;
    match op {
        Op::Conv {
            weight,
            bias,
            pad,
            stride,
            dilate,
            groups,
        } => {
            // Neither the padded input nor the output (at most as large per channel) may be huge.
            if let (Ok((n, c, h, w)), Some(&filters)) = (x.dims4(), weight.dims().first()) {
                let (ph, pw) = (h.checked_add(2 * pad[0]), w.checked_add(2 * pad[1]));
                let plane = ph.zip(pw).and_then(|(a, b)| a.checked_mul(b));
                let wide = plane.and_then(|p| p.checked_mul(n)?.checked_mul(c.max(filters)));
                guard_elements("a padded convolution", wide)?;
            }
            let y = if pad[0] == pad[1] {
                x.conv2d(weight, pad[0], *stride, *dilate, *groups)?
            } else {
                x.pad_with_zeros(2, pad[0], pad[0])?
                    .pad_with_zeros(3, pad[1], pad[1])?
                    .conv2d(weight, 0, *stride, *dilate, *groups)?
            };
            match bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        }
        Op::BatchNorm { scale, shift, axis } => {
            let a = axis_index(*axis, x.rank())?;
            let mut shape = vec![1usize; x.rank()];
            shape[a] = scale.elem_count();
            x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
                .broadcast_add(&shift.reshape(shape.as_slice())?)
        }
        Op::Packed { conv, relu } => {
            if let Ok((n, _, h, w)) = x.dims4() {
                guard_elements(
                    "a convolution's patch matrix",
                    conv.buffer_elements(n, h, w),
                )?;
            }
            conv.forward(x, args.get(1), *relu)
        }
        Op::Affine { scale, shift, relu } => kernels::channel_affine(x, scale, shift, *relu),
        Op::Sum { relu } => {
            let y = arg(args, 1)?;
            if x.dims() == y.dims() {
                kernels::add(x, y, *relu)
            } else {
                let sum = run(&Op::Binary(Binary::Add), args)?;
                if *relu {
                    kernels::relu(&sum)
                } else {
                    Ok(sum)
                }
            }
        }
        Op::Relu => kernels::relu(x),
        Op::Activation(a) => match a {
            Activation::Relu => x.relu(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Tanh => x.tanh(),
            // log(1 + e^x), computed as max(x, 0) + log(1 + e^-|x|) so it cannot overflow.
            Activation::SoftRelu => x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?),
        },
        Op::Pool(spec) => pool2d(x, spec),
        Op::Binary(b) => {
            let y = arg(args, 1)?;
            let dims = broadcast_dims(x.dims(), y.dims()).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    x.dims(),
                    y.dims()
                ))
            })?;
            guard_elements("a broadcast result", product(&dims))?;
            match b {
                Binary::Add => x.broadcast_add(y),
                Binary::Sub => x.broadcast_sub(y),
                Binary::Mul => x.broadcast_mul(y),
            }
        }
        Op::Flatten => {
            if x.rank() <= 1 {
                Ok(x.clone())
            } else {
                x.flatten_from(1)
            }
        }
        Op::FullyConnected {
            weight_t,
            bias,
            flatten,
        } => {
            let k = weight_t.dims()[0];
            let y = if *flatten || x.rank() <= 2 {
                let x2 = if x.rank() == 1 {
                    x.unsqueeze(0)?
                } else {
                    x.flatten_from(1)?
                };
                x2.matmul(weight_t)?
            } else {
                let mut dims = x.dims().to_vec();
                let rows = x.elem_count() / k.max(1);
                let y = x.reshape((rows, k))?.matmul(weight_t)?;
                if let Some(last) = dims.last_mut() {
                    *last = weight_t.dims()[1];
                }
                y.reshape(dims)?
            };
            match bias {
                Some(b) if y.rank() == 2 => y.broadcast_add(b),
                Some(b) => y.broadcast_add(&b.flatten_all()?),
                None => Ok(y),
            }
        }
        Op::Identity => Ok(x.clone()),
        Op::Softmax(s) => match s {
            Softmax::Instance => {
                if x.rank() <= 2 {
                    candle_nn::ops::softmax(x, D::Minus1)
                } else {
                    let dims = x.dims().to_vec();
                    candle_nn::ops::softmax(&x.flatten_from(1)?, D::Minus1)?.reshape(dims)
                }
            }
            Softmax::Axis { axis, temperature } => {
                let a = axis_index(*axis, x.rank())?;
                let x = if *temperature == 1.0 {
                    x.clone()
                } else {
                    (x / *temperature)?
                };
                candle_nn::ops::softmax(&x, a)
            }
        },
        Op::Concat { dim } => {
            let a = axis_index(*dim, x.rank())?;
            Tensor::cat(args, a)
        }
        Op::Clip { min, max } => x.clamp(*min as f32, *max as f32),
        Op::Reshape(shape) => x.reshape(reshape_dims(x.dims(), shape)?),
        Op::Scalar(s) => match *s {
            Scalar::Mul(v) => x.affine(v, 0.0),
            Scalar::Div(v) => x / v,
            Scalar::Plus(v) => x.affine(1.0, v),
            Scalar::Minus(v) => x.affine(1.0, -v),
            Scalar::RMinus(v) => x.affine(-1.0, v),
            Scalar::RDiv(v) => x.recip()?.affine(v, 0.0),
        },
        Op::Mean {
            axes,
            keepdims,
            exclude,
        } => {
            let rank = x.rank();
            let mut chosen: Vec<usize> = match axes {
                None => (0..rank).collect(),
                Some(list) => list
                    .iter()
                    .map(|&a| axis_index(a, rank))
                    .collect::<candle_core::Result<_>>()?,
            };
            if *exclude {
                chosen = (0..rank).filter(|a| !chosen.contains(a)).collect();
            }
            chosen.sort_unstable();
            chosen.dedup();
            let mut y = x.clone();
            for &a in &chosen {
                y = y.mean_keepdim(a)?;
            }
            if !*keepdims {
                for &a in chosen.iter().rev() {
                    y = y.squeeze(a)?;
                }
            }
            Ok(y)
        }
    }
}

/// MXNet's `Reshape` shape codes: 0 copies a dimension, -1 infers one, -2 copies the rest,
/// -3 merges two consecutive dimensions.
fn reshape_dims(input: &[usize], codes: &[i64]) -> candle_core::Result<Vec<usize>> {
    let bad = || candle_core::Error::Msg(format!("cannot reshape {input:?} to {codes:?}"));
    let mut out: Vec<usize> = Vec::with_capacity(codes.len());
    let mut infer: Option<usize> = None;
    let mut i = 0;
    for &c in codes {
        match c {
            0 => {
                out.push(*input.get(i).ok_or_else(bad)?);
                i += 1;
            }
            -1 => {
                if infer.is_some() {
                    return Err(bad());
                }
                infer = Some(out.len());
                out.push(1);
                i += 1;
            }
            -2 => {
                out.extend_from_slice(input.get(i..).ok_or_else(bad)?);
                i = input.len();
            }
            -3 => {
                let a = *input.get(i).ok_or_else(bad)?;
                let b = *input.get(i + 1).ok_or_else(bad)?;
                out.push(a * b);
                i += 2;
            }
            d if d > 0 => {
                out.push(d as usize);
                i += 1;
            }
            _ => return Err(bad()),
        }
    }
    let total: usize = input.iter().product();
    if let Some(k) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad());
        }
        out[k] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(bad());
    }
    Ok(out)
}
