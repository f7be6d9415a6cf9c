//! The executable graph: a symbol's nodes bound to their parameters and turned into operations
//! (`ops`), batch normalisations folded into the convolutions before them, and a
//! forward pass that frees every intermediate as soon as its last consumer has run.

use candle_core::{DType, Device, Tensor};

use super::fuse;
use super::ops::{parse_node, run, Op};
use super::params::{NdArray, Params};
use super::symbol::Symbol;
use super::MxNetError;

/// How a graph is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Fold each batch normalisation into the convolution that directly precedes it when
    /// nothing else reads that convolution's output (inference gives the same result; only
    /// rounding differs). On by default.
    pub fold_batch_norm: bool,
    /// Run convolutions as GEMMs on kernels packed at build time, with a following sum and
    /// ReLU computed in the same pass, and the remaining normalisations, sums and ReLUs on
    /// the same thread pool (see `fuse`); off, every operator runs on its own with candle.
    /// Only rounding differs. On by default.
    pub fuse: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            fold_batch_norm: true,
            fuse: true,
        }
    }
}

/// What a node evaluates to.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// The network input.
    Input,
    /// A parameter.
    Constant(Tensor),
    /// A variable that is neither the input nor in the `.params` file (a training label);
    /// nothing may read it.
    Unbound,
    /// The same value as another node's output (a folded batch normalisation, or an
    /// operation fused into the node that computes it).
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
    fused: usize,
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
                let step = parse_node(node, &steps)?;
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
        let fused = if options.fuse {
            fuse::apply(&mut steps, &consumers)?
        } else {
            0
        };
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
        tracing::debug!(nodes = nodes.len(), folded, fused, "MXNet graph bound");
        Ok(Self {
            steps,
            names: nodes.iter().map(|n| n.name.clone()).collect(),
            head,
            frees,
            folded,
            fused,
            output_is_probability,
        })
    }

    /// Number of batch normalisations folded into convolutions.
    pub fn folded_batch_norms(&self) -> usize {
        self.folded
    }

    /// Number of sums and ReLUs computed by the node before them ([`BuildOptions::fuse`]).
    pub fn fused_operators(&self) -> usize {
        self.fused
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
