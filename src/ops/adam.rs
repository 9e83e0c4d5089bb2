//! Fused AdamW kernels (shaders/adam.wgsl): `finalize` (global gradient norm, clip
//! coefficient, skip decision, bias corrections; one workgroup) and the per-parameter
//! update, with or without a low-precision copy. Used by [`crate::optim::AdamW`].

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY, F32_ONLY};
use crate::{Error, Gpu, Result, Tensor};

const UPDATE_SLOTS: [Slot; 7] = [
    Slot::write("master", F32_ONLY),
    Slot::write("grad", F32_ONLY),
    Slot::write("exp_avg", F32_ONLY),
    Slot::write("exp_avg_sq", F32_ONLY),
    Slot::raw("scaler", SlotKind::U32, Access::Read),
    Slot::raw("work", SlotKind::U32, Access::Read),
    Slot::raw("hyper", SlotKind::F32, Access::Read),
];

declare_kernels! {
    "adam";
    /// Sums the partial norms, decides skip / clip, advances the step and bias corrections.
    FINALIZE = "finalize",
        slots: &[
            Slot::raw("partials", SlotKind::F32, Access::Read),
            Slot::raw("scaler", SlotKind::U32, Access::ReadWrite),
            Slot::raw("work", SlotKind::U32, Access::ReadWrite),
            Slot::raw("hyper", SlotKind::F32, Access::Read),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
            Slot::raw("tensor_ends", SlotKind::U32, Access::Read),
            Slot::raw("overflow_counts", SlotKind::U32, Access::ReadWrite),
        ];
    /// AdamW update of one f32 master tensor (no low-precision copy).
    ADAMW = "adamw", slots: &UPDATE_SLOTS;
    /// AdamW update that also writes the f16 / bf16 copy.
    ADAMW_LOW = "adamw_low",
        slots: &[
            UPDATE_SLOTS[0],
            UPDATE_SLOTS[1],
            UPDATE_SLOTS[2],
            UPDATE_SLOTS[3],
            UPDATE_SLOTS[4],
            UPDATE_SLOTS[5],
            UPDATE_SLOTS[6],
            Slot::write("low", ANY),
        ];
}

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FinalizeParams {
    count: u32,
    skip_nonfinite: u32,
    tensors: u32,
    _pad: u32,
}

/// Per-tensor overflow bookkeeping: on a found-inf step `finalize` adds 1 to `counts[t]`
/// for every parameter t whose partial sums (`partials[ends[t-1]..ends[t]]`, written by
/// its `loss_scale::check`) are non-finite.
#[derive(Clone, Copy)]
pub struct OverflowCounts<'a> {
    /// (tensors) u32: end (exclusive) of each parameter's partial sums.
    pub ends: &'a wgpu::Buffer,
    /// (tensors) u32 counts of non-finite steps per tensor.
    pub counts: &'a wgpu::Buffer,
    /// Number of tensors.
    pub tensors: u32,
}

/// The state buffers every AdamW kernel binds.
#[derive(Clone, Copy)]
pub struct StateBuffers<'a> {
    /// The loss scaler's state words (`layout::scaler`).
    pub scaler: &'a wgpu::Buffer,
    /// The optimizer's work words (`layout::work`).
    pub work: &'a wgpu::Buffer,
    /// The hyperparameter words (`layout::hyper`).
    pub hyper: &'a wgpu::Buffer,
}

/// The step's prologue, after every parameter's `loss_scale::check`.
// partials: (count) f32 partial sums of squares
pub fn finalize(
    gpu: &Gpu,
    partials: &wgpu::Buffer,
    count: u32,
    state: StateBuffers<'_>,
    flag: &OverflowFlag,
    overflow: OverflowCounts<'_>,
    skip_nonfinite: bool,
) -> Result<Dispatch> {
    let needed = overflow.tensors as u64 * 4;
    if overflow.ends.size() < needed || overflow.counts.size() < needed {
        return Err(Error::InvalidArgument(format!(
            "adam/finalize: tensor ends / overflow counts buffers need {needed} bytes"
        )));
    }
    let params = FinalizeParams {
        count,
        skip_nonfinite: skip_nonfinite as u32,
        tensors: overflow.tensors,
        _pad: 0,
    };
    gpu.dispatch(
        &FINALIZE,
        &[
            Bind::Buffer(partials),
            Bind::Buffer(state.scaler),
            Bind::Buffer(state.work),
            Bind::Buffer(state.hyper),
            Bind::Buffer(flag.buffer()),
            Bind::Buffer(overflow.ends),
            Bind::Buffer(overflow.counts),
        ],
        bytemuck::bytes_of(&params),
        &[],
        [1, 1, 1],
    )
}

/// The tensors of one parameter's update.
pub struct UpdateTensors<'a> {
    /// (shape) f32 master weights.
    pub master: &'a Tensor,
    /// (shape) f32 scaled gradient; cleared by the update.
    pub grad: &'a Tensor,
    /// (shape) f32 first moment.
    pub exp_avg: &'a Tensor,
    /// (shape) f32 second moment.
    pub exp_avg_sq: &'a Tensor,
    /// (shape) f16 / bf16 copy of the master, rewritten after the update.
    pub low: Option<&'a Tensor>,
}

/// The AdamW update of one parameter (after `finalize`).
pub fn update(gpu: &Gpu, t: &UpdateTensors<'_>, state: StateBuffers<'_>) -> Result<Dispatch> {
    update_with(gpu, t, state, true)
}

/// [`update`], zeroing the gradient after reading it only when `clear_grad` (backward
/// accumulates into it); with `false` the next backward's first write overwrites it and
/// the update saves a store per element.
pub fn update_with(
    gpu: &Gpu,
    t: &UpdateTensors<'_>,
    state: StateBuffers<'_>,
    clear_grad: bool,
) -> Result<Dispatch> {
    let n = t.master.len();
    for (what, x) in [
        ("grad", Some(t.grad)),
        ("exp_avg", Some(t.exp_avg)),
        ("exp_avg_sq", Some(t.exp_avg_sq)),
        ("low", t.low),
    ] {
        if let Some(x) = x {
            if x.shape() != t.master.shape() {
                return Err(Error::shape(
                    "adam/update",
                    format!("{what} of shape {:?}", t.master.shape()),
                    format!("{:?}", x.shape()),
                ));
            }
        }
    }
    let n32 = n as u32;
    let mut binds = vec![
        Bind::Tensor(t.master),
        Bind::Tensor(t.grad),
        Bind::Tensor(t.exp_avg),
        Bind::Tensor(t.exp_avg_sq),
        Bind::Buffer(state.scaler),
        Bind::Buffer(state.work),
        Bind::Buffer(state.hyper),
    ];
    let (def, threads) = match t.low {
        Some(low) => {
            binds.push(Bind::Tensor(low));
            (&ADAMW_LOW, crate::ops::cast::octets(n))
        }
        None => (&ADAMW, crate::ops::cast::octets(n)),
    };
    gpu.dispatch(
        def,
        &binds,
        bytemuck::cast_slice(&[n32, clear_grad as u32]),
        &[],
        gpu.grid_1d(threads, WG),
    )
}
