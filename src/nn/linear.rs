//! Linear layer y = x W^T + b: 16-bit operands with f32 accumulation in F16 / BF16 mode,
//! f32 weight and bias gradients. [`linear`] is the graph op; [`Linear`] the same op as a
//! standalone layer over [`Node`]s.

use super::graph::{Backward, Graph, GraphBuilder, Op, ParamId, ParamStore, ValueId};
use super::init::{linear_bound, uniform_vec, SplitMix64};
use super::{batch_width, one_op_graph, Layer, LayerCtx, Node, Param};
use crate::kernels::Dispatch;
use crate::ops::matmul::{
    matmul_with, split_k_scratch_shape, widened_scratch_len, MatmulArgs, MatmulOptions,
};
use crate::ops::reduce::{col_sum, partial_sums_shape};
use crate::{DType, Error, Result, Tensor};

/// Adds the parameters of a Linear layer to `store`, initialised like PyTorch
/// `nn.Linear`: weight and bias uniform in ±1/sqrt(in) drawn from `rng` (weight first,
/// row-major, then bias), named `<prefix>.weight` and `<prefix>.bias`. The weight gets a
/// low-precision copy in the policy's matmul operand dtype; the bias stays f32 (matmuls
/// add an f32 bias to the f32 accumulator).
pub fn linear_params(
    ctx: &LayerCtx<'_>,
    store: &mut ParamStore,
    prefix: &str,
    in_features: usize,
    out_features: usize,
    bias: bool,
    rng: &mut SplitMix64,
) -> Result<(ParamId, Option<ParamId>)> {
    if out_features == 0 || in_features == 0 {
        return Err(Error::Empty {
            what: "linear weight",
            shape: vec![out_features, in_features],
        });
    }
    // Refuse an impossible weight before building its initial values on the host.
    Tensor::check_size(ctx.gpu, &[out_features, in_features], DType::F32)?;
    let bound = linear_bound(in_features);
    let w_init = uniform_vec(rng, out_features * in_features, bound);
    let weight = store.add(Param::from_f32(
        ctx.gpu,
        &format!("{prefix}.weight"),
        &[out_features, in_features],
        &w_init,
        ctx.policy.matmul_operand,
    )?)?;
    let bias = if bias {
        let b_init = uniform_vec(rng, out_features, bound);
        Some(store.add(Param::from_f32(
            ctx.gpu,
            &format!("{prefix}.bias"),
            &[out_features],
            &b_init,
            DType::F32,
        )?)?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// The graph op of a Linear layer.
#[derive(Debug)]
struct LinearOp {
    // x: (B, in) activation dtype, saved for the weight gradient
    x: ValueId,
    x_value: Tensor,
    // weight: (out, in), read through Param::compute()
    weight: (ParamId, Param),
    // bias: (out) f32
    bias: Option<ParamId>,
    // y: (B, out) activation dtype
    y: ValueId,
    forward: Vec<Dispatch>,
}

/// y = x W^T + b over the store's `weight` (out, in) and optional f32 `bias` (out).
// x: (B, in) activation dtype -> y: (B, out) activation dtype
pub fn linear(
    g: &mut GraphBuilder<'_>,
    x: ValueId,
    weight: ParamId,
    bias: Option<ParamId>,
) -> Result<ValueId> {
    let gpu = g.gpu();
    let x_value = g.value(x).clone();
    let w = g.param(weight);
    let (b, width) = match x_value.shape() {
        [b, c] => (*b, *c),
        other => {
            return Err(Error::shape(
                "linear",
                "(batch, features)",
                format!("{other:?}"),
            ))
        }
    };
    let (out_features, in_features) = match w.shape() {
        [o, i] => (*o, *i),
        other => {
            return Err(Error::shape(
                "linear weight",
                "(out, in)",
                format!("{other:?}"),
            ))
        }
    };
    if width != in_features {
        return Err(Error::shape(
            "linear input",
            format!("[{b}, {in_features}]"),
            format!("{:?}", x_value.shape()),
        ));
    }
    if let Some(p) = bias.map(|id| g.param(id)) {
        if p.shape() != [out_features] {
            return Err(Error::shape(
                "linear bias",
                format!("[{out_features}]"),
                format!("{:?}", p.shape()),
            ));
        }
    }
    let y = g.output(&[b, out_features], g.ctx().policy.activation, true)?;
    // y (B, out) = x (B, in) @ W^T (in, out) + b
    // (a 16-bit y on matrix units may go through an f32 scratch the graph shares)
    let y_value = g.value(y).clone();
    let args = MatmulArgs {
        bias: bias.map(|id| &g.param(id).master),
        found_inf: Some(g.ctx().found_inf),
        ..MatmulArgs::matrices(
            &x_value,
            w.compute(),
            &y_value,
            &MatmulOptions {
                trans_b: true,
                ..Default::default()
            },
        )?
    };
    let scratch = match widened_scratch_len(gpu, &args)? {
        Some(len) => Some(g.wide_scratch(len)?),
        None => None,
    };
    let forward = matmul_with(
        gpu,
        &MatmulArgs {
            wide_scratch: scratch.as_ref(),
            ..args
        },
    )?;
    g.push(LinearOp {
        x,
        x_value,
        weight: (weight, w.clone()),
        bias,
        y,
        forward,
    });
    Ok(y)
}

impl Op for LinearOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, b: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = b.grad(self.y).cloned() else {
            return Ok(());
        };
        let gpu = b.gpu();
        // dW (out, in) += dy^T (out, B) @ x (B, in), f32
        // (a long K = rows: on matrix units the product may split K over a scratch that
        // every weight gradient of the graph shares, since they run one after another)
        let dw = b.param_grad(self.weight.0, true)?;
        let opts = MatmulOptions {
            trans_a: true,
            accumulate: dw.accumulate,
            ..Default::default()
        };
        let args = MatmulArgs::matrices(&dy, &self.x_value, &dw.tensor, &opts)?;
        let scratch = match split_k_scratch_shape(gpu, &args)? {
            Some(shape) => b.temporaries(&shape, DType::F32, 1)?.pop(),
            None => None,
        };
        let d = matmul_with(
            gpu,
            &MatmulArgs {
                split_scratch: scratch.as_ref(),
                ..args
            },
        )?;
        b.extend(d);
        b.commit(dw)?;
        // db (out) += sum over the batch of dy, f32
        // (in two passes through shared partial sums for a tall dy)
        if let Some(id) = self.bias {
            let partial = match dy.shape() {
                [rows, c] => match partial_sums_shape(*rows, *c) {
                    Some(shape) => b.temporaries(&shape, DType::F32, 1)?.pop(),
                    None => None,
                },
                _ => None, // col_sum names the shape
            };
            let db = b.param_grad(id, true)?;
            b.extend(col_sum(
                gpu,
                &dy,
                &db.tensor,
                partial.as_ref(),
                db.accumulate,
            )?);
            b.commit(db)?;
        }
        // dx (B, in) += dy (B, out) @ W (out, in), activation dtype (matmul accumulates
        // only into f32)
        let f32_grad = self.x_value.dtype() == DType::F32;
        if let Some(dx) = b.value_grad(self.x, f32_grad)? {
            let found_inf = b.ctx().found_inf;
            let args = MatmulArgs {
                found_inf: Some(found_inf),
                ..MatmulArgs::matrices(
                    &dy,
                    self.weight.1.compute(),
                    &dx.tensor,
                    &MatmulOptions {
                        accumulate: dx.accumulate,
                        ..Default::default()
                    },
                )?
            };
            let scratch = match widened_scratch_len(gpu, &args)? {
                Some(len) => Some(b.wide_scratch(len)?),
                None => None,
            };
            let d = matmul_with(
                gpu,
                &MatmulArgs {
                    wide_scratch: scratch.as_ref(),
                    ..args
                },
            )?;
            b.extend(d);
            b.commit(dx)?;
        }
        Ok(())
    }
}

/// A Linear layer on its own: the [`linear`] op in a one-op graph over a [`Node`].
#[derive(Debug)]
pub struct Linear {
    // weight: (out, in); master f32, low copy in the matmul operand dtype; name `<p>.weight`
    pub weight: Param,
    // bias: (out) f32; name `<p>.bias`
    pub bias: Option<Param>,
    // input: (B, in); its value is saved for the weight gradient
    input: Node,
    // output: (B, out) activation dtype
    output: Node,
    graph: Graph,
}

impl Linear {
    /// A linear layer over `input`, initialised as [`linear_params`] describes.
    /// Backward overwrites `input.grad` (when present) and the parameter gradients (or
    /// adds into the latter under `GradMode::Accumulate`).
    // input: (B, in) activation dtype
    pub fn new(
        ctx: &LayerCtx<'_>,
        input: &Node,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut SplitMix64,
    ) -> Result<Linear> {
        let (b, width) = batch_width("linear", input)?;
        if width != in_features {
            return Err(Error::shape(
                "linear input",
                format!("[{b}, {in_features}]"),
                format!("{:?}", input.shape()),
            ));
        }
        if out_features == 0 {
            return Err(Error::Empty {
                what: "linear output",
                shape: vec![b, 0],
            });
        }
        let mut store = ParamStore::new();
        let (w, bias) = linear_params(
            ctx,
            &mut store,
            prefix,
            in_features,
            out_features,
            bias,
            rng,
        )?;
        let (graph, output) = one_op_graph(ctx, &store, input, |g, x| linear(g, x, w, bias))?;
        Ok(Linear {
            weight: store.get(w).clone(),
            bias: bias.map(|id| store.get(id).clone()),
            input: input.clone(),
            output,
            graph,
        })
    }

    pub fn input(&self) -> &Node {
        &self.input
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Layer for Linear {
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
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight)
            .chain(self.bias.as_mut())
            .collect()
    }
}
