//! The softmax of causal multi-head attention, forward and backward. The products around
//! it (S = Q K^T, Y = P V and their gradients) are batched matrix products; this module
//! turns the f32 scores S into probabilities P and the gradient dP back into dS.
//!
//! ```text
//! s:  (BH, T, T) f32           scores q_i . k_j (f32 accumulation)
//! p:  (BH, T, T) activation    softmax_j(scale * s[i, j]) over j <= i, 0 above
//! dp: (BH, T, T) f32 or act.   dY @ V^T
//! ds: (BH, T, T) activation    scale * p * (dp - rowsum(p * dp)), 0 above the diagonal
//! ```
//! The scale, mask, max subtraction, exp and every sum are f32 whatever the storage dtype.
//! Leading dimensions are free: (B, H, T, T) works the same as (B*H, T, T).

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY, F32_ONLY};
use crate::{DType, Error, Gpu, Result, Tensor};

declare_kernels! {
    "attention";
    /// Scaled, causally masked softmax of f32 scores.
    SOFTMAX_FORWARD = "softmax_forward",
        slots: &[Slot::read("scores", F32_ONLY), Slot::write("probs", ANY)];
    /// dS from P and dP, scaled, stored in the activation dtype.
    SOFTMAX_BACKWARD = "softmax_backward",
        slots: &[
            Slot::read("probs", ANY),
            Slot::read("dprobs", ANY),
            Slot::write("dscores", ANY),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
        ];
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    t: u32,
    scale: f32,
    _pad: u32,
}

/// `1 / sqrt(head_dim)`, the usual score scale.
pub fn default_scale(head_dim: usize) -> f32 {
    (1.0 / (head_dim as f64).sqrt()) as f32
}

/// Checks that `t` is (..., T, T) and returns (rows = numel / T, T) as u32.
fn square_rows(op: &'static str, t: &Tensor) -> Result<(u32, u32)> {
    let shape = t.shape();
    let (n, m) = match shape {
        [.., n, m] => (*n, *m),
        _ => return Err(Error::shape(op, "(..., T, T)", format!("{shape:?}"))),
    };
    if n != m {
        return Err(Error::shape(op, "(..., T, T)", format!("{shape:?}")));
    }
    let rows = t.len() / n.max(1);
    match (u32::try_from(rows), u32::try_from(n)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(Error::InvalidArgument(format!(
            "{op}: shape {shape:?} is empty or exceeds u32"
        ))),
    }
}

fn same_shape(op: &'static str, want: &Tensor, got: &Tensor) -> Result<()> {
    if want.shape() != got.shape() {
        return Err(Error::shape(
            op,
            format!("{:?}", want.shape()),
            format!("{:?}", got.shape()),
        ));
    }
    Ok(())
}

fn check_scale(op: &'static str, scale: f32) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "{op}: scale {scale} must be finite and > 0"
        )));
    }
    Ok(())
}

/// Two rows per workgroup (see attention.wgsl).
fn grid(gpu: &Gpu, rows: u32) -> [u32; 3] {
    gpu.grid_1d((rows as u64).div_ceil(2), 1)
}

/// Invocations per workgroup for rows of `t`: the smallest power of two >= `t`, at most
/// 256. Up to 256 the results equal a 256-wide workgroup's bit for bit (see
/// attention.wgsl); beyond, every row is strided over 256 as before.
fn row_workgroup(t: u32) -> u64 {
    u64::from(t.clamp(1, 256).next_power_of_two())
}

/// Forward: `p = causal_softmax(scale * s)` row by row, in f32 with max subtraction.
// s: (..., T, T) f32 scores
// p: same shape, any dtype, written (0 above the diagonal)
pub fn softmax_forward(gpu: &Gpu, s: &Tensor, scale: f32, p: &Tensor) -> Result<Dispatch> {
    let op = "attention softmax forward";
    check_scale(op, scale)?;
    let (rows, t) = square_rows(op, s)?;
    if s.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op,
            expected: "f32 scores".into(),
            got: s.dtype(),
        });
    }
    same_shape(op, s, p)?;
    let params = Params {
        rows,
        t,
        scale,
        _pad: 0,
    };
    gpu.dispatch(
        &SOFTMAX_FORWARD,
        &[Bind::Tensor(s), Bind::Tensor(p)],
        bytemuck::bytes_of(&params),
        &[("ROW_WG", row_workgroup(t))],
        grid(gpu, rows),
    )
}

/// Backward: `ds = scale * p * (dp - sum_k p[k] dp[k])` on and below the diagonal, 0
/// above; raises `found_inf` when a 16-bit store of ds overflows (ds carries the loss
/// scale).
// p: (..., T, T) any dtype, from forward
// dp: same shape, any dtype (f32 or the activation dtype)
// ds: same shape, any dtype, written
pub fn softmax_backward(
    gpu: &Gpu,
    p: &Tensor,
    dp: &Tensor,
    scale: f32,
    ds: &Tensor,
    found_inf: &OverflowFlag,
) -> Result<Dispatch> {
    let op = "attention softmax backward";
    check_scale(op, scale)?;
    let (rows, t) = square_rows(op, p)?;
    same_shape(op, p, dp)?;
    same_shape(op, p, ds)?;
    let params = Params {
        rows,
        t,
        scale,
        _pad: 0,
    };
    gpu.dispatch(
        &SOFTMAX_BACKWARD,
        &[
            Bind::Tensor(p),
            Bind::Tensor(dp),
            Bind::Tensor(ds),
            Bind::Buffer(found_inf.buffer()),
        ],
        bytemuck::bytes_of(&params),
        &[("ROW_WG", row_workgroup(t))],
        grid(gpu, rows),
    )
}

#[cfg(test)]
mod tests {
    use super::row_workgroup;

    #[test]
    fn row_workgroup_is_the_next_power_of_two_up_to_256() {
        assert_eq!(row_workgroup(1), 1);
        assert_eq!(row_workgroup(7), 8);
        assert_eq!(row_workgroup(64), 64);
        assert_eq!(row_workgroup(65), 128);
        assert_eq!(row_workgroup(256), 256);
        assert_eq!(row_workgroup(1024), 256);
    }
}
