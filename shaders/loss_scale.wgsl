// Dynamic loss scaling (PyTorch GradScaler semantics), resident on the GPU.
//
// `check`: one pass over a parameter gradient (f32) that raises found-inf when any
//   element is inf or NaN (bit test, never isNan/isInf) and writes per-workgroup partial
//   sums of the squared UNSCALED gradient (the first half of the global-norm reduction;
//   adam.wgsl `finalize` sums the partials).
// `update`: one thread; backs the scale off after a non-finite step, grows it after
//   `growth_interval` consecutive clean steps, and counts skipped / non-finite steps.
//
// The scaler state is one array<u32>; f32 words are stored as their bits. The word
// indices (SCALER_*) are injected from halfgrad::layout.
//!use state_words

const WG: u32 = 256u; // = REDUCE_WG: `check` reduces over its whole workgroup

//!kernel check
//!use reduce
// grad: (n) f32, the scaled gradient of one parameter
// scaler: scaler state words (reads SCALER_SCALE)
// partials: (total) f32; this dispatch writes partials[base .. base + groups)
// found_inf: (1) atomic u32, raised on any non-finite element
struct Params {
    n: u32,      // elements of grad
    base: u32,   // first partial-sum slot of this tensor
    groups: u32, // workgroups of this dispatch (1-D), one partial sum each
    _pad: u32,
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let inv_scale = reciprocal_pow2_exact(bitcast<f32>(scaler[SCALER_SCALE]));
    var sum = 0.0;
    var bad = false;
    let stride = params.groups * WG;
    // Grid-stride loop: a bounded number of workgroups covers any length.
    for (var i = wg_id.x * WG + li; i < params.n; i += stride) {
        let g = load_grad(i);
        bad = bad || f32_is_nonfinite(g);
        let u = g * inv_scale;
        sum += u * u;
    }
    if (bad) {
        atomicOr(&found_inf[0], 1u);
    }
    let total = wg_sum(sum, li);
    if (li == 0u) {
        partials[params.base + wg_id.x] = total;
    }
}

//!kernel update
// scaler: scaler state words (read-write)
// found_inf: (1) atomic u32, the step's overflow flag (read only here)
struct Params {
    enabled: u32,         // 0: the scale stays as it is (1.0) and the tracker 0
    skip_nonfinite: u32,  // 1: a non-finite step is skipped (always when enabled)
    growth_interval: u32, // clean steps before the scale grows
    _pad: u32,
    growth_factor: f32,
    backoff_factor: f32,
    min_scale: f32,       // 0 when there is no floor
    max_scale: f32,       // f32::MAX when there is no ceiling
}

@compute @workgroup_size(1)
fn main() {
    let found = atomicLoad(&found_inf[0]) != 0u;
    let skipped = found && params.skip_nonfinite != 0u;
    scaler[SCALER_NONFINITE] += select(0u, 1u, found);
    scaler[SCALER_SKIPPED] += select(0u, 1u, skipped);
    scaler[SCALER_LAST_SKIPPED] = select(0u, 1u, skipped);
    if (params.enabled == 0u) {
        return;
    }
    // torch._amp_update_scale_, plus the optional floor and ceiling.
    var scale = bitcast<f32>(scaler[SCALER_SCALE]);
    if (found) {
        scale = max(scale * params.backoff_factor, params.min_scale);
        scaler[SCALER_GROWTH_TRACKER] = 0u;
    } else {
        let successful = scaler[SCALER_GROWTH_TRACKER] + 1u;
        // PyTorch tests `==`; `>=` is identical in normal operation and still grows when
        // a loaded tracker exceeds a smaller interval.
        if (successful >= params.growth_interval) {
            let grown = scale * params.growth_factor;
            // Never grow past the f32 range to inf.
            if (!f32_is_nonfinite(grown)) {
                scale = min(grown, params.max_scale);
            }
            scaler[SCALER_GROWTH_TRACKER] = 0u;
        } else {
            scaler[SCALER_GROWTH_TRACKER] = successful;
        }
    }
    scaler[SCALER_SCALE] = bitcast<u32>(scale);
}
