//! Layers as explicit forward/backward pairs (llm.c style), the static graph that orders
//! them, and models built from it.
//!
//! Shape legend: B batch rows, C / in / out feature widths, V classes.
//!
//! [`graph`]: a model is built once into a [`Graph`] of prebuilt dispatches over the
//! parameters of a [`ParamStore`]; each op (`linear`, `layer_norm`, `activation`,
//! `softmax_cross_entropy`) is a forward/backward pair whose backward the graph generates
//! in reverse order, summing the gradients of values and parameters used more than once.
//! [`model`]: the [`Model`] trait the trainer runs; [`Mlp`] is one, its architecture an
//! [`MlpConfig`] (or, for the trainer's classifier, [`MlpOptions`] and the data set).
//!
//! The same ops also serve as standalone layers over [`Node`]s (a one-op graph each):
//! a layer reads an input [`Node`] (a value and, when backward should produce it, the
//! gradient buffer it writes), owns its output `Node`, the tensors its backward needs and
//! its [`Param`]s, and builds every [`Dispatch`](crate::kernels::Dispatch) once at
//! construction for a fixed batch size. A training step then only encodes them.
//!
//! Gradient semantics: backward OVERWRITES activation gradients always, and parameter
//! gradients by default ([`GradMode::Overwrite`]): each step writes fresh gradients, so
//! nothing has to clear them first. [`GradMode::Accumulate`] adds into `Param::grad`
//! instead (gradient accumulation over micro-batches; the optimizer then clears them).

pub mod activation;
pub mod gpt;
pub mod graph;
pub mod init;
pub mod layernorm;
pub mod linear;
pub mod mlp;
pub mod mlp_options;
pub mod model;
pub mod param;
pub mod plan;
pub mod softmax_xent;

pub use activation::{activation, ActivationLayer};
pub use graph::{Backward, GradWrite, Graph, GraphBuilder, Op, ParamId, ParamStore, ValueId};
pub use init::SplitMix64;
pub use layernorm::{layer_norm, layer_norm_params, LayerNorm, LayerNormValues};
pub use linear::{linear, linear_params, Linear};
pub use mlp::{Mlp, MlpConfig};
pub use mlp_options::MlpOptions;
pub use model::{Batch, BatchLayout, Inputs, Model};
pub use param::Param;
pub use plan::{check_plan, DeviceBudget, GradPlan, GradValue, PlannedTensor, Role, SizePlan};
pub use softmax_xent::{softmax_cross_entropy, SoftmaxCrossEntropy, XentLoss};

pub use crate::ops::activation::Activation;

use crate::flag::OverflowFlag;
use crate::precision::Policy;
use crate::{DType, Gpu, Result, Tensor};

/// A value flowing between layers, with the gradient of the loss with respect to it.
/// The producing layer owns both; the consuming layer holds clones (same buffers), reads
/// `value` in forward and writes `grad` in backward.
#[derive(Debug, Clone)]
pub struct Node {
    // value: (B, C) activation dtype
    pub value: Tensor,
    /// `None` where no gradient is wanted (the model's input): backward then skips the
    /// input-gradient kernels of the layer that reads this node.
    // grad: (B, C) activation dtype
    pub grad: Option<Tensor>,
}

impl Node {
    /// A node of `shape` in `dtype`, with a gradient buffer when `with_grad`.
    pub fn new(gpu: &Gpu, shape: &[usize], dtype: DType, with_grad: bool) -> Result<Node> {
        Ok(Node {
            value: Tensor::empty(gpu, shape, dtype)?,
            grad: if with_grad {
                Some(Tensor::empty(gpu, shape, dtype)?)
            } else {
                None
            },
        })
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
}

/// Whether backward overwrites or adds into parameter gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradMode {
    /// Each backward writes fresh parameter gradients.
    #[default]
    Overwrite,
    /// Each backward adds into the parameter gradients (accumulation over micro-batches).
    Accumulate,
}

impl GradMode {
    pub fn accumulate(self) -> bool {
        self == GradMode::Accumulate
    }
}

/// What every layer constructor needs: the device, the precision policy, the found-inf
/// flag that 16-bit stores raise, and the parameter-gradient mode.
#[derive(Debug, Clone, Copy)]
pub struct LayerCtx<'a> {
    pub gpu: &'a Gpu,
    pub policy: Policy,
    pub found_inf: &'a OverflowFlag,
    pub grad_mode: GradMode,
}

impl<'a> LayerCtx<'a> {
    pub fn new(gpu: &'a Gpu, policy: Policy, found_inf: &'a OverflowFlag) -> LayerCtx<'a> {
        LayerCtx {
            gpu,
            policy,
            found_inf,
            grad_mode: GradMode::Overwrite,
        }
    }

    pub fn with_grad_mode(mut self, mode: GradMode) -> Self {
        self.grad_mode = mode;
        self
    }
}

/// A layer of a model: built once, encoded every step.
pub trait Layer {
    /// The layer's output (its value and the gradient buffer the next layer writes).
    fn output(&self) -> &Node;
    /// Records forward: reads the input node's value, writes the output's.
    fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>);
    /// Records backward: reads the output's gradient, writes the input's gradient (when
    /// the input has one) and the parameter gradients.
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>);
    /// Trainable parameters, in state-dict order.
    fn params(&self) -> Vec<&Param>;
    /// Mutable parameters (write their contents; replacing a tensor would detach it from
    /// the Dispatches built at construction).
    fn params_mut(&mut self) -> Vec<&mut Param>;
}

/// The `(B, C)` of a 2-D node, or a typed shape error naming `op`.
pub(crate) fn batch_width(op: &'static str, node: &Node) -> Result<(usize, usize)> {
    match node.shape() {
        [b, c] => Ok((*b, *c)),
        other => Err(crate::Error::shape(
            op,
            "(batch, features)",
            format!("{other:?}"),
        )),
    }
}

/// A graph of one op over `input` (gradient written into `input.grad` when present) whose
/// output gradient is a fresh buffer the caller fills: how a graph op serves as a layer.
pub(crate) fn one_op_graph(
    ctx: &LayerCtx<'_>,
    store: &ParamStore,
    input: &Node,
    op: impl FnOnce(&mut GraphBuilder<'_>, ValueId) -> Result<ValueId>,
) -> Result<(Graph, Node)> {
    let mut g = GraphBuilder::new(ctx, store);
    let x = g.external(&input.value, input.grad.as_ref())?;
    let y = op(&mut g, x)?;
    let value = g.value(y).clone();
    let grad = Tensor::empty(ctx.gpu, value.shape(), value.dtype())?;
    g.seed_grad(y, &grad)?;
    let graph = g.finish()?;
    Ok((
        graph,
        Node {
            value,
            grad: Some(grad),
        },
    ))
}
