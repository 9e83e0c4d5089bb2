//! LayerNorm over the feature dimension: f32 statistics and f32 affine parameters
//! (`weight` = gamma, init 1; `bias` = beta, init 0, as PyTorch `nn.LayerNorm`).
//! [`layer_norm`] is the graph op; [`LayerNorm`] the same op as a standalone layer.

use super::graph::{Backward, Graph, GraphBuilder, Op, ParamId, ParamStore, ValueId};
use super::{batch_width, one_op_graph, Layer, LayerCtx, Node, Param};
use crate::kernels::Dispatch;
use crate::ops::layernorm::{self, Stats};
use crate::ops::reduce::partial_sums_shape;
use crate::{DType, Error, Result, Tensor};

/// Adds gamma (`<prefix>.weight`, ones) and beta (`<prefix>.bias`, zeros), both (C) f32.
pub fn layer_norm_params(
    ctx: &LayerCtx<'_>,
    store: &mut ParamStore,
    prefix: &str,
    c: usize,
) -> Result<(ParamId, ParamId)> {
    let gpu = ctx.gpu;
    let gamma = Param::from_f32(
        gpu,
        &format!("{prefix}.weight"),
        &[c],
        &vec![1.0; c],
        DType::F32,
    )?;
    let beta = Param::from_f32(
        gpu,
        &format!("{prefix}.bias"),
        &[c],
        &vec![0.0; c],
        DType::F32,
    )?;
    Ok((store.add(gamma)?, store.add(beta)?))
}

/// The graph op of a LayerNorm.
#[derive(Debug)]
struct LayerNormOp {
    // x: (B, C) activation dtype, saved for backward
    x: ValueId,
    x_value: Tensor,
    // gamma, beta: (C) f32
    gamma: (ParamId, Tensor),
    beta: ParamId,
    // y: (B, C) activation dtype
    y: ValueId,
    // mean, rstd: (B) f32, saved by forward for backward
    mean: Tensor,
    rstd: Tensor,
    // row_terms: (B, 2) f32 scratch of backward
    row_terms: Tensor,
    forward: [Dispatch; 2],
}

/// The outputs of [`layer_norm`].
#[derive(Debug, Clone, Copy)]
pub struct LayerNormValues {
    // y: (B, C) activation dtype
    pub y: ValueId,
    // mean, rstd: (B) f32 row statistics saved for backward
    pub mean: ValueId,
    pub rstd: ValueId,
}

/// y = (x - mean) * rstd * gamma + beta per row, statistics in f32.
// x: (B, C) activation dtype -> y: (B, C) activation dtype
pub fn layer_norm(
    g: &mut GraphBuilder<'_>,
    x: ValueId,
    gamma: ParamId,
    beta: ParamId,
    eps: f32,
) -> Result<LayerNormValues> {
    let gpu = g.gpu();
    let x_value = g.value(x).clone();
    let (b, c) = match x_value.shape() {
        [b, c] => (*b, *c),
        other => {
            return Err(Error::shape(
                "layernorm",
                "(batch, features)",
                format!("{other:?}"),
            ))
        }
    };
    let (gamma_t, beta_t) = (g.param(gamma).master.clone(), &g.param(beta).master);
    let y = g.output(&[b, c], g.ctx().policy.activation, true)?;
    let mean = g.output(&[b], DType::F32, false)?;
    let rstd = g.output(&[b], DType::F32, false)?;
    let row_terms = Tensor::empty(gpu, &[b, 2], DType::F32)?;
    let (mean_t, rstd_t) = (g.value(mean).clone(), g.value(rstd).clone());
    let forward = layernorm::forward(
        gpu,
        &x_value,
        &gamma_t,
        beta_t,
        eps,
        Stats {
            mean: &mean_t,
            rstd: &rstd_t,
        },
        g.value(y),
        g.ctx().found_inf,
    )?;
    g.push(LayerNormOp {
        x,
        x_value,
        gamma: (gamma, gamma_t),
        beta,
        y,
        mean: mean_t,
        rstd: rstd_t,
        row_terms,
        forward,
    });
    Ok(LayerNormValues { y, mean, rstd })
}

impl Op for LayerNormOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, b: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = b.grad(self.y).cloned() else {
            return Ok(());
        };
        // dx: the kernel overwrites only
        let dx = b.value_grad(self.x, false)?;
        // One accumulate flag serves dgamma and dbeta: when they differ (one of them used
        // elsewhere too), both are overwritten and the written one goes through scratch.
        let same = b.param_accumulates(self.gamma.0) == b.param_accumulates(self.beta);
        let dgamma = b.param_grad(self.gamma.0, same)?;
        let dbeta = b.param_grad(self.beta, same)?;
        let found_inf = b.ctx().found_inf;
        // dgamma's and dbeta's partial sums when the rows run in two passes (shared).
        let partials = match self.x_value.shape() {
            [rows, c] => match partial_sums_shape(*rows, *c) {
                Some(shape) => b.temporaries(&shape, DType::F32, 2)?,
                None => Vec::new(),
            },
            _ => Vec::new(), // layernorm::backward names the shape
        };
        let dispatches = layernorm::backward(
            b.gpu(),
            &self.x_value,
            &dy,
            &self.gamma.1,
            Stats {
                mean: &self.mean,
                rstd: &self.rstd,
            },
            &self.row_terms,
            dx.as_ref().map(|w| &w.tensor),
            match partials.as_slice() {
                [g, b] => Some([g, b]),
                _ => None,
            },
            &dgamma.tensor,
            &dbeta.tensor,
            dgamma.accumulate,
            found_inf,
        )?;
        b.extend(dispatches);
        if let Some(dx) = dx {
            b.commit(dx)?;
        }
        b.commit(dgamma)?;
        b.commit(dbeta)
    }
}

/// A LayerNorm on its own: the [`layer_norm`] op in a one-op graph over a [`Node`].
#[derive(Debug)]
pub struct LayerNorm {
    // gamma: (C) f32, state-dict name `<prefix>.weight`
    pub gamma: Param,
    // beta: (C) f32, state-dict name `<prefix>.bias`
    pub beta: Param,
    pub eps: f32,
    // input: (B, C); its value is saved for backward
    input: Node,
    // output: (B, C) activation dtype
    output: Node,
    // mean, rstd: (B) f32, saved by forward for backward
    mean: Tensor,
    rstd: Tensor,
    graph: Graph,
}

impl LayerNorm {
    /// LayerNorm over the last dimension of `input`; parameters named `<prefix>.weight` and
    /// `<prefix>.bias`.
    // input: (B, C) activation dtype
    pub fn new(ctx: &LayerCtx<'_>, input: &Node, prefix: &str, eps: f32) -> Result<LayerNorm> {
        let (_, c) = batch_width("layernorm", input)?;
        let mut store = ParamStore::new();
        let (gamma, beta) = layer_norm_params(ctx, &mut store, prefix, c)?;
        let mut stats = None;
        let (graph, output) = one_op_graph(ctx, &store, input, |g, x| {
            let v = layer_norm(g, x, gamma, beta, eps)?;
            stats = Some((g.value(v.mean).clone(), g.value(v.rstd).clone()));
            Ok(v.y)
        })?;
        let (mean, rstd) = stats.ok_or_else(|| {
            Error::InvalidArgument("layernorm: the op built no statistics".into())
        })?;
        Ok(LayerNorm {
            gamma: store.get(gamma).clone(),
            beta: store.get(beta).clone(),
            eps,
            input: input.clone(),
            output,
            mean,
            rstd,
            graph,
        })
    }

    pub fn input(&self) -> &Node {
        &self.input
    }

    /// The f32 row means saved by the last forward.
    // mean: (B) f32
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The f32 reciprocal standard deviations saved by the last forward.
    // rstd: (B) f32
    pub fn rstd(&self) -> &Tensor {
        &self.rstd
    }
}

impl Layer for LayerNorm {
    fn output(&self) -> &Node {
        &self.output
    }
    fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_forward(pass);
    }
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_backward(pass);
    }
    fn params(&self) -> Vec<&Param> {
        vec![&self.gamma, &self.beta]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}
