//! Fused softmax + cross-entropy (integer labels, mean over the batch), forward and
//! backward. Every exp, log and sum is f32; logits and dlogits may be 16-bit.

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY, F32_ONLY};
use crate::ops::reduce::matrix_dims;
use crate::{DType, Error, Gpu, Result, Tensor};

const LABELS: Slot = Slot::raw("labels", SlotKind::U32, Access::Read);

declare_kernels! {
    "softmax_xent";
    FORWARD_ROWS = "forward_rows",
        slots: &[
            Slot::read("logits", ANY),
            LABELS,
            Slot::write("lse", F32_ONLY),
            Slot::write("losses", F32_ONLY),
        ];
    FORWARD_MEAN = "forward_mean",
        slots: &[
            Slot::read("losses", F32_ONLY),
            Slot::write("loss", F32_ONLY),
        ];
    BACKWARD = "backward",
        slots: &[
            Slot::read("logits", ANY),
            Slot::read("lse", F32_ONLY),
            LABELS,
            Slot::raw("scale", SlotKind::F32, Access::Read),
            Slot::write("dlogits", ANY),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
        ];
}

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
}

fn expect_f32(op: &'static str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::shape(
            op,
            format!("{shape:?}"),
            format!("{:?}", t.shape()),
        ));
    }
    if t.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op,
            expected: "f32".into(),
            got: t.dtype(),
        });
    }
    Ok(())
}

fn expect_labels(op: &'static str, labels: &wgpu::Buffer, rows: u32) -> Result<()> {
    if labels.size() < rows as u64 * 4 {
        return Err(Error::shape(
            op,
            format!("labels buffer of at least {} bytes", rows as u64 * 4),
            format!("{} bytes", labels.size()),
        ));
    }
    Ok(())
}

/// Checks host labels against the class count: the one place out-of-range labels are
/// caught (the kernel would only turn them into a NaN loss).
pub fn check_labels(labels: &[u32], classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(index) => Err(Error::LabelOutOfRange {
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}

/// Forward: per-row log-sum-exp and loss, then the f32 mean loss (two dispatches).
// logits: (B, V) any dtype
// labels: (B) u32 buffer
// lse: (B) f32, written (saved for backward)
// losses: (B) f32, written: per-example loss
// loss: (1) f32, written: mean over the batch
pub fn forward(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &wgpu::Buffer,
    lse: &Tensor,
    losses: &Tensor,
    loss: &Tensor,
) -> Result<[Dispatch; 2]> {
    let op = "softmax_xent forward";
    let (b, v) = matrix_dims(op, logits)?;
    expect_labels(op, labels, b)?;
    expect_f32(op, lse, &[b as usize])?;
    expect_f32(op, losses, &[b as usize])?;
    expect_f32(op, loss, &[1])?;
    let p = Params { rows: b, cols: v };
    let rows = gpu.dispatch(
        &FORWARD_ROWS,
        &[
            Bind::Tensor(logits),
            Bind::Buffer(labels),
            Bind::Tensor(lse),
            Bind::Tensor(losses),
        ],
        bytemuck::bytes_of(&p),
        &[],
        gpu.grid_1d(b as u64, 1),
    )?;
    let mean = gpu.dispatch(
        &FORWARD_MEAN,
        &[Bind::Tensor(losses), Bind::Tensor(loss)],
        bytemuck::bytes_of(&p),
        &[],
        [1, 1, 1],
    )?;
    Ok([rows, mean])
}

/// Backward: dlogits = (softmax(logits) - onehot(labels)) * scale[0] / B, the gradient of
/// the scaled mean loss. `scale` is read on the GPU (the loss scaler's buffer, or one
/// holding 1.0), so seeding backward needs no host round trip.
// logits: (B, V) any dtype
// lse: (B) f32 from forward
// labels: (B) u32 buffer
// scale: f32 buffer, element 0 the loss scale
// dlogits: (B, V) any dtype, written
// found_inf: raised when a 16-bit store of dlogits overflows
pub fn backward(
    gpu: &Gpu,
    logits: &Tensor,
    lse: &Tensor,
    labels: &wgpu::Buffer,
    scale: &wgpu::Buffer,
    dlogits: &Tensor,
    found_inf: &OverflowFlag,
) -> Result<Dispatch> {
    let op = "softmax_xent backward";
    let (b, v) = matrix_dims(op, logits)?;
    expect_labels(op, labels, b)?;
    expect_f32(op, lse, &[b as usize])?;
    if dlogits.shape() != logits.shape() {
        return Err(Error::shape(
            op,
            format!("{:?}", logits.shape()),
            format!("{:?}", dlogits.shape()),
        ));
    }
    if scale.size() < 4 {
        return Err(Error::InvalidArgument(format!(
            "{op}: the scale buffer holds {} bytes, needs 4",
            scale.size()
        )));
    }
    let p = Params { rows: b, cols: v };
    gpu.dispatch(
        &BACKWARD,
        &[
            Bind::Tensor(logits),
            Bind::Tensor(lse),
            Bind::Buffer(labels),
            Bind::Buffer(scale),
            Bind::Tensor(dlogits),
            Bind::Buffer(found_inf.buffer()),
        ],
        bytemuck::bytes_of(&p),
        &[("WG", WG as u64)],
        gpu.grid_1d((b as u64 * v as u64).div_ceil(2), WG),
    )
}
