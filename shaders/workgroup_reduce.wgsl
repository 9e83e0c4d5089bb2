// Workgroup tree reductions over REDUCE_WG invocations, composed into the kernels whose
// shader says `//!use reduce`. The pairwise order (stride 128, 64, ..., 1) is fixed, so
// every kernel that reduces this way gets the same bits on every run.

const REDUCE_WG: u32 = 256u;
// The reductions' scratch; a kernel may also use it for its own partial sums between
// reductions (layernorm's backward_params does).
var<workgroup> wg_scratch: array<f32, REDUCE_WG>;

// Sum of `v` over the workgroup. Call from uniform control flow with li =
// local_invocation_index; every invocation gets the total.
fn wg_sum(v: f32, li: u32) -> f32 {
    wg_scratch[li] = v;
    workgroupBarrier();
    for (var s = REDUCE_WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            wg_scratch[li] += wg_scratch[li + s];
        }
        workgroupBarrier();
    }
    let total = wg_scratch[0];
    workgroupBarrier(); // the next call reuses the scratch
    return total;
}

// Maximum of `v` over the workgroup (as wg_sum).
fn wg_max(v: f32, li: u32) -> f32 {
    wg_scratch[li] = v;
    workgroupBarrier();
    for (var s = REDUCE_WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            wg_scratch[li] = max(wg_scratch[li], wg_scratch[li + s]);
        }
        workgroupBarrier();
    }
    let m = wg_scratch[0];
    workgroupBarrier();
    return m;
}
