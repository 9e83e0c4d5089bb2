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
var<workgroup> partial: array<f32, 256>; // COLS * LANES

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
