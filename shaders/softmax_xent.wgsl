// Fused softmax + cross-entropy with integer class labels, mean over the batch.
// Every exp, log and sum is f32 whatever the logits' storage dtype, with the row maximum
// subtracted first: logits of 1e4 (representable in f16) give an exact f32 softmax, where
// an f16 exp or sum would overflow.

struct Params {
    rows: u32, // B
    cols: u32, // V, the number of classes
}

override WG: u32 = 256;
const F32_QUIET_NAN: u32 = 0x7FC00000u;
const F32_LOWEST: f32 = -3.4028234663852886e38;

//!kernel forward_rows
//!use reduce
// logits: (B, V) any dtype
// labels: (B) u32, class indices (checked < V on the host when uploaded)
// lse: (B) f32, written: log(sum_j exp(logits_j)), saved for backward
// losses: (B) f32, written: lse - logits[label] (NaN for a label >= V)
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let row = wg_id.y * num_wg.x + wg_id.x; // one workgroup per row (uniform)
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    var m = F32_LOWEST;
    for (var j = li; j < params.cols; j += REDUCE_WG) {
        m = max(m, load_logits(base + j));
    }
    let row_max = wg_max(m, li);
    var s = 0.0;
    for (var j = li; j < params.cols; j += REDUCE_WG) {
        s += exp(load_logits(base + j) - row_max);
    }
    let row_lse = row_max + log(wg_sum(s, li));
    if (li == 0u) {
        store_lse(row, row_lse);
        let label = labels[row];
        if (label < params.cols) {
            store_losses(row, row_lse - load_logits(base + label));
        } else {
            // Through a `let`: a NaN-valued constant expression is a shader-creation
            // error in WGSL (browsers' Tint rejects it; naga lets it through).
            let nan_bits = F32_QUIET_NAN;
            store_losses(row, bitcast<f32>(nan_bits));
        }
    }
}

//!kernel forward_mean
//!use reduce
// losses: (B) f32 from forward_rows
// loss: (1) f32, written: mean over the batch
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var r = li; r < params.rows; r += REDUCE_WG) {
        s += load_losses(r);
    }
    let total = wg_sum(s, li);
    if (li == 0u) {
        store_loss(0u, total / f32(params.rows));
    }
}

//!kernel backward
// logits: (B, V) any dtype
// lse: (B) f32 from forward_rows
// labels: (B) u32
// scale: (>= 1) f32, element 0 is the loss scale (the seed of backward; 1.0 unscaled)
// dlogits: (B, V) any dtype, written: (softmax - onehot) * scale[0] / B
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    let n = params.rows * params.cols;
    if (2u * p >= n) {
        return;
    }
    let seed = scale[0] / f32(params.rows);
    var v = vec2<f32>(0.0);
    for (var k = 0u; k < 2u; k++) {
        let i = 2u * p + k;
        if (i < n) {
            let r = i / params.cols;
            let c = i % params.cols;
            var g = exp(load_logits(i) - load_lse(r));
            if (c == labels[r]) {
                g -= 1.0;
            }
            v[k] = g * seed;
        }
    }
    store2_dlogits(p, v);
}
