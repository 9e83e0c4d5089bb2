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

struct Params {
    rows: u32,   // stored rows of the operand (exponents, convert); M (epilogue)
    cols: u32,   // stored columns of the operand (exponents, convert); N (epilogue)
    ld: u32,     // elements between stored rows of the source (exponents, convert)
    offset: u32, // element index of the source's (0, 0) (exponents, convert); of C's
                 // first element (epilogue: even, a chunk of rows of a widened product)
    flags: u32,  // exponents, convert: FLAG_BY_COL; epilogue: FLAG_BIAS | FLAG_ACCUMULATE
                 // | FLAG_UNSCALED
}

const FLAG_BY_COL: u32 = 1u;     // lines are stored columns (else stored rows)
const FLAG_BIAS: u32 = 1u;       // epilogue: add bias[j]
const FLAG_ACCUMULATE: u32 = 2u; // epilogue: add the old C
const FLAG_UNSCALED: u32 = 4u;   // epilogue: no exponents (a widened f16 product:
                                 // exps_a and exps_b are dummies)

// 2^e as an f32, for e in [-126, 127].
fn pow2(e: i32) -> f32 {
    return bitcast<f32>(u32(e + 127) << 23u);
}

// Lines (and invocations along a line) per exponents workgroup.
const SPAN: u32 = 16u;

//!kernel exponents
// src: stored (rows, cols) bf16, element (r, c) at offset + r * ld + c
// exps: (lines) i32 as u32 bits; lines = cols when FLAG_BY_COL, else rows
var<workgroup> partial: array<u32, 256>;

// Largest finite |x| bits of a line -> the line's scale exponent.
fn scale_exponent(top: u32) -> i32 {
    if (top == 0u) {
        return 0;
    }
    return clamp(i32(top >> 23u) - 127 - 15, -127, 112);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let by_col = (params.flags & FLAG_BY_COL) != 0u;
    var lines = params.rows;
    var along = params.cols;
    // lid.x always walks consecutive stored elements: by column it picks the line
    // (neighbouring columns), by row it walks along the line.
    var lane_line = lid.y;
    var lane_walk = lid.x;
    if (by_col) {
        lines = params.cols;
        along = params.rows;
        lane_line = lid.x;
        lane_walk = lid.y;
    }
    let line = (wg_id.y * num_wg.x + wg_id.x) * SPAN + lane_line;
    var top = 0u;
    if (line < lines) {
        for (var t = lane_walk; t < along; t += SPAN) {
            var idx = params.offset + line * params.ld + t;
            if (by_col) {
                idx = params.offset + t * params.ld + line;
            }
            let bits = bitcast<u32>(load_src(idx)) & 0x7FFFFFFFu;
            // Inf and NaN travel through the scaled copy on their own; they set no scale.
            if (bits < 0x7F800000u) {
                top = max(top, bits);
            }
        }
    }
    partial[lane_line * SPAN + lane_walk] = top;
    workgroupBarrier();
    if (lane_walk == 0u && line < lines) {
        var m = 0u;
        for (var t = 0u; t < SPAN; t++) {
            m = max(m, partial[lane_line * SPAN + t]);
        }
        exps[line] = bitcast<u32>(scale_exponent(m));
    }
}

//!kernel convert
// src: stored (rows, cols) bf16, element (r, c) at offset + r * ld + c
// exps: (lines) i32 as u32 bits, from `exponents` with the same flags
// dst: (rows, cols) f16, dense: element (r, c) at r * cols + c, = src(r, c) * 2^-exps[line]
override WG: u32 = 256;

fn scaled(e: u32) -> f32 {
    let r = e / params.cols;
    let c = e % params.cols;
    var line = r;
    if ((params.flags & FLAG_BY_COL) != 0u) {
        line = c;
    }
    let x = load_src(params.offset + r * params.ld + c);
    return x * pow2(-bitcast<i32>(exps[line]));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    let total = params.rows * params.cols;
    if (2u * p >= total) {
        return;
    }
    var v = vec2<f32>(scaled(2u * p), 0.0);
    if (2u * p + 1u < total) {
        v.y = scaled(2u * p + 1u);
    }
    // Rounds through f32_to_f16_bits: exact for every scaled value in f16's normal range,
    // nearest-even into the subnormals below it.
    store2_dst(p, v);
}

//!kernel epilogue
// acc: (M, N) f32, the product of the scaled copies (or, FLAG_UNSCALED, of the f16
//      operands themselves: C = acc (+ bias) (+ old C))
// exps_a: (M) i32 as u32 bits, rows of op(A)
// exps_b: (N) i32 as u32 bits, columns of op(B)
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
        let t = max(bitcast<i32>(exps_a[i]) + bitcast<i32>(exps_b[j]), -252);
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
