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
    skip_nonfinite: bool,
) -> Result<Dispatch> {
    let params = FinalizeParams {
        count,
        skip_nonfinite: skip_nonfinite as u32,
    };
    gpu.dispatch(
        &FINALIZE,
        &[
            Bind::Buffer(partials),
            Bind::Buffer(state.scaler),
            Bind::Buffer(state.work),
            Bind::Buffer(state.hyper),
            Bind::Buffer(flag.buffer()),
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
            (&ADAMW_LOW, (n as u64).div_ceil(2))
        }
        None => (&ADAMW, n as u64),
    };
    gpu.dispatch(
        def,
        &binds,
        bytemuck::bytes_of(&n32),
        &[],
        gpu.grid_1d(threads, WG),
    )
}
