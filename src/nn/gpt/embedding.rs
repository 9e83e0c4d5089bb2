//! The token + position embedding as a graph op: `x = wte[tokens] + wpe[position]`, f32
//! (the residual stream starts here), reading the f32 master tables. Backward is
//! deterministic without float atomics (each vocabulary row gathers the positions that
//! used it, from a host-built [`TokenIndex`]) and adds into `dwte` when the tied LM head
//! wrote it first.

use crate::kernels::Dispatch;
use crate::nn::graph::{Backward, GraphBuilder, Op, ParamId, ValueId};
use crate::ops::embedding::{self, TokenIndex};
use crate::{DType, Error, Result};
use std::sync::Arc;

/// The graph op.
#[derive(Debug)]
struct EmbeddingOp {
    wte: ParamId,
    wpe: ParamId,
    block: usize,
    // x: (N, C) f32, N = B * block
    x: ValueId,
    // index: the batch's token index (built on the host with the tokens); None in a
    // forward-only graph
    index: Option<Arc<TokenIndex>>,
    forward: [Dispatch; 1],
}

/// `x[p] = wte[tokens[p]] + wpe[p % block]` for the `rows` positions of `tokens` (a u32
/// buffer the caller fills). `index` (for backward) must be refilled with every batch.
// tokens: (N) u32 raw buffer; wte: (V, C) f32; wpe: (T_max, C) f32 -> x: (N, C) f32
pub fn embedding(
    g: &mut GraphBuilder<'_>,
    tokens: &wgpu::Buffer,
    rows: usize,
    block: usize,
    wte: ParamId,
    wpe: ParamId,
    index: Option<Arc<TokenIndex>>,
) -> Result<ValueId> {
    let c = match g.param(wte).shape() {
        [_, c] => *c,
        other => {
            return Err(Error::shape(
                "embedding",
                "wte (V, C)",
                format!("{other:?}"),
            ))
        }
    };
    let x = g.output(&[rows, c], DType::F32, true)?;
    let forward = embedding::forward(
        g.gpu(),
        tokens,
        block,
        &g.param(wte).master,
        &g.param(wpe).master,
        g.value(x),
    )?;
    g.push(EmbeddingOp {
        wte,
        wpe,
        block,
        x,
        index,
        forward: [forward],
    });
    Ok(x)
}

impl Op for EmbeddingOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, b: &mut Backward<'_>) -> Result<()> {
        let Some(dx) = b.grad(self.x).cloned() else {
            return Ok(());
        };
        let index = self.index.as_ref().ok_or_else(|| {
            Error::InvalidArgument("embedding backward needs a token index".into())
        })?;
        // Both kernels have an accumulate flag: the tied head's dwte term came first.
        let dwte = b.param_grad(self.wte, true)?;
        let dwpe = b.param_grad(self.wpe, true)?;
        let d = embedding::backward(
            b.gpu(),
            index,
            self.block,
            &dx,
            &dwte.tensor,
            dwte.accumulate,
            &dwpe.tensor,
            dwpe.accumulate,
        )?;
        b.extend(d);
        b.commit(dwte)?;
        b.commit(dwpe)
    }
}
