// Causal attention softmax, forward and backward. The scores come from an f32 product
// (Q @ K^T accumulated in f32); the scale, the mask, the max subtraction, the exp and every
// sum run in f32 whatever the storage dtype of p, dp and ds.
//
// Layout: (BH, T, T) matrices seen as BH * T rows of T. Row r is query i = r % T of its
// head and attends to keys j <= i; entries above the diagonal are written as 0.
//
// Slots are named scores / probs / dprobs / dscores: the storage preludes' helpers take
// parameters named p, q, i and v, which a slot of that name would shadow.
//
// One workgroup handles two consecutive rows 2g and 2g + 1: together 2T elements starting
// at element 2gT, which is even, so they fill whole u32 words of a packed 16-bit output
// even when T is odd, and no word is shared between workgroups. (A row per workgroup
// would split a word between two workgroups when T is odd.)

struct Params {
    rows: u32,  // BH * T
    t: u32,     // T, the row length
    scale: f32, // 1 / sqrt(head_dim)
    _pad: u32,
}

// Invocations per pair of rows, a power of two up to 256 (T = 1024 is 4 elements each).
// The host picks the smallest one >= T below 256: each invocation then holds one element
// j = li and the sums are those of 256 invocations bit for bit (the invocations past T
// only add 0 and take the max with the lowest f32), without the idle invocations and
// their barrier waits (a software adapter runs them all).
override ROW_WG: u32 = 256u;
var<workgroup> scratch: array<vec2<f32>, 256>; // ROW_WG at most

// Sum and maximum over the workgroup, for both rows at once (uniform control flow).
fn wg_sum2(v: vec2<f32>, li: u32) -> vec2<f32> {
    scratch[li] = v;
    workgroupBarrier();
    for (var s = ROW_WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            scratch[li] += scratch[li + s];
        }
        workgroupBarrier();
    }
    let total = scratch[0];
    workgroupBarrier(); // the next call reuses scratch
    return total;
}

fn wg_max2(v: vec2<f32>, li: u32) -> vec2<f32> {
    scratch[li] = v;
    workgroupBarrier();
    for (var s = ROW_WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            scratch[li] = max(scratch[li], scratch[li + s]);
        }
        workgroupBarrier();
    }
    let m = scratch[0];
    workgroupBarrier();
    return m;
}

const F32_LOWEST: f32 = -3.4028234663852886e38;

// The unmasked lengths of rows `first` and `first + 1` (0 when that row does not exist).
fn causal_lengths(first: u32) -> vec2<u32> {
    var len = vec2<u32>(first % params.t + 1u, 0u);
    if (first + 1u < params.rows) {
        len.y = (first + 1u) % params.t + 1u;
    }
    return len;
}

// Words (element pairs) this workgroup writes: T for two rows, ceil(T / 2) for a lone
// last row (its pad half is written as 0, inside the buffer's padding).
fn words_of(len: vec2<u32>) -> u32 {
    if (len.y == 0u) {
        return (params.t + 1u) / 2u;
    }
    return params.t;
}

//!kernel softmax_forward
// scores: (BH, T, T) f32 s[i, j] = q_i . k_j
// probs: (BH, T, T) any dtype, written: softmax_j(scale * s[i, j]) over j <= i, 0 for j > i
@compute @workgroup_size(ROW_WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let first = 2u * (wg_id.y * num_wg.x + wg_id.x); // uniform per workgroup
    if (first >= params.rows) {
        return;
    }
    let t = params.t;
    let len = causal_lengths(first);
    let base = first * t; // even
    var m = vec2<f32>(F32_LOWEST);
    for (var j = li; j < t; j += ROW_WG) {
        if (j < len.x) {
            m.x = max(m.x, params.scale * load_scores(base + j));
        }
        if (j < len.y) {
            m.y = max(m.y, params.scale * load_scores(base + t + j));
        }
    }
    let row_max = wg_max2(m, li);
    var sum = vec2<f32>(0.0);
    for (var j = li; j < t; j += ROW_WG) {
        if (j < len.x) {
            sum.x += exp(params.scale * load_scores(base + j) - row_max.x);
        }
        if (j < len.y) {
            sum.y += exp(params.scale * load_scores(base + t + j) - row_max.y);
        }
    }
    // Each row has its diagonal entry, so sum >= 1 (a missing second row divides 0 by 0
    // into a value nobody stores).
    let inv = 1.0 / wg_sum2(sum, li);
    for (var k = li; k < words_of(len); k += ROW_WG) {
        var v = vec2<f32>(0.0);
        for (var h = 0u; h < 2u; h++) {
            let e = 2u * k + h; // element within the two rows
            let second = e >= t;
            let j = select(e, e - t, second);
            if (j < select(len.x, len.y, second)) {
                let mx = select(row_max.x, row_max.y, second);
                let iv = select(inv.x, inv.y, second);
                v[h] = exp(params.scale * load_scores(base + e) - mx) * iv;
            }
        }
        store2_probs(base / 2u + k, v);
    }
}

//!kernel softmax_backward
// probs: (BH, T, T) any dtype, p from the forward
// dprobs: (BH, T, T) any dtype, dp, the gradient of p (dY @ V^T)
// dscores: (BH, T, T) any dtype, written: ds[i, j] = scale * p[i, j] * (dp[i, j] - sum_k p[i, k] dp[i, k])
//     for j <= i, 0 above the diagonal (the gradient of the scores s)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN (ds carries the loss
//     scale)
@compute @workgroup_size(ROW_WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let first = 2u * (wg_id.y * num_wg.x + wg_id.x);
    if (first >= params.rows) {
        return;
    }
    let t = params.t;
    let len = causal_lengths(first);
    let base = first * t;
    var d = vec2<f32>(0.0);
    for (var j = li; j < t; j += ROW_WG) {
        if (j < len.x) {
            d.x += load_probs(base + j) * load_dprobs(base + j);
        }
        if (j < len.y) {
            d.y += load_probs(base + t + j) * load_dprobs(base + t + j);
        }
    }
    let dots = wg_sum2(d, li);
    for (var k = li; k < words_of(len); k += ROW_WG) {
        var v = vec2<f32>(0.0);
        for (var h = 0u; h < 2u; h++) {
            let e = 2u * k + h;
            let second = e >= t;
            let j = select(e, e - t, second);
            if (j < select(len.x, len.y, second)) {
                let row_dot = select(dots.x, dots.y, second);
                v[h] = params.scale * load_probs(base + e) * (load_dprobs(base + e) - row_dot);
            }
        }
        store2_dscores(base / 2u + k, v);
    }
}
