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

// Scaler state words (mirror `amp::scaler::word`).
const SCALE: u32 = 0u;
const STEP: u32 = 5u;      // u32: non-skipped optimizer steps
const LAST_NORM: u32 = 6u; // f32: global norm of the latest step's unscaled gradient

// Optimizer work words (mirror `optim::adamw::work`). BC1 / BC2 persist across steps
// (checkpointed); the others are written by `finalize` for this step's update kernels.
const SKIP: u32 = 0u;      // u32: 1 when this step is skipped
const CLIP_COEF: u32 = 1u; // f32: factor applied to the unscaled gradient
const STEP_SIZE: u32 = 2u; // f32: lr / bc1
const BC2_SQRT: u32 = 3u;  // f32: sqrt(bc2)
const DECAY: u32 = 4u;     // f32: 1 - lr * weight_decay
const BC1: u32 = 5u;       // f32: 1 - beta1^step
const BC2: u32 = 6u;       // f32: 1 - beta2^step

// Hyperparameter words (f32; `optim::adamw::hyper`). LR is rewritten by set_lr.
const LR: u32 = 0u;
const BETA1: u32 = 1u;
const BETA2: u32 = 2u;
const EPS: u32 = 3u;
const WEIGHT_DECAY: u32 = 4u;
const MAX_NORM: u32 = 5u; // 0: no clipping

const WG: u32 = 256u;

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
        reciprocal_pow2_exact(bitcast<f32>(scaler[SCALE])),
        bitcast<f32>(work[CLIP_COEF]),
        hyper[BETA1],
        hyper[BETA2],
        hyper[EPS],
        bitcast<f32>(work[STEP_SIZE]),
        bitcast<f32>(work[BC2_SQRT]),
        bitcast<f32>(work[DECAY]),
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

//!kernel finalize
// partials: (count) f32 partial sums of squares from every parameter's `check`
// scaler: scaler state words (writes STEP, LAST_NORM)
// work: optimizer work words (writes this step's values, advances BC1 / BC2)
// hyper: hyperparameter words
// found_inf: (1) atomic u32, read only here
struct Params {
    count: u32,          // partial sums to add
    skip_nonfinite: u32, // 1: a raised found-inf skips the step
}

var<workgroup> sums: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < params.count; i += WG) {
        s += partials[i];
    }
    sums[li] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (li < k) {
            sums[li] += sums[li + k];
        }
        workgroupBarrier();
    }
    if (li != 0u) {
        return;
    }
    let found = atomicLoad(&found_inf[0]) != 0u;
    let skip = found && params.skip_nonfinite != 0u;
    let norm = sqrt(sums[0]);
    scaler[LAST_NORM] = bitcast<u32>(norm);
    work[SKIP] = select(0u, 1u, skip);
    if (skip) {
        return;
    }
    scaler[STEP] = scaler[STEP] + 1u;
    let lr = hyper[LR];
    let beta1 = hyper[BETA1];
    let beta2 = hyper[BETA2];
    let max_norm = hyper[MAX_NORM];
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
    let bc1 = bitcast<f32>(work[BC1]) * beta1 + (1.0 - beta1);
    let bc2 = bitcast<f32>(work[BC2]) * beta2 + (1.0 - beta2);
    work[BC1] = bitcast<u32>(bc1);
    work[BC2] = bitcast<u32>(bc2);
    work[CLIP_COEF] = bitcast<u32>(coef);
    work[STEP_SIZE] = bitcast<u32>(lr / bc1);
    work[BC2_SQRT] = bitcast<u32>(sqrt(bc2));
    work[DECAY] = bitcast<u32>(1.0 - lr * hyper[WEIGHT_DECAY]);
}

//!kernel adamw
// master: (n) f32; grad: (n) f32 scaled gradient (cleared); exp_avg, exp_avg_sq: (n) f32
// scaler: scaler state words (reads SCALE); work: this step's words; hyper: hyperparameters
struct Params {
    n: u32, // elements of the parameter
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg_id, num_wg, li, WG);
    if (i >= params.n) {
        return;
    }
    if (work[SKIP] != 0u) {
        // Skipped step: parameters and moments untouched; the gradient is still cleared
        // so the next step starts from zero.
        store_grad(i, 0.0);
        return;
    }
    let r = adamw_math(step_consts(), load_grad(i), load_master(i), load_exp_avg(i),
                       load_exp_avg_sq(i));
    store_master(i, r.x);
    store_exp_avg(i, r.y);
    store_exp_avg_sq(i, r.z);
    store_grad(i, 0.0);
}

//!kernel adamw_low
// As `adamw`, plus low: (n) f16 / bf16 copy of p, rounded to nearest even. Each
// invocation owns one pair of elements (2q, 2q + 1) so packed 16-bit words never race.
struct Params {
    n: u32, // elements of the parameter
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let q = flat_index(wg_id, num_wg, li, WG);
    let i = 2u * q;
    if (i >= params.n) {
        return;
    }
    let has_second = i + 1u < params.n;
    if (work[SKIP] != 0u) {
        store_grad(i, 0.0);
        if (has_second) {
            store_grad(i + 1u, 0.0);
        }
        return;
    }
    let c = step_consts();
    // The padding half of an odd-length tensor gets 0, never a stale value.
    var pair = vec2<f32>(0.0, 0.0);
    for (var k = 0u; k < 2u; k++) {
        let j = i + k;
        if (k == 1u && !has_second) {
            break;
        }
        let r = adamw_math(c, load_grad(j), load_master(j), load_exp_avg(j), load_exp_avg_sq(j));
        store_master(j, r.x);
        store_exp_avg(j, r.y);
        store_exp_avg_sq(j, r.z);
        store_grad(j, 0.0);
        pair[k] = r.x;
    }
    store2_low(q, pair);
}
