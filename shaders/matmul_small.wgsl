// Matrix products for software (CPU) adapters: composed after the head of
// shaders/matmul.wgsl (Params, set_batch, fetch4_a / fetch4_b, store_strided), whose
// comments give the operands, layouts, batches and output words.

//!kernel small
// Register-blocked product without workgroup memory, for software adapters (lavapipe,
// SwiftShader) and the small products of a browser training step.
// a: (batch, M, K) or (batch, K, M) if FLAG_TRANS_A, any dtype (strided views)
// b: (batch, K, N) or (batch, N, K) if FLAG_TRANS_B, any dtype
// c: (batch, M, N) any dtype (f32 when accumulating); a 16-bit C needs even N (host)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// Why: a CPU driver runs a workgroup as a loop over its invocations (a few SIMD lanes at
// a time) that every barrier splits, and each load whose address differs between lanes
// is a per-lane gather. The tiled kernels stage slices through workgroup memory (stores,
// gathers back, two barriers a slice) and, at a 64-row batch, leave most of a 64 x 64
// tile's staging unused. Here each invocation computes SR rows x 4 columns of C straight
// from storage: every invocation of a workgroup shares the same SR rows of op(A) (their
// loads are workgroup-uniform: one scalar load each on drivers that see it) and reads
// its own 4 columns of op(B) as one vec4 per k (or one vec4 along k per column for a
// transposed B). No workgroup memory, no barriers.
//
// Numerics: each element is fma(a[k], b[k], acc) for k = 0, 1, .., K - 1 from acc = 0,
// the tiled kernels' order, so results are the same bits as theirs (zeros past K add
// exactly nothing). Column pairs start at even columns, so with even N (or an f32 C)
// each pair is one output word or two f32 elements, as in tiled_fast.

override SN: u32 = 64u; // invocations per workgroup, each 4 columns of C (along N)
const SR: u32 = 8u;     // rows of C per invocation (and per workgroup)

// Loads never branch on a lane's own index: a CPU driver runs a branch that differs
// between lanes on both sides, masked. Rows and columns past C's edge are clamped to
// its last one (their results are never stored); K runs in whole quads, then a tail.

// Stored element (r, c) of A / B, clamped into the stored (rows, cols) matrix.
fn small_a_at(r: u32, c: u32, rows: u32, cols: u32) -> f32 {
    return load_a(a_base + min(r, rows - 1u) * params.lda + min(c, cols - 1u));
}

fn small_b_at(r: u32, c: u32, rows: u32, cols: u32) -> f32 {
    return load_b(b_base + min(r, rows - 1u) * params.ldb + min(c, cols - 1u));
}

// op(A)[m, k] and op(B)[k, n] (clamped).
fn op_a(m: u32, k: u32) -> f32 {
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        return small_a_at(m, k, params.m, params.k);
    }
    return small_a_at(k, m, params.k, params.m);
}

fn op_b(k: u32, n: u32) -> f32 {
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        return small_b_at(k, n, params.k, params.n);
    }
    return small_b_at(n, k, params.n, params.k);
}

// Whether every quad the main loop reads of A (of B) is one aligned vec4 load inside the
// matrix: a uniform fact of the dispatch.
fn a_quads() -> bool {
    let aligned = ((a_base | params.lda) & 3u) == 0u;
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        return aligned; // quads along k, k a multiple of 4 below K & ~3
    }
    return aligned && (params.m & 3u) == 0u; // quads along m: whole or wholly past M
}

fn b_quads() -> bool {
    let aligned = ((b_base | params.ldb) & 3u) == 0u;
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        return aligned && (params.n & 3u) == 0u; // quads along n
    }
    return aligned; // quads along k
}

// op(A)[m0 + r, k .. k + 3] for r = 0..7, as lo[j] = rows 0..3 and hi[j] = rows 4..7 at
// k + j: the register layout the FMAs broadcast from. k + 3 < K.
struct AQuad {
    lo: array<vec4<f32>, 4>,
    hi: array<vec4<f32>, 4>,
}

fn small_a(m0: u32, k: u32, quads: bool) -> AQuad {
    var q: AQuad;
    if (!quads) {
        for (var j = 0u; j < 4u; j += 1u) {
            q.lo[j] = vec4<f32>(op_a(m0, k + j), op_a(m0 + 1u, k + j), op_a(m0 + 2u, k + j),
                                op_a(m0 + 3u, k + j));
            q.hi[j] = vec4<f32>(op_a(m0 + 4u, k + j), op_a(m0 + 5u, k + j),
                                op_a(m0 + 6u, k + j), op_a(m0 + 7u, k + j));
        }
        return q;
    }
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        // Stored (M, K): one vec4 along k for each row, transposed in registers.
        let last = params.m - 1u;
        let r0 = load4_a((a_base + min(m0, last) * params.lda + k) >> 2u);
        let r1 = load4_a((a_base + min(m0 + 1u, last) * params.lda + k) >> 2u);
        let r2 = load4_a((a_base + min(m0 + 2u, last) * params.lda + k) >> 2u);
        let r3 = load4_a((a_base + min(m0 + 3u, last) * params.lda + k) >> 2u);
        let r4 = load4_a((a_base + min(m0 + 4u, last) * params.lda + k) >> 2u);
        let r5 = load4_a((a_base + min(m0 + 5u, last) * params.lda + k) >> 2u);
        let r6 = load4_a((a_base + min(m0 + 6u, last) * params.lda + k) >> 2u);
        let r7 = load4_a((a_base + min(m0 + 7u, last) * params.lda + k) >> 2u);
        q.lo[0] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
        q.lo[1] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
        q.lo[2] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
        q.lo[3] = vec4<f32>(r0.w, r1.w, r2.w, r3.w);
        q.hi[0] = vec4<f32>(r4.x, r5.x, r6.x, r7.x);
        q.hi[1] = vec4<f32>(r4.y, r5.y, r6.y, r7.y);
        q.hi[2] = vec4<f32>(r4.z, r5.z, r6.z, r7.z);
        q.hi[3] = vec4<f32>(r4.w, r5.w, r6.w, r7.w);
        return q;
    }
    // Stored (K, M): a vec4 along m is already 4 rows at one k (M a multiple of 4: a
    // quad past M reads the last one instead).
    let lo = a_base + min(m0, params.m - 4u);
    let hi = a_base + min(m0 + 4u, params.m - 4u);
    for (var j = 0u; j < 4u; j += 1u) {
        q.lo[j] = load4_a((lo + (k + j) * params.lda) >> 2u);
        q.hi[j] = load4_a((hi + (k + j) * params.lda) >> 2u);
    }
    return q;
}

// op(B)[k + j, n .. n + 3] for j = 0..3. k + 3 < K.
fn small_b(n: u32, k: u32, quads: bool) -> array<vec4<f32>, 4> {
    var q: array<vec4<f32>, 4>;
    if (!quads) {
        for (var j = 0u; j < 4u; j += 1u) {
            q[j] = vec4<f32>(op_b(k + j, n), op_b(k + j, n + 1u), op_b(k + j, n + 2u),
                             op_b(k + j, n + 3u));
        }
        return q;
    }
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        // Stored (K, N): one vec4 along n per k (N a multiple of 4: a quad past N reads
        // the last one instead).
        let col = b_base + min(n, params.n - 4u);
        for (var j = 0u; j < 4u; j += 1u) {
            q[j] = load4_b((col + (k + j) * params.ldb) >> 2u);
        }
        return q;
    }
    // Stored (N, K): one vec4 along k per column, transposed in registers.
    let last = params.n - 1u;
    let c0 = load4_b((b_base + min(n, last) * params.ldb + k) >> 2u);
    let c1 = load4_b((b_base + min(n + 1u, last) * params.ldb + k) >> 2u);
    let c2 = load4_b((b_base + min(n + 2u, last) * params.ldb + k) >> 2u);
    let c3 = load4_b((b_base + min(n + 3u, last) * params.ldb + k) >> 2u);
    q[0] = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
    q[1] = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
    q[2] = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
    q[3] = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
    return q;
}

// Row m of C, columns n .. n + 3: two column pairs (see the head's store_strided).
fn small_store_row(m: u32, n: u32, v: vec4<f32>) {
    if (m >= params.m) {
        return;
    }
    let row = c_base + m * params.ldc;
    if (n < params.n) {
        store_strided(row + n, v.x, n, v.y, n + 1u < params.n);
    }
    if (n + 2u < params.n) {
        store_strided(row + n + 2u, v.z, n + 2u, v.w, n + 3u < params.n);
    }
}

@compute @workgroup_size(SN)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    set_batch(wg_id.z);
    let m0 = wg_id.y * SR;
    let n = 4u * (wg_id.x * SN + li);

    let a_vec = a_quads();
    let b_vec = b_quads();
    let k_quads = params.k & ~3u;

    // acc[r]: row m0 + r, columns n .. n + 3. Constant indices only (registers).
    var acc: array<vec4<f32>, 8>;
    for (var k = 0u; k < k_quads; k += 4u) {
        let a = small_a(m0, k, a_vec);
        let b = small_b(n, k, b_vec);
        // k, k + 1, k + 2, k + 3 in order: each element's sum keeps the tiled order.
        for (var j = 0u; j < 4u; j += 1u) {
            let lo = a.lo[j];
            let hi = a.hi[j];
            let bj = b[j];
            acc[0] = fma(vec4<f32>(lo.x), bj, acc[0]);
            acc[1] = fma(vec4<f32>(lo.y), bj, acc[1]);
            acc[2] = fma(vec4<f32>(lo.z), bj, acc[2]);
            acc[3] = fma(vec4<f32>(lo.w), bj, acc[3]);
            acc[4] = fma(vec4<f32>(hi.x), bj, acc[4]);
            acc[5] = fma(vec4<f32>(hi.y), bj, acc[5]);
            acc[6] = fma(vec4<f32>(hi.z), bj, acc[6]);
            acc[7] = fma(vec4<f32>(hi.w), bj, acc[7]);
        }
    }
    for (var k = k_quads; k < params.k; k += 1u) {
        let bj = vec4<f32>(op_b(k, n), op_b(k, n + 1u), op_b(k, n + 2u), op_b(k, n + 3u));
        acc[0] = fma(vec4<f32>(op_a(m0, k)), bj, acc[0]);
        acc[1] = fma(vec4<f32>(op_a(m0 + 1u, k)), bj, acc[1]);
        acc[2] = fma(vec4<f32>(op_a(m0 + 2u, k)), bj, acc[2]);
        acc[3] = fma(vec4<f32>(op_a(m0 + 3u, k)), bj, acc[3]);
        acc[4] = fma(vec4<f32>(op_a(m0 + 4u, k)), bj, acc[4]);
        acc[5] = fma(vec4<f32>(op_a(m0 + 5u, k)), bj, acc[5]);
        acc[6] = fma(vec4<f32>(op_a(m0 + 6u, k)), bj, acc[6]);
        acc[7] = fma(vec4<f32>(op_a(m0 + 7u, k)), bj, acc[7]);
    }

    small_store_row(m0, n, acc[0]);
    small_store_row(m0 + 1u, n, acc[1]);
    small_store_row(m0 + 2u, n, acc[2]);
    small_store_row(m0 + 3u, n, acc[3]);
    small_store_row(m0 + 4u, n, acc[4]);
    small_store_row(m0 + 5u, n, acc[5]);
    small_store_row(m0 + 6u, n, acc[6]);
    small_store_row(m0 + 7u, n, acc[7]);
}
