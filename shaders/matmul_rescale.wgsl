// BF16 products on the f16 matrix units (docs/ARCHITECTURE.md, "BF16 on the f16 matrix
// units"). Every bf16 value whose exponent lies in f16's normal range converts to f16
// exactly, so each row i of op(A) is scaled by 2^-ea_i and each column j of op(B) by
// 2^-eb_j (a "line" of its operand), the scaled f16 copies are multiplied by any f16
// kernel into an f32 scratch, and the epilogue undoes the scales:
// C_ij = acc_ij * 2^(ea_i + eb_j) (+ bias_j) (+ old C_ij).
//
// Lines are named in the operand's stored layout: rows of A are stored rows (or stored
// columns when A is transposed), columns of B are stored columns (or stored rows when B
// is transposed).
//
// A line's scale exponent e puts its largest finite magnitude into [2^15, 2^16) (below
// f16's largest finite 65504 even with bf16's largest mantissa); e is clamped to
// [-127, 112] so 2^-e is a normal f32, and is 0 for a line with no finite nonzero value.
// Scales are powers of two: multiplying by one is exact in f32 outside the subnormals.
//
// A line's largest finite magnitude is kept as its f32 bits ("top", sign cleared, 0 for
// none): non-negative f32 bits order like the u32s they are, so `exponents` finds it with
// u32 atomicMax from many workgroups at once (max is order-free: the same bits on every
// run), and `convert` and `epilogue` turn it into the exponent where they use it.

struct Params {
    rows: u32,   // stored rows of the operand (convert; exponents: of A); M (epilogue);
                 // lines of A (clear)
    cols: u32,   // stored columns of the operand (convert; exponents: of A); N
                 // (epilogue); lines of B (clear)
    ld: u32,     // elements between stored rows of the source (convert; exponents: A)
    offset: u32, // element index of the source's (0, 0) (convert; exponents: A); of C's
                 // first element (epilogue: even, a chunk of rows of a widened product)
    flags: u32,  // convert, exponents (A): FLAG_BY_COL; epilogue: FLAG_BIAS
                 // | FLAG_ACCUMULATE | FLAG_UNSCALED
    // exponents only: B's view, as A's above, and how many workgroups are A's
    b_rows: u32,
    b_cols: u32,
    b_ld: u32,
    b_offset: u32,
    b_flags: u32,
    a_groups: u32,
}

const FLAG_BY_COL: u32 = 1u;     // lines are stored columns (else stored rows)
const FLAG_BIAS: u32 = 1u;       // epilogue: add bias[j]
const FLAG_ACCUMULATE: u32 = 2u; // epilogue: add the old C
const FLAG_UNSCALED: u32 = 4u;   // epilogue: no exponents (a widened f16 product:
                                 // top_a and top_b are dummies)

// 2^e as an f32, for e in [-126, 127].
fn pow2(e: i32) -> f32 {
    return bitcast<f32>(u32(e + 127) << 23u);
}

// Largest finite |x| bits of a line -> the line's scale exponent.
fn scale_exponent(top: u32) -> i32 {
    if (top == 0u) {
        return 0;
    }
    return clamp(i32(top >> 23u) - 127 - 15, -127, 112);
}

// 2^-e for the line whose largest finite magnitude has bits `top`.
fn line_scale(top: u32) -> f32 {
    return pow2(-scale_exponent(top));
}

//!kernel clear
// top_a: (lines of A) u32 := 0, top_b: (lines of B) u32 := 0, before `exponents` takes
// their maxima (a dispatch of its own: the product's dispatches share one compute pass,
// which has no buffer clears).
override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg_id, num_wg, li, WG);
    if (i < params.rows) {
        top_a[i] = 0u;
    }
    if (i < params.cols) {
        top_b[i] = 0u;
    }
}

//!kernel exponents
//!words16
// src_a, src_b: stored (rows, cols) bf16 (A's view in rows .. flags, B's in b_rows ..
//     b_flags), element (r, c) at offset + r * ld + c
// top_a, top_b: (lines) u32, zeroed by `clear`: atomicMax of the line's largest finite
//     |x| bits; lines = cols when FLAG_BY_COL, else rows
//
// Workgroups 0 .. a_groups read A, the rest B; each reads one tile of its operand as
// octets (8 consecutive elements of a stored row, one 16-byte load where A_OCTETS /
// B_OCTETS say the operand's rows start 16-byte words, else element by element),
// 32 octet lanes across by 8 row lanes down, so a subgroup reads 512 contiguous bytes:
// by row, a tile is 8 rows by 32 * 8 * STEPS columns (one row per row lane, STEPS octets
// along it per lane); by column, 8 * STEPS rows by 256 columns (each lane STEPS rows of
// its 8 columns). The lanes' maxima meet in workgroup memory (plain stores, one barrier),
// then one atomicMax per line of the tile leaves the workgroup.
const OCTET_LANES: u32 = 32u;
const ROW_LANES: u32 = 8u;
const STEPS: u32 = 4u;
const TILE_COLS: u32 = 256u; // OCTET_LANES * 8: a by-column tile's lines
// The operand's offset and ld are multiples of 8. Pipeline constants, not flags:
// software adapters run both sides of a branch, masked, so the untaken path would cost.
override A_OCTETS: bool = false;
override B_OCTETS: bool = false;

// By column: (ROW_LANES, TILE_COLS), each row lane's maxima of the tile's columns; by
// row: (ROW_LANES, OCTET_LANES), each octet lane's maximum of its row.
var<workgroup> lane_top: array<u32, 2048>;

struct View {
    rows: u32,
    cols: u32,
    ld: u32,
    offset: u32,
    by_col: bool,
    octets: bool,
}

fn view(b_side: bool) -> View {
    if (b_side) {
        return View(params.b_rows, params.b_cols, params.b_ld, params.b_offset,
                    (params.b_flags & FLAG_BY_COL) != 0u, B_OCTETS);
    }
    return View(params.rows, params.cols, params.ld, params.offset,
                (params.flags & FLAG_BY_COL) != 0u, A_OCTETS);
}

// (rows, cols) of a tile.
fn tile_extent(by_col: bool) -> vec2<u32> {
    if (by_col) {
        return vec2<u32>(ROW_LANES * STEPS, TILE_COLS);
    }
    return vec2<u32>(ROW_LANES, TILE_COLS * STEPS);
}

fn load_one(b_side: bool, i: u32) -> f32 {
    if (b_side) {
        return load_src_b(i);
    }
    return load_src_a(i);
}

// Stored elements (r, c .. c + 7) of a view, c < cols; those past the row's end read 0.
fn load_octet(b_side: bool, v: View, r: u32, c: u32) -> Vec8 {
    let first = v.offset + r * v.ld + c;
    if (v.octets) {
        // The word holding element c exists (buffers are padded to 16 bytes); its
        // elements past the row's end (the next row's, or padding) are masked.
        var x: Vec8;
        if (b_side) {
            x = load8_src_b(first / 8u);
        } else {
            x = load8_src_a(first / 8u);
        }
        let q = vec4<u32>(c, c + 1u, c + 2u, c + 3u);
        let cols = vec4<u32>(v.cols);
        return Vec8(select(vec4<f32>(0.0), x.a, q < cols),
                    select(vec4<f32>(0.0), x.b, q + vec4<u32>(4u) < cols));
    }
    var x = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var q = 0u; q < 8u; q++) {
        if (c + q < v.cols) {
            x[q] = load_one(b_side, first + q);
        }
    }
    return Vec8(vec4<f32>(x[0], x[1], x[2], x[3]), vec4<f32>(x[4], x[5], x[6], x[7]));
}

// |x| bits of finite values, 0 for inf and NaN (they travel through the scaled copy on
// their own and set no scale).
fn finite_magnitudes(x: vec4<f32>) -> vec4<u32> {
    let bits = bitcast<vec4<u32>>(x) & vec4<u32>(0x7FFFFFFFu);
    return select(vec4<u32>(0u), bits, bits < vec4<u32>(0x7F800000u));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let flat = wg_id.y * num_wg.x + wg_id.x;
    let b_side = flat >= params.a_groups;
    let v = view(b_side);
    let group = flat - select(0u, params.a_groups, b_side);
    let extent = tile_extent(v.by_col);
    let tiles_across = (v.cols + extent.y - 1u) / extent.y;
    let tiles_down = (v.rows + extent.x - 1u) / extent.x;
    if (group >= tiles_down * tiles_across) {
        return; // the padding of a grid spread over two dimensions
    }
    let r0 = (group / tiles_across) * extent.x;
    let c0 = (group % tiles_across) * extent.y;
    let lane_c = li % OCTET_LANES;
    let lane_r = li / OCTET_LANES;
    if (v.by_col) {
        // This lane's 8 columns, over rows r0 + lane_r + 8 s.
        let c = c0 + 8u * lane_c;
        var top_lo = vec4<u32>(0u);
        var top_hi = vec4<u32>(0u);
        if (c < v.cols) {
            for (var s = 0u; s < STEPS; s++) {
                let r = r0 + lane_r + ROW_LANES * s;
                if (r < v.rows) {
                    let x = load_octet(b_side, v, r, c);
                    top_lo = max(top_lo, finite_magnitudes(x.a));
                    top_hi = max(top_hi, finite_magnitudes(x.b));
                }
            }
        }
        let at = lane_r * TILE_COLS + 8u * lane_c;
        for (var q = 0u; q < 4u; q++) {
            lane_top[at + q] = top_lo[q];
            lane_top[at + 4u + q] = top_hi[q];
        }
    } else {
        // Row r0 + lane_r, octets lane_c + 32 s along it.
        let r = r0 + lane_r;
        var top = vec4<u32>(0u);
        if (r < v.rows) {
            for (var s = 0u; s < STEPS; s++) {
                let c = c0 + 8u * (lane_c + OCTET_LANES * s);
                if (c < v.cols) {
                    let x = load_octet(b_side, v, r, c);
                    top = max(top, max(finite_magnitudes(x.a), finite_magnitudes(x.b)));
                }
            }
        }
        lane_top[li] = max(max(top.x, top.y), max(top.z, top.w));
    }
    workgroupBarrier();

    // Invocation li finishes line li of the tile: one atomicMax, none where the tile
    // holds no finite nonzero value of the line (its top starts at 0).
    var line = c0 + li;
    var lines = v.cols;
    var m = 0u;
    if (v.by_col) {
        for (var t = 0u; t < ROW_LANES; t++) {
            m = max(m, lane_top[t * TILE_COLS + li]);
        }
    } else {
        line = r0 + li;
        lines = v.rows;
        if (li < ROW_LANES) {
            // Rotated start: the 8 invocations read 8 different banks.
            for (var t = 0u; t < OCTET_LANES; t++) {
                m = max(m, lane_top[li * OCTET_LANES + (t + li) % OCTET_LANES]);
            }
        }
    }
    if (line < lines && m != 0u) {
        if (b_side) {
            atomicMax(&top_b[line], m);
        } else {
            atomicMax(&top_a[line], m);
        }
    }
}

//!kernel convert
//!words16
// src: stored (rows, cols) bf16, element (r, c) at offset + r * ld + c
// top: (lines) u32, from `exponents` with the same flags
// dst: (rows, cols) f16, dense: element (r, c) at r * cols + c, = src(r, c) * 2^-e(line)
//
// One invocation an octet of dst (elements 8o .. 8o + 7, one 16-byte store): read as one
// 16-byte load where OCTETS, else element by element, the last, partial octet stored in
// pairs (the padding half 0).
override WG: u32 = 256;
// cols, offset and ld are multiples of 8: every octet of dst lies in one stored row that
// starts a 16-byte word. A pipeline constant (see A_OCTETS in `exponents`).
override OCTETS: bool = false;

fn scaled(e: u32) -> f32 {
    let r = e / params.cols;
    let c = e % params.cols;
    var line = r;
    if ((params.flags & FLAG_BY_COL) != 0u) {
        line = c;
    }
    return load_src(params.offset + r * params.ld + c) * line_scale(top[line]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let total = params.rows * params.cols;
    let first = 8u * o;
    if (first >= total) {
        return;
    }
    // Rounds through f32_to_f16_bits: exact for every scaled value in f16's normal range,
    // nearest-even into the subnormals below it.
    if (OCTETS) {
        let r = first / params.cols;
        let c = first % params.cols;
        let x = load8_src((params.offset + r * params.ld + c) / 8u);
        if ((params.flags & FLAG_BY_COL) != 0u) {
            let lo = vec4<f32>(line_scale(top[c]), line_scale(top[c + 1u]),
                               line_scale(top[c + 2u]), line_scale(top[c + 3u]));
            let hi = vec4<f32>(line_scale(top[c + 4u]), line_scale(top[c + 5u]),
                               line_scale(top[c + 6u]), line_scale(top[c + 7u]));
            store8_dst(o, Vec8(x.a * lo, x.b * hi));
        } else {
            let s = line_scale(top[r]);
            store8_dst(o, Vec8(x.a * s, x.b * s));
        }
    } else if (first + 8u <= total) {
        store8_dst(o, Vec8(vec4<f32>(scaled(first), scaled(first + 1u), scaled(first + 2u),
                                     scaled(first + 3u)),
                           vec4<f32>(scaled(first + 4u), scaled(first + 5u), scaled(first + 6u),
                                     scaled(first + 7u))));
    } else {
        for (var e = first; e < total; e += 2u) {
            var v = vec2<f32>(scaled(e), 0.0);
            if (e + 1u < total) {
                v.y = scaled(e + 1u);
            }
            store2_dst(e / 2u, v);
        }
    }
}

//!kernel epilogue
// acc: (M, N) f32, the product of the scaled copies (or, FLAG_UNSCALED, of the f16
//      operands themselves: C = acc (+ bias) (+ old C))
// top_a: (M) u32, largest finite |x| bits of the rows of op(A)
// top_b: (N) u32, of the columns of op(B)
// c: (M, N) any dtype, dense from element `offset`: = acc * 2^(ea_i + eb_j) (+ bias)
//    (+ old C, f32)
// bias: (N) f32 (FLAG_BIAS)
// found_inf: raised when a 16-bit store of C overflows (or is NaN)
override WG: u32 = 256;

fn unscaled(e: u32) -> f32 {
    let i = e / params.cols;
    let j = e % params.cols;
    // acc < K * 2^32, so a total below -252 leaves less than 2^-160: zero in f32. Two
    // halves in [-126, 112] keep each factor a normal power of two; for a negative total
    // the intermediate is the larger, for a positive one the smaller, so neither
    // overflows or underflows where the result does not.
    var v = load_acc(e);
    if ((params.flags & FLAG_UNSCALED) == 0u) {
        let t = max(scale_exponent(top_a[i]) + scale_exponent(top_b[j]), -252);
        let t1 = t / 2;
        v = v * pow2(t1) * pow2(t - t1);
    }
    if ((params.flags & FLAG_BIAS) != 0u) {
        v += bias[j];
    }
    if ((params.flags & FLAG_ACCUMULATE) != 0u) {
        v += load_c(params.offset + e);
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    let total = params.rows * params.cols;
    if (2u * p >= total) {
        return;
    }
    if (2u * p + 1u < total) {
        store2_c(params.offset / 2u + p, vec2<f32>(unscaled(2u * p), unscaled(2u * p + 1u)));
    } else {
        // The last element of an odd count: its word's other half is padding that no
        // other invocation writes, so a single store is safe in every dtype.
        store_c(params.offset + 2u * p, unscaled(2u * p));
    }
}
