// Reductions in f32 whatever the input's storage dtype.

struct Params {
    rows: u32,       // R
    cols: u32,       // C
    accumulate: u32, // 1: out += sum, 0: out = sum
}

// A workgroup owns COLS adjacent columns (adjacent invocations read adjacent elements)
// and splits the rows over LANES lanes, then adds the lanes' partial sums.
const COLS: u32 = 32u;
const LANES: u32 = 8u;
var<workgroup> partial: array<f32, 256>; // COLS * LANES, or CHUNK_COLS * CHUNK_LANES

// The two-pass column sums (src/ops/reduce.rs says when): pass 1 (col_sum_chunks) gives
// each workgroup CHUNK_COLS columns of CHUNK_ROWS rows, so a tall matrix spreads over many
// workgroups, and writes their partial sums; pass 2 is col_sum over those (chunks, C)
// partials. Both passes add in a fixed order: the same bits on every run.
const CHUNK_ROWS: u32 = 64u;  // ops::reduce::CHUNK_ROWS
const CHUNK_COLS: u32 = 64u;  // ops::reduce::CHUNK_COLS
const CHUNK_LANES: u32 = 4u;  // 256 / CHUNK_COLS

// The column and chunk of a pass-1 workgroup (groups run over the chunks of the first
// CHUNK_COLS columns, then the next CHUNK_COLS, ...); the grid may overshoot.
fn chunk_of(group: u32, cols: u32) -> vec2<u32> {
    let col_groups = (cols + CHUNK_COLS - 1u) / CHUNK_COLS;
    return vec2<u32>(group % col_groups, group / col_groups);
}

//!kernel col_sum
// x: (R, C) any dtype, e.g. a layer's output gradient dy
// out: (C) f32, out[c] = sum over r of x[r, c] (+ out[c] when accumulating): a bias gradient
@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let group = wg_id.y * num_wg.x + wg_id.x;
    let col = group * COLS + lid.x;
    var s = 0.0;
    if (col < params.cols) {
        for (var r = lid.y; r < params.rows; r += LANES) {
            s += load_x(r * params.cols + col);
        }
    }
    partial[lid.y * COLS + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && col < params.cols) {
        var total = 0.0;
        for (var l = 0u; l < LANES; l++) {
            total += partial[l * COLS + lid.x];
        }
        if (params.accumulate != 0u) {
            total += load_out(col);
        }
        store_out(col, total);
    }
}

//!kernel col_sum_chunks
// x: (R, C) any dtype
// partials: (ceil(R / CHUNK_ROWS), C) f32, written: partials[k, c] = sum over the rows r of
// chunk k (k * CHUNK_ROWS <= r < (k + 1) * CHUNK_ROWS) of x[r, c]
@compute @workgroup_size(64, 4)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let at = chunk_of(wg_id.y * num_wg.x + wg_id.x, params.cols);
    let col = at.x * CHUNK_COLS + lid.x;
    let first = at.y * CHUNK_ROWS;
    let end = min(first + CHUNK_ROWS, params.rows);
    var s = 0.0;
    if (col < params.cols) {
        for (var r = first + lid.y; r < end; r += CHUNK_LANES) {
            s += load_x(r * params.cols + col);
        }
    }
    partial[lid.y * CHUNK_COLS + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && col < params.cols && first < params.rows) {
        var total = 0.0;
        for (var l = 0u; l < CHUNK_LANES; l++) {
            total += partial[l * CHUNK_COLS + lid.x];
        }
        store_partials(at.y * params.cols + col, total);
    }
}

//!kernel sum_layers
// layers: (R, C) f32 as 16-byte words (C a multiple of 4): R layers of the same C values
//         (a split-K product's K ranges)
// out: (C) f32 as 16-byte words: out = sum over r of layers[r] in order r = 0, 1, ...
//      (+ out when accumulating)
// A few long rows: one invocation sums one 16-byte word down the layers (col_sum's
// workgroup a 32 columns would leave most of its row lanes idle and read 4 bytes a load).
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let w = flat_index(wg_id, num_wg, li, 256u);
    let words = params.cols / 4u;
    if (w >= words) {
        return;
    }
    var s = bitcast<vec4<f32>>(layers[w]);
    for (var r = 1u; r < params.rows; r++) {
        s += bitcast<vec4<f32>>(layers[r * words + w]);
    }
    if (params.accumulate != 0u) {
        s += bitcast<vec4<f32>>(out[w]);
    }
    out[w] = bitcast<vec4<u32>>(s);
}
