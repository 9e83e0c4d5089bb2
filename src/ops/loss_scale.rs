//! Loss-scaling kernels (shaders/loss_scale.wgsl): the non-finite check over parameter
//! gradients (which also writes partial sums for the global gradient norm) and the
//! one-thread scale update. Used by [`crate::amp::LossScaler`] and [`crate::optim::AdamW`].

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, F32_ONLY};
use crate::{DType, Error, Gpu, Result, Tensor};

declare_kernels! {
    "loss_scale";
    /// Non-finite check + partial sums of the squared unscaled gradient, one tensor.
    CHECK = "check",
        slots: &[
            Slot::read("grad", F32_ONLY),
            Slot::raw("scaler", SlotKind::U32, Access::Read),
            Slot::raw("partials", SlotKind::F32, Access::ReadWrite),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
        ];
    /// The scale update (backoff / growth / counters), one thread.
    UPDATE = "update",
        slots: &[
            Slot::raw("scaler", SlotKind::U32, Access::ReadWrite),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
        ];
}

/// Workgroup size of `check` (fixed in the shader).
const CHECK_WG: u64 = 256;
/// Elements each `check` invocation handles at least, before more workgroups are added.
const CHECK_ELEMS_PER_THREAD: u64 = 8;
/// Most workgroups (= partial sums) one tensor's `check` uses; a grid-stride loop covers
/// the rest.
const CHECK_MAX_GROUPS: u64 = 1024;

/// How many partial sums `check` writes for a gradient of `n` elements.
pub fn check_groups(n: usize) -> u32 {
    (n as u64)
        .div_ceil(CHECK_WG * CHECK_ELEMS_PER_THREAD)
        .clamp(1, CHECK_MAX_GROUPS) as u32
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CheckParams {
    n: u32,
    base: u32,
    groups: u32,
    _pad: u32,
}

/// Raises `flag` when `grad` holds an inf or NaN and writes `check_groups(grad.len())`
/// partial sums of `(grad / scale)^2` at `partials[base..]`.
// grad: (any shape) f32 scaled gradient
// scaler_state: the scaler state buffer (word 0 = scale)
// partials: f32 buffer with at least base + check_groups(n) elements
pub fn check(
    gpu: &Gpu,
    grad: &Tensor,
    scaler_state: &wgpu::Buffer,
    partials: &wgpu::Buffer,
    base: u32,
    flag: &OverflowFlag,
) -> Result<Dispatch> {
    if grad.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op: "loss_scale/check",
            expected: "f32 gradient".into(),
            got: grad.dtype(),
        });
    }
    let groups = check_groups(grad.len());
    let needed = (base as u64 + groups as u64) * 4;
    if partials.size() < needed {
        return Err(Error::InvalidArgument(format!(
            "loss_scale/check: partials buffer has {} bytes, needs {needed}",
            partials.size()
        )));
    }
    let params = CheckParams {
        n: grad.len() as u32,
        base,
        groups,
        _pad: 0,
    };
    gpu.dispatch(
        &CHECK,
        &[
            Bind::Tensor(grad),
            Bind::Buffer(scaler_state),
            Bind::Buffer(partials),
            Bind::Buffer(flag.buffer()),
        ],
        bytemuck::bytes_of(&params),
        &[],
        [groups, 1, 1],
    )
}

/// The scale-update rule's constants, as the `update` kernel's uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct UpdateParams {
    /// 0: the scale and the growth tracker stay as they are (disabled scaler).
    pub enabled: u32,
    /// 1: a non-finite step counts as skipped.
    pub skip_nonfinite: u32,
    pub growth_interval: u32,
    pub _pad: u32,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    /// 0.0 for no floor.
    pub min_scale: f32,
    /// `f32::MAX` for no ceiling.
    pub max_scale: f32,
}

/// The scaler's per-step update: reads `flag`, rewrites the state's scale, growth
/// tracker and step counters.
// scaler_state: the scaler state buffer
pub fn update(
    gpu: &Gpu,
    scaler_state: &wgpu::Buffer,
    flag: &OverflowFlag,
    params: &UpdateParams,
) -> Result<Dispatch> {
    gpu.dispatch(
        &UPDATE,
        &[Bind::Buffer(scaler_state), Bind::Buffer(flag.buffer())],
        bytemuck::bytes_of(params),
        &[],
        [1, 1, 1],
    )
}
