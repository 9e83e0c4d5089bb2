// Cooperative-matrix tile kernel: C = op(A) @ op(B) (+ bias row) (+ old C) for shapes
// that are whole tiles (M, N, K multiples of the workgroup tile). The general coop kernel
// in matmul.wgsl covers every other shape; ops::matmul picks between them.
//
// a: (M, K) or (K, M) if TRANS_A, f16, read as 16-byte words (8 halves)
// b: (K, N) or (N, K) if TRANS_B, f16, read as 16-byte words
// c: (M, N) any dtype (f32 when accumulating)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// A workgroup of SG_M x SG_N subgroups computes a CBM x CBN tile of C; each subgroup owns
// an (FM * 16) x (FN * 16) block held as FM x FN f32 accumulator fragments, so each A
// fragment it loads feeds FN products and each B fragment FM.
// K advances CBK at a time. Every invocation copies its share of the next op(A) and op(B)
// slices (in the operands' stored layouts) from global memory into registers as 16-byte
// words, multiplies the current slice from workgroup memory, then writes the registers
// into the other half of a double-buffered workgroup slice: one barrier a slice, and the
// global loads are in flight while the tensor cores work.
// The slices are f16 arrays (naga types a cooperative load by its pointer's element), so
// each 16-byte word is stored as 8 halves.
// Rows are padded by 8 halves (16 bytes): fragment rows fall in distinct memory banks and
// every row stays 16-byte aligned.
// Epilogue (one `//!kernel` section each, both below `main`, which they complete with
// `init_acc` and `emit`):
// - `tile`: each fragment goes through a per-subgroup 16 x 16 f32 scratch so the output
//   words (bias, accumulate, 16-bit rounding, found_inf) use the shared store path, with
//   workgroup barriers (EPI_SYNC 0) or subgroup barriers (EPI_SYNC 1);
// - `tile_f32`: an f32 C without bias: coopStore straight into C (accumulating: the
//   accumulators start from a coopLoad of the old C).
//
// If the driver runs smaller subgroups than SG, the extra subgroups repeat a block's work
// (subgroup_id modulo the block count) and store identical values: correct, slower.
//
// naga 30 traps: coopLoad / coopStore pointer indices and strides are bound to `let`s
// (inline expressions panic the SPIR-V writer); conditions use `&`, not `&&` (a
// short-circuit hides uniformity from naga's analysis).

struct Params {
    m: u32,     // rows of op(A) and C
    n: u32,     // columns of op(B) and C
    k: u32,     // inner dimension
    flags: u32, // FLAG_*
}

//!use coop_tiles

override TRANS_A: u32 = 0u; // 1: A is stored (K, M)
override TRANS_B: u32 = 0u; // 1: B is stored (N, K)
override SG: u32 = 32u;     // largest subgroup size of the adapter
override SG_M: u32 = 2u;    // subgroups along M
override SG_N: u32 = 2u;    // subgroups along N
override FM: u32 = 4u;      // fragments per subgroup along M (1 to 4)
override FN: u32 = 4u;      // fragments per subgroup along N (1 to 4)
override CBK: u32 = 32u;    // K per slice, a multiple of 16
override SG_MIN: u32 = 32u; // smallest subgroup size of the adapter (scratch slots)
override EPI_SYNC: u32 = 0u; // scratch epilogue: 0 workgroup barriers, 1 subgroup barriers
override GROUP_M: u32 = 1u;  // tile rows a workgroup group sweeps (1: row-major grid)
override CBM: u32 = SG_M * FM * 16u;
override CBN: u32 = SG_N * FN * 16u;
override CWG: u32 = SG * SG_M * SG_N;
// Slices in the operands' stored layouts: rows x row halves (+ 8 halves padding).
override A_ROWS: u32 = (1u - TRANS_A) * CBM + TRANS_A * CBK;
override A_ROW_H: u32 = (1u - TRANS_A) * CBK + TRANS_A * CBM;
override A_LD: u32 = A_ROW_H + 8u;
override A_HALVES: u32 = A_ROWS * A_LD;
override B_ROWS: u32 = (1u - TRANS_B) * CBK + TRANS_B * CBN;
override B_ROW_H: u32 = (1u - TRANS_B) * CBN + TRANS_B * CBK;
override B_LD: u32 = B_ROW_H + 8u;
override B_HALVES: u32 = B_ROWS * B_LD;
// 16-byte copies per invocation per slice (at most 8; ops::matmul checks).
override A_VECS: u32 = A_ROWS * A_ROW_H / 8u / CWG;
override B_VECS: u32 = B_ROWS * B_ROW_H / 8u / CWG;

var<workgroup> a_sh: array<f16, 2u * A_HALVES>; // two slices of op(A), A's layout
var<workgroup> b_sh: array<f16, 2u * B_HALVES>; // two slices of op(B), B's layout

// Global 16-byte word of copy t of this invocation for the slice at (m0 or n0, k0).
fn word_a(t: u32, li: u32, m0: u32, k0: u32) -> vec4<u32> {
    let v = li + t * CWG;
    let per_row = A_ROW_H / 8u;
    let r = v / per_row;
    let c = v % per_row;
    if (TRANS_A != 0u) {
        return a[(k0 + r) * (params.m / 8u) + m0 / 8u + c];
    }
    return a[(m0 + r) * (params.k / 8u) + k0 / 8u + c];
}

fn word_b(t: u32, li: u32, n0: u32, k0: u32) -> vec4<u32> {
    let v = li + t * CWG;
    let per_row = B_ROW_H / 8u;
    let r = v / per_row;
    let c = v % per_row;
    if (TRANS_B != 0u) {
        return b[(n0 + r) * (params.k / 8u) + k0 / 8u + c];
    }
    return b[(k0 + r) * (params.n / 8u) + n0 / 8u + c];
}

// Writes the 8 halves of a 16-byte word at half index `at` of a workgroup slice.
// (Cooperative loads take their element type from the pointer, so the slices must be
// f16 arrays; naga 30 has no bitcast from u32 to vec2<f16>, so the halves widen to f32
// and back, which is exact.)
fn put8_a(at: u32, w: vec4<u32>) {
    let h0 = vec2<f16>(unpack2x16float(w.x));
    let h1 = vec2<f16>(unpack2x16float(w.y));
    let h2 = vec2<f16>(unpack2x16float(w.z));
    let h3 = vec2<f16>(unpack2x16float(w.w));
    a_sh[at] = h0.x;
    a_sh[at + 1u] = h0.y;
    a_sh[at + 2u] = h1.x;
    a_sh[at + 3u] = h1.y;
    a_sh[at + 4u] = h2.x;
    a_sh[at + 5u] = h2.y;
    a_sh[at + 6u] = h3.x;
    a_sh[at + 7u] = h3.y;
}

fn put8_b(at: u32, w: vec4<u32>) {
    let h0 = vec2<f16>(unpack2x16float(w.x));
    let h1 = vec2<f16>(unpack2x16float(w.y));
    let h2 = vec2<f16>(unpack2x16float(w.z));
    let h3 = vec2<f16>(unpack2x16float(w.w));
    b_sh[at] = h0.x;
    b_sh[at + 1u] = h0.y;
    b_sh[at + 2u] = h1.x;
    b_sh[at + 3u] = h1.y;
    b_sh[at + 4u] = h2.x;
    b_sh[at + 5u] = h2.y;
    b_sh[at + 6u] = h3.x;
    b_sh[at + 7u] = h3.y;
}

// Copy t of this invocation into slice s (row-major in the operand's stored layout).
fn put_a(t: u32, li: u32, s: u32, w: vec4<u32>) {
    let v = li + t * CWG;
    let per_row = A_ROW_H / 8u;
    put8_a(s * A_HALVES + (v / per_row) * A_LD + 8u * (v % per_row), w);
}

fn put_b(t: u32, li: u32, s: u32, w: vec4<u32>) {
    let v = li + t * CWG;
    let per_row = B_ROW_H / 8u;
    put8_b(s * B_HALVES + (v / per_row) * B_LD + 8u * (v % per_row), w);
}

// Fragment (tile rows m .. m + 16, slice columns kk .. kk + 16) of op(A) in slice s.
fn frag_a(s: u32, m: u32, kk: u32) -> coop_mat16x16<f16, A> {
    let ld = A_LD;
    if (TRANS_A != 0u) {
        let at = s * A_HALVES + kk * A_LD + m;
        return coopLoad<coop_mat16x16<f16, A>>(&a_sh[at], ld);
    }
    let at = s * A_HALVES + m * A_LD + kk;
    return coopLoadT<coop_mat16x16<f16, A>>(&a_sh[at], ld);
}

// Fragment (slice rows kk .. kk + 16, tile columns n .. n + 16) of op(B) in slice s.
fn frag_b(s: u32, kk: u32, n: u32) -> coop_mat16x16<f16, B> {
    let ld = B_LD;
    if (TRANS_B != 0u) {
        let at = s * B_HALVES + n * B_LD + kk;
        return coopLoad<coop_mat16x16<f16, B>>(&b_sh[at], ld);
    }
    let at = s * B_HALVES + kk * B_LD + n;
    return coopLoadT<coop_mat16x16<f16, B>>(&b_sh[at], ld);
}

// C is one dense (M, N) matrix from element 0 here: where the shared epilogues write.
fn c_at(m: u32, n: u32) -> u32 {
    return m * params.n + n;
}

fn c_ld() -> u32 {
    return params.n;
}

@compute @workgroup_size(CWG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_invocation_id) lane: u32,
        @builtin(subgroup_size) lanes: u32) {
    let tile = tile_of(wg_id);
    let m0 = tile.x * CBM;
    let n0 = tile.y * CBN;
    let block = sg_id % (SG_M * SG_N);
    let bm = (block / SG_N) * (FM * 16u); // this subgroup's block, tile-local
    let bn = (block % SG_N) * (FN * 16u);
    let slices = params.k / CBK;

    var ra: array<vec4<u32>, 8>;
    var rb: array<vec4<u32>, 8>;
    for (var t = 0u; t < A_VECS; t += 1u) {
        ra[t] = word_a(t, li, m0, 0u);
    }
    for (var t = 0u; t < B_VECS; t += 1u) {
        rb[t] = word_b(t, li, n0, 0u);
    }
    for (var t = 0u; t < A_VECS; t += 1u) {
        put_a(t, li, 0u, ra[t]);
    }
    for (var t = 0u; t < B_VECS; t += 1u) {
        put_b(t, li, 0u, rb[t]);
    }
    workgroupBarrier();

    let m = m0 + bm;
    let n = n0 + bn;
    // Accumulators: zero, or the old C where the epilogue section loads it.
    var c00 = init_acc(m, n);
    var c01 = coop_mat16x16<f32, C>();
    var c02 = coop_mat16x16<f32, C>();
    var c03 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c12 = coop_mat16x16<f32, C>();
    var c13 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c22 = coop_mat16x16<f32, C>();
    var c23 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    var c32 = coop_mat16x16<f32, C>();
    var c33 = coop_mat16x16<f32, C>();
    if (FN > 1u) {
        c01 = init_acc(m, n + 16u);
    }
    if (FN > 2u) {
        c02 = init_acc(m, n + 32u);
    }
    if (FN > 3u) {
        c03 = init_acc(m, n + 48u);
    }
    if (FM > 1u) {
        c10 = init_acc(m + 16u, n);
    }
    if ((FM > 1u) & (FN > 1u)) {
        c11 = init_acc(m + 16u, n + 16u);
    }
    if ((FM > 1u) & (FN > 2u)) {
        c12 = init_acc(m + 16u, n + 32u);
    }
    if ((FM > 1u) & (FN > 3u)) {
        c13 = init_acc(m + 16u, n + 48u);
    }
    if (FM > 2u) {
        c20 = init_acc(m + 32u, n);
    }
    if ((FM > 2u) & (FN > 1u)) {
        c21 = init_acc(m + 32u, n + 16u);
    }
    if ((FM > 2u) & (FN > 2u)) {
        c22 = init_acc(m + 32u, n + 32u);
    }
    if ((FM > 2u) & (FN > 3u)) {
        c23 = init_acc(m + 32u, n + 48u);
    }
    if (FM > 3u) {
        c30 = init_acc(m + 48u, n);
    }
    if ((FM > 3u) & (FN > 1u)) {
        c31 = init_acc(m + 48u, n + 16u);
    }
    if ((FM > 3u) & (FN > 2u)) {
        c32 = init_acc(m + 48u, n + 32u);
    }
    if ((FM > 3u) & (FN > 3u)) {
        c33 = init_acc(m + 48u, n + 48u);
    }
    var a1 = coop_mat16x16<f16, A>();
    var a2 = coop_mat16x16<f16, A>();
    var a3 = coop_mat16x16<f16, A>();
    var b1 = coop_mat16x16<f16, B>();
    var b2 = coop_mat16x16<f16, B>();
    var b3 = coop_mat16x16<f16, B>();

    for (var sl = 0u; sl < slices; sl += 1u) {
        let s = sl & 1u;
        let more = sl + 1u < slices;
        if (more) {
            // Next slice into registers; these loads overlap the products below.
            let k1 = (sl + 1u) * CBK;
            for (var t = 0u; t < A_VECS; t += 1u) {
                ra[t] = word_a(t, li, m0, k1);
            }
            for (var t = 0u; t < B_VECS; t += 1u) {
                rb[t] = word_b(t, li, n0, k1);
            }
        }
        for (var kk = 0u; kk < CBK; kk += 16u) {
            let a0 = frag_a(s, bm, kk);
            let b0 = frag_b(s, kk, bn);
            if (FM > 1u) {
                a1 = frag_a(s, bm + 16u, kk);
            }
            if (FM > 2u) {
                a2 = frag_a(s, bm + 32u, kk);
            }
            if (FM > 3u) {
                a3 = frag_a(s, bm + 48u, kk);
            }
            if (FN > 1u) {
                b1 = frag_b(s, kk, bn + 16u);
            }
            if (FN > 2u) {
                b2 = frag_b(s, kk, bn + 32u);
            }
            if (FN > 3u) {
                b3 = frag_b(s, kk, bn + 48u);
            }
            c00 = coopMultiplyAdd(a0, b0, c00);
            if (FN > 1u) {
                c01 = coopMultiplyAdd(a0, b1, c01);
            }
            if (FN > 2u) {
                c02 = coopMultiplyAdd(a0, b2, c02);
            }
            if (FN > 3u) {
                c03 = coopMultiplyAdd(a0, b3, c03);
            }
            if (FM > 1u) {
                c10 = coopMultiplyAdd(a1, b0, c10);
                if (FN > 1u) {
                    c11 = coopMultiplyAdd(a1, b1, c11);
                }
                if (FN > 2u) {
                    c12 = coopMultiplyAdd(a1, b2, c12);
                }
                if (FN > 3u) {
                    c13 = coopMultiplyAdd(a1, b3, c13);
                }
            }
            if (FM > 2u) {
                c20 = coopMultiplyAdd(a2, b0, c20);
                if (FN > 1u) {
                    c21 = coopMultiplyAdd(a2, b1, c21);
                }
                if (FN > 2u) {
                    c22 = coopMultiplyAdd(a2, b2, c22);
                }
                if (FN > 3u) {
                    c23 = coopMultiplyAdd(a2, b3, c23);
                }
            }
            if (FM > 3u) {
                c30 = coopMultiplyAdd(a3, b0, c30);
                if (FN > 1u) {
                    c31 = coopMultiplyAdd(a3, b1, c31);
                }
                if (FN > 2u) {
                    c32 = coopMultiplyAdd(a3, b2, c32);
                }
                if (FN > 3u) {
                    c33 = coopMultiplyAdd(a3, b3, c33);
                }
            }
        }
        if (more) {
            // The other slice was last read before the previous barrier: free to write.
            for (var t = 0u; t < A_VECS; t += 1u) {
                put_a(t, li, s ^ 1u, ra[t]);
            }
            for (var t = 0u; t < B_VECS; t += 1u) {
                put_b(t, li, s ^ 1u, rb[t]);
            }
        }
        workgroupBarrier();
    }

    emit(c00, m, n, sg_id, lane, lanes);
    if (FN > 1u) {
        emit(c01, m, n + 16u, sg_id, lane, lanes);
    }
    if (FN > 2u) {
        emit(c02, m, n + 32u, sg_id, lane, lanes);
    }
    if (FN > 3u) {
        emit(c03, m, n + 48u, sg_id, lane, lanes);
    }
    if (FM > 1u) {
        emit(c10, m + 16u, n, sg_id, lane, lanes);
        if (FN > 1u) {
            emit(c11, m + 16u, n + 16u, sg_id, lane, lanes);
        }
        if (FN > 2u) {
            emit(c12, m + 16u, n + 32u, sg_id, lane, lanes);
        }
        if (FN > 3u) {
            emit(c13, m + 16u, n + 48u, sg_id, lane, lanes);
        }
    }
    if (FM > 2u) {
        emit(c20, m + 32u, n, sg_id, lane, lanes);
        if (FN > 1u) {
            emit(c21, m + 32u, n + 16u, sg_id, lane, lanes);
        }
        if (FN > 2u) {
            emit(c22, m + 32u, n + 32u, sg_id, lane, lanes);
        }
        if (FN > 3u) {
            emit(c23, m + 32u, n + 48u, sg_id, lane, lanes);
        }
    }
    if (FM > 3u) {
        emit(c30, m + 48u, n, sg_id, lane, lanes);
        if (FN > 1u) {
            emit(c31, m + 48u, n + 16u, sg_id, lane, lanes);
        }
        if (FN > 2u) {
            emit(c32, m + 48u, n + 32u, sg_id, lane, lanes);
        }
        if (FN > 3u) {
            emit(c33, m + 48u, n + 48u, sg_id, lane, lanes);
        }
    }
}

//!kernel tile
// Epilogue through a 16 x 16 f32 scratch a subgroup (any C dtype, bias, accumulate).
//!use coop_scratch_epilogue

//!kernel tile_f32
// Epilogue straight into an f32 C without bias (one coopStore a fragment).
//!use coop_store_epilogue
