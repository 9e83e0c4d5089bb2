// Fragment-copy cooperative-matrix kernel: C = op(A) @ op(B) (+ bias row) (+ old C) for
// shapes that are whole workgroup tiles (one product or a batch of strided views), with
// op(A) and op(B) slices staged through workgroup memory by the cooperative-matrix loads
// and stores themselves: each subgroup coopLoads its A_PER + B_PER 16 x 16 fragments of
// the next slice straight from global memory into registers (in flight during the
// current slice's products) and coopStores them into the other half of a double-buffered
// slice, one barrier a slice. No per-element copies: the tile kernel (matmul_coop.wgsl)
// stores each 16-byte word as 8 scalar halves because naga 30 has neither a u32 ->
// vec2<f16> bitcast nor the address of a vector component to coopLoad from; here each
// lane stores its own fragment elements as the driver lays them out.
//
// a: (batch, M, K) or (batch, K, M) if TRANS_A, f16 (array<f16>: shader-f16)
// b: (batch, K, N) or (batch, N, K) if TRANS_B, f16
// c: (batch, M, N) any dtype (f32 when accumulating; f32 only in the `copied_f32` section)
// bias: (N) f32 (a dummy unless FLAG_BIAS; unbatched products only)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// Batches and strides as in matmul.wgsl (the same Params): each operand's matrix of batch
// z = outer * batch_inner + inner starts at offset + outer * outer_stride + inner *
// inner_stride, stored rows ld apart (attention's heads in a fused QKV activation). The
// host passes only views whose offsets, row and batch strides are multiples of 8 elements,
// so every fragment row is 16-byte aligned for coopLoad / coopStore. The grid's z is
// batch * SPLIT_K + split layer (the host splits only unbatched products).
//
// A workgroup of SG_M x SG_N subgroups computes a CBM x CBN tile of C; each subgroup owns
// an (FM * 16) x (FN * 16) block held as FM x FN f32 accumulator fragments. Slices are
// CBK deep and kept in op layout ([m][k] and [k][n], rows padded by 8 halves) whatever
// the operands' stored layouts: the global fragment loads transpose.
// Epilogue sections as in matmul_coop_direct.wgsl: `copied` (scratch, any C) and
// `copied_f32` (coopStore into an f32 C without bias).
//
// Causal hints (src/ops/matmul/causal.rs; flags bits, square matrices per batch entry,
// never with a split K), honoured at tile granularity without changing control flow:
// - FLAG_LOWER_A (op(A)[i, k] = 0 for k > i): the K loop stops after the row tile's last
//   row, rounded up to a K slice; tile rows run in reverse so the longest start first;
// - FLAG_UPPER_A (op(A)[i, k] = 0 for k < i): the K loop starts at the row tile's first
//   row, rounded down to a K slice.
// FLAG_SKIP_ABOVE_DIAGONAL (C above the diagonal unused) is not honoured: a tile-level
// early return needs its decision through workgroupUniformLoad (naga's uniformity
// analysis), and with that return in the kernel the H200's driver produced wrong
// products even where no flag was set (device call 10, session 4).
// The skipped terms are exact zeros: the used entries match the unhinted product bit for
// bit (unless B holds inf or NaN where A is zero). The double-buffered pipeline below
// only sees a shorter [k_base, k_base + slices * CBK) range of at least one slice.
//
// If the driver runs smaller subgroups than SG, the extra subgroups repeat a block's work
// and copies (subgroup_id modulo the subgroup count) with identical values: correct.
//
// naga 30 traps: coopLoad / coopStore pointer indices and strides are bound to `let`s;
// conditions use `&`, not `&&`.

struct Params {
    m: u32,           // rows of op(A) and C
    n: u32,           // columns of op(B) and C
    k: u32,           // inner dimension (a multiple of CBK)
    flags: u32,       // FLAG_* (coop_tiles; the transposes are TRANS_A / TRANS_B here)
    lda: u32,         // elements between stored rows of A (>= its stored columns)
    ldb: u32,         // ... of B
    ldc: u32,         // ... of C (>= N)
    batch_inner: u32, // inner batch count (>= 1)
    offset_a: u32,    // element offset of batch (0, 0) in a
    offset_b: u32,
    offset_c: u32,
    pad0: u32,
    outer_a: u32,     // elements between consecutive outer batch indices in a
    outer_b: u32,
    outer_c: u32,
    pad1: u32,
    inner_a: u32,     // elements between consecutive inner batch indices in a
    inner_b: u32,
    inner_c: u32,
    pad2: u32,
}

//!use coop_tiles

const FLAG_LOWER_A: u32 = 64u;             // op(A)[i, k] = 0 for k > i
const FLAG_UPPER_A: u32 = 128u;            // op(A)[i, k] = 0 for k < i

override TRANS_A: u32 = 0u;  // 1: A is stored (K, M)
override TRANS_B: u32 = 0u;  // 1: B is stored (N, K)
override SG: u32 = 32u;      // largest subgroup size of the adapter
override SG_MIN: u32 = 32u;  // smallest subgroup size of the adapter (scratch slots)
override SG_M: u32 = 2u;     // subgroups along M
override SG_N: u32 = 4u;     // subgroups along N
override FM: u32 = 4u;       // fragments per subgroup along M (1 to 4)
override FN: u32 = 2u;       // fragments per subgroup along N (1 to 4)
override CBK: u32 = 32u;     // K per slice: 16, 32 or 64
override EPI_SYNC: u32 = 1u; // scratch epilogue: 0 workgroup barriers, 1 subgroup barriers
override GROUP_M: u32 = 1u;  // tile rows a workgroup group sweeps (1: row-major grid)
// Split K over the grid's z (1: no split): workgroup layer l = z % SPLIT_K multiplies K
// range [l K / SPLIT_K, (l + 1) K / SPLIT_K) and writes rows [l M, (l + 1) M) of C, then
// an f32 (SPLIT_K, M, N) scratch that a column sum adds up in a fixed order. Products
// with few output tiles and a long K (weight gradients: K = tokens) fill the GPU this way.
override SPLIT_K: u32 = 1u;
override CBM: u32 = SG_M * FM * 16u;
override CBN: u32 = SG_N * FN * 16u;
override CWG: u32 = SG * SG_M * SG_N;
override NSUB: u32 = SG_M * SG_N;
override KF: u32 = CBK / 16u;                  // fragments along K in a slice
override A_PER: u32 = (CBM / 16u) * KF / NSUB; // op(A) fragments a subgroup copies (1 to 4)
override B_PER: u32 = (CBN / 16u) * KF / NSUB; // op(B) fragments a subgroup copies (1 to 4)
override A_LD: u32 = CBK + 8u;                 // op(A) slice [m][k], padded rows
override B_LD: u32 = CBN + 8u;                 // op(B) slice [k][n], padded rows
override A_SL: u32 = CBM * A_LD;
override B_SL: u32 = CBK * B_LD;

var<workgroup> a_sh: array<f16, 2u * A_SL>; // two slices of op(A)
var<workgroup> b_sh: array<f16, 2u * B_SL>; // two slices of op(B)

// First element of this workgroup's matrices (set_batch, from the grid's z).
var<private> a_base: u32;
var<private> b_base: u32;
var<private> c_base: u32;

fn set_batch(batch: u32) {
    let outer = batch / params.batch_inner;
    let inner = batch % params.batch_inner;
    a_base = params.offset_a + outer * params.outer_a + inner * params.inner_a;
    b_base = params.offset_b + outer * params.outer_b + inner * params.inner_b;
    c_base = params.offset_c + outer * params.outer_c + inner * params.inner_c;
}

// Element of C (row m, column n) of this workgroup's matrix, and the elements between
// its rows: where the shared epilogues write.
fn c_at(m: u32, n: u32) -> u32 {
    return c_base + m * params.ldc + n;
}

fn c_ld() -> u32 {
    return params.ldc;
}

// Fragment (rows m .. m + 16, columns k .. k + 16) of op(A), straight from A.
fn frag_a(m: u32, k: u32) -> coop_mat16x16<f16, A> {
    let ld = params.lda;
    if (TRANS_A != 0u) {
        let at = a_base + k * ld + m;
        return coopLoad<coop_mat16x16<f16, A>>(&a[at], ld);
    }
    let at = a_base + m * ld + k;
    return coopLoadT<coop_mat16x16<f16, A>>(&a[at], ld);
}

// Fragment (rows k .. k + 16, columns n .. n + 16) of op(B), straight from B.
fn frag_b(k: u32, n: u32) -> coop_mat16x16<f16, B> {
    let ld = params.ldb;
    if (TRANS_B != 0u) {
        let at = b_base + n * ld + k;
        return coopLoad<coop_mat16x16<f16, B>>(&b[at], ld);
    }
    let at = b_base + k * ld + n;
    return coopLoadT<coop_mat16x16<f16, B>>(&b[at], ld);
}

// Fragment t of this subgroup's share of the op(A) slice at (m0, k0), from global memory:
// tile-local fragment f = sub + t * NSUB, at (f / KF, f % KF) in fragments.
fn copy_frag_a(t: u32, sub: u32, m0: u32, k0: u32) -> coop_mat16x16<f16, A> {
    let f = sub + t * NSUB;
    return frag_a(m0 + (f / KF) * 16u, k0 + (f % KF) * 16u);
}

// Fragment t of this subgroup's share of the op(B) slice at (k0, n0): (f % KF, f / KF).
fn copy_frag_b(t: u32, sub: u32, n0: u32, k0: u32) -> coop_mat16x16<f16, B> {
    let f = sub + t * NSUB;
    return frag_b(k0 + (f % KF) * 16u, n0 + (f / KF) * 16u);
}

// Stores fragment t of this subgroup's share into slice s (op layout).
fn put_frag_a(t: u32, sub: u32, s: u32, v: coop_mat16x16<f16, A>) {
    let f = sub + t * NSUB;
    let at = s * A_SL + (f / KF) * 16u * A_LD + (f % KF) * 16u;
    let ld = A_LD;
    coopStoreT(v, &a_sh[at], ld);
}

fn put_frag_b(t: u32, sub: u32, s: u32, v: coop_mat16x16<f16, B>) {
    let f = sub + t * NSUB;
    let at = s * B_SL + (f % KF) * 16u * B_LD + (f / KF) * 16u;
    let ld = B_LD;
    coopStoreT(v, &b_sh[at], ld);
}

// Fragment (tile rows m .. m + 16, slice columns kk .. kk + 16) of op(A) in slice s.
fn slice_a(s: u32, m: u32, kk: u32) -> coop_mat16x16<f16, A> {
    let at = s * A_SL + m * A_LD + kk;
    let ld = A_LD;
    return coopLoadT<coop_mat16x16<f16, A>>(&a_sh[at], ld);
}

// Fragment (slice rows kk .. kk + 16, tile columns n .. n + 16) of op(B) in slice s.
fn slice_b(s: u32, kk: u32, n: u32) -> coop_mat16x16<f16, B> {
    let at = s * B_SL + kk * B_LD + n;
    let ld = B_LD;
    return coopLoadT<coop_mat16x16<f16, B>>(&b_sh[at], ld);
}

@compute @workgroup_size(CWG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) lanes: u32) {
    // Batches are uniform over the workgroup: z = batch * SPLIT_K + split layer.
    let layer = wg_id.z % SPLIT_K;
    set_batch(wg_id.z / SPLIT_K);
    // Lets and selects: the hints change no control flow.
    let lower_a = (params.flags & FLAG_LOWER_A) != 0u;
    let upper_a = (params.flags & FLAG_UPPER_A) != 0u;
    let tile = tile_of(wg_id);
    // Under LowerA tile rows run in reverse: the longest K ranges first.
    let tile_m = select(tile.x, params.m / CBM - 1u - tile.x, lower_a);
    let m0 = tile_m * CBM;
    let n0 = tile.y * CBN;
    let sub = sg_id % NSUB;
    let m = m0 + (sub / SG_N) * (FM * 16u); // this subgroup's block of C
    let n = n0 + (sub % SG_N) * (FN * 16u);
    let bm = m - m0; // the same, tile-local
    let bn = n - n0;
    let k_split = params.k / SPLIT_K;
    let layer_base = layer * k_split; // this layer's K range starts here
    let layer_end = layer_base + k_split;
    let k_end = select(layer_end, min(layer_end, ((m0 + CBM + CBK - 1u) / CBK) * CBK), lower_a);
    let k_base = select(layer_base, (m0 / CBK) * CBK, upper_a);
    let slices = (k_end - k_base) / CBK; // >= 1: M = K, whole tiles and slices
    let m_out = m + layer * params.m; // this layer's rows of C (of the split scratch)

    // This subgroup's share of a slice, in registers between the global loads and the
    // workgroup stores.
    var r0 = coop_mat16x16<f16, A>();
    var r1 = coop_mat16x16<f16, A>();
    var r2 = coop_mat16x16<f16, A>();
    var r3 = coop_mat16x16<f16, A>();
    var q0 = coop_mat16x16<f16, B>();
    var q1 = coop_mat16x16<f16, B>();
    var q2 = coop_mat16x16<f16, B>();
    var q3 = coop_mat16x16<f16, B>();
    r0 = copy_frag_a(0u, sub, m0, k_base);
    if (A_PER > 1u) {
        r1 = copy_frag_a(1u, sub, m0, k_base);
    }
    if (A_PER > 2u) {
        r2 = copy_frag_a(2u, sub, m0, k_base);
    }
    if (A_PER > 3u) {
        r3 = copy_frag_a(3u, sub, m0, k_base);
    }
    q0 = copy_frag_b(0u, sub, n0, k_base);
    if (B_PER > 1u) {
        q1 = copy_frag_b(1u, sub, n0, k_base);
    }
    if (B_PER > 2u) {
        q2 = copy_frag_b(2u, sub, n0, k_base);
    }
    if (B_PER > 3u) {
        q3 = copy_frag_b(3u, sub, n0, k_base);
    }
    put_frag_a(0u, sub, 0u, r0);
    if (A_PER > 1u) {
        put_frag_a(1u, sub, 0u, r1);
    }
    if (A_PER > 2u) {
        put_frag_a(2u, sub, 0u, r2);
    }
    if (A_PER > 3u) {
        put_frag_a(3u, sub, 0u, r3);
    }
    put_frag_b(0u, sub, 0u, q0);
    if (B_PER > 1u) {
        put_frag_b(1u, sub, 0u, q1);
    }
    if (B_PER > 2u) {
        put_frag_b(2u, sub, 0u, q2);
    }
    if (B_PER > 3u) {
        put_frag_b(3u, sub, 0u, q3);
    }
    workgroupBarrier();

    // Accumulators: zero, or the old C where the epilogue section loads it.
    var c00 = init_acc(m_out, n);
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
        c01 = init_acc(m_out, n + 16u);
    }
    if (FN > 2u) {
        c02 = init_acc(m_out, n + 32u);
    }
    if (FN > 3u) {
        c03 = init_acc(m_out, n + 48u);
    }
    if (FM > 1u) {
        c10 = init_acc(m_out + 16u, n);
    }
    if ((FM > 1u) & (FN > 1u)) {
        c11 = init_acc(m_out + 16u, n + 16u);
    }
    if ((FM > 1u) & (FN > 2u)) {
        c12 = init_acc(m_out + 16u, n + 32u);
    }
    if ((FM > 1u) & (FN > 3u)) {
        c13 = init_acc(m_out + 16u, n + 48u);
    }
    if (FM > 2u) {
        c20 = init_acc(m_out + 32u, n);
    }
    if ((FM > 2u) & (FN > 1u)) {
        c21 = init_acc(m_out + 32u, n + 16u);
    }
    if ((FM > 2u) & (FN > 2u)) {
        c22 = init_acc(m_out + 32u, n + 32u);
    }
    if ((FM > 2u) & (FN > 3u)) {
        c23 = init_acc(m_out + 32u, n + 48u);
    }
    if (FM > 3u) {
        c30 = init_acc(m_out + 48u, n);
    }
    if ((FM > 3u) & (FN > 1u)) {
        c31 = init_acc(m_out + 48u, n + 16u);
    }
    if ((FM > 3u) & (FN > 2u)) {
        c32 = init_acc(m_out + 48u, n + 32u);
    }
    if ((FM > 3u) & (FN > 3u)) {
        c33 = init_acc(m_out + 48u, n + 48u);
    }

    var x0 = coop_mat16x16<f16, A>();
    var x1 = coop_mat16x16<f16, A>();
    var x2 = coop_mat16x16<f16, A>();
    var x3 = coop_mat16x16<f16, A>();
    var y0 = coop_mat16x16<f16, B>();
    var y1 = coop_mat16x16<f16, B>();
    var y2 = coop_mat16x16<f16, B>();
    var y3 = coop_mat16x16<f16, B>();

    for (var sl = 0u; sl < slices; sl += 1u) {
        let s = sl & 1u;
        // The next slice's share into registers, in flight during the products below
        // (the last slice reloads its own into the free half: in bounds, no branch).
        let k1 = k_base + min(sl + 1u, slices - 1u) * CBK;
        r0 = copy_frag_a(0u, sub, m0, k1);
        if (A_PER > 1u) {
            r1 = copy_frag_a(1u, sub, m0, k1);
        }
        if (A_PER > 2u) {
            r2 = copy_frag_a(2u, sub, m0, k1);
        }
        if (A_PER > 3u) {
            r3 = copy_frag_a(3u, sub, m0, k1);
        }
        q0 = copy_frag_b(0u, sub, n0, k1);
        if (B_PER > 1u) {
            q1 = copy_frag_b(1u, sub, n0, k1);
        }
        if (B_PER > 2u) {
            q2 = copy_frag_b(2u, sub, n0, k1);
        }
        if (B_PER > 3u) {
            q3 = copy_frag_b(3u, sub, n0, k1);
        }
        for (var kk = 0u; kk < CBK; kk += 16u) {
            x0 = slice_a(s, bm, kk);
            if (FM > 1u) {
                x1 = slice_a(s, bm + 16u, kk);
            }
            if (FM > 2u) {
                x2 = slice_a(s, bm + 32u, kk);
            }
            if (FM > 3u) {
                x3 = slice_a(s, bm + 48u, kk);
            }
            y0 = slice_b(s, kk, bn);
            if (FN > 1u) {
                y1 = slice_b(s, kk, bn + 16u);
            }
            if (FN > 2u) {
                y2 = slice_b(s, kk, bn + 32u);
            }
            if (FN > 3u) {
                y3 = slice_b(s, kk, bn + 48u);
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
        // The other half was last read before the previous barrier: free to write.
        put_frag_a(0u, sub, s ^ 1u, r0);
        if (A_PER > 1u) {
            put_frag_a(1u, sub, s ^ 1u, r1);
        }
        if (A_PER > 2u) {
            put_frag_a(2u, sub, s ^ 1u, r2);
        }
        if (A_PER > 3u) {
            put_frag_a(3u, sub, s ^ 1u, r3);
        }
        put_frag_b(0u, sub, s ^ 1u, q0);
        if (B_PER > 1u) {
            put_frag_b(1u, sub, s ^ 1u, q1);
        }
        if (B_PER > 2u) {
            put_frag_b(2u, sub, s ^ 1u, q2);
        }
        if (B_PER > 3u) {
            put_frag_b(3u, sub, s ^ 1u, q3);
        }
        workgroupBarrier();
    }

    emit(c00, m_out, n, sg_id, lane, lanes);
    if (FN > 1u) {
        emit(c01, m_out, n + 16u, sg_id, lane, lanes);
    }
    if (FN > 2u) {
        emit(c02, m_out, n + 32u, sg_id, lane, lanes);
    }
    if (FN > 3u) {
        emit(c03, m_out, n + 48u, sg_id, lane, lanes);
    }
    if (FM > 1u) {
        emit(c10, m_out + 16u, n, sg_id, lane, lanes);
    }
    if ((FM > 1u) & (FN > 1u)) {
        emit(c11, m_out + 16u, n + 16u, sg_id, lane, lanes);
    }
    if ((FM > 1u) & (FN > 2u)) {
        emit(c12, m_out + 16u, n + 32u, sg_id, lane, lanes);
    }
    if ((FM > 1u) & (FN > 3u)) {
        emit(c13, m_out + 16u, n + 48u, sg_id, lane, lanes);
    }
    if (FM > 2u) {
        emit(c20, m_out + 32u, n, sg_id, lane, lanes);
    }
    if ((FM > 2u) & (FN > 1u)) {
        emit(c21, m_out + 32u, n + 16u, sg_id, lane, lanes);
    }
    if ((FM > 2u) & (FN > 2u)) {
        emit(c22, m_out + 32u, n + 32u, sg_id, lane, lanes);
    }
    if ((FM > 2u) & (FN > 3u)) {
        emit(c23, m_out + 32u, n + 48u, sg_id, lane, lanes);
    }
    if (FM > 3u) {
        emit(c30, m_out + 48u, n, sg_id, lane, lanes);
    }
    if ((FM > 3u) & (FN > 1u)) {
        emit(c31, m_out + 48u, n + 16u, sg_id, lane, lanes);
    }
    if ((FM > 3u) & (FN > 2u)) {
        emit(c32, m_out + 48u, n + 32u, sg_id, lane, lanes);
    }
    if ((FM > 3u) & (FN > 3u)) {
        emit(c33, m_out + 48u, n + 48u, sg_id, lane, lanes);
    }
}

//!kernel copied
// Epilogue through a 16 x 16 f32 scratch a subgroup (any C dtype, bias, accumulate).
//!use coop_scratch_epilogue

//!kernel copied_f32
// Epilogue straight into an f32 C without bias (one coopStore a fragment).
//!use coop_store_epilogue
