//! BF16 products on the f16 kernels (cooperative matrices where the adapter has them),
//! exactly up to a proven bound, through a power-of-two rescale (`shaders/matmul_rescale.wgsl`;
//! design and bound in docs/ARCHITECTURE.md, "BF16 on the f16 matrix units").
//!
//! Six dispatches: the scale exponent of every row of op(A) and column of op(B), the
//! scaled f16 copies of A and B (dense, in their stored layouts, so the f16 kernel reads
//! them with the same transposes), the f16 product into an f32 scratch, and the epilogue
//! `C = acc * 2^(ea_i + eb_j) (+ bias) (+ old C)` stored in C's dtype. The copies,
//! exponents and scratch are allocated here, once, when the op is built, outside the
//! buffer pool (only adapters with matrix units take this path under `Auto`, and the
//! size plans do not know the adapter); every dispatch holds them.

use super::plan::F16Product;
use super::{MatmulArgs, MatmulKernel, MatmulOptions};
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY, F32_ONLY};
use crate::{DType, Gpu, Result, Tensor};

/// The kernels of `shaders/matmul_rescale.wgsl`.
pub mod shader_matmul_rescale {
    use super::*;
    const BF16_ONLY: &[DType] = &[DType::BF16];
    const F16_ONLY: &[DType] = &[DType::F16];
    declare_kernels! {
        "matmul_rescale";
        /// Scale exponent of every line (stored row or column) of a bf16 operand.
        EXPONENTS = "exponents",
            slots: &[
                Slot::read("src", BF16_ONLY),
                Slot::raw("exps", SlotKind::U32, Access::ReadWrite),
            ];
        /// The scaled dense f16 copy of a bf16 operand.
        CONVERT = "convert",
            slots: &[
                Slot::read("src", BF16_ONLY),
                Slot::raw("exps", SlotKind::U32, Access::Read),
                Slot::write("dst", F16_ONLY),
            ];
        /// C = acc * 2^(ea_i + eb_j) (+ bias) (+ old C), in C's dtype.
        EPILOGUE = "epilogue",
            slots: &[
                Slot::read("acc", F32_ONLY),
                Slot::raw("exps_a", SlotKind::U32, Access::Read),
                Slot::raw("exps_b", SlotKind::U32, Access::Read),
                Slot::write("c", ANY),
                Slot::raw("bias", SlotKind::F32, Access::Read),
                Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
            ];
    }
}

pub use shader_matmul_rescale::{CONVERT, EPILOGUE, EXPONENTS};

/// The uniform of `shaders/matmul_rescale.wgsl` (`Params`).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
    offset: u32,
    flags: u32,
}

const FLAG_BY_COL: u32 = 1;
const FLAG_BIAS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;
const FLAG_UNSCALED: u32 = 4;
/// Invocations of the convert and epilogue workgroups.
const WG: u32 = 256;
/// Lines per exponents workgroup (`SPAN` in the shader).
const SPAN: u32 = 16;

/// One bf16 operand's exponents and scaled copy.
struct Operand {
    /// (lines) i32 exponents.
    exps: Tensor,
    /// (rows, cols) f16, dense.
    copy: Tensor,
    dispatches: [Dispatch; 2],
}

/// Exponents and the scaled copy of `src` (stored `rows x cols` at `offset` with row
/// stride `ld`), one exponent per stored column when `by_col`, else per stored row.
fn operand(
    gpu: &Gpu,
    src: &Tensor,
    (rows, cols): (usize, usize),
    (offset, ld): (usize, usize),
    by_col: bool,
) -> Result<Operand> {
    let lines = if by_col { cols } else { rows };
    let exps = Tensor::empty_unpooled(gpu, &[lines], DType::U32)?;
    let copy = Tensor::empty_unpooled(gpu, &[rows, cols], DType::F16)?;
    // The view was checked by `matmul`'s `check`: every index fits in u32.
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        ld: ld as u32,
        offset: offset as u32,
        flags: if by_col { FLAG_BY_COL } else { 0 },
    };
    let params = bytemuck::bytes_of(&params);
    let find = gpu.dispatch(
        &EXPONENTS,
        &[Bind::Tensor(src), Bind::Buffer(exps.buffer())],
        params,
        &[],
        gpu.grid_1d(lines as u64, SPAN),
    )?;
    let convert = gpu.dispatch(
        &CONVERT,
        &[
            Bind::Tensor(src),
            Bind::Buffer(exps.buffer()),
            Bind::Tensor(&copy),
        ],
        params,
        &[("WG", WG as u64)],
        gpu.grid_1d(((rows * cols) as u64).div_ceil(2), WG),
    )?;
    Ok(Operand {
        exps,
        copy,
        dispatches: [find, convert],
    })
}

/// The dispatches of a [`MatmulPlan::Rescaled`](super::MatmulPlan::Rescaled) product
/// (arguments already checked: bf16 operands, no batch, C one dense matrix filling its
/// tensor).
pub(super) fn dispatches(
    gpu: &Gpu,
    args: &MatmulArgs,
    product: F16Product,
) -> Result<Vec<Dispatch>> {
    let MatmulArgs { m, n, k, opts, .. } = *args;
    let a_stored = if opts.trans_a { (k, m) } else { (m, k) };
    let b_stored = if opts.trans_b { (n, k) } else { (k, n) };
    let ld = |layout: &super::MatrixLayout, cols: usize| {
        if layout.ld == 0 {
            cols
        } else {
            layout.ld
        }
    };
    // Rows of op(A) are stored columns of a transposed A; columns of op(B) are stored
    // rows of a transposed B.
    let a = operand(
        gpu,
        args.a,
        a_stored,
        (args.a_layout.offset, ld(&args.a_layout, a_stored.1)),
        opts.trans_a,
    )?;
    let b = operand(
        gpu,
        args.b,
        b_stored,
        (args.b_layout.offset, ld(&args.b_layout, b_stored.1)),
        !opts.trans_b,
    )?;
    let acc = Tensor::empty_unpooled(gpu, &[m, n], DType::F32)?;
    let inner = MatmulArgs {
        opts: MatmulOptions {
            accumulate: false,
            kernel: MatmulKernel::Auto,
            ..opts
        },
        tuning: args.tuning,
        ..MatmulArgs::new(&a.copy, &b.copy, &acc, (m, n, k))
    };
    let (_, params) = super::check(gpu, &inner)?;
    let product = super::product_dispatch(gpu, &inner, product, &params, 1)?;

    let epilogue = epilogue(gpu, &acc, Some((&a.exps, &b.exps)), args, (m, n), 0)?;

    let scratch = [a.exps, a.copy, b.exps, b.copy, acc];
    let [find_a, convert_a] = a.dispatches;
    let [find_b, convert_b] = b.dispatches;
    Ok([find_a, find_b, convert_a, convert_b, product, epilogue]
        .into_iter()
        .map(|d| d.holding(&scratch))
        .collect())
}

/// The epilogue dispatch: rows `rows` of C from element `offset` (a multiple of `cols`,
/// even) = acc (rows, cols) f32 * 2^(ea_i + eb_j) (+ bias) (+ old C when `args` say
/// accumulate), in C's dtype. Without `exps` (a widened f16 product) acc is not scaled.
pub(super) fn epilogue(
    gpu: &Gpu,
    acc: &Tensor,
    exps: Option<(&Tensor, &Tensor)>,
    args: &MatmulArgs,
    (rows, cols): (usize, usize),
    offset: usize,
) -> Result<Dispatch> {
    let (dummy_bias, dummy_flag) = super::dummy_bindings(gpu)?;
    let flags = [
        (args.bias.is_some(), FLAG_BIAS),
        (args.opts.accumulate, FLAG_ACCUMULATE),
        (exps.is_none(), FLAG_UNSCALED),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |f, (_, bit)| f | bit);
    // The caller's view was checked by `matmul`'s `check`: every index fits in u32.
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        ld: cols as u32,
        offset: offset as u32,
        flags,
    };
    // Unscaled: the exponent slots read nothing; the bias dummy stands in.
    let (exps_a, exps_b) = match exps {
        Some((a, b)) => (a.buffer(), b.buffer()),
        None => (&dummy_bias, &dummy_bias),
    };
    gpu.dispatch(
        &EPILOGUE,
        &[
            Bind::Tensor(acc),
            Bind::Buffer(exps_a),
            Bind::Buffer(exps_b),
            Bind::Tensor(args.c),
            Bind::Buffer(args.bias.map_or(&dummy_bias, |t| t.buffer())),
            Bind::Buffer(args.found_inf.map_or(&dummy_flag, |f| f.buffer())),
        ],
        bytemuck::bytes_of(&params),
        &[("WG", WG as u64)],
        gpu.grid_1d(((rows * cols) as u64).div_ceil(2), WG),
    )
}
