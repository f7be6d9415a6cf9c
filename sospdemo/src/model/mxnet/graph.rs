//! The executable graph: a symbol's nodes turned into candle operations with their parameters
//! bound, batch normalisations folded into the convolutions before them, and a forward pass
//! that frees every intermediate as soon as its last consumer has run.

use candle_core::{DType, Device, Tensor, D};

use super::params::{NdArray, Params};
use super::symbol::{Node, Symbol};
use super::MxNetError;

/// How a graph is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Fold each batch normalisation into the convolution that directly precedes it when
    /// nothing else reads that convolution's output (inference gives the same result; only
    /// rounding differs). On by default.
    pub fold_batch_norm: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            fold_batch_norm: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    SoftRelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Max,
    Avg,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
struct PoolSpec {
    kind: PoolKind,
    global: bool,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    /// `full` convention: output sizes round up instead of down.
    full: bool,
    count_include_pad: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Softmax {
    /// Over everything but the batch axis (`SoftmaxOutput`, instance-mode
    /// `SoftmaxActivation`).
    Instance,
    /// Over one axis, with a temperature.
    Axis { axis: i64, temperature: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Mul(f64),
    Div(f64),
    Plus(f64),
    Minus(f64),
    RMinus(f64),
    RDiv(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, Clone)]
enum Op {
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
}

/// What a node evaluates to.
#[derive(Debug, Clone)]
enum Step {
    /// The network input.
    Input,
    /// A parameter.
    Constant(Tensor),
    /// A variable that is neither the input nor in the `.params` file (a training label);
    /// nothing may read it.
    Unbound,
    /// The same value as another node's output (a folded batch normalisation).
    Alias((usize, usize)),
    /// An operation on earlier nodes' outputs.
    Compute { op: Op, inputs: Vec<(usize, usize)> },
}

/// A symbol bound to its parameters, ready to run.
#[derive(Debug, Clone)]
pub struct Graph {
    steps: Vec<Step>,
    names: Vec<String>,
    head: (usize, usize),
    /// Per step, the nodes whose value is no longer needed once it has run.
    frees: Vec<Vec<usize>>,
    folded: usize,
    output_is_probability: bool,
}

fn to_tensor(a: &NdArray) -> Result<Tensor, MxNetError> {
    Ok(Tensor::from_vec(
        a.data.clone(),
        a.shape.as_slice(),
        &Device::Cpu,
    )?)
}

/// Operators whose output is a probability distribution.
fn is_softmax(op: &str) -> bool {
    matches!(
        op,
        "SoftmaxOutput" | "Softmax" | "softmax" | "SoftmaxActivation"
    )
}

/// A label variable: only a softmax output layer reads it, and only for training.
fn is_label_name(name: &str) -> bool {
    name.ends_with("label")
}

impl Graph {
    /// Binds `symbol` to `params`. Every operator is checked here (unknown operators,
    /// malformed attributes, missing or misshapen parameters), so a graph that builds runs.
    pub fn build(
        symbol: &Symbol,
        params: &Params,
        options: BuildOptions,
    ) -> Result<Self, MxNetError> {
        let nodes = &symbol.nodes;
        let input = find_input(symbol, params)?;
        let mut consumers = vec![0usize; nodes.len()];
        for n in nodes {
            for &(src, _) in &n.inputs {
                consumers[src] += 1;
            }
        }
        for &(h, _) in &symbol.heads {
            consumers[h] += 1;
        }
        let mut steps: Vec<Step> = Vec::with_capacity(nodes.len());
        let mut folded = 0;
        for (i, node) in nodes.iter().enumerate() {
            let step = if node.is_variable() {
                if i == input {
                    Step::Input
                } else if let Some(a) = params.get(&node.name) {
                    Step::Constant(to_tensor(a)?)
                } else {
                    Step::Unbound
                }
            } else {
                let step = build_op(node, &steps)?;
                match step {
                    Step::Compute {
                        op: Op::BatchNorm { scale, shift, axis },
                        inputs,
                    } => {
                        let src = inputs[0];
                        let foldable = options.fold_batch_norm
                            && axis == 1
                            && src.1 == 0
                            && consumers[src.0] == 1
                            && matches!(
                                steps.get(src.0),
                                Some(Step::Compute {
                                    op: Op::Conv { .. },
                                    ..
                                })
                            );
                        if foldable {
                            fold_into_conv(&mut steps[src.0], &scale, &shift)?;
                            folded += 1;
                            Step::Alias(src)
                        } else {
                            Step::Compute {
                                op: Op::BatchNorm { scale, shift, axis },
                                inputs,
                            }
                        }
                    }
                    other => other,
                }
            };
            steps.push(step);
        }
        // Nothing may read a variable that has no value.
        for (node, step) in nodes.iter().zip(&steps) {
            let reads: &[(usize, usize)] = match step {
                Step::Compute { inputs, .. } => inputs,
                _ => &[],
            };
            for &(src, _) in reads {
                if matches!(steps[src], Step::Unbound) {
                    return Err(MxNetError::MissingParameter {
                        node: node.name.clone(),
                        name: nodes[src].name.clone(),
                    });
                }
            }
        }
        let head = symbol.heads[0];
        if symbol.heads.len() > 1 {
            tracing::warn!(
                heads = symbol.heads.len(),
                "the symbol has several outputs; the first is the classifier's"
            );
        }
        if matches!(steps[head.0], Step::Unbound) {
            return Err(MxNetError::Output(format!(
                "the output is the variable {:?}",
                nodes[head.0].name
            )));
        }
        let output_is_probability = is_softmax(&nodes[head.0].op);
        // Last reader of each node; the head is never freed.
        let mut last_use = vec![None::<usize>; nodes.len()];
        for (i, step) in steps.iter().enumerate() {
            let reads: Vec<usize> = match step {
                Step::Compute { inputs, .. } => inputs.iter().map(|e| e.0).collect(),
                Step::Alias(e) => vec![e.0],
                _ => Vec::new(),
            };
            for src in reads {
                last_use[src] = Some(i);
            }
        }
        let mut frees = vec![Vec::new(); nodes.len()];
        for (n, last) in last_use.iter().enumerate() {
            if let Some(step) = last {
                if n != head.0 && !matches!(steps[n], Step::Constant(_)) {
                    frees[*step].push(n);
                }
            }
        }
        tracing::debug!(nodes = nodes.len(), folded, "MXNet graph bound");
        Ok(Self {
            steps,
            names: nodes.iter().map(|n| n.name.clone()).collect(),
            head,
            frees,
            folded,
            output_is_probability,
        })
    }

    /// Number of batch normalisations folded into convolutions.
    pub fn folded_batch_norms(&self) -> usize {
        self.folded
    }

    /// Whether the output already is a softmax.
    pub fn output_is_probability(&self) -> bool {
        self.output_is_probability
    }

    /// Runs the graph on `x` and returns its (first) output.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, MxNetError> {
        let mut values: Vec<Option<Vec<Tensor>>> = vec![None; self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            let out = match step {
                Step::Input => vec![x.clone()],
                Step::Constant(t) => vec![t.clone()],
                Step::Unbound => Vec::new(),
                Step::Alias(e) => vec![value(&values, *e, &self.names)?],
                Step::Compute { op, inputs } => {
                    let args = inputs
                        .iter()
                        .map(|e| value(&values, *e, &self.names))
                        .collect::<Result<Vec<_>, _>>()?;
                    let y = run(op, &args).map_err(|e| MxNetError::Run {
                        node: self.names[i].clone(),
                        reason: e.to_string(),
                    })?;
                    vec![y]
                }
            };
            values[i] = Some(out);
            for &n in &self.frees[i] {
                values[n] = None;
            }
        }
        value(&values, self.head, &self.names)
    }
}

fn value(
    values: &[Option<Vec<Tensor>>],
    (node, output): (usize, usize),
    names: &[String],
) -> Result<Tensor, MxNetError> {
    values
        .get(node)
        .and_then(Option::as_ref)
        .and_then(|v| v.get(output))
        .cloned()
        .ok_or_else(|| MxNetError::Run {
            node: names.get(node).cloned().unwrap_or_default(),
            reason: format!("output {output} is not available"),
        })
}

/// The variable that receives the photo: `data` if it is not a parameter, else the only
/// variable that is neither a parameter nor a label.
fn find_input(symbol: &Symbol, params: &Params) -> Result<usize, MxNetError> {
    let free: Vec<usize> = symbol
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.is_variable() && params.get(&n.name).is_none())
        .map(|(i, _)| i)
        .collect();
    if let Some(&i) = free.iter().find(|&&i| symbol.nodes[i].name == "data") {
        return Ok(i);
    }
    let candidates: Vec<usize> = free
        .into_iter()
        .filter(|&i| !is_label_name(&symbol.nodes[i].name))
        .collect();
    match candidates.as_slice() {
        [i] => Ok(*i),
        [] => Err(MxNetError::Input(
            "every variable of the graph is a parameter or a label; none can take the photo".into(),
        )),
        many => Err(MxNetError::Input(format!(
            "the graph has no `data` variable and several variables missing from the .params \
             file ({}); either the input is not called `data` or parameters are missing",
            many.iter()
                .take(5)
                .map(|&i| symbol.nodes[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
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

fn unsupported(node: &Node, what: impl Into<String>) -> MxNetError {
    MxNetError::Unsupported {
        node: node.name.clone(),
        op: node.op.clone(),
        what: what.into(),
    }
}

fn build_op(node: &Node, steps: &[Step]) -> Result<Step, MxNetError> {
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

/// Scales a convolution's kernel and bias by a following normalisation's per-channel scale and
/// shift.
fn fold_into_conv(step: &mut Step, scale: &Tensor, shift: &Tensor) -> Result<(), MxNetError> {
    if let Step::Compute {
        op: Op::Conv { weight, bias, .. },
        ..
    } = step
    {
        let c = scale.elem_count();
        if weight.dims().first() != Some(&c) {
            return Err(MxNetError::ParamShape {
                node: String::from("batch normalisation after a convolution"),
                what: "gamma".into(),
                expected: vec![weight.dims().first().copied().unwrap_or(0)],
                found: vec![c],
            });
        }
        let new_w = weight.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
        let base = match bias {
            Some(b) => b.flatten_all()?,
            None => Tensor::zeros(c, DType::F32, &Device::Cpu)?,
        };
        let new_b = ((base * scale)? + shift)?.reshape((1, c, 1, 1))?;
        *weight = new_w.contiguous()?;
        *bias = Some(new_b);
    }
    Ok(())
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

fn run(op: &Op, args: &[Tensor]) -> candle_core::Result<Tensor> {
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

/// Output side of a pooling window sweep.
fn pooled_side(len: usize, k: usize, s: usize, p: usize, full: bool) -> Option<usize> {
    let span = (len + 2 * p).checked_sub(k)?;
    Some(if full { span.div_ceil(s) } else { span / s } + 1)
}

/// 2-D pooling with MXNet's semantics: windows start at `o·stride − pad`; max ignores padding;
/// avg divides by the window clipped to the padded input (`count_include_pad`) or to the input.
fn pool2d(x: &Tensor, spec: &PoolSpec) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (k, s, p) = if spec.global {
        ([h, w], [1, 1], [0, 0])
    } else {
        (spec.kernel, spec.stride, spec.pad)
    };
    let (Some(oh), Some(ow)) = (
        pooled_side(h, k[0], s[0], p[0], spec.full),
        pooled_side(w, k[1], s[1], p[1], spec.full),
    ) else {
        return Err(candle_core::Error::Msg(format!(
            "a {}×{} pooling window does not fit a {h}×{w} input",
            k[0], k[1]
        )));
    };
    let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * c * oh * ow];
    let (hi, wi) = (h as i64, w as i64);
    for plane in 0..n * c {
        let src = &data[plane * h * w..(plane + 1) * h * w];
        let dst = &mut out[plane * oh * ow..(plane + 1) * oh * ow];
        for oy in 0..oh {
            let y0 = (oy * s[0]) as i64 - p[0] as i64;
            let y1_padded = (y0 + k[0] as i64).min(hi + p[0] as i64);
            let (ya, yb) = (y0.max(0), (y0 + k[0] as i64).min(hi));
            for ox in 0..ow {
                let x0 = (ox * s[1]) as i64 - p[1] as i64;
                let x1_padded = (x0 + k[1] as i64).min(wi + p[1] as i64);
                let (xa, xb) = (x0.max(0), (x0 + k[1] as i64).min(wi));
                let mut acc = match spec.kind {
                    PoolKind::Max => f32::NEG_INFINITY,
                    _ => 0.0,
                };
                for yy in ya..yb {
                    let row = &src[yy as usize * w..(yy as usize + 1) * w];
                    for &v in &row[xa as usize..xb.max(xa) as usize] {
                        match spec.kind {
                            PoolKind::Max => acc = acc.max(v),
                            _ => acc += v,
                        }
                    }
                }
                dst[oy * ow + ox] = match spec.kind {
                    PoolKind::Max => {
                        if acc == f32::NEG_INFINITY {
                            0.0
                        } else {
                            acc
                        }
                    }
                    PoolKind::Sum => acc,
                    PoolKind::Avg => {
                        let area = if spec.count_include_pad {
                            (y1_padded - y0) * (x1_padded - x0)
                        } else {
                            (yb - ya).max(0) * (xb - xa).max(0)
                        };
                        if area > 0 {
                            acc / area as f32
                        } else {
                            0.0
                        }
                    }
                };
            }
        }
    }
    Tensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)
}
