// Fused AdamW on f32 master weights, with loss-scale unscaling, global-norm gradient
// clipping and step skipping on non-finite gradients, all decided on the GPU.
//
// A step is: loss_scale.wgsl `check` per parameter (found-inf + partial sums of the
// squared unscaled gradient) -> `finalize` (one workgroup: global norm, clip coefficient,
// skip decision, step count, bias corrections) -> `adamw` / `adamw_low` per parameter
// -> loss_scale.wgsl `update`.
//
// The update follows torch.optim.AdamW (foreach path) operation by operation:
//   g = grad * (1 / scale) * clip_coef
//   p = p * (1 - lr * wd)
//   m = m + (g - m) * (1 - beta1)              (exp_avg.lerp_(g, 1 - beta1))
//   v = v * beta2 + (1 - beta2) * g * g
//   p = p - (lr / bc1) * (m / (sqrt(v) / sqrt(bc2) + eps))
// with bc = 1 - beta^step for the number of non-skipped steps.

// State words (SCALER_*, WORK_*, HYPER_*) are injected from halfgrad::layout. WORK_BC1 /
// WORK_BC2 persist across steps (checkpointed); the other work words are written by
// `finalize` for this step's update kernels.
//!use state_words
// The update kernels take one octet (eight elements) an invocation in 16-byte accesses
// (shaders/dtype/words/); the last, partial octet goes element by element (pair by pair
// for the 16-bit copy). The vec4 math is the scalar math lane for lane.
//!words16

const WG: u32 = 256u; // = REDUCE_WG: `finalize` reduces over its whole workgroup

// This step's constants, read from the state buffers every kernel here binds (scaler,
// work, hyper).
struct StepConsts {
    inv_scale: f32,
    clip_coef: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
}

fn step_consts() -> StepConsts {
    return StepConsts(
        reciprocal_pow2_exact(bitcast<f32>(scaler[SCALER_SCALE])),
        bitcast<f32>(work[WORK_CLIP_COEF]),
        hyper[HYPER_BETA1],
        hyper[HYPER_BETA2],
        hyper[HYPER_EPS],
        bitcast<f32>(work[WORK_STEP_SIZE]),
        bitcast<f32>(work[WORK_BC2_SQRT]),
        bitcast<f32>(work[WORK_DECAY]),
    );
}

// One element's new (master, exp_avg, exp_avg_sq) from its scaled gradient.
fn adamw_math(c: StepConsts, grad: f32, master: f32, m_old: f32, v_old: f32) -> vec3<f32> {
    let g = (grad * c.inv_scale) * c.clip_coef;
    let m = m_old + (g - m_old) * (1.0 - c.beta1);
    let v = v_old * c.beta2 + (1.0 - c.beta2) * g * g;
    let denom = sqrt(v) / c.bc2_sqrt + c.eps;
    let p = master * c.decay - c.step_size * (m / denom);
    return vec3<f32>(p, m, v);
}

struct Adam4 {
    p: vec4<f32>,
    m: vec4<f32>,
    v: vec4<f32>,
}

// `adamw_math` on four elements: the same operations in the same order on each.
fn adamw_math4(c: StepConsts, grad: vec4<f32>, master: vec4<f32>, m_old: vec4<f32>,
               v_old: vec4<f32>) -> Adam4 {
    let g = (grad * c.inv_scale) * c.clip_coef;
    let m = m_old + (g - m_old) * (1.0 - c.beta1);
    let v = v_old * c.beta2 + (1.0 - c.beta2) * g * g;
    let denom = sqrt(v) / c.bc2_sqrt + c.eps;
    let p = master * c.decay - c.step_size * (m / denom);
    return Adam4(p, m, v);
}

//!kernel finalize
//!use reduce
// partials: (count) f32 partial sums of squares from every parameter's `check`
// scaler: scaler state words (writes SCALER_STEP, SCALER_LAST_NORM)
// work: optimizer work words (writes this step's values, advances BC1 / BC2)
// hyper: hyperparameter words
// found_inf: (1) atomic u32, read only here
// tensor_ends: (tensors) u32, end (exclusive) of each parameter's partial sums in `partials`
// overflow_counts: (tensors) u32, per parameter: found-inf steps whose partial sums of that
//   parameter were non-finite (an inf or NaN in the gradient makes its sums inf or NaN)
struct Params {
    count: u32,          // partial sums to add
    skip_nonfinite: u32, // 1: a raised found-inf skips the step
    tensors: u32,        // elements of tensor_ends and overflow_counts
    _pad: u32,
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < params.count; i += WG) {
        s += partials[i];
    }
    let total = wg_sum(s, li);
    let found = atomicLoad(&found_inf[0]) != 0u;
    // Which parameters overflowed, counted for the statistics (read with them, never per
    // step): `check` sums the squares of each gradient, so its sums are non-finite exactly
    // when the gradient is (or when its squares overflow f32, which is no better).
    if (found) {
        for (var t = li; t < params.tensors; t += WG) {
            var start = 0u;
            if (t > 0u) {
                start = tensor_ends[t - 1u];
            }
            var bad = false;
            for (var i = start; i < tensor_ends[t]; i++) {
                bad = bad || f32_is_nonfinite(partials[i]);
            }
            overflow_counts[t] += select(0u, 1u, bad);
        }
    }
    if (li != 0u) {
        return;
    }
    let skip = found && params.skip_nonfinite != 0u;
    let norm = sqrt(total);
    scaler[SCALER_LAST_NORM] = bitcast<u32>(norm);
    work[WORK_SKIP] = select(0u, 1u, skip);
    if (skip) {
        return;
    }
    scaler[SCALER_STEP] = scaler[SCALER_STEP] + 1u;
    let lr = hyper[HYPER_LR];
    let beta1 = hyper[HYPER_BETA1];
    let beta2 = hyper[HYPER_BETA2];
    let max_norm = hyper[HYPER_MAX_NORM];
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), at most 1; a
    // non-finite norm (only when non-finite steps are not skipped) zeroes the update
    // instead of relying on inf arithmetic the compiler may assume away.
    var coef = 1.0;
    if (max_norm > 0.0) {
        coef = min(max_norm / (norm + 1e-6), 1.0);
        if (f32_is_nonfinite(norm)) {
            coef = 0.0;
        }
    }
    // 1 - beta^t by the recurrence c_t = c_{t-1} * beta + (1 - beta): no cancellation
    // (1 - pow(beta, t) loses ~1000x relative accuracy for beta2 = 0.999 at small t).
    let bc1 = bitcast<f32>(work[WORK_BC1]) * beta1 + (1.0 - beta1);
    let bc2 = bitcast<f32>(work[WORK_BC2]) * beta2 + (1.0 - beta2);
    work[WORK_BC1] = bitcast<u32>(bc1);
    work[WORK_BC2] = bitcast<u32>(bc2);
    work[WORK_CLIP_COEF] = bitcast<u32>(coef);
    work[WORK_STEP_SIZE] = bitcast<u32>(lr / bc1);
    work[WORK_BC2_SQRT] = bitcast<u32>(sqrt(bc2));
    work[WORK_DECAY] = bitcast<u32>(1.0 - lr * hyper[HYPER_WEIGHT_DECAY]);
}

//!kernel adamw
// master: (n) f32; grad: (n) f32 scaled gradient (cleared when clear_grad);
// exp_avg, exp_avg_sq: (n) f32
// scaler: scaler state words (reads SCALER_SCALE); work: this step's words; hyper: hyperparameters
//!use adam_update
struct Params {
    n: u32,          // elements of the parameter
    clear_grad: u32, // 1: zero the gradient (backward accumulates); 0: backward overwrites it
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o > whole || 8u * o >= params.n) {
        return;
    }
    if (work[WORK_SKIP] != 0u) {
        clear_grad8(o, whole);
        return;
    }
    let c = step_consts();
    if (o < whole) {
        update8(c, o);
        return;
    }
    for (var j = 8u * o; j < params.n; j += 1u) {
        update1(c, j);
    }
}

//!kernel adamw_low
// As `adamw`, plus low: (n) f16 / bf16 copy of p, rounded to nearest even. Each
// invocation owns one octet (four u32 words of low) so packed 16-bit words never race.
//!use adam_update
struct Params {
    n: u32,          // elements of the parameter
    clear_grad: u32, // as `adamw`
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o > whole || 8u * o >= params.n) {
        return;
    }
    if (work[WORK_SKIP] != 0u) {
        clear_grad8(o, whole);
        return;
    }
    let c = step_consts();
    if (o < whole) {
        store8_low(o, update8(c, o));
        return;
    }
    // The tail pair by pair; the padding half of an odd-length tensor gets 0, never a
    // stale value.
    for (var q = 4u * o; 2u * q < params.n; q += 1u) {
        var pair = vec2<f32>(update1(c, 2u * q), 0.0);
        if (2u * q + 1u < params.n) {
            pair.y = update1(c, 2u * q + 1u);
        }
        store2_low(q, pair);
    }
}
