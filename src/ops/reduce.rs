//! Reductions in f32: column sums (bias gradients).

use crate::kernels::{declare_kernels, Bind, Dispatch, Slot, ANY, F32_ONLY};
use crate::{DType, Error, Gpu, Result, Tensor};

declare_kernels! {
    "reduce";
    COL_SUM = "col_sum", slots: &[Slot::read("x", ANY), Slot::write("out", F32_ONLY)];
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    accumulate: u32,
}

/// Columns per workgroup of the column kernels (`reduce.wgsl`, `layernorm.wgsl`).
pub(crate) const COLS_PER_GROUP: u32 = 32;

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

/// out[c] = sum over r of x[r, c], in f32 (`accumulate`: out[c] += that sum).
// x: (R, C) any dtype
// out: (C) f32
pub fn col_sum(gpu: &Gpu, x: &Tensor, out: &Tensor, accumulate: bool) -> Result<Dispatch> {
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

/// Workgroups for the column kernels: one per 32 columns, folded into a second dimension.
pub(crate) fn column_grid(gpu: &Gpu, cols: u32) -> [u32; 3] {
    let groups = cols.div_ceil(COLS_PER_GROUP) as u64;
    gpu.grid_1d(groups, 1)
}
