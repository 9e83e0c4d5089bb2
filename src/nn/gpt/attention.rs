//! Causal multi-head self-attention as a graph op over the fused QKV activation, with
//! batched strided matrix products (16-bit operands, f32 accumulation) around an f32
//! score buffer and the causal softmax:
//!
//! ```text
//! qkv: (B*T, 3C) activation dtype; head h of Q at column h*hd, K at C + h*hd, V at 2C + h*hd
//! S = Q K^T          (B, H, T, T) f32, shared scratch
//! P = softmax(S / sqrt(hd)) causal, f32 math, stored (B, H, T, T) activation dtype (saved)
//! Y = P V            written in place into y: (B*T, C) at column h*hd
//! backward, from dY (B*T, C):
//! dV = P^T dY        into dqkv at column 2C + h*hd
//! dP = dY V^T        (B, H, T, T) f32, in the score scratch
//! dS = softmax'(P, dP)  (B, H, T, T) activation dtype, shared scratch
//! dQ = dS K, dK = dS^T Q  into dqkv at columns h*hd and C + h*hd
//! ```
//!
//! Memory: each layer keeps only P: `H * T * s` bytes per token (s = 2 in f16 / bf16,
//! 4 in f32; the tiny preset: 4 heads x 64 x 2 = 512 B per token per layer). The f32
//! scores / dP buffer (`4 * H * T` bytes per token) and the dS buffer (`s * H * T`) are
//! scratch shared by every layer of a model. Writing Y, dQ, dK and dV with 16-bit stores
//! at a head's column offset needs an even head width (two 16-bit values share a word).
//!
//! Each product carries its causal hint ([`Causal`]): S and dP skip the tiles above the
//! diagonal (the softmax kernels read only j <= i; those entries of the score scratch
//! keep whatever they held), Y and dQ stop their K loops after the diagonal (P and dS are
//! zero above it), dV and dK start them at the diagonal (P^T and dS^T are zero below it).
//! Kernels other than the fragment-copy one ignore the hints and compute everything.

use crate::kernels::Dispatch;
use crate::nn::graph::{Backward, GraphBuilder, Op, ValueId};
use crate::ops::attention::{default_scale, softmax_backward, softmax_forward};
use crate::ops::matmul::{matmul_with, Causal, MatmulArgs, MatmulOptions, MatrixLayout};
use crate::{DType, Error, Gpu, Result, Tensor};

/// Scratch one model's attention layers share: the f32 scores (reused for dP in
/// backward) and dS, both (B, H, T, T).
#[derive(Debug, Clone)]
pub struct AttentionScratch {
    // scores: (B, H, T, T) f32
    pub scores: Tensor,
    // dscores: (B, H, T, T) activation dtype; None in forward-only graphs
    pub dscores: Option<Tensor>,
}

impl AttentionScratch {
    pub fn new(
        gpu: &Gpu,
        (batch, heads, t): (usize, usize, usize),
        dtype: DType,
        backward: bool,
    ) -> Result<AttentionScratch> {
        let shape = [batch, heads, t, t];
        Ok(AttentionScratch {
            scores: Tensor::empty(gpu, &shape, DType::F32)?,
            dscores: if backward {
                Some(Tensor::empty(gpu, &shape, dtype)?)
            } else {
                None
            },
        })
    }
}

/// Shapes of one attention op.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    t: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    fn c(&self) -> usize {
        self.heads * self.hd
    }

    /// Head h of Q (`part` 0), K (1) or V (2) in qkv: (T, hd) at column part*C + h*hd,
    /// row stride 3C.
    fn qkv(&self, part: usize) -> MatrixLayout {
        let c = self.c();
        MatrixLayout {
            offset: part * c,
            ld: 3 * c,
            outer_stride: self.t * 3 * c,
            inner_stride: self.hd,
        }
    }

    /// Head h of y / dy: (T, hd) at column h*hd, row stride C.
    fn heads_of(&self) -> MatrixLayout {
        let c = self.c();
        MatrixLayout {
            offset: 0,
            ld: c,
            outer_stride: self.t * c,
            inner_stride: self.hd,
        }
    }

    /// (b, h) of a dense (B, H, T, T) buffer.
    fn square(&self) -> MatrixLayout {
        MatrixLayout::dense_batch(self.t, self.t, self.heads)
    }
}

/// One batched product over every (b, h) (one dispatch, or the rescaled path's six for a
/// bf16 product with a batch of one), with its causal hint.
#[allow(clippy::too_many_arguments)]
fn product(
    gpu: &Gpu,
    d: &Dims,
    (a, a_layout, trans_a): (&Tensor, MatrixLayout, bool),
    (b, b_layout, trans_b): (&Tensor, MatrixLayout, bool),
    (c, c_layout): (&Tensor, MatrixLayout),
    (m, n, k): (usize, usize, usize),
    causal: Causal,
    found_inf: Option<&crate::flag::OverflowFlag>,
) -> Result<Vec<Dispatch>> {
    matmul_with(
        gpu,
        &MatmulArgs {
            a_layout,
            b_layout,
            c_layout,
            batch: (d.batch, d.heads),
            found_inf,
            causal,
            opts: MatmulOptions {
                trans_a,
                trans_b,
                ..Default::default()
            },
            ..MatmulArgs::new(a, b, c, (m, n, k))
        },
    )
}

#[derive(Debug)]
struct AttentionOp {
    dims: Dims,
    scale: f32,
    qkv: ValueId,
    qkv_value: Tensor,
    y: ValueId,
    // probs: (B, H, T, T) activation dtype, saved for backward
    probs: Tensor,
    scratch: AttentionScratch,
    forward: Vec<Dispatch>,
}

/// Causal self-attention of `heads` heads over `qkv` (B*T, 3C) -> y (B*T, C), both in
/// the activation dtype; `scratch` is shared with the model's other attention ops.
pub fn causal_attention(
    g: &mut GraphBuilder<'_>,
    qkv: ValueId,
    (batch, t, heads): (usize, usize, usize),
    scratch: &AttentionScratch,
) -> Result<ValueId> {
    let gpu = g.gpu();
    let qkv_value = g.value(qkv).clone();
    let c3 = match qkv_value.shape() {
        [n, c3] if *n == batch * t && c3 % 3 == 0 => *c3,
        other => {
            return Err(Error::shape(
                "attention",
                format!("qkv of shape [{}, 3C]", batch * t),
                format!("{other:?}"),
            ))
        }
    };
    let c = c3 / 3;
    if heads == 0 || !c.is_multiple_of(heads) {
        return Err(Error::InvalidArgument(format!(
            "attention: {heads} heads do not divide the width {c}"
        )));
    }
    let dims = Dims {
        batch,
        t,
        heads,
        hd: c / heads,
    };
    let act = g.ctx().policy.activation;
    if act != DType::F32 && !dims.hd.is_multiple_of(2) {
        return Err(Error::InvalidArgument(format!(
            "attention: head width {} is odd; {act} attention stores two values per 32-bit \
             word and needs an even head width (n_embd / n_head)",
            dims.hd
        )));
    }
    let square = [batch, heads, t, t];
    if scratch.scores.shape() != square {
        return Err(Error::shape(
            "attention scratch",
            format!("{square:?}"),
            format!("{:?}", scratch.scores.shape()),
        ));
    }
    let probs = g.saved(&square, act)?;
    let y = g.output(&[batch * t, c], act, g.needs_grad(qkv))?;
    let y_value = g.value(y).clone();
    let found_inf = Some(g.ctx().found_inf);
    let scale = default_scale(dims.hd);
    let (hd, s) = (dims.hd, &scratch.scores);
    let forward = [
        // S = Q K^T: (T, hd) @ (hd, T), K read transposed in place
        product(
            gpu,
            &dims,
            (&qkv_value, dims.qkv(0), false),
            (&qkv_value, dims.qkv(1), true),
            (s, dims.square()),
            (t, t, hd),
            Causal::SkipAboveDiagonal,
            None,
        )?,
        vec![softmax_forward(gpu, s, scale, &probs)?],
        // Y = P V: (T, T) @ (T, hd), into y's head columns
        product(
            gpu,
            &dims,
            (&probs, dims.square(), false),
            (&qkv_value, dims.qkv(2), false),
            (&y_value, dims.heads_of()),
            (t, hd, t),
            Causal::LowerA,
            found_inf,
        )?,
    ]
    .concat();
    g.push(AttentionOp {
        dims,
        scale,
        qkv,
        qkv_value,
        y,
        probs,
        scratch: scratch.clone(),
        forward,
    });
    Ok(y)
}

impl Op for AttentionOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, b: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = b.grad(self.y).cloned() else {
            return Ok(());
        };
        // The three products write disjoint columns of dqkv: no accumulate flag needed
        // (a second writer of dqkv would get scratch + add from the graph).
        let Some(dqkv) = b.value_grad(self.qkv, false)? else {
            return Ok(());
        };
        let ds = self.scratch.dscores.as_ref().ok_or_else(|| {
            Error::InvalidArgument("attention backward needs the dS scratch".into())
        })?;
        let gpu = b.gpu();
        let found_inf = b.ctx().found_inf;
        let (d, t, hd) = (&self.dims, self.dims.t, self.dims.hd);
        let (qkv, p, dp) = (&self.qkv_value, &self.probs, &self.scratch.scores);
        let dq = &dqkv.tensor;
        let dispatches = [
            // dV = P^T dY: (T, T)^T @ (T, hd)
            product(
                gpu,
                d,
                (p, d.square(), true),
                (&dy, d.heads_of(), false),
                (dq, d.qkv(2)),
                (t, hd, t),
                Causal::UpperA,
                Some(found_inf),
            )?,
            // dP = dY V^T: (T, hd) @ (hd, T), f32 into the score scratch
            product(
                gpu,
                d,
                (&dy, d.heads_of(), false),
                (qkv, d.qkv(2), true),
                (dp, d.square()),
                (t, t, hd),
                Causal::SkipAboveDiagonal,
                None,
            )?,
            vec![softmax_backward(gpu, p, dp, self.scale, ds, found_inf)?],
            // dQ = dS K: (T, T) @ (T, hd)
            product(
                gpu,
                d,
                (ds, d.square(), false),
                (qkv, d.qkv(1), false),
                (dq, d.qkv(0)),
                (t, hd, t),
                Causal::LowerA,
                Some(found_inf),
            )?,
            // dK = dS^T Q: (T, T)^T @ (T, hd)
            product(
                gpu,
                d,
                (ds, d.square(), true),
                (qkv, d.qkv(0), false),
                (dq, d.qkv(1)),
                (t, hd, t),
                Causal::UpperA,
                Some(found_inf),
            )?,
        ]
        .concat();
        b.extend(dispatches);
        b.commit(dqkv)
    }
}
