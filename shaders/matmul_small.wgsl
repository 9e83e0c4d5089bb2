// Matrix products for software (CPU) adapters: composed after the head of
// shaders/matmul.wgsl (Params, set_batch, store_strided), whose comments give the
// operands, layouts, batches and output words.

//!kernel small
// Register-blocked product for software adapters (lavapipe, SwiftShader): every load a
// 16-byte word, no workgroup memory, no barriers.
// a: (batch, M, K) or (batch, K, M) if FLAG_TRANS_A, A_DT (16-byte words; see below)
// b: (batch, K, N) or (batch, N, K) if FLAG_TRANS_B, B_DT
// c: (batch, M, N) any dtype (f32 when accumulating); a 16-bit C needs even N (host)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// Why: a CPU driver runs a workgroup's invocations a few SIMD lanes at a time, and every
// load instruction becomes a loop over those lanes (lavapipe: extract the address, check
// the bounds, load, insert), whatever the addresses; FMAs cost one vector instruction
// for all lanes. So the count of load instructions per FMA sets the speed. The tiled
// kernel reads 16 scalars of workgroup memory per 64 FMAs after staging each slice
// (more loads and stores, two barriers); here each invocation computes an 8 x 8 block
// of C from 16-byte loads of A and B straight from storage (8 f16 / bf16 or 4 f32
// values each): 16 loads per 512 FMAs for 16-bit operands.
//
// Shapes (the host checks): K, the stored columns of A and of B, every offset, leading
// dimension and batch stride are multiples of 8 elements, so every 16-byte word lies
// inside one stored row. Rows and columns past C's edge are clamped to its last (their
// results are never stored).
//
// Numerics: each element is fma(a[k], b[k], acc) for k = 0, 1, .., K - 1 from acc = 0,
// the tiled kernels' order, so results are the same bits as theirs. Column pairs start
// at even columns, so with even N (or an f32 C) each pair is one output word or two f32
// elements, as in tiled_fast.

override SN: u32 = 32u;  // invocations per workgroup, each 8 columns of C (along N)
override A_DT: u32 = 0u; // A's dtype: 0 f32, 1 f16, 2 bf16
override B_DT: u32 = 0u; // B's dtype
const SR: u32 = 8u;      // rows of C per invocation (and per workgroup)

// The 8 elements of a 16-bit tensor in a 16-byte word, or 4 of an f32 one (in .lo).
struct Eight {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn unpack_word(w: vec4<u32>, dt: u32) -> Eight {
    if (dt == 1u) {
        return Eight(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                     vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
    }
    if (dt == 2u) {
        let hi16 = vec4<u32>(0xFFFF0000u);
        let even = bitcast<vec4<f32>>(w << vec4<u32>(16u));
        let odd = bitcast<vec4<f32>>(w & hi16);
        return Eight(vec4<f32>(even.x, odd.x, even.y, odd.y),
                     vec4<f32>(even.z, odd.z, even.w, odd.w));
    }
    return Eight(bitcast<vec4<f32>>(w), vec4<f32>(0.0));
}

// Elements e .. e + 7 of A / B (e a multiple of 8): one 16-byte word, two for f32.
fn eight_a(e: u32) -> Eight {
    if (A_DT == 0u) {
        return Eight(bitcast<vec4<f32>>(a[e >> 2u]), bitcast<vec4<f32>>(a[(e >> 2u) + 1u]));
    }
    return unpack_word(a[e >> 3u], A_DT);
}

fn eight_b(e: u32) -> Eight {
    if (B_DT == 0u) {
        return Eight(bitcast<vec4<f32>>(b[e >> 2u]), bitcast<vec4<f32>>(b[(e >> 2u) + 1u]));
    }
    return unpack_word(b[e >> 3u], B_DT);
}

// The head's loaders, for its helpers that this kernel does not call.
fn load_a(i: u32) -> f32 {
    let w = eight_a(i & ~7u);
    return select(w.lo, w.hi, (i & 4u) != 0u)[i & 3u];
}

fn load_b(i: u32) -> f32 {
    let w = eight_b(i & ~7u);
    return select(w.lo, w.hi, (i & 4u) != 0u)[i & 3u];
}

fn load4_a(q: u32) -> vec4<f32> {
    let w = eight_a((4u * q) & ~7u);
    return select(w.lo, w.hi, (q & 1u) != 0u);
}

fn load4_b(q: u32) -> vec4<f32> {
    let w = eight_b((4u * q) & ~7u);
    return select(w.lo, w.hi, (q & 1u) != 0u);
}

// An 8 x 8 block: v[2i] and v[2i + 1] hold elements 0..3 and 4..7 of line i.
struct Block {
    v: array<vec4<f32>, 16>,
}

// The block's transpose (constant indices only: registers).
fn transpose8(x: Block) -> Block {
    var t: Block;
    t.v[0] = vec4<f32>(x.v[0].x, x.v[2].x, x.v[4].x, x.v[6].x);
    t.v[1] = vec4<f32>(x.v[8].x, x.v[10].x, x.v[12].x, x.v[14].x);
    t.v[2] = vec4<f32>(x.v[0].y, x.v[2].y, x.v[4].y, x.v[6].y);
    t.v[3] = vec4<f32>(x.v[8].y, x.v[10].y, x.v[12].y, x.v[14].y);
    t.v[4] = vec4<f32>(x.v[0].z, x.v[2].z, x.v[4].z, x.v[6].z);
    t.v[5] = vec4<f32>(x.v[8].z, x.v[10].z, x.v[12].z, x.v[14].z);
    t.v[6] = vec4<f32>(x.v[0].w, x.v[2].w, x.v[4].w, x.v[6].w);
    t.v[7] = vec4<f32>(x.v[8].w, x.v[10].w, x.v[12].w, x.v[14].w);
    t.v[8] = vec4<f32>(x.v[1].x, x.v[3].x, x.v[5].x, x.v[7].x);
    t.v[9] = vec4<f32>(x.v[9].x, x.v[11].x, x.v[13].x, x.v[15].x);
    t.v[10] = vec4<f32>(x.v[1].y, x.v[3].y, x.v[5].y, x.v[7].y);
    t.v[11] = vec4<f32>(x.v[9].y, x.v[11].y, x.v[13].y, x.v[15].y);
    t.v[12] = vec4<f32>(x.v[1].z, x.v[3].z, x.v[5].z, x.v[7].z);
    t.v[13] = vec4<f32>(x.v[9].z, x.v[11].z, x.v[13].z, x.v[15].z);
    t.v[14] = vec4<f32>(x.v[1].w, x.v[3].w, x.v[5].w, x.v[7].w);
    t.v[15] = vec4<f32>(x.v[9].w, x.v[11].w, x.v[13].w, x.v[15].w);
    return t;
}

// Eight stored rows of A from `first` (clamped below `rows`), 8 elements each from
// column `col`.
fn rows_a(first: u32, rows: u32, col: u32) -> Block {
    let last = rows - 1u;
    let at = a_base + col;
    var x: Block;
    let w0 = eight_a(at + min(first, last) * params.lda);
    let w1 = eight_a(at + min(first + 1u, last) * params.lda);
    let w2 = eight_a(at + min(first + 2u, last) * params.lda);
    let w3 = eight_a(at + min(first + 3u, last) * params.lda);
    let w4 = eight_a(at + min(first + 4u, last) * params.lda);
    let w5 = eight_a(at + min(first + 5u, last) * params.lda);
    let w6 = eight_a(at + min(first + 6u, last) * params.lda);
    let w7 = eight_a(at + min(first + 7u, last) * params.lda);
    x.v[0] = w0.lo;
    x.v[1] = w0.hi;
    x.v[2] = w1.lo;
    x.v[3] = w1.hi;
    x.v[4] = w2.lo;
    x.v[5] = w2.hi;
    x.v[6] = w3.lo;
    x.v[7] = w3.hi;
    x.v[8] = w4.lo;
    x.v[9] = w4.hi;
    x.v[10] = w5.lo;
    x.v[11] = w5.hi;
    x.v[12] = w6.lo;
    x.v[13] = w6.hi;
    x.v[14] = w7.lo;
    x.v[15] = w7.hi;
    return x;
}

fn rows_b(first: u32, rows: u32, col: u32) -> Block {
    let last = rows - 1u;
    let at = b_base + col;
    var x: Block;
    let w0 = eight_b(at + min(first, last) * params.ldb);
    let w1 = eight_b(at + min(first + 1u, last) * params.ldb);
    let w2 = eight_b(at + min(first + 2u, last) * params.ldb);
    let w3 = eight_b(at + min(first + 3u, last) * params.ldb);
    let w4 = eight_b(at + min(first + 4u, last) * params.ldb);
    let w5 = eight_b(at + min(first + 5u, last) * params.ldb);
    let w6 = eight_b(at + min(first + 6u, last) * params.ldb);
    let w7 = eight_b(at + min(first + 7u, last) * params.ldb);
    x.v[0] = w0.lo;
    x.v[1] = w0.hi;
    x.v[2] = w1.lo;
    x.v[3] = w1.hi;
    x.v[4] = w2.lo;
    x.v[5] = w2.hi;
    x.v[6] = w3.lo;
    x.v[7] = w3.hi;
    x.v[8] = w4.lo;
    x.v[9] = w4.hi;
    x.v[10] = w5.lo;
    x.v[11] = w5.hi;
    x.v[12] = w6.lo;
    x.v[13] = w6.hi;
    x.v[14] = w7.lo;
    x.v[15] = w7.hi;
    return x;
}

// op(A)[m0 .. m0 + 7, k .. k + 7] by k: v[2j], v[2j + 1] = rows 0..3, 4..7 at k + j.
fn block_a(m0: u32, k: u32) -> Block {
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        return transpose8(rows_a(m0, params.m, k));
    }
    // Stored (K, M): 8 rows of op(A) are one 16-byte word of a stored row (M is a
    // multiple of 8, so a word past M is wholly past it: read the last one instead).
    return rows_a(k, params.k, min(m0, params.m - 8u));
}

// op(B)[k .. k + 7, n .. n + 7] by k: v[2j], v[2j + 1] = columns 0..3, 4..7 at k + j.
fn block_b(n: u32, k: u32) -> Block {
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        return rows_b(k, params.k, min(n, params.n - 8u));
    }
    return transpose8(rows_b(n, params.n, k));
}

// acc.v[2r], acc.v[2r + 1] += op(A)[r, j] * op(B)[j, 0..7] for one j: a0, a1 hold
// rows 0..3, 4..7 of op(A) at j; b0, b1 columns 0..3, 4..7 of op(B) at j.
fn fma_step(acc: ptr<function, Block>, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>,
            b1: vec4<f32>) {
    (*acc).v[0] = fma(vec4<f32>(a0.x), b0, (*acc).v[0]);
    (*acc).v[1] = fma(vec4<f32>(a0.x), b1, (*acc).v[1]);
    (*acc).v[2] = fma(vec4<f32>(a0.y), b0, (*acc).v[2]);
    (*acc).v[3] = fma(vec4<f32>(a0.y), b1, (*acc).v[3]);
    (*acc).v[4] = fma(vec4<f32>(a0.z), b0, (*acc).v[4]);
    (*acc).v[5] = fma(vec4<f32>(a0.z), b1, (*acc).v[5]);
    (*acc).v[6] = fma(vec4<f32>(a0.w), b0, (*acc).v[6]);
    (*acc).v[7] = fma(vec4<f32>(a0.w), b1, (*acc).v[7]);
    (*acc).v[8] = fma(vec4<f32>(a1.x), b0, (*acc).v[8]);
    (*acc).v[9] = fma(vec4<f32>(a1.x), b1, (*acc).v[9]);
    (*acc).v[10] = fma(vec4<f32>(a1.y), b0, (*acc).v[10]);
    (*acc).v[11] = fma(vec4<f32>(a1.y), b1, (*acc).v[11]);
    (*acc).v[12] = fma(vec4<f32>(a1.z), b0, (*acc).v[12]);
    (*acc).v[13] = fma(vec4<f32>(a1.z), b1, (*acc).v[13]);
    (*acc).v[14] = fma(vec4<f32>(a1.w), b0, (*acc).v[14]);
    (*acc).v[15] = fma(vec4<f32>(a1.w), b1, (*acc).v[15]);
}

// fma_step for k .. k + 7 in order (constant indices only: registers).
fn fma_block(acc: ptr<function, Block>, x: Block, y: Block) {
    fma_step(acc, x.v[0], x.v[1], y.v[0], y.v[1]);
    fma_step(acc, x.v[2], x.v[3], y.v[2], y.v[3]);
    fma_step(acc, x.v[4], x.v[5], y.v[4], y.v[5]);
    fma_step(acc, x.v[6], x.v[7], y.v[6], y.v[7]);
    fma_step(acc, x.v[8], x.v[9], y.v[8], y.v[9]);
    fma_step(acc, x.v[10], x.v[11], y.v[10], y.v[11]);
    fma_step(acc, x.v[12], x.v[13], y.v[12], y.v[13]);
    fma_step(acc, x.v[14], x.v[15], y.v[14], y.v[15]);
}

// Row m of C, columns n .. n + 7: four column pairs (see the head's store_strided).
fn small_store_row(m: u32, n: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (m >= params.m) {
        return;
    }
    let row = c_base + m * params.ldc;
    small_store_pair(row, n, lo.xy);
    small_store_pair(row, n + 2u, lo.zw);
    small_store_pair(row, n + 4u, hi.xy);
    small_store_pair(row, n + 6u, hi.zw);
}

// Columns col, col + 1 of the row whose column 0 is element `row`.
fn small_store_pair(row: u32, col: u32, v: vec2<f32>) {
    if (col < params.n) {
        store_strided(row + col, v.x, col, v.y, col + 1u < params.n);
    }
}

@compute @workgroup_size(SN)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    set_batch(wg_id.z);
    let m0 = wg_id.y * SR;
    let n = 8u * (wg_id.x * SN + li);

    var acc: Block;
    for (var k = 0u; k < params.k; k += 8u) {
        fma_block(&acc, block_a(m0, k), block_b(n, k));
    }
    small_store_row(m0, n, acc.v[0], acc.v[1]);
    small_store_row(m0 + 1u, n, acc.v[2], acc.v[3]);
    small_store_row(m0 + 2u, n, acc.v[4], acc.v[5]);
    small_store_row(m0 + 3u, n, acc.v[6], acc.v[7]);
    small_store_row(m0 + 4u, n, acc.v[8], acc.v[9]);
    small_store_row(m0 + 5u, n, acc.v[10], acc.v[11]);
    small_store_row(m0 + 6u, n, acc.v[12], acc.v[13]);
    small_store_row(m0 + 7u, n, acc.v[14], acc.v[15]);
}
