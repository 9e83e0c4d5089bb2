// Shared by the whole-tile cooperative-matrix kernels (matmul_coop*.wgsl, `//!use
// coop_tiles`): the flags of their `Params`, the 16-bit-aware output-word store and the
// workgroup-to-tile order. Each kernel defines Params, CBM, CBN, GROUP_M and the c/bias
// bindings, and `c_at` / `c_ld` (where C's rows lie) for the epilogues.

const FLAG_BIAS: u32 = 1u;       // add bias[n] to every row
const FLAG_ACCUMULATE: u32 = 2u; // C += product (C is f32)

// Writes the output word holding flat elements e (even) and e + 1 (columns nx, nx + 1 of
// one row: N is a multiple of the tile here, so words never straddle rows; a strided C
// has even offsets, row and batch strides).
fn store_pair(e: u32, x: f32, y: f32, nx: u32) {
    var v = vec2<f32>(x, y);
    if ((params.flags & FLAG_BIAS) != 0u) {
        v += vec2<f32>(bias[nx], bias[nx + 1u]);
    }
    if ((params.flags & FLAG_ACCUMULATE) != 0u) {
        v += load2_c(e >> 1u);
    }
    store2_c(e >> 1u, v);
}

// Tile (row, column) of C for workgroup wg: row-major over the grid when GROUP_M is 1;
// else grouped: consecutive workgroups sweep GROUP_M tile rows before the next column,
// so the A rows and B columns they read are still in L2 (the grid is (N / CBN, M / CBM)).
fn tile_of(wg: vec3<u32>) -> vec2<u32> {
    let tiles_n = params.n / CBN;
    let tiles_m = params.m / CBM;
    if (GROUP_M <= 1u) {
        return vec2<u32>(wg.y, wg.x);
    }
    let id = wg.y * tiles_n + wg.x;
    let per_group = GROUP_M * tiles_n;
    let first_m = (id / per_group) * GROUP_M;
    let rows = min(tiles_m - first_m, GROUP_M);
    let within = id % per_group;
    return vec2<u32>(first_m + within % rows, within / rows);
}
