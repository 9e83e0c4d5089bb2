//! BF16 products on the f16 kernels (cooperative matrices where the adapter has them),
//! exactly up to a proven bound, through a power-of-two rescale (`shaders/matmul_rescale.wgsl`;
//! design and bound in docs/ARCHITECTURE.md, "BF16 on the f16 matrix units").
//!
//! Six dispatches: one zeroing the per-line maxima, one finding the largest finite
//! magnitude of every row of op(A) and column of op(B) (both operands, many workgroups a
//! line, u32 atomicMax), the scaled f16 copies of A and B (dense, in their stored layouts,
//! so the f16 kernel reads them with the same transposes), the f16 product into an f32
//! scratch, and the epilogue `C = acc * 2^(ea_i + eb_j) (+ bias) (+ old C)` stored in C's
//! dtype. The copies, maxima and scratch are allocated here, once, when the op is built,
//! outside the buffer pool (only adapters with matrix units take this path under `Auto`,
//! and the size plans do not know the adapter); every dispatch holds them.

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
        /// Zeroes the per-line maxima of both operands.
        CLEAR = "clear",
            slots: &[
                Slot::raw("top_a", SlotKind::U32, Access::ReadWrite),
                Slot::raw("top_b", SlotKind::U32, Access::ReadWrite),
            ];
        /// Largest finite magnitude of every line (stored row or column) of both bf16
        /// operands.
        EXPONENTS = "exponents",
            slots: &[
                Slot::read("src_a", BF16_ONLY),
                Slot::read("src_b", BF16_ONLY),
                Slot::raw("top_a", SlotKind::Atomic, Access::ReadWrite),
                Slot::raw("top_b", SlotKind::Atomic, Access::ReadWrite),
            ];
        /// The scaled dense f16 copy of a bf16 operand.
        CONVERT = "convert",
            slots: &[
                Slot::read("src", BF16_ONLY),
                Slot::raw("top", SlotKind::U32, Access::Read),
                Slot::write("dst", F16_ONLY),
            ];
        /// C = acc * 2^(ea_i + eb_j) (+ bias) (+ old C), in C's dtype.
        EPILOGUE = "epilogue",
            slots: &[
                Slot::read("acc", F32_ONLY),
                Slot::raw("top_a", SlotKind::U32, Access::Read),
                Slot::raw("top_b", SlotKind::U32, Access::Read),
                Slot::write("c", ANY),
                Slot::raw("bias", SlotKind::F32, Access::Read),
                Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
            ];
    }
}

pub use shader_matmul_rescale::{CLEAR, CONVERT, EPILOGUE, EXPONENTS};

/// The uniform of `shaders/matmul_rescale.wgsl` (`Params`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
    offset: u32,
    flags: u32,
    b_rows: u32,
    b_cols: u32,
    b_ld: u32,
    b_offset: u32,
    b_flags: u32,
    a_groups: u32,
}

const FLAG_BY_COL: u32 = 1;
const FLAG_BIAS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;
const FLAG_UNSCALED: u32 = 4;
/// Invocations of the clear, convert and epilogue workgroups.
const WG: u32 = 256;
/// The exponents kernel's tiles (`OCTET_LANES`, `ROW_LANES`, `STEPS` in the shader):
/// 8 rows by 1024 columns by row, 32 rows by 256 columns by column.
const OCTET_LANES: usize = 32;
const ROW_LANES: usize = 8;
const STEPS: usize = 4;

/// One bf16 operand in its stored layout: `rows x cols` at element `offset` with row
/// stride `ld`, its lines stored columns when `by_col`, else stored rows.
#[derive(Clone, Copy)]
struct View {
    rows: usize,
    cols: usize,
    offset: usize,
    ld: usize,
    by_col: bool,
}

impl View {
    fn lines(&self) -> usize {
        if self.by_col {
            self.cols
        } else {
            self.rows
        }
    }

    /// (rows, cols, ld, offset, flags) of `Params`. The view was checked by `matmul`'s
    /// `check`: every index fits in u32.
    fn params(&self) -> [u32; 5] {
        [
            self.rows as u32,
            self.cols as u32,
            self.ld as u32,
            self.offset as u32,
            if self.by_col { FLAG_BY_COL } else { 0 },
        ]
    }

    /// Every stored row starts a 16-byte word (tensor buffers start at one).
    fn rows_aligned(&self) -> bool {
        self.offset.is_multiple_of(8) && self.ld.is_multiple_of(8)
    }

    /// Workgroups of the exponents kernel over this operand (one a tile).
    fn tiles(&self) -> usize {
        let (tile_rows, tile_cols) = if self.by_col {
            (ROW_LANES * STEPS, OCTET_LANES * 8)
        } else {
            (ROW_LANES, OCTET_LANES * 8 * STEPS)
        };
        self.rows.div_ceil(tile_rows) * self.cols.div_ceil(tile_cols)
    }
}

/// One bf16 operand's line maxima and scaled copy.
struct Operand<'a> {
    src: &'a Tensor,
    view: View,
    /// (lines) u32: the bits of each line's largest finite magnitude.
    top: Tensor,
    /// (rows, cols) f16, dense.
    copy: Tensor,
}

impl<'a> Operand<'a> {
    fn new(gpu: &Gpu, src: &'a Tensor, view: View) -> Result<Operand<'a>> {
        Ok(Operand {
            src,
            view,
            top: Tensor::empty_unpooled(gpu, &[view.lines()], DType::U32)?,
            copy: Tensor::empty_unpooled(gpu, &[view.rows, view.cols], DType::F16)?,
        })
    }

    /// The scaled copy of the source.
    fn convert(&self, gpu: &Gpu) -> Result<Dispatch> {
        let [rows, cols, ld, offset, flags] = self.view.params();
        let params = Params {
            rows,
            cols,
            ld,
            offset,
            flags,
            ..Params::default()
        };
        gpu.dispatch(
            &CONVERT,
            &[
                Bind::Tensor(self.src),
                Bind::Buffer(self.top.buffer()),
                Bind::Tensor(&self.copy),
            ],
            bytemuck::bytes_of(&params),
            &[
                ("WG", WG as u64),
                (
                    "OCTETS",
                    (self.view.rows_aligned() && self.view.cols.is_multiple_of(8)).into(),
                ),
            ],
            gpu.grid_1d(((self.view.rows * self.view.cols) as u64).div_ceil(8), WG),
        )
    }
}

/// Zeroes both operands' maxima, then finds them: two dispatches.
fn line_maxima(gpu: &Gpu, a: &Operand, b: &Operand) -> Result<[Dispatch; 2]> {
    let (lines_a, lines_b) = (a.view.lines(), b.view.lines());
    let clear = Params {
        rows: lines_a as u32,
        cols: lines_b as u32,
        ..Params::default()
    };
    let clear = gpu.dispatch(
        &CLEAR,
        &[Bind::Buffer(a.top.buffer()), Bind::Buffer(b.top.buffer())],
        bytemuck::bytes_of(&clear),
        &[("WG", WG as u64)],
        gpu.grid_1d(lines_a.max(lines_b) as u64, WG),
    )?;
    let [rows, cols, ld, offset, flags] = a.view.params();
    let [b_rows, b_cols, b_ld, b_offset, b_flags] = b.view.params();
    let a_groups = a.view.tiles();
    let params = Params {
        rows,
        cols,
        ld,
        offset,
        flags,
        b_rows,
        b_cols,
        b_ld,
        b_offset,
        b_flags,
        a_groups: a_groups as u32,
    };
    let find = gpu.dispatch(
        &EXPONENTS,
        &[
            Bind::Tensor(a.src),
            Bind::Tensor(b.src),
            Bind::Buffer(a.top.buffer()),
            Bind::Buffer(b.top.buffer()),
        ],
        bytemuck::bytes_of(&params),
        &[
            ("A_OCTETS", a.view.rows_aligned().into()),
            ("B_OCTETS", b.view.rows_aligned().into()),
        ],
        gpu.grid_1d((a_groups + b.view.tiles()) as u64, 1),
    )?;
    Ok([clear, find])
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
    let a = Operand::new(
        gpu,
        args.a,
        View {
            rows: a_stored.0,
            cols: a_stored.1,
            offset: args.a_layout.offset,
            ld: ld(&args.a_layout, a_stored.1),
            by_col: opts.trans_a,
        },
    )?;
    let b = Operand::new(
        gpu,
        args.b,
        View {
            rows: b_stored.0,
            cols: b_stored.1,
            offset: args.b_layout.offset,
            ld: ld(&args.b_layout, b_stored.1),
            by_col: !opts.trans_b,
        },
    )?;
    let [clear, find] = line_maxima(gpu, &a, &b)?;
    let (convert_a, convert_b) = (a.convert(gpu)?, b.convert(gpu)?);
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

    let epilogue = epilogue(gpu, &acc, Some((&a.top, &b.top)), args, (m, n), 0)?;

    let scratch = [a.top, a.copy, b.top, b.copy, acc];
    Ok([clear, find, convert_a, convert_b, product, epilogue]
        .into_iter()
        .map(|d| d.holding(&scratch))
        .collect())
}

/// The epilogue dispatch: rows `rows` of C from element `offset` (a multiple of `cols`,
/// even) = acc (rows, cols) f32 * 2^(ea_i + eb_j) (+ bias) (+ old C when `args` say
/// accumulate), in C's dtype. `tops`: the line maxima of op(A)'s rows and op(B)'s columns;
/// without them (a widened f16 product) acc is not scaled.
pub(super) fn epilogue(
    gpu: &Gpu,
    acc: &Tensor,
    tops: Option<(&Tensor, &Tensor)>,
    args: &MatmulArgs,
    (rows, cols): (usize, usize),
    offset: usize,
) -> Result<Dispatch> {
    let (dummy_bias, dummy_flag) = super::dummy_bindings(gpu)?;
    let flags = [
        (args.bias.is_some(), FLAG_BIAS),
        (args.opts.accumulate, FLAG_ACCUMULATE),
        (tops.is_none(), FLAG_UNSCALED),
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
        ..Params::default()
    };
    // Unscaled: the maxima slots read nothing; the bias dummy stands in.
    let (top_a, top_b) = match tops {
        Some((a, b)) => (a.buffer(), b.buffer()),
        None => (&dummy_bias, &dummy_bias),
    };
    gpu.dispatch(
        &EPILOGUE,
        &[
            Bind::Tensor(acc),
            Bind::Buffer(top_a),
            Bind::Buffer(top_b),
            Bind::Tensor(args.c),
            Bind::Buffer(args.bias.map_or(&dummy_bias, |t| t.buffer())),
            Bind::Buffer(args.found_inf.map_or(&dummy_flag, |f| f.buffer())),
        ],
        bytemuck::bytes_of(&params),
        &[("WG", WG as u64)],
        gpu.grid_1d(((rows * cols) as u64).div_ceil(2), WG),
    )
}
