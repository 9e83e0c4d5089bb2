//! Reductions in f32: column sums (bias gradients), in one pass for short matrices and
//! in two (partial sums of row chunks, then their sum) for tall ones.

use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY, F32_ONLY};
use crate::{DType, Error, Gpu, Result, Tensor};

declare_kernels! {
    "reduce";
    COL_SUM = "col_sum", slots: &[Slot::read("x", ANY), Slot::write("out", F32_ONLY)];
    COL_SUM_CHUNKS = "col_sum_chunks",
        slots: &[Slot::read("x", ANY), Slot::write("partials", F32_ONLY)];
    SUM_LAYERS = "sum_layers",
        slots: &[
            Slot::raw("layers", SlotKind::U32x4, Access::Read),
            Slot::raw("out", SlotKind::U32x4, Access::ReadWrite),
        ];
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    accumulate: u32,
}

/// Columns per workgroup of the one-pass column kernels (`reduce.wgsl`, `layernorm.wgsl`).
pub(crate) const COLS_PER_GROUP: u32 = 32;

/// Rows up to which the column sums (bias, LayerNorm gamma / beta gradients) run in one
/// pass, where a workgroup per 32 columns walks every row (a 384-wide matrix runs on 12
/// workgroups: fine for a thousand rows, a sliver of a big GPU for 16k; on the H200 the
/// MLP benchmark's three bias sums over 2,048 rows took 0.27 ms in one pass). Past it, two
/// passes that spread the rows over many workgroups. Small models keep the one-pass
/// kernel and so their exact bits (the digits MLP at batch 64, the tiny GPT's 1024 rows:
/// `halfgrad train`'s figures in tests/train.rs), and at that size a second dispatch
/// would cost more than it saves.
pub const ONE_PASS_MAX_ROWS: usize = 1024;
/// Rows per chunk of the two-pass column sums (`CHUNK_ROWS` in reduce.wgsl and
/// layernorm.wgsl): 16384 x 384 gives 256 chunks x 6 column groups = 1536 workgroups of
/// pass 1, and (256, C) f32 partial sums, 1/32 of an f16 input's bytes, for pass 2.
pub const CHUNK_ROWS: usize = 64;
/// Columns per pass-1 workgroup (64 x 4 invocations; 128 contiguous bytes of an f16 row).
const CHUNK_COLS: u32 = 64;

/// The f32 partial sums a column reduction over a (rows, cols) matrix needs:
/// `Some([chunks, cols])` past [`ONE_PASS_MAX_ROWS`] rows, `None` for one pass.
pub fn partial_sums_shape(rows: usize, cols: usize) -> Option<[usize; 2]> {
    (rows > ONE_PASS_MAX_ROWS).then(|| [rows.div_ceil(CHUNK_ROWS), cols])
}

/// Checks that `partial` is what [`partial_sums_shape`] asks for over (rows, cols).
pub(crate) fn check_partial(
    op: &'static str,
    rows: u32,
    cols: u32,
    partial: Option<&Tensor>,
) -> Result<()> {
    let want = partial_sums_shape(rows as usize, cols as usize);
    match (want, partial) {
        (None, None) => Ok(()),
        (Some(shape), Some(p)) if p.shape() == shape && p.dtype() == DType::F32 => Ok(()),
        (want, got) => Err(Error::InvalidArgument(format!(
            "{op}: {rows} x {cols} needs {} partial sums, got {}",
            match want {
                Some(s) => format!("{s:?} f32"),
                None => "no".into(),
            },
            match got {
                Some(p) => format!("{:?} {}", p.shape(), p.dtype()),
                None => "none".into(),
            }
        ))),
    }
}

/// Workgroups of a pass-1 kernel over (rows, cols): every chunk of every column group.
pub(crate) fn chunk_grid(gpu: &Gpu, rows: u32, cols: u32) -> [u32; 3] {
    let chunks = (rows as u64).div_ceil(CHUNK_ROWS as u64);
    gpu.grid_1d(chunks * cols.div_ceil(CHUNK_COLS) as u64, 1)
}

/// The (rows, cols) of a matrix, as u32, or a typed error.
pub(crate) fn matrix_dims(op: &'static str, t: &Tensor) -> Result<(u32, u32)> {
    match t.shape() {
        [r, c] => match (u32::try_from(*r), u32::try_from(*c)) {
            (Ok(r), Ok(c)) => Ok((r, c)),
            _ => Err(Error::InvalidArgument(format!(
                "{op}: shape {:?} exceeds u32",
                t.shape()
            ))),
        },
        other => Err(Error::shape(op, "(rows, cols)", format!("{other:?}"))),
    }
}

/// out[c] = sum over r of x[r, c], in f32 (`accumulate`: out[c] += that sum). One
/// dispatch, or two past [`ONE_PASS_MAX_ROWS`] rows, which need `partial` (the shape
/// [`partial_sums_shape`] gives; the caller allocates it once, with the op).
// x: (R, C) any dtype
// partial: (ceil(R / CHUNK_ROWS), C) f32 scratch, or None for R <= ONE_PASS_MAX_ROWS
// out: (C) f32
pub fn col_sum(
    gpu: &Gpu,
    x: &Tensor,
    out: &Tensor,
    partial: Option<&Tensor>,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    let (rows, cols) = matrix_dims("col_sum", x)?;
    if out.shape() != [cols as usize] {
        return Err(Error::shape(
            "col_sum",
            format!("[{cols}]"),
            format!("{:?}", out.shape()),
        ));
    }
    if out.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op: "col_sum",
            expected: "f32 output".into(),
            got: out.dtype(),
        });
    }
    check_partial("col_sum", rows, cols, partial)?;
    let Some(partial) = partial else {
        return Ok(vec![col_sum_one_pass(gpu, x, out, accumulate)?]);
    };
    let params = Params {
        rows,
        cols,
        accumulate: 0,
    };
    let chunks = gpu.dispatch(
        &COL_SUM_CHUNKS,
        &[Bind::Tensor(x), Bind::Tensor(partial)],
        bytemuck::bytes_of(&params),
        &[],
        chunk_grid(gpu, rows, cols),
    )?;
    Ok(vec![
        chunks,
        col_sum_one_pass(gpu, partial, out, accumulate)?,
    ])
}

/// The one-pass kernel: a workgroup per 32 columns walks every row. Also the second pass
/// of the two-pass sums (over the partial sums, in chunk order).
// x: (R, C) any dtype, shapes checked by the caller
// out: (C) f32
pub(crate) fn col_sum_one_pass(
    gpu: &Gpu,
    x: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    let (rows, cols) = matrix_dims("col_sum", x)?;
    let params = Params {
        rows,
        cols,
        accumulate: accumulate as u32,
    };
    gpu.dispatch(
        &COL_SUM,
        &[Bind::Tensor(x), Bind::Tensor(out)],
        bytemuck::bytes_of(&params),
        &[],
        column_grid(gpu, cols),
    )
}

/// Invocations a row for the row-reduction kernels (`row_sum` in workgroup_reduce.wgsl):
/// 32 for rows up to 1024 wide, so eight rows share a 256-invocation workgroup (on
/// software adapters a workgroup a row spent most of a small step in barriers); a whole
/// workgroup for wider rows. The sums' bits are the same either way.
pub(crate) fn row_lanes(cols: u32) -> u32 {
    if cols <= 1024 {
        32
    } else {
        256
    }
}

/// The override constant and workgroups of a row-reduction kernel over (rows, cols).
pub(crate) fn row_grid(gpu: &Gpu, rows: u32, cols: u32) -> ([(&'static str, u64); 1], [u32; 3]) {
    let lanes = row_lanes(cols);
    let rows_per_group = 256 / lanes;
    (
        [("ROW_LANES", lanes as u64)],
        gpu.grid_1d(rows.div_ceil(rows_per_group) as u64, 1),
    )
}

/// Workgroups for the column kernels: one per 32 columns, folded into a second dimension.
pub(crate) fn column_grid(gpu: &Gpu, cols: u32) -> [u32; 3] {
    let groups = cols.div_ceil(COLS_PER_GROUP) as u64;
    gpu.grid_1d(groups, 1)
}

/// `out (C) = sum over r of layers (R, C)`, layer by layer in order (+ the old `out` when
/// `accumulate`): the sum of a split-K product's K ranges. f32 only, C a multiple of 4
/// (16-byte words); one invocation a word, so a few layers of millions of values stream
/// at the copy's speed. Other shapes: `col_sum`.
// layers: (R, C) f32
// out: (C) f32
pub fn sum_layers(gpu: &Gpu, layers: &Tensor, out: &Tensor, accumulate: bool) -> Result<Dispatch> {
    let (rows, cols) = matrix_dims("sum_layers", layers)?;
    if out.shape() != [cols as usize] {
        return Err(Error::shape(
            "sum_layers",
            format!("[{cols}]"),
            format!("{:?}", out.shape()),
        ));
    }
    for t in [layers, out] {
        if t.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                op: "sum_layers",
                expected: "f32 layers and output".into(),
                got: t.dtype(),
            });
        }
    }
    if !cols.is_multiple_of(4) {
        return Err(Error::InvalidArgument(format!(
            "sum_layers: {cols} columns are not whole 16-byte words (a multiple of 4)"
        )));
    }
    let params = Params {
        rows,
        cols,
        accumulate: accumulate as u32,
    };
    gpu.dispatch(
        &SUM_LAYERS,
        &[Bind::Buffer(layers.buffer()), Bind::Buffer(out.buffer())],
        bytemuck::bytes_of(&params),
        &[],
        gpu.grid_1d((cols / 4) as u64, 256),
    )
}
