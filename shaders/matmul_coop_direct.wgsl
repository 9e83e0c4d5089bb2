// Direct cooperative-matrix kernel: C = op(A) @ op(B) (+ bias row) (+ old C) for shapes
// that are whole workgroup tiles, with every fragment loaded straight from global memory
// (no workgroup staging: the L1 cache shares the operands between the subgroups of a
// workgroup and the L2 between workgroups).
//
// a: (M, K) or (K, M) if TRANS_A, f16 (array<f16>: shader-f16)
// b: (K, N) or (N, K) if TRANS_B, f16
// c: (M, N) any dtype (f32 when accumulating; f32 only in the `direct_f32` section)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// A workgroup of SG_M x SG_N subgroups computes a CBM x CBN tile of C; each subgroup owns
// an (FM * 16) x (FN * 16) block held as FM x FN f32 accumulator fragments (up to 16), so
// each A fragment it loads feeds FN products and each B fragment FM. K advances 16 at a
// time; with PIPE 1 the next step's FM + FN fragments are loaded before the current
// step's products (software pipelining in registers), so the loads are in flight while
// the tensor cores work. No workgroup barrier anywhere in the main loop.
//
// Epilogue (one `//!kernel` section each, completing `main` with `init_acc` and `emit`):
// - `direct`: each fragment goes through its subgroup's 16 x 16 f32 scratch so the
//   output words (bias, accumulate, 16-bit rounding, found_inf) use the shared store
//   path; subgroup barriers (EPI_SYNC 1) or workgroup barriers (EPI_SYNC 0);
// - `direct_f32`: an f32 C without bias: coopStore straight into C (accumulating: the
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
    k: u32,     // inner dimension (a multiple of 16)
    flags: u32, // FLAG_*
}

//!use coop_tiles

override TRANS_A: u32 = 0u;  // 1: A is stored (K, M)
override TRANS_B: u32 = 0u;  // 1: B is stored (N, K)
override SG: u32 = 32u;      // largest subgroup size of the adapter
override SG_MIN: u32 = 32u;  // smallest subgroup size of the adapter (scratch slots)
override SG_M: u32 = 2u;     // subgroups along M
override SG_N: u32 = 2u;     // subgroups along N
override FM: u32 = 4u;       // fragments per subgroup along M (1 to 4)
override FN: u32 = 4u;       // fragments per subgroup along N (1 to 4)
override PIPE: u32 = 1u;     // 1: load the next K step's fragments before the products
override EPI_SYNC: u32 = 1u; // scratch epilogue: 0 workgroup barriers, 1 subgroup barriers
override GROUP_M: u32 = 1u;  // tile rows a workgroup group sweeps (1: row-major grid)
override CBM: u32 = SG_M * FM * 16u;
override CBN: u32 = SG_N * FN * 16u;
override CWG: u32 = SG * SG_M * SG_N;

// Fragment (rows m .. m + 16, columns k .. k + 16) of op(A), straight from A.
fn frag_a(m: u32, k: u32) -> coop_mat16x16<f16, A> {
    if (TRANS_A != 0u) {
        let ld = params.m;
        let at = k * ld + m;
        return coopLoad<coop_mat16x16<f16, A>>(&a[at], ld);
    }
    let ld = params.k;
    let at = m * ld + k;
    return coopLoadT<coop_mat16x16<f16, A>>(&a[at], ld);
}

// Fragment (rows k .. k + 16, columns n .. n + 16) of op(B), straight from B.
fn frag_b(k: u32, n: u32) -> coop_mat16x16<f16, B> {
    if (TRANS_B != 0u) {
        let ld = params.k;
        let at = n * ld + k;
        return coopLoad<coop_mat16x16<f16, B>>(&b[at], ld);
    }
    let ld = params.n;
    let at = k * ld + n;
    return coopLoadT<coop_mat16x16<f16, B>>(&b[at], ld);
}

// C is one dense (M, N) matrix from element 0 here: where the shared epilogues write.
fn c_at(m: u32, n: u32) -> u32 {
    return m * params.n + n;
}

fn c_ld() -> u32 {
    return params.n;
}

@compute @workgroup_size(CWG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) lanes: u32) {
    let block = sg_id % (SG_M * SG_N);
    let tile = tile_of(wg_id);
    let m = tile.x * CBM + (block / SG_N) * (FM * 16u); // this subgroup's block of C
    let n = tile.y * CBN + (block % SG_N) * (FN * 16u);
    let steps = params.k / 16u;

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

    // Fragments of the current K step (x, y) and the next one (a, b).
    var a0 = coop_mat16x16<f16, A>();
    var a1 = coop_mat16x16<f16, A>();
    var a2 = coop_mat16x16<f16, A>();
    var a3 = coop_mat16x16<f16, A>();
    var b0 = coop_mat16x16<f16, B>();
    var b1 = coop_mat16x16<f16, B>();
    var b2 = coop_mat16x16<f16, B>();
    var b3 = coop_mat16x16<f16, B>();
    if (PIPE != 0u) {
        a0 = frag_a(m, 0u);
        b0 = frag_b(0u, n);
        if (FM > 1u) {
            a1 = frag_a(m + 16u, 0u);
        }
        if (FM > 2u) {
            a2 = frag_a(m + 32u, 0u);
        }
        if (FM > 3u) {
            a3 = frag_a(m + 48u, 0u);
        }
        if (FN > 1u) {
            b1 = frag_b(0u, n + 16u);
        }
        if (FN > 2u) {
            b2 = frag_b(0u, n + 32u);
        }
        if (FN > 3u) {
            b3 = frag_b(0u, n + 48u);
        }
    }
    for (var s = 0u; s < steps; s += 1u) {
        if (PIPE == 0u) {
            let k0 = s * 16u;
            a0 = frag_a(m, k0);
            b0 = frag_b(k0, n);
            if (FM > 1u) {
                a1 = frag_a(m + 16u, k0);
            }
            if (FM > 2u) {
                a2 = frag_a(m + 32u, k0);
            }
            if (FM > 3u) {
                a3 = frag_a(m + 48u, k0);
            }
            if (FN > 1u) {
                b1 = frag_b(k0, n + 16u);
            }
            if (FN > 2u) {
                b2 = frag_b(k0, n + 32u);
            }
            if (FN > 3u) {
                b3 = frag_b(k0, n + 48u);
            }
        }
        let x0 = a0;
        let x1 = a1;
        let x2 = a2;
        let x3 = a3;
        let y0 = b0;
        let y1 = b1;
        let y2 = b2;
        let y3 = b3;
        if (PIPE != 0u) {
            // The next step's fragments, in flight during the products below (the last
            // step reloads its own: in bounds, and no branch in the loop body).
            let k1 = min(s + 1u, steps - 1u) * 16u;
            a0 = frag_a(m, k1);
            b0 = frag_b(k1, n);
            if (FM > 1u) {
                a1 = frag_a(m + 16u, k1);
            }
            if (FM > 2u) {
                a2 = frag_a(m + 32u, k1);
            }
            if (FM > 3u) {
                a3 = frag_a(m + 48u, k1);
            }
            if (FN > 1u) {
                b1 = frag_b(k1, n + 16u);
            }
            if (FN > 2u) {
                b2 = frag_b(k1, n + 32u);
            }
            if (FN > 3u) {
                b3 = frag_b(k1, n + 48u);
            }
        }
        c00 = coopMultiplyAdd(x0, y0, c00);
        if (FN > 1u) {
            c01 = coopMultiplyAdd(x0, y1, c01);
        }
        if (FN > 2u) {
            c02 = coopMultiplyAdd(x0, y2, c02);
        }
        if (FN > 3u) {
            c03 = coopMultiplyAdd(x0, y3, c03);
        }
        if (FM > 1u) {
            c10 = coopMultiplyAdd(x1, y0, c10);
        }
        if ((FM > 1u) & (FN > 1u)) {
            c11 = coopMultiplyAdd(x1, y1, c11);
        }
        if ((FM > 1u) & (FN > 2u)) {
            c12 = coopMultiplyAdd(x1, y2, c12);
        }
        if ((FM > 1u) & (FN > 3u)) {
            c13 = coopMultiplyAdd(x1, y3, c13);
        }
        if (FM > 2u) {
            c20 = coopMultiplyAdd(x2, y0, c20);
        }
        if ((FM > 2u) & (FN > 1u)) {
            c21 = coopMultiplyAdd(x2, y1, c21);
        }
        if ((FM > 2u) & (FN > 2u)) {
            c22 = coopMultiplyAdd(x2, y2, c22);
        }
        if ((FM > 2u) & (FN > 3u)) {
            c23 = coopMultiplyAdd(x2, y3, c23);
        }
        if (FM > 3u) {
            c30 = coopMultiplyAdd(x3, y0, c30);
        }
        if ((FM > 3u) & (FN > 1u)) {
            c31 = coopMultiplyAdd(x3, y1, c31);
        }
        if ((FM > 3u) & (FN > 2u)) {
            c32 = coopMultiplyAdd(x3, y2, c32);
        }
        if ((FM > 3u) & (FN > 3u)) {
            c33 = coopMultiplyAdd(x3, y3, c33);
        }
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
    }
    if ((FM > 1u) & (FN > 1u)) {
        emit(c11, m + 16u, n + 16u, sg_id, lane, lanes);
    }
    if ((FM > 1u) & (FN > 2u)) {
        emit(c12, m + 16u, n + 32u, sg_id, lane, lanes);
    }
    if ((FM > 1u) & (FN > 3u)) {
        emit(c13, m + 16u, n + 48u, sg_id, lane, lanes);
    }
    if (FM > 2u) {
        emit(c20, m + 32u, n, sg_id, lane, lanes);
    }
    if ((FM > 2u) & (FN > 1u)) {
        emit(c21, m + 32u, n + 16u, sg_id, lane, lanes);
    }
    if ((FM > 2u) & (FN > 2u)) {
        emit(c22, m + 32u, n + 32u, sg_id, lane, lanes);
    }
    if ((FM > 2u) & (FN > 3u)) {
        emit(c23, m + 32u, n + 48u, sg_id, lane, lanes);
    }
    if (FM > 3u) {
        emit(c30, m + 48u, n, sg_id, lane, lanes);
    }
    if ((FM > 3u) & (FN > 1u)) {
        emit(c31, m + 48u, n + 16u, sg_id, lane, lanes);
    }
    if ((FM > 3u) & (FN > 2u)) {
        emit(c32, m + 48u, n + 32u, sg_id, lane, lanes);
    }
    if ((FM > 3u) & (FN > 3u)) {
        emit(c33, m + 48u, n + 48u, sg_id, lane, lanes);
    }
}

//!kernel direct
// Epilogue through a 16 x 16 f32 scratch a subgroup (any C dtype, bias, accumulate).
//!use coop_scratch_epilogue

//!kernel direct_f32
// Epilogue straight into an f32 C without bias (one coopStore a fragment).
//!use coop_store_epilogue
