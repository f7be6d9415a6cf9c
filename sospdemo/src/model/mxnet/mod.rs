//! Models exported by MXNet (Gluon's `export()` or `mx.model.save_checkpoint`), loaded
//! unchanged: a symbol file (`*-symbol.json`, the graph) and a `.params` file (the arrays),
//! run with candle.
//!
//! * [`params`] reads the `.params` NDArray-list format;
//! * [`symbol`] reads the graph JSON and its string attributes;
//! * [`graph`] binds the two into a runnable network, folding batch normalisations into the
//!   convolutions before them; `ops` and `pool` say what each operator computes.
//!
//! Supported operators: `Convolution`, `BatchNorm`, `Activation` (relu, sigmoid, tanh,
//! softrelu), `relu`, `sigmoid`, `tanh`, `Pooling` (max/avg/sum, global, `valid`/`full`,
//! `count_include_pad`), `elemwise_add`/`_plus`/`_Plus`/`broadcast_add` (and the `sub`/`mul`
//! counterparts), `Flatten`, `FullyConnected`, `Dropout`/`_copy`/`identity` (identity at
//! inference), `SoftmaxOutput`/`softmax`/`SoftmaxActivation`, `Concat`, `clip`, `Reshape`,
//! `_mul_scalar`/`_div_scalar`/`_plus_scalar`/`_minus_scalar`/`_rminus_scalar`/`_rdiv_scalar`
//! and `mean`. That covers Gluon's model-zoo ResNet v1/v2 and MobileNet; any other operator is
//! [`MxNetError::UnknownOp`], naming it.
//!
//! **Input size**: the photo enters the variable called `data` (or the only variable that is
//! neither a parameter nor a label). Its side is read from the variable's `__shape__`
//! attribute when it has one (`(1, 3, 32, 32)` → 32; height and width must agree) and is 224
//! otherwise, as for every ImageNet network. See [`super::Preprocess::mxnet`] for the rest of
//! the photo transform.
//!
//! Nothing here panics on bad input and nothing allocates more than the files' own size
//! suggests; every failure is an [`MxNetError`].

mod fuse;
pub mod graph;
mod ops;
pub mod params;
mod pool;
pub mod symbol;

use candle_core::{DType, Device, Tensor, D};

pub use graph::{BuildOptions, Graph};
pub use params::{looks_like_params, parse_params, NdArray, Params, ParamsError};
pub use symbol::{looks_like_symbol, Node, Symbol};

/// Input side of a network whose input variable carries no shape.
pub const DEFAULT_INPUT_SIDE: usize = 224;
/// Largest input side accepted from a `__shape__` attribute.
const MAX_INPUT_SIDE: usize = 2048;

/// Everything that can be wrong with an MXNet model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MxNetError {
    /// The `.params` file is unreadable.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The symbol file is not a valid graph.
    #[error("the MXNet symbol file is invalid: {0}")]
    Symbol(String),
    /// The graph uses an operator this engine does not implement.
    #[error("operator `{op}` (node {node:?}) is not supported by this inference engine")]
    UnknownOp {
        /// The operator.
        op: String,
        /// The node using it.
        node: String,
    },
    /// An operator attribute cannot be read.
    #[error("node {node:?}: attribute `{attr}` = {value:?} is not {expected}")]
    BadAttribute {
        /// The node.
        node: String,
        /// The attribute.
        attr: String,
        /// Its value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A known operator is used in a way this engine does not implement.
    #[error("node {node:?} ({op}) is not supported: {what}")]
    Unsupported {
        /// The node.
        node: String,
        /// Its operator.
        op: String,
        /// What is unsupported.
        what: String,
    },
    /// A parameter the graph needs is not in the `.params` file.
    #[error(
        "node {node:?} needs parameter {name}, which the .params file does not have (is it the \
         .params file exported with this symbol?)"
    )]
    MissingParameter {
        /// The node.
        node: String,
        /// The parameter.
        name: String,
    },
    /// A parameter has the wrong shape for its node.
    #[error("node {node:?}: its {what} has shape {found:?}, expected {expected:?} (0 = any)")]
    ParamShape {
        /// The node.
        node: String,
        /// Which parameter.
        what: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// The graph's input cannot be determined or has an unusable shape.
    #[error("the graph's input: {0}")]
    Input(String),
    /// The graph's output is not a class score vector.
    #[error("the graph's output: {0}")]
    Output(String),
    /// A node failed while running (shapes that do not fit together).
    #[error("node {node:?} failed: {reason}")]
    Run {
        /// The node.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// A tensor operation failed outside a node.
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// A loaded MXNet network: its bound graph, input side and class count.
#[derive(Debug, Clone)]
pub struct MxNetModel {
    graph: Graph,
    input_side: usize,
    classes: usize,
}

impl MxNetModel {
    /// Parses a symbol file and a `.params` file and binds them (batch normalisations folded).
    pub fn from_bytes(symbol: &[u8], params: &[u8]) -> Result<Self, MxNetError> {
        Self::from_bytes_with(symbol, params, BuildOptions::default())
    }

    /// Same as [`from_bytes`](Self::from_bytes) with explicit build options.
    pub fn from_bytes_with(
        symbol: &[u8],
        params: &[u8],
        options: BuildOptions,
    ) -> Result<Self, MxNetError> {
        let symbol = Symbol::parse(symbol)?;
        let params = parse_params(params)?;
        Self::build(&symbol, &params, options)
    }

    /// Binds a parsed graph to parsed parameters, then runs it once on a blank input to check
    /// that every shape fits and to learn the class count.
    pub fn build(
        symbol: &Symbol,
        params: &Params,
        options: BuildOptions,
    ) -> Result<Self, MxNetError> {
        let input_side = input_side(symbol)?;
        let graph = Graph::build(symbol, params, options)?;
        let blank = Tensor::zeros((1, 3, input_side, input_side), DType::F32, &Device::Cpu)?;
        let out = graph.forward(&blank)?;
        // [1, classes], or [1, classes, 1, 1] and the like.
        let dims = out.dims();
        let wide = dims.iter().skip(1).filter(|&&d| d != 1).count();
        let classes = match dims.first() {
            Some(1) if dims.len() >= 2 && wide <= 1 => dims[1..].iter().product::<usize>(),
            _ => {
                return Err(MxNetError::Output(format!(
                    "it has shape {dims:?}; a classifier's output is [batch, classes]"
                )))
            }
        };
        tracing::debug!(
            input_side,
            classes,
            folded = graph.folded_batch_norms(),
            "MXNet model loaded"
        );
        Ok(Self {
            graph,
            input_side,
            classes,
        })
    }

    /// Side of the square input the network expects.
    pub fn input_side(&self) -> usize {
        self.input_side
    }

    /// Number of classes of the output.
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Number of batch normalisations folded into convolutions.
    pub fn folded_batch_norms(&self) -> usize {
        self.graph.folded_batch_norms()
    }

    /// Number of sums and ReLUs computed by the operator before them
    /// ([`BuildOptions::fuse`]).
    pub fn fused_operators(&self) -> usize {
        self.graph.fused_operators()
    }

    /// Whether the graph already ends in a softmax.
    pub fn output_is_probability(&self) -> bool {
        self.graph.output_is_probability()
    }

    /// The graph's output `[n, classes]` for an input batch `[n, 3, side, side]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, MxNetError> {
        let y = self.graph.forward(&x.to_dtype(DType::F32)?)?;
        let n = y.dims().first().copied().unwrap_or(0);
        Ok(y.reshape((n, self.classes))?)
    }

    /// Class probabilities `[n, classes]`: the output, put through a softmax unless the graph
    /// ends in one.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor, MxNetError> {
        let y = self.forward(x)?;
        if self.output_is_probability() {
            Ok(y)
        } else {
            Ok(candle_nn::ops::softmax(&y, D::Minus1)?)
        }
    }
}

/// The input side: from the input variable's `__shape__` attribute, else 224.
fn input_side(symbol: &Symbol) -> Result<usize, MxNetError> {
    let data = symbol
        .nodes
        .iter()
        .find(|n| n.is_variable() && n.name == "data");
    let Some(shape) = data
        .map(|n| n.tuple_attr("__shape__"))
        .transpose()?
        .flatten()
    else {
        return Ok(DEFAULT_INPUT_SIDE);
    };
    match shape.as_slice() {
        [_, 3, h, w] if h == w && *h > 0 && (*h as usize) <= MAX_INPUT_SIDE => Ok(*h as usize),
        // Unknown sizes (0 or -1) mean the writer did not fix them.
        [_, _, h, w] if *h <= 0 && *w <= 0 => Ok(DEFAULT_INPUT_SIDE),
        other => Err(MxNetError::Input(format!(
            "`data` has shape {other:?}; a square RGB input [n, 3, side, side] with a side of at \
             most {MAX_INPUT_SIDE} is needed"
        ))),
    }
}
