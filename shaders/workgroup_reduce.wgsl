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

// Row sums with several rows a workgroup: ROW_LANES lanes a row (a power of two, 32 to
// 256), REDUCE_WG / ROW_LANES rows a workgroup. Small rows then cost a few barriers and a
// few invocations instead of a 256-invocation workgroup each (software adapters run
// invocations and barriers one by one). The bits equal wg_sum's over 256 positions, where
// position p holds the serial sum of the row's elements j = p, p + 256, ...: a lane holds
// positions lane + m * ROW_LANES (m < ROW_SLOTS) in `v`, reduces them in registers in
// wg_sum's pairing (stride 128 .. ROW_LANES), then the lanes finish in the scratch.
override ROW_LANES: u32 = 256u;
const ROW_SLOTS: u32 = 8u; // REDUCE_WG / ROW_LANES at most: ROW_LANES >= 32

// Row and lane of invocation li; row_base is the workgroup's first row.
fn row_lane(li: u32) -> u32 {
    return li % ROW_LANES;
}
fn row_in_group(li: u32) -> u32 {
    return li / ROW_LANES;
}

// The row's sum of `v` (see above). Call from uniform control flow.
fn row_sum(v_in: array<f32, ROW_SLOTS>, li: u32) -> f32 {
    var v = v_in;
    for (var s = REDUCE_WG / ROW_LANES / 2u; s > 0u; s >>= 1u) {
        for (var m = 0u; m < s; m++) {
            v[m] += v[m + s];
        }
    }
    let lane = row_lane(li);
    wg_scratch[li] = v[0];
    workgroupBarrier();
    for (var s = ROW_LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            wg_scratch[li] += wg_scratch[li + s];
        }
        workgroupBarrier();
    }
    let total = wg_scratch[li - lane];
    workgroupBarrier();
    return total;
}

// The row's maximum of `v` (order does not matter for a maximum).
fn row_max(v: f32, li: u32) -> f32 {
    let lane = row_lane(li);
    wg_scratch[li] = v;
    workgroupBarrier();
    for (var s = ROW_LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            wg_scratch[li] = max(wg_scratch[li], wg_scratch[li + s]);
        }
        workgroupBarrier();
    }
    let m = wg_scratch[li - lane];
    workgroupBarrier();
    return m;
}
