// Layer normalisation over the last dimension: y = (x - mean) * rstd * gamma + beta with
// rstd = 1 / sqrt(var + eps), biased variance (as PyTorch). Statistics, affine parameters
// and their gradients are f32; x, y, dy and dx are in the activation dtype.
//
// Per-row statistics are reduced by ROW_LANES invocations a row (workgroup_reduce.wgsl); the elementwise parts run over
// pairs of the flat (B, C) array instead, because with an odd C one packed 16-bit word
// holds the end of one row and the start of the next, and only one invocation may write it.

struct Params {
    rows: u32,       // B
    cols: u32,       // C
    eps: f32,
    accumulate: u32, // parameter gradients: 1 adds into dgamma / dbeta, 0 overwrites them
}

override WG: u32 = 256;
// The row statistics reduce with the shared wg_sum (sections with `//!use reduce`).

// Row and column of flat element i.
fn row_of(i: u32) -> u32 {
    return i / params.cols;
}
fn col_of(i: u32) -> u32 {
    return i % params.cols;
}

//!kernel forward_stats
//!use reduce
// x: (B, C) any dtype
// mean: (B) f32, written
// rstd: (B) f32, written: 1 / sqrt(var + eps)
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // REDUCE_WG / ROW_LANES rows a workgroup; rows past the end reduce zeros (the
    // barriers need every invocation) and store nothing.
    let row = (wg_id.y * num_wg.x + wg_id.x) * (REDUCE_WG / ROW_LANES) + row_in_group(li);
    let live = row < params.rows;
    let lane = row_lane(li);
    let base = row * params.cols;
    let n = f32(params.cols);
    var v: array<f32, ROW_SLOTS>;
    for (var m = 0u; m < REDUCE_WG / ROW_LANES; m++) {
        var s = 0.0;
        for (var j = lane + m * ROW_LANES; live && j < params.cols; j += REDUCE_WG) {
            s += load_x(base + j);
        }
        v[m] = s;
    }
    let row_mean = row_sum(v, li) / n;
    // Two passes: sum (x - mean)^2 rather than E[x^2] - mean^2, which cancels badly when
    // |mean| >> std. Inputs ~300 give var ~9e4, beyond f16 but nothing for f32.
    for (var m = 0u; m < REDUCE_WG / ROW_LANES; m++) {
        var q = 0.0;
        for (var j = lane + m * ROW_LANES; live && j < params.cols; j += REDUCE_WG) {
            let d = load_x(base + j) - row_mean;
            q += d * d;
        }
        v[m] = q;
    }
    let variance = row_sum(v, li) / n;
    if (live && lane == 0u) {
        store_mean(row, row_mean);
        store_rstd(row, 1.0 / sqrt(variance + params.eps));
    }
}

//!kernel forward_apply
// x: (B, C) any dtype
// mean: (B) f32, rstd: (B) f32, from forward_stats
// gamma: (C) f32, beta: (C) f32
// y: (B, C) any dtype, written
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    let n = params.rows * params.cols;
    if (2u * p >= n) {
        return;
    }
    var v = vec2<f32>(0.0);
    for (var k = 0u; k < 2u; k++) {
        let i = 2u * p + k;
        if (i < n) {
            let r = row_of(i);
            let c = col_of(i);
            v[k] = (load_x(i) - load_mean(r)) * load_rstd(r) * load_gamma(c) + load_beta(c);
        }
    }
    store2_y(p, v);
}

//!kernel backward_rows
//!use reduce
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype
// mean: (B) f32, rstd: (B) f32, gamma: (C) f32
// row_terms: (B, 2) f32, written: [mean_j(g_j), mean_j(g_j * xhat_j)] with g = dy * gamma
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // Rows as forward_stats.
    let row = (wg_id.y * num_wg.x + wg_id.x) * (REDUCE_WG / ROW_LANES) + row_in_group(li);
    let live = row < params.rows;
    let lane = row_lane(li);
    let base = row * params.cols;
    var row_mean = 0.0;
    var row_rstd = 0.0;
    if (live) {
        row_mean = load_mean(row);
        row_rstd = load_rstd(row);
    }
    var vg: array<f32, ROW_SLOTS>;
    var vgx: array<f32, ROW_SLOTS>;
    for (var m = 0u; m < REDUCE_WG / ROW_LANES; m++) {
        var sg = 0.0;
        var sgx = 0.0;
        for (var j = lane + m * ROW_LANES; live && j < params.cols; j += REDUCE_WG) {
            let g = load_dy(base + j) * load_gamma(j);
            sg += g;
            sgx += g * (load_x(base + j) - row_mean) * row_rstd;
        }
        vg[m] = sg;
        vgx[m] = sgx;
    }
    let n = f32(params.cols);
    let mean_g = row_sum(vg, li) / n;
    let mean_gx = row_sum(vgx, li) / n;
    if (live && lane == 0u) {
        store_row_terms(2u * row, mean_g);
        store_row_terms(2u * row + 1u, mean_gx);
    }
}

//!kernel backward_input
// x: (B, C) any dtype, dy: (B, C) any dtype
// mean: (B) f32, rstd: (B) f32, gamma: (C) f32, row_terms: (B, 2) f32 from backward_rows
// dx: (B, C) any dtype, written: rstd * (g - mean(g) - xhat * mean(g * xhat))
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    let n = params.rows * params.cols;
    if (2u * p >= n) {
        return;
    }
    var v = vec2<f32>(0.0);
    for (var k = 0u; k < 2u; k++) {
        let i = 2u * p + k;
        if (i < n) {
            let r = row_of(i);
            let c = col_of(i);
            let row_rstd = load_rstd(r);
            let xhat = (load_x(i) - load_mean(r)) * row_rstd;
            let g = load_dy(i) * load_gamma(c);
            v[k] = row_rstd * (g - load_row_terms(2u * r) - xhat * load_row_terms(2u * r + 1u));
        }
    }
    store2_dx(p, v);
}

//!kernel backward_params
//!use reduce
// x: (B, C) any dtype, dy: (B, C) any dtype, mean: (B) f32, rstd: (B) f32
// dgamma: (C) f32 = sum over rows of dy * xhat (+ dgamma when accumulating)
// dbeta: (C) f32 = sum over rows of dy (+ dbeta when accumulating)
@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    // As reduce.wgsl's col_sum: 32 adjacent columns, rows split over 8 lanes; the lanes'
    // partial sums of dgamma and then of dbeta go through `wg_scratch`.
    let group = wg_id.y * num_wg.x + wg_id.x;
    let c = group * 32u + lid.x;
    var sg = 0.0;
    var sb = 0.0;
    if (c < params.cols) {
        for (var r = lid.y; r < params.rows; r += 8u) {
            let i = r * params.cols + c;
            let g_out = load_dy(i);
            sg += g_out * (load_x(i) - load_mean(r)) * load_rstd(r);
            sb += g_out;
        }
    }
    let slot = lid.y * 32u + lid.x;
    wg_scratch[slot] = sg;
    workgroupBarrier();
    var total_g = 0.0;
    if (lid.y == 0u) {
        for (var l = 0u; l < 8u; l++) {
            total_g += wg_scratch[l * 32u + lid.x];
        }
    }
    workgroupBarrier();
    wg_scratch[slot] = sb;
    workgroupBarrier();
    if (lid.y == 0u && c < params.cols) {
        var total_b = 0.0;
        for (var l = 0u; l < 8u; l++) {
            total_b += wg_scratch[l * 32u + lid.x];
        }
        if (params.accumulate != 0u) {
            total_g += load_dgamma(c);
            total_b += load_dbeta(c);
        }
        store_dgamma(c, total_g);
        store_dbeta(c, total_b);
    }
}

//!kernel backward_params_chunks
// x: (B, C) any dtype, dy: (B, C) any dtype, mean: (B) f32, rstd: (B) f32
// partial_g, partial_b: (ceil(B / CHUNK_ROWS), C) f32, written: backward_params' sums
// over the rows of each chunk of CHUNK_ROWS rows (reduce/col_sum adds them up)
// The two-pass path for tall inputs, as reduce.wgsl's col_sum_chunks: a workgroup per
// CHUNK_COLS columns of one chunk, the chunk's rows split over CHUNK_LANES lanes.
const CHUNK_ROWS: u32 = 64u;  // ops::reduce::CHUNK_ROWS
const CHUNK_COLS: u32 = 64u;  // ops::reduce::CHUNK_COLS
const CHUNK_LANES: u32 = 4u;  // 256 / CHUNK_COLS
var<workgroup> lanes_g: array<f32, 256>;
var<workgroup> lanes_b: array<f32, 256>;

@compute @workgroup_size(64, 4)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    // Groups run over the chunks of the first CHUNK_COLS columns, then the next ones; the
    // grid may overshoot.
    let group = wg_id.y * num_wg.x + wg_id.x;
    let col_groups = (params.cols + CHUNK_COLS - 1u) / CHUNK_COLS;
    let c = (group % col_groups) * CHUNK_COLS + lid.x;
    let chunk = group / col_groups;
    let first = chunk * CHUNK_ROWS;
    let end = min(first + CHUNK_ROWS, params.rows);
    var sg = 0.0;
    var sb = 0.0;
    if (c < params.cols) {
        for (var r = first + lid.y; r < end; r += CHUNK_LANES) {
            let i = r * params.cols + c;
            let g_out = load_dy(i);
            sg += g_out * (load_x(i) - load_mean(r)) * load_rstd(r);
            sb += g_out;
        }
    }
    let slot = lid.y * CHUNK_COLS + lid.x;
    lanes_g[slot] = sg;
    lanes_b[slot] = sb;
    workgroupBarrier();
    if (lid.y == 0u && c < params.cols && first < params.rows) {
        var total_g = 0.0;
        var total_b = 0.0;
        for (var l = 0u; l < CHUNK_LANES; l++) {
            total_g += lanes_g[l * CHUNK_COLS + lid.x];
            total_b += lanes_b[l * CHUNK_COLS + lid.x];
        }
        store_partial_g(chunk * params.cols + c, total_g);
        store_partial_b(chunk * params.cols + c, total_b);
    }
}
