//! f16 products into a 16-bit C (or with a bias) at the speed of an f32 product: the f16
//! kernel stores its f32 accumulators straight into an f32 scratch, and the epilogue of
//! [`rescale`](super::rescale) (unscaled) adds the bias (and the old C) and stores C's
//! dtype. On an H200 the fragment-copy kernel runs 109 TFLOP/s into f32 but 19 through
//! its in-kernel scratch epilogue (the staged kernel 51); the extra pass moves 10 bytes
//! an output element (docs/PERFORMANCE.md).
//!
//! The scratch holds `chunk_rows` rows of C ([`MatmulPlan::Widened`]); a taller product
//! runs chunk by chunk (A's rows and C's rows from the chunk's first row), so the
//! scratch stays under [`WIDE_SCRATCH_MAX_ELEMS`](super::WIDE_SCRATCH_MAX_ELEMS) f32
//! elements. Callers that run products one after another (a graph) pass one scratch to
//! all of them ([`MatmulArgs::wide_scratch`]); without one a product allocates its own.

use super::plan::MatmulPlan;
use super::{MatmulArgs, MatmulKernel, MatmulOptions, MatrixLayout};
use crate::kernels::Dispatch;
use crate::{Error, Gpu, Result};

/// The dispatches of a [`MatmulPlan::Widened`] product (arguments already checked: f16
/// operands, no batch, C one dense matrix filling its tensor): per chunk of rows, the f16
/// product into the scratch, then the epilogue into C.
pub(super) fn dispatches(gpu: &Gpu, args: &MatmulArgs, chunk_rows: usize) -> Result<Vec<Dispatch>> {
    let MatmulArgs { m, n, k, opts, .. } = *args;
    let scratch = super::f32_scratch(
        gpu,
        "matmul widened scratch",
        args.wide_scratch,
        &[chunk_rows * n],
    )?;
    let a_cols = if opts.trans_a { m } else { k };
    let a_ld = if args.a_layout.ld == 0 {
        a_cols
    } else {
        args.a_layout.ld
    };
    let inner_opts = MatmulOptions {
        accumulate: false,
        kernel: MatmulKernel::Auto,
        ..opts
    };
    let mut out = Vec::new();
    for first in (0..m).step_by(chunk_rows.max(1)) {
        let rows = chunk_rows.min(m - first);
        let acc = scratch.prefix(&[rows, n])?;
        // Rows [first, first + rows) of op(A): stored rows, or stored columns of a
        // transposed A.
        let a_offset = args.a_layout.offset + if opts.trans_a { first } else { first * a_ld };
        let inner = MatmulArgs {
            a_layout: MatrixLayout {
                offset: a_offset,
                ld: a_ld,
                ..args.a_layout
            },
            b_layout: args.b_layout,
            opts: inner_opts,
            tuning: args.tuning,
            ..MatmulArgs::new(args.a, args.b, &acc, (rows, n, k))
        };
        let (plan, params) = super::check(gpu, &inner)?;
        if matches!(
            plan,
            MatmulPlan::Rescaled { .. } | MatmulPlan::Widened { .. }
        ) {
            return Err(Error::InvalidArgument(format!(
                "matmul: the widened product's chunk took the {} path",
                plan.name()
            )));
        }
        let product =
            super::product_dispatch(gpu, &inner, super::plan::F16Product::of(plan), &params, 1)?;
        let epilogue = super::rescale::epilogue(gpu, &acc, None, args, (rows, n), first * n)?;
        let held = [acc];
        out.push(product.holding(&held));
        out.push(epilogue.holding(&held));
    }
    Ok(out)
}
