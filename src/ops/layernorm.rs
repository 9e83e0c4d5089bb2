//! Layer normalisation over the last dimension, forward and backward. Statistics and
//! affine parameters (and their gradients) are f32; x, y, dy, dx any dtype.

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY, F32_ONLY};
use crate::ops::reduce::{
    check_partial, chunk_grid, col_sum_one_pass, column_grid, matrix_dims, row_grid,
};
use crate::{DType, Error, Gpu, Result, Tensor};

const FOUND_INF: Slot = Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite);

declare_kernels! {
    "layernorm";
    FORWARD_STATS = "forward_stats",
        slots: &[
            Slot::read("x", ANY),
            Slot::write("mean", F32_ONLY),
            Slot::write("rstd", F32_ONLY),
        ];
    FORWARD_APPLY = "forward_apply",
        slots: &[
            Slot::read("x", ANY),
            Slot::read("mean", F32_ONLY),
            Slot::read("rstd", F32_ONLY),
            Slot::read("gamma", F32_ONLY),
            Slot::read("beta", F32_ONLY),
            Slot::write("y", ANY),
            FOUND_INF,
        ];
    BACKWARD_ROWS = "backward_rows",
        slots: &[
            Slot::read("x", ANY),
            Slot::read("dy", ANY),
            Slot::read("mean", F32_ONLY),
            Slot::read("rstd", F32_ONLY),
            Slot::read("gamma", F32_ONLY),
            Slot::write("row_terms", F32_ONLY),
        ];
    BACKWARD_INPUT = "backward_input",
        slots: &[
            Slot::read("x", ANY),
            Slot::read("dy", ANY),
            Slot::read("mean", F32_ONLY),
            Slot::read("rstd", F32_ONLY),
            Slot::read("gamma", F32_ONLY),
            Slot::read("row_terms", F32_ONLY),
            Slot::write("dx", ANY),
            FOUND_INF,
        ];
    BACKWARD_PARAMS = "backward_params",
        slots: &[
            Slot::read("x", ANY),
            Slot::read("dy", ANY),
            Slot::read("mean", F32_ONLY),
            Slot::read("rstd", F32_ONLY),
            Slot::write("dgamma", F32_ONLY),
            Slot::write("dbeta", F32_ONLY),
        ];
    BACKWARD_PARAMS_CHUNKS = "backward_params_chunks",
        slots: &[
            Slot::read("x", ANY),
            Slot::read("dy", ANY),
            Slot::read("mean", F32_ONLY),
            Slot::read("rstd", F32_ONLY),
            Slot::write("partial_g", F32_ONLY),
            Slot::write("partial_b", F32_ONLY),
        ];
}

/// PyTorch's default epsilon.
pub const DEFAULT_EPS: f32 = 1e-5;
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    accumulate: u32,
}

/// The f32 statistics layer norm saves for its backward.
// mean: (B) f32
// rstd: (B) f32, 1 / sqrt(var + eps)
#[derive(Debug, Clone)]
pub struct Stats<'a> {
    pub mean: &'a Tensor,
    pub rstd: &'a Tensor,
}

fn expect(op: &'static str, t: &Tensor, shape: &[usize], f32_only: bool) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::shape(
            op,
            format!("{shape:?}"),
            format!("{:?}", t.shape()),
        ));
    }
    if f32_only && t.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op,
            expected: "f32".into(),
            got: t.dtype(),
        });
    }
    Ok(())
}

fn check(
    op: &'static str,
    x: &Tensor,
    stats: &Stats<'_>,
    gamma: &Tensor,
    others: &[&Tensor],
) -> Result<(u32, u32)> {
    let (b, c) = matrix_dims(op, x)?;
    let (bu, cu) = (b as usize, c as usize);
    expect(op, stats.mean, &[bu], true)?;
    expect(op, stats.rstd, &[bu], true)?;
    expect(op, gamma, &[cu], true)?;
    for t in others {
        expect(op, t, &[bu, cu], false)?;
    }
    Ok((b, c))
}

fn params(rows: u32, cols: u32, eps: f32, accumulate: bool) -> Params {
    Params {
        rows,
        cols,
        eps,
        accumulate: accumulate as u32,
    }
}

fn pair_grid(gpu: &Gpu, rows: u32, cols: u32) -> [u32; 3] {
    gpu.grid_1d((rows as u64 * cols as u64).div_ceil(2), WG)
}

/// Forward: two dispatches, the f32 row statistics then the normalised, affine output.
// x: (B, C) any dtype
// gamma, beta: (C) f32
// stats: mean, rstd (B) f32, written (saved for backward)
// y: (B, C) any dtype, written
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    stats: Stats<'_>,
    y: &Tensor,
    found_inf: &OverflowFlag,
) -> Result<[Dispatch; 2]> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "layernorm: eps {eps} must be finite and >= 0"
        )));
    }
    let (b, c) = check("layernorm forward", x, &stats, gamma, &[y])?;
    expect("layernorm forward", beta, &[c as usize], true)?;
    let p = params(b, c, eps, false);
    let (lanes, row_groups) = row_grid(gpu, b, c);
    let rows = gpu.dispatch(
        &FORWARD_STATS,
        &[
            Bind::Tensor(x),
            Bind::Tensor(stats.mean),
            Bind::Tensor(stats.rstd),
        ],
        bytemuck::bytes_of(&p),
        &lanes,
        row_groups,
    )?;
    let apply = gpu.dispatch(
        &FORWARD_APPLY,
        &[
            Bind::Tensor(x),
            Bind::Tensor(stats.mean),
            Bind::Tensor(stats.rstd),
            Bind::Tensor(gamma),
            Bind::Tensor(beta),
            Bind::Tensor(y),
            Bind::Buffer(found_inf.buffer()),
        ],
        bytemuck::bytes_of(&p),
        &[("WG", WG as u64)],
        pair_grid(gpu, b, c),
    )?;
    Ok([rows, apply])
}

/// Backward for the input (two dispatches: per-row terms, then dx) and the parameters
/// (dgamma, dbeta column sums, overwritten or accumulated: one dispatch, or past
/// [`ONE_PASS_MAX_ROWS`](crate::ops::reduce::ONE_PASS_MAX_ROWS) rows three, partial sums
/// of row chunks into `partials` then one `reduce/col_sum` each).
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype
// gamma: (C) f32
// stats: mean, rstd (B) f32 from forward
// row_terms: (B, 2) f32 scratch
// dx: (B, C) any dtype, written; None skips the input gradient
// partials: [dgamma's, dbeta's] f32 scratch of reduce::partial_sums_shape(B, C), or None
//   when that is None
// dgamma, dbeta: (C) f32
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    stats: Stats<'_>,
    row_terms: &Tensor,
    dx: Option<&Tensor>,
    partials: Option<[&Tensor; 2]>,
    dgamma: &Tensor,
    dbeta: &Tensor,
    accumulate_param_grads: bool,
    found_inf: &OverflowFlag,
) -> Result<Vec<Dispatch>> {
    let op = "layernorm backward";
    let (b, c) = check(op, x, &stats, gamma, &[dy])?;
    expect(op, row_terms, &[b as usize, 2], true)?;
    expect(op, dgamma, &[c as usize], true)?;
    expect(op, dbeta, &[c as usize], true)?;
    for i in 0..2 {
        check_partial(op, b, c, partials.map(|p| p[i]))?;
    }
    if let Some([g, b]) = partials {
        if g.buffer() == b.buffer() {
            return Err(Error::InvalidArgument(format!(
                "{op}: dgamma's and dbeta's partial sums must be two buffers"
            )));
        }
    }
    let p = params(b, c, 0.0, accumulate_param_grads);
    let mut out = Vec::with_capacity(5);
    if let Some(dx) = dx {
        expect(op, dx, &[b as usize, c as usize], false)?;
        let (lanes, row_groups) = row_grid(gpu, b, c);
        out.push(gpu.dispatch(
            &BACKWARD_ROWS,
            &[
                Bind::Tensor(x),
                Bind::Tensor(dy),
                Bind::Tensor(stats.mean),
                Bind::Tensor(stats.rstd),
                Bind::Tensor(gamma),
                Bind::Tensor(row_terms),
            ],
            bytemuck::bytes_of(&p),
            &lanes,
            row_groups,
        )?);
        out.push(gpu.dispatch(
            &BACKWARD_INPUT,
            &[
                Bind::Tensor(x),
                Bind::Tensor(dy),
                Bind::Tensor(stats.mean),
                Bind::Tensor(stats.rstd),
                Bind::Tensor(gamma),
                Bind::Tensor(row_terms),
                Bind::Tensor(dx),
                Bind::Buffer(found_inf.buffer()),
            ],
            bytemuck::bytes_of(&p),
            &[("WG", WG as u64)],
            pair_grid(gpu, b, c),
        )?);
    }
    if let Some([partial_g, partial_b]) = partials {
        out.push(gpu.dispatch(
            &BACKWARD_PARAMS_CHUNKS,
            &[
                Bind::Tensor(x),
                Bind::Tensor(dy),
                Bind::Tensor(stats.mean),
                Bind::Tensor(stats.rstd),
                Bind::Tensor(partial_g),
                Bind::Tensor(partial_b),
            ],
            bytemuck::bytes_of(&p),
            &[],
            chunk_grid(gpu, b, c),
        )?);
        out.push(col_sum_one_pass(
            gpu,
            partial_g,
            dgamma,
            accumulate_param_grads,
        )?);
        out.push(col_sum_one_pass(
            gpu,
            partial_b,
            dbeta,
            accumulate_param_grads,
        )?);
        return Ok(out);
    }
    out.push(gpu.dispatch(
        &BACKWARD_PARAMS,
        &[
            Bind::Tensor(x),
            Bind::Tensor(dy),
            Bind::Tensor(stats.mean),
            Bind::Tensor(stats.rstd),
            Bind::Tensor(dgamma),
            Bind::Tensor(dbeta),
        ],
        bytemuck::bytes_of(&p),
        &[],
        column_grid(gpu, c),
    )?);
    Ok(out)
}
