// Matrix products: C = op(A) @ op(B) (+ bias row) (+ old C), f32 accumulation, for a
// batch of matrices.
//
// op(A) is (M, K): A is stored (M, K) row-major, or (K, M) when transposed (read in place,
// never copied). op(B) is (K, N): B is stored (K, N), or (N, K) when transposed. So a Linear
// layer's forward X W^T, input gradient dY W and weight gradient dY^T X are one dispatch
// each. C is (M, N), written through the prelude store helpers (16-bit stores round to
// nearest even; overflow becomes inf and raises found_inf).
//
// Batches and strides: workgroup z is a batch index z = outer * batch_inner + inner, and
// each operand's matrix starts at offset + outer * outer_stride + inner * inner_stride
// (elements; two levels because attention heads in a fused (B, T, 3C) activation are not
// one linear stride apart), with stored rows ld elements apart. A plain product has
// batch 1, offsets 0 and dense rows.
//
// Output words: a 16-bit C is stored two elements to a u32 word, and one invocation must
// write a whole word. Word w holds the flat elements 2w and 2w + 1.
// - Plain C (dense matrices, each one filling its tensor or of an even element count at
//   an even element): when N is even every word lies inside
//   a row at an even column. When N is odd, words of odd rows start at odd columns, and
//   the word holding an even row's last element (m, N - 1) also holds the next row's
//   first element (m + 1, 0). Both kernels write exactly the words whose first element
//   falls in their tile; each computes the few second halves that lie outside it (only
//   for odd N: one per tile row) from extra staged columns of op(B).
// - Strided C (FLAG_STRIDED_C: ld > N, odd offsets or strides, odd-sized batches): words
//   never straddle rows. A 16-bit C must then have even N, ld, offsets and strides (the
//   host checks), so every column pair at an even column is one whole word; an f32 C
//   may be anything and writes single elements where a pair is not word-aligned.
// f32 outputs take the same paths (store2 writes the same two elements), so one body
// serves every dtype.

struct Params {
    m: u32,           // rows of op(A) and C
    n: u32,           // columns of op(B) and C
    k: u32,           // inner dimension
    flags: u32,       // FLAG_*
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

const FLAG_BIAS: u32 = 1u;       // add bias[n] to every row
const FLAG_ACCUMULATE: u32 = 2u; // C += product (C is f32)

const FLAG_TRANS_A: u32 = 4u;    // A is stored (K, M) (tiled kernel; coop: TRANS_A)
const FLAG_TRANS_B: u32 = 8u;    // B is stored (N, K) (tiled kernel; coop: TRANS_B)
const FLAG_STRIDED_C: u32 = 16u; // C is a strided view (see "Output words" above)

// First element of this workgroup's matrices (set_batch, from workgroup z).
var<private> a_base: u32;
var<private> b_base: u32;
var<private> c_base: u32;

fn set_batch(z: u32) {
    let outer = z / params.batch_inner;
    let inner = z % params.batch_inner;
    a_base = params.offset_a + outer * params.outer_a + inner * params.inner_a;
    b_base = params.offset_b + outer * params.outer_b + inner * params.inner_b;
    c_base = params.offset_c + outer * params.outer_c + inner * params.inner_c;
}

fn strided_c() -> bool {
    return (params.flags & FLAG_STRIDED_C) != 0u;
}

// Writes the output word holding flat elements e (even) and e + 1. x is element e, in
// column nx; y is element e + 1, in column ny, or padding past the end of C when
// !y_valid (then written as 0 so it cannot raise the overflow flag).
fn store_word(e: u32, x: f32, nx: u32, y: f32, ny: u32, y_valid: bool) {
    var v = vec2<f32>(x, y);
    if ((params.flags & FLAG_BIAS) != 0u) {
        v.x += bias[nx];
        if (y_valid) {
            v.y += bias[ny];
        }
    }
    if ((params.flags & FLAG_ACCUMULATE) != 0u) {
        v += load2_c(e >> 1u);
    }
    if (!y_valid) {
        v.y = 0.0;
    }
    store2_c(e >> 1u, v);
}

// One element e (column nx) of a strided f32 C.
fn store_one(e: u32, x: f32, nx: u32) {
    var v = x;
    if ((params.flags & FLAG_BIAS) != 0u) {
        v += bias[nx];
    }
    if ((params.flags & FLAG_ACCUMULATE) != 0u) {
        v += load_c(e);
    }
    store_c(e, v);
}

// Elements e and e + 1 (columns nx, nx + 1) of a strided C, or only e where `two` is
// false (the row ends at nx). A word-aligned pair is one word store (always so for a
// 16-bit C: the host requires even N, ld and offsets).
fn store_strided(e: u32, x: f32, nx: u32, y: f32, two: bool) {
    if (two && (e & 1u) == 0u) {
        store_word(e, x, nx, y, nx + 1u, true);
        return;
    }
    store_one(e, x, nx);
    if (two) {
        store_one(e + 1u, y, nx + 1u);
    }
}

// Elements (row, col .. col + 3) of a (rows, cols) matrix stored in `a` at a_base with
// rows lda apart, zeros outside it. col is a multiple of 4; one vec4 load where the four
// elements are 4-aligned and inside the row.
fn fetch4_a(row: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row >= rows || col >= cols) {
        return v;
    }
    let base = a_base + row * params.lda + col;
    if ((base & 3u) == 0u && col + 4u <= cols) {
        return load4_a(base >> 2u);
    }
    for (var e = 0u; e < 4u; e += 1u) {
        if (col + e < cols) {
            v[e] = load_a(base + e);
        }
    }
    return v;
}

// fetch4_a for `b`.
fn fetch4_b(row: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row >= rows || col >= cols) {
        return v;
    }
    let base = b_base + row * params.ldb + col;
    if ((base & 3u) == 0u && col + 4u <= cols) {
        return load4_b(base >> 2u);
    }
    for (var e = 0u; e < 4u; e += 1u) {
        if (col + e < cols) {
            v[e] = load_b(base + e);
        }
    }
    return v;
}

//!kernel tiled
// Portable tiled kernel (every adapter, every dtype, both f16 paths).
// a: (batch, M, K) or (batch, K, M) if FLAG_TRANS_A, any dtype (strided views)
// b: (batch, K, N) or (batch, N, K) if FLAG_TRANS_B, any dtype
// c: (batch, M, N) any dtype (f32 when accumulating)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// A workgroup of WG_M x WG_N invocations computes a BM x BN tile of C (BM = 8 WG_M,
// BN = 8 WG_N). Each step stages a BM x BK slice of op(A) and a BK x BNS slice of op(B)
// into workgroup memory, converted to f32 once (vec4 loads where rows are 4-aligned,
// zeros past the edges, so ragged M, N, K need no other care). Each invocation then
// accumulates an 8 x 8 register tile: rows ty + i WG_M (strided, so a subgroup reads
// one broadcast A value) and four column pairs 2 tx + 2 q WG_N (one pair per output
// word). The register tile is written out by hand (vec4 FMAs, constant indices only) so
// compilers keep it in registers; loops over it with a dynamic index can put it in
// local memory, which costs an order of magnitude.
//
// Odd N: odd rows start their words one column later (`shift`, one more staged column),
// and the word holding an even row's last element also holds the next row's column 0:
// the last column tile stages op(B)[:, 0] as an extra column and reduces those
// BM / 2 extra dot products across the workgroup alongside the main loop.
//
// What limits it: f32 FMAs fed from workgroup memory (16 loads per 64 FMAs), no tensor
// cores, no double buffering. Measured on an H200 (Vulkan, 2026-11-28, `halfgrad bench
// matmul --kernel tiled`, docs/PERFORMANCE.md), 4096^3, 128 x 128
// tiles: 17.5 TFLOP/s f16, 19 bf16, 17 f32 operands (64 x 64 tiles: 12.5); odd shapes
// (4095 x 4097 x 4093) 13 to 14. The cooperative-matrix kernel is the fast f16 path.
// The layouts are uniform flags, not pipeline constants: they only steer the staging,
// and four times fewer pipelines keep compile times (software adapters, CI) short.

override WG_M: u32 = 16u; // invocations along M (even: an invocation's rows share a parity)
override WG_N: u32 = 16u; // invocations along N
override BK: u32 = 8u;    // K per staged slice, a multiple of 4
override BM: u32 = WG_M * 8u;
override BN: u32 = WG_N * 8u;
// Staged columns: BN, one more for odd rows' shifted words (group BN / 4), and op(B)'s
// column 0 at BN + 4 (group BN / 4 + 1) for the even rows' straddling words.
override BNS: u32 = BN + 8u;
override WG: u32 = WG_M * WG_N;
// Straddle sums: BM / 2 even rows, each split over WG / (BM / 2) phases of kk.
override STRADDLE_PHASES: u32 = WG / (BM / 2u);

var<workgroup> a_tile: array<f32, BK * BM>;  // op(A) slice, [k][m]
var<workgroup> b_tile: array<f32, BK * BNS>; // op(B) slice, [k][n]
var<workgroup> straddle_part: array<f32, WG>;

// op(B) column held by staged column `local` of the tile starting at n0.
fn staged_b_col(n0: u32, local: u32) -> u32 {
    if (local == BN + 4u) {
        return 0u;
    }
    if (local > BN + 4u) {
        return params.n; // unused: past the edge, staged as zeros
    }
    return n0 + local;
}

// Stages op(A)[m0 .. m0 + BM, k0 .. k0 + BK] into a_tile, reading along A's stored rows.
fn stage_a(m0: u32, k0: u32, li: u32) {
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        let groups_per_row = BK / 4u;
        for (var g = li; g < BM * groups_per_row; g += WG) {
            let r = g / groups_per_row;
            let kq = 4u * (g % groups_per_row);
            let v = fetch4_a(m0 + r, k0 + kq, params.m, params.k);
            a_tile[kq * BM + r] = v.x;
            a_tile[(kq + 1u) * BM + r] = v.y;
            a_tile[(kq + 2u) * BM + r] = v.z;
            a_tile[(kq + 3u) * BM + r] = v.w;
        }
    } else {
        let groups_per_row = BM / 4u;
        for (var g = li; g < BK * groups_per_row; g += WG) {
            let kr = g / groups_per_row;
            let mq = 4u * (g % groups_per_row);
            let v = fetch4_a(k0 + kr, m0 + mq, params.k, params.m);
            let at = kr * BM + mq;
            a_tile[at] = v.x;
            a_tile[at + 1u] = v.y;
            a_tile[at + 2u] = v.z;
            a_tile[at + 3u] = v.w;
        }
    }
}

// Stages op(B)[k0 .. k0 + BK, staged columns] into b_tile.
fn stage_b(n0: u32, k0: u32, li: u32) {
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        let groups_per_row = BNS / 4u;
        for (var g = li; g < BK * groups_per_row; g += WG) {
            let kr = g / groups_per_row;
            let nq = 4u * (g % groups_per_row);
            let v = fetch4_b(k0 + kr, staged_b_col(n0, nq), params.k, params.n);
            let at = kr * BNS + nq;
            b_tile[at] = v.x;
            b_tile[at + 1u] = v.y;
            b_tile[at + 2u] = v.z;
            b_tile[at + 3u] = v.w;
        }
    } else {
        let groups_per_row = BK / 4u;
        for (var g = li; g < BNS * groups_per_row; g += WG) {
            let col = g / groups_per_row;
            let kq = 4u * (g % groups_per_row);
            let v = fetch4_b(staged_b_col(n0, col), k0 + kq, params.n, params.k);
            b_tile[kq * BNS + col] = v.x;
            b_tile[(kq + 1u) * BNS + col] = v.y;
            b_tile[(kq + 2u) * BNS + col] = v.z;
            b_tile[(kq + 3u) * BNS + col] = v.w;
        }
    }
}

// Writes row i of an invocation's register tile: lo holds column pairs 0 and 1, hi
// pairs 2 and 3.
fn emit_row(i: u32, lo: vec4<f32>, hi: vec4<f32>, m0: u32, n0: u32, tx: u32, ty: u32,
            shift: u32) {
    let r = ty + i * WG_M; // tile-local row
    let m = m0 + r;
    if (m >= params.m) {
        return;
    }
    var pairs = array<vec2<f32>, 4>(lo.xy, lo.zw, hi.xy, hi.zw);
    for (var q = 0u; q < 4u; q += 1u) {
        let n = n0 + shift + 2u * tx + 2u * q * WG_N;
        if (n >= params.n) {
            return;
        }
        let v = pairs[q];
        let e = c_base + m * params.ldc + n;
        if (strided_c()) {
            store_strided(e, v.x, n, v.y, n + 1u < params.n);
        } else if (n + 1u < params.n) {
            store_word(e, v.x, n, v.y, n + 1u, true);
        } else if (m + 1u < params.m) {
            // Even row, odd N: the word's second half is the next row's column 0.
            var y = 0.0;
            for (var h = 0u; h < STRADDLE_PHASES; h += 1u) {
                y += straddle_part[h * (BM / 2u) + r / 2u];
            }
            store_word(e, v.x, n, y, 0u, true);
        } else {
            store_word(e, v.x, n, 0.0, 0u, false);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    set_batch(wg_id.z);
    let tx = li % WG_N;
    let ty = li / WG_N;
    let m0 = wg_id.y * BM;
    let n0 = wg_id.x * BN;
    // Words of a plain C straddle rows when N is odd (a strided C's never do).
    let odd_words = (params.n & 1u) == 1u && !strided_c();
    // With odd N, odd rows' words start at odd columns: shift this invocation's columns.
    let shift = select(0u, 1u, odd_words && (ty & 1u) == 1u);
    // The last column tile of an odd N computes the even rows' straddling halves.
    let straddles = odd_words && n0 + BN >= params.n;
    let s_row = 2u * (li % (BM / 2u)) + 1u; // tile-local row of op(A) this invocation reads
    let s_phase = li / (BM / 2u);
    var s_sum = 0.0;

    var acc: array<vec4<f32>, 16>; // row i: acc[2i] = pairs 0, 1; acc[2i + 1] = pairs 2, 3
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        stage_a(m0, k0, li);
        stage_b(n0, k0, li);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 1u) {
            let ab = kk * BM + ty;
            let a0 = vec4<f32>(a_tile[ab], a_tile[ab + WG_M], a_tile[ab + 2u * WG_M],
                               a_tile[ab + 3u * WG_M]);
            let a1 = vec4<f32>(a_tile[ab + 4u * WG_M], a_tile[ab + 5u * WG_M],
                               a_tile[ab + 6u * WG_M], a_tile[ab + 7u * WG_M]);
            let bb = kk * BNS + shift + 2u * tx;
            let b0 = vec4<f32>(b_tile[bb], b_tile[bb + 1u], b_tile[bb + 2u * WG_N],
                               b_tile[bb + 2u * WG_N + 1u]);
            let b1 = vec4<f32>(b_tile[bb + 4u * WG_N], b_tile[bb + 4u * WG_N + 1u],
                               b_tile[bb + 6u * WG_N], b_tile[bb + 6u * WG_N + 1u]);
            acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
            acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
            acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
            acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
            acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
            acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
            acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
            acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
            acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
            acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
            acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
            acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
            acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
            acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
            acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
            acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
        }
        if (straddles) {
            // (m + 1, 0) for the even row m = m0 + s_row - 1: op(A) row s_row times the
            // staged column 0, this invocation's share of kk.
            for (var kk = s_phase; kk < BK; kk += STRADDLE_PHASES) {
                s_sum = fma(a_tile[kk * BM + s_row], b_tile[kk * BNS + BN + 4u], s_sum);
            }
        }
        workgroupBarrier();
    }
    straddle_part[li] = s_sum;
    workgroupBarrier();

    emit_row(0u, acc[0], acc[1], m0, n0, tx, ty, shift);
    emit_row(1u, acc[2], acc[3], m0, n0, tx, ty, shift);
    emit_row(2u, acc[4], acc[5], m0, n0, tx, ty, shift);
    emit_row(3u, acc[6], acc[7], m0, n0, tx, ty, shift);
    emit_row(4u, acc[8], acc[9], m0, n0, tx, ty, shift);
    emit_row(5u, acc[10], acc[11], m0, n0, tx, ty, shift);
    emit_row(6u, acc[12], acc[13], m0, n0, tx, ty, shift);
    emit_row(7u, acc[14], acc[15], m0, n0, tx, ty, shift);
}

//!kernel tiled_fast
// Portable tiled kernel for outputs whose words never straddle rows (N even, or C f32):
// every adapter, every operand dtype, both f16 paths, batches and strided A/B views.
// a: (batch, M, K) or (batch, K, M) if FLAG_TRANS_A, any dtype (strided views)
// b: (batch, K, N) or (batch, N, K) if FLAG_TRANS_B, any dtype
// c: (batch, M, N) any dtype (f32 when accumulating); a 16-bit C needs even N (host)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// Classic SGEMM: 256 invocations (16 x 16) compute a 128 x 128 tile of C, each an 8 x 8
// register tile of contiguous rows (8 ty ..) and two contiguous column quads (4 tx ..
// and 64 + 4 tx ..). The staged slices are vec4 arrays, op(A) stored [k][m] so a column
// of it is contiguous: per step of k an invocation reads 2 vec4 of op(A) and 2 of op(B)
// for 64 FMAs (the tiled kernel's strided layout needs 16 scalar reads).
// K slices of FBK are double-buffered: each invocation fetches its share of the next
// slice (one vec4 of op(A), one of op(B) for FBK = 8) into registers before the FMAs
// and writes it to the other buffer after them, so one barrier a slice suffices (the
// buffer written in step i was last read in step i - 1, before that step's barrier).
// Zeros are staged past the edges (ragged M, N, K); stores are bounds-checked. Column
// pairs start at even columns, so with even N (or an f32 C) every pair is one output
// word or two f32 elements: no odd-N machinery. As in the tiled kernel, the register
// tile is written out by hand with constant indices so it stays in registers.

override FBK: u32 = 8u;       // K per staged slice, a multiple of 4 (8 or 16)
const FBM: u32 = 128u;        // rows of C per workgroup
const FBN: u32 = 128u;        // columns of C per workgroup
const FWG: u32 = 256u;        // invocations (16 x 16)
// One buffer of each slice, in vec4: FBK rows of FBM / 4 (op(A), [k][m]) or FBN / 4
// (op(B), [k][n]) quads.
override A_QUADS: u32 = FBK * (FBM / 4u);
override B_QUADS: u32 = FBK * (FBN / 4u);

var<workgroup> fa_tile: array<vec4<f32>, 2u * A_QUADS>; // [buffer][k][m / 4]
var<workgroup> fb_tile: array<vec4<f32>, 2u * B_QUADS>; // [buffer][k][n / 4]

// The g-th quad this workgroup stages of op(A)'s slice at (m0, k0): 4 elements along A's
// stored rows (along k, or along m if FLAG_TRANS_A).
fn fast_fetch_a(m0: u32, k0: u32, g: u32) -> vec4<f32> {
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        let per_row = FBK / 4u;
        return fetch4_a(m0 + g / per_row, k0 + 4u * (g % per_row), params.m, params.k);
    }
    let per_row = FBM / 4u;
    return fetch4_a(k0 + g / per_row, m0 + 4u * (g % per_row), params.k, params.m);
}

// Writes quad g of fast_fetch_a into buffer `buf` of fa_tile ([k][m]).
fn fast_put_a(buf: u32, g: u32, v: vec4<f32>) {
    let base = buf * A_QUADS;
    if ((params.flags & FLAG_TRANS_A) == 0u) {
        // Four k of one row m: one component of four quads.
        let per_row = FBK / 4u;
        let r = g / per_row;
        let kq = 4u * (g % per_row);
        let at = base + kq * (FBM / 4u) + r / 4u;
        let lane = r % 4u;
        fa_tile[at][lane] = v.x;
        fa_tile[at + FBM / 4u][lane] = v.y;
        fa_tile[at + 2u * (FBM / 4u)][lane] = v.z;
        fa_tile[at + 3u * (FBM / 4u)][lane] = v.w;
    } else {
        fa_tile[base + g] = v; // four m of one k: already a quad of the [k][m] layout
    }
}

// The g-th quad of op(B)'s slice at (k0, n0): along B's stored rows (along n, or along k
// if FLAG_TRANS_B).
fn fast_fetch_b(n0: u32, k0: u32, g: u32) -> vec4<f32> {
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        let per_row = FBN / 4u;
        return fetch4_b(k0 + g / per_row, n0 + 4u * (g % per_row), params.k, params.n);
    }
    let per_row = FBK / 4u;
    return fetch4_b(n0 + g / per_row, k0 + 4u * (g % per_row), params.n, params.k);
}

// Writes quad g of fast_fetch_b into buffer `buf` of fb_tile ([k][n]).
fn fast_put_b(buf: u32, g: u32, v: vec4<f32>) {
    let base = buf * B_QUADS;
    if ((params.flags & FLAG_TRANS_B) == 0u) {
        fb_tile[base + g] = v;
    } else {
        let per_row = FBK / 4u;
        let col = g / per_row;
        let kq = 4u * (g % per_row);
        let at = base + kq * (FBN / 4u) + col / 4u;
        let lane = col % 4u;
        fb_tile[at][lane] = v.x;
        fb_tile[at + FBN / 4u][lane] = v.y;
        fb_tile[at + 2u * (FBN / 4u)][lane] = v.z;
        fb_tile[at + 3u * (FBN / 4u)][lane] = v.w;
    }
}

// Stages a whole slice (the first one) into buffer `buf`.
fn fast_stage(buf: u32, m0: u32, n0: u32, k0: u32, li: u32) {
    for (var g = li; g < A_QUADS; g += FWG) {
        fast_put_a(buf, g, fast_fetch_a(m0, k0, g));
    }
    for (var g = li; g < B_QUADS; g += FWG) {
        fast_put_b(buf, g, fast_fetch_b(n0, k0, g));
    }
}

// Columns n, n + 1 of row `row` (the element index of its column 0): one output word
// where the pair is word-aligned (always for a 16-bit C: the host requires even N, ld,
// offsets and strides), else single f32 elements.
fn fast_store_pair(row: u32, n: u32, x: f32, y: f32) {
    if (n < params.n) {
        store_strided(row + n, x, n, y, n + 1u < params.n);
    }
}

// Writes row i of an invocation's register tile: lo holds columns 4 tx .. 4 tx + 3 of
// the tile, hi the columns FBN / 2 further.
fn fast_emit_row(i: u32, lo: vec4<f32>, hi: vec4<f32>, m0: u32, n0: u32, tx: u32, ty: u32) {
    let m = m0 + 8u * ty + i;
    if (m >= params.m) {
        return;
    }
    let row = c_base + m * params.ldc;
    let n_lo = n0 + 4u * tx;
    let n_hi = n_lo + FBN / 2u;
    fast_store_pair(row, n_lo, lo.x, lo.y);
    fast_store_pair(row, n_lo + 2u, lo.z, lo.w);
    fast_store_pair(row, n_hi, hi.x, hi.y);
    fast_store_pair(row, n_hi + 2u, hi.z, hi.w);
}

@compute @workgroup_size(FWG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    set_batch(wg_id.z);
    let tx = li % 16u;
    let ty = li / 16u;
    let m0 = wg_id.y * FBM;
    let n0 = wg_id.x * FBN;

    fast_stage(0u, m0, n0, 0u, li);
    workgroupBarrier();

    // Row i: acc[2i] = columns 4 tx .. + 3, acc[2i + 1] = columns FBN / 2 + 4 tx .. + 3.
    var acc: array<vec4<f32>, 16>;
    var buf = 0u;
    for (var k0 = 0u; k0 < params.k; k0 += FBK) {
        let k_next = k0 + FBK;
        let more = k_next < params.k;
        // The next slice's share of this invocation (FBK = 8: exactly one quad of each;
        // larger slices stage the rest after the FMAs, see below).
        var next_a = vec4<f32>(0.0);
        var next_b = vec4<f32>(0.0);
        if (more && li < A_QUADS) {
            next_a = fast_fetch_a(m0, k_next, li);
        }
        if (more && li < B_QUADS) {
            next_b = fast_fetch_b(n0, k_next, li);
        }

        let a_at = buf * A_QUADS + 2u * ty;
        let b_at = buf * B_QUADS + tx;
        for (var kk = 0u; kk < FBK; kk += 1u) {
            let a0 = fa_tile[a_at + kk * (FBM / 4u)];
            let a1 = fa_tile[a_at + kk * (FBM / 4u) + 1u];
            let b0 = fb_tile[b_at + kk * (FBN / 4u)];
            let b1 = fb_tile[b_at + kk * (FBN / 4u) + FBN / 8u];
            acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
            acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
            acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
            acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
            acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
            acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
            acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
            acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
            acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
            acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
            acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
            acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
            acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
            acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
            acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
            acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
        }

        if (more) {
            let nxt = 1u - buf;
            if (li < A_QUADS) {
                fast_put_a(nxt, li, next_a);
            }
            if (li < B_QUADS) {
                fast_put_b(nxt, li, next_b);
            }
            // Slices of more than FWG quads: the rest straight from global memory.
            for (var g = li + FWG; g < A_QUADS; g += FWG) {
                fast_put_a(nxt, g, fast_fetch_a(m0, k_next, g));
            }
            for (var g = li + FWG; g < B_QUADS; g += FWG) {
                fast_put_b(nxt, g, fast_fetch_b(n0, k_next, g));
            }
        }
        workgroupBarrier();
        buf = 1u - buf;
    }

    fast_emit_row(0u, acc[0], acc[1], m0, n0, tx, ty);
    fast_emit_row(1u, acc[2], acc[3], m0, n0, tx, ty);
    fast_emit_row(2u, acc[4], acc[5], m0, n0, tx, ty);
    fast_emit_row(3u, acc[6], acc[7], m0, n0, tx, ty);
    fast_emit_row(4u, acc[8], acc[9], m0, n0, tx, ty);
    fast_emit_row(5u, acc[10], acc[11], m0, n0, tx, ty);
    fast_emit_row(6u, acc[12], acc[13], m0, n0, tx, ty);
    fast_emit_row(7u, acc[14], acc[15], m0, n0, tx, ty);
}

//!kernel coop
// Cooperative-matrix kernel (native adapters with 16x16x16 f16 x f16 -> f32 matrices).
// a: (batch, M, K) or (batch, K, M) if TRANS_A, f16 (strided views)
// b: (batch, K, N) or (batch, N, K) if TRANS_B, f16
// c: (batch, M, N) any dtype (f32 when accumulating)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// A workgroup of SG_M x SG_N subgroups (SG invocations each: the adapter's largest
// subgroup size) computes a CBM x CBN tile of C; each subgroup owns a 32 x 32 block held
// as 2 x 2 f32 accumulator fragments.
// - Direct path: a tile that lies inside C, for words that do not straddle rows and
//   operand rows and bases that are a multiple of 8 elements (16-byte aligned fragments), loads its 16 x 16 fragments
//   straight from A and B (coopLoadT for row-major operands, coopLoad for transposed
//   ones), 16 of K at a time.
// - Staged path: edge tiles, odd N, and K's remainder copy a CBM x CBK slice of op(A) and
//   a CBK x CBNS slice of op(B) into workgroup memory as f16, in the operands' own
//   layouts with zeros past the edges, and load fragments from there.
// At the end each fragment goes through workgroup memory (f32) so the epilogue (bias,
// accumulate, 16-bit rounding, output words) is shared with the tiled kernel.
//
// Odd N (staged path only): the slice of op(B) carries two extra columns, n0 + CBN (the
// second half of odd rows' last word) and column 0 (the second half of the word that
// holds an even row's last element), and the workgroup reduces those 2 x CBM / 2 extra
// dot products from the staged slices alongside the fragments.
//
// If the driver runs smaller subgroups than SG, the extra subgroups repeat a block's
// work (subgroup_id modulo the block count) and store identical values: correct, slower.
//
// What limits it: the direct path shares nothing between subgroups through workgroup
// memory (each loads its own fragments, caches do the rest) and does one fragment load
// per multiply-add; the staged path copies scalar f16 values (WGSL has no vector or
// asynchronous copies of f16 into workgroup memory) and waits at two barriers a slice.
// Neither double-buffers. Tile sizes are pipeline constants to tune per GPU.
// Measured on an H200 (Vulkan, 2026-11-28, `halfgrad bench matmul --kernel coop
// --coop-tile off`, docs/PERFORMANCE.md), f16, 4096^3 and 8192^3: direct path 34
// TFLOP/s with 1 x 2 subgroups, 24 to 26 with other grids (cuBLAS: about 770); staged
// path about 3 TFLOP/s, which is why `Auto` keeps the tiled kernel for odd N or rows that
// are not a multiple of 8 elements.
//
// naga 30's SPIR-V writer needs every coopLoad/coopStore index and stride bound to a
// `let` (an inline expression such as `&c_tile[r * n + c]` or `params.n` panics: "not
// cached").

// Layouts are pipeline constants here: they pick coopLoad or coopLoadT.
override TRANS_A: u32 = 0u; // 1: A is stored (K, M)
override TRANS_B: u32 = 0u; // 1: B is stored (N, K)
override SG: u32 = 32u;   // largest subgroup size of the adapter
override SG_M: u32 = 2u;  // subgroups along M
override SG_N: u32 = 2u;  // subgroups along N
override CBK: u32 = 32u;  // K per staged slice, a multiple of 16
override CBM: u32 = SG_M * 32u;
override CBN: u32 = SG_N * 32u;
override CWG: u32 = SG * SG_M * SG_N;
// Staged op(B) columns: the tile's CBN, then n0 + CBN and column 0 (odd N), padded to 8.
override CBNS: u32 = CBN + 8u;
// Row strides of the staged slices, in f16: 8 more than the row (16 bytes) to spread
// rows over memory banks while keeping every row 16-byte aligned.
override A_LD: u32 = (1u - TRANS_A) * (CBK + 8u) + TRANS_A * (CBM + 8u);
override B_LD: u32 = (1u - TRANS_B) * (CBNS + 8u) + TRANS_B * (CBK + 8u);
override A_ROWS: u32 = (1u - TRANS_A) * CBM + TRANS_A * CBK;
override B_ROWS: u32 = (1u - TRANS_B) * CBK + TRANS_B * CBNS;

var<workgroup> a_slice: array<f16, A_ROWS * A_LD>; // A's layout: [m][k], or [k][m] if TRANS_A
var<workgroup> b_slice: array<f16, B_ROWS * B_LD>; // B's layout: [k][n], or [n][k] if TRANS_B
var<workgroup> c_tile: array<f32, CBM * CBN>;      // accumulators, [m][n]
var<workgroup> extra_part: array<f32, 2u * CBM>;   // odd N: [half of K][tile row]

// op(B) column held by staged column `local` of the tile starting at n0 (params.n: none).
fn coop_b_col(n0: u32, local: u32) -> u32 {
    if (local <= CBN) {
        return n0 + local;
    }
    if (local == CBN + 1u) {
        return 0u;
    }
    return params.n;
}

// Copies op(A)[m0 .. m0 + CBM, k0 .. k0 + CBK] into a_slice in A's stored layout.
fn copy_a(m0: u32, k0: u32, li: u32) {
    let width = A_LD - 8u;
    for (var i = li; i < A_ROWS * width; i += CWG) {
        let r = i / width;
        let j = i % width;
        var v = f16(0.0);
        if (TRANS_A != 0u) {
            if (k0 + r < params.k && m0 + j < params.m) {
                v = a[a_base + (k0 + r) * params.lda + m0 + j];
            }
        } else if (m0 + r < params.m && k0 + j < params.k) {
            v = a[a_base + (m0 + r) * params.lda + k0 + j];
        }
        a_slice[r * A_LD + j] = v;
    }
}

// Copies op(B)[k0 .. k0 + CBK, staged columns] into b_slice in B's stored layout.
fn copy_b(n0: u32, k0: u32, li: u32) {
    let width = B_LD - 8u;
    for (var i = li; i < B_ROWS * width; i += CWG) {
        let r = i / width;
        let j = i % width;
        var v = f16(0.0);
        if (TRANS_B != 0u) {
            let col = coop_b_col(n0, r);
            if (col < params.n && k0 + j < params.k) {
                v = b[b_base + col * params.ldb + k0 + j];
            }
        } else {
            let col = coop_b_col(n0, j);
            if (k0 + r < params.k && col < params.n) {
                v = b[b_base + (k0 + r) * params.ldb + col];
            }
        }
        b_slice[r * B_LD + j] = v;
    }
}

// op(A)[r, k] and op(B)[k, c] of the staged slices (tile-local indices).
fn slice_a(r: u32, k: u32) -> f32 {
    if (TRANS_A != 0u) {
        return f32(a_slice[k * A_LD + r]);
    }
    return f32(a_slice[r * A_LD + k]);
}

fn slice_b(k: u32, c: u32) -> f32 {
    if (TRANS_B != 0u) {
        return f32(b_slice[c * B_LD + k]);
    }
    return f32(b_slice[k * B_LD + c]);
}

// Fragment (rows m .. m + 16, columns k .. k + 16) of op(A) from a_slice (tile-local).
fn slice_frag_a(m: u32, k: u32) -> coop_mat16x16<f16, A> {
    let ld = A_LD;
    if (TRANS_A != 0u) {
        let at = k * A_LD + m;
        return coopLoad<coop_mat16x16<f16, A>>(&a_slice[at], ld);
    }
    let at = m * A_LD + k;
    return coopLoadT<coop_mat16x16<f16, A>>(&a_slice[at], ld);
}

// Fragment (rows k .. k + 16, columns n .. n + 16) of op(B) from b_slice (tile-local).
fn slice_frag_b(k: u32, n: u32) -> coop_mat16x16<f16, B> {
    let ld = B_LD;
    if (TRANS_B != 0u) {
        let at = n * B_LD + k;
        return coopLoad<coop_mat16x16<f16, B>>(&b_slice[at], ld);
    }
    let at = k * B_LD + n;
    return coopLoadT<coop_mat16x16<f16, B>>(&b_slice[at], ld);
}

// Fragment of op(A) at global (m, k), straight from A (direct path).
fn global_frag_a(m: u32, k: u32) -> coop_mat16x16<f16, A> {
    let ld = params.lda;
    if (TRANS_A != 0u) {
        let at = a_base + k * ld + m;
        return coopLoad<coop_mat16x16<f16, A>>(&a[at], ld);
    }
    let at = a_base + m * ld + k;
    return coopLoadT<coop_mat16x16<f16, A>>(&a[at], ld);
}

// Fragment of op(B) at global (k, n), straight from B (direct path).
fn global_frag_b(k: u32, n: u32) -> coop_mat16x16<f16, B> {
    let ld = params.ldb;
    if (TRANS_B != 0u) {
        let at = b_base + n * ld + k;
        return coopLoad<coop_mat16x16<f16, B>>(&b[at], ld);
    }
    let at = b_base + k * ld + n;
    return coopLoadT<coop_mat16x16<f16, B>>(&b[at], ld);
}

@compute @workgroup_size(CWG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg_id: u32) {
    set_batch(wg_id.z);
    let m0 = wg_id.y * CBM;
    let n0 = wg_id.x * CBN;
    let block = sg_id % (SG_M * SG_N);
    let bm = (block / SG_N) * 32u; // this subgroup's block, tile-local
    let bn = (block % SG_N) * 32u;
    // Words of a plain C straddle rows when N is odd (a strided C's never do).
    let odd_n = ((params.n & 1u) == 1u) & !strided_c();
    // Everything below branches on workgroup-uniform values only (cooperative operations
    // and barriers need uniform control flow). `&`, not `&&`: naga lowers a short-circuit
    // to branches its uniformity analysis no longer sees through.
    // a_base and b_base again, as `let`s: naga counts private variables as non-uniform.
    let outer = wg_id.z / params.batch_inner;
    let inner = wg_id.z % params.batch_inner;
    let a_at = params.offset_a + outer * params.outer_a + inner * params.inner_a;
    let b_at = params.offset_b + outer * params.outer_b + inner * params.inner_b;
    let direct = !odd_n & (m0 + CBM <= params.m) & (n0 + CBN <= params.n)
        & (((a_at | params.lda) & 7u) == 0u) & (((b_at | params.ldb) & 7u) == 0u);

    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    var k0 = 0u;
    if (direct) {
        let k_end = params.k & ~15u;
        while (k0 < k_end) {
            let a0 = global_frag_a(m0 + bm, k0);
            let a1 = global_frag_a(m0 + bm + 16u, k0);
            let b0 = global_frag_b(k0, n0 + bn);
            let b1 = global_frag_b(k0, n0 + bn + 16u);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
            k0 += 16u;
        }
    }
    for (var e = li; e < 2u * CBM; e += CWG) {
        extra_part[e] = 0.0;
    }
    while (k0 < params.k) {
        copy_a(m0, k0, li);
        copy_b(n0, k0, li);
        workgroupBarrier();
        for (var kk = 0u; kk < CBK; kk += 16u) {
            let a0 = slice_frag_a(bm, kk);
            let a1 = slice_frag_a(bm + 16u, kk);
            let b0 = slice_frag_b(kk, bn);
            let b1 = slice_frag_b(kk, bn + 16u);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        if (odd_n) {
            // Element e = h * CBM + r sums half h of the slice's K for tile row r: an odd
            // row times column n0 + CBN, an even row's successor times column 0.
            for (var e = li; e < 2u * CBM; e += CWG) {
                let r = e % CBM;
                let h = e / CBM;
                let odd_row = ((m0 + r) & 1u) == 1u;
                let ar = select(r + 1u, r, odd_row);
                let bc = select(CBN + 1u, CBN, odd_row);
                var sum = extra_part[e];
                for (var kk = h * (CBK / 2u); kk < (h + 1u) * (CBK / 2u); kk += 1u) {
                    sum = fma(slice_a(ar, kk), slice_b(kk, bc), sum);
                }
                extra_part[e] = sum;
            }
        }
        workgroupBarrier();
        k0 += CBK;
    }

    let ld = CBN;
    let at00 = bm * CBN + bn;
    let at01 = at00 + 16u;
    let at10 = at00 + 16u * CBN;
    let at11 = at10 + 16u;
    coopStoreT(acc00, &c_tile[at00], ld);
    coopStoreT(acc01, &c_tile[at01], ld);
    coopStoreT(acc10, &c_tile[at10], ld);
    coopStoreT(acc11, &c_tile[at11], ld);
    workgroupBarrier();

    // Epilogue: every output word whose first element lies in this tile.
    let half_n = CBN / 2u;
    for (var w = li; w < CBM * half_n; w += CWG) {
        let r = w / half_n;
        let m = m0 + r;
        let shift = select(0u, 1u, odd_n && (m & 1u) == 1u);
        let cl = 2u * (w % half_n) + shift; // tile-local column of the first element
        let n = n0 + cl;
        if (m >= params.m || n >= params.n) {
            continue;
        }
        let x = c_tile[r * CBN + cl];
        let e = c_base + m * params.ldc + n;
        let extra = extra_part[r] + extra_part[CBM + r];
        if (strided_c()) {
            // No shift: cl is even and cl + 1 < CBN.
            store_strided(e, x, n, c_tile[r * CBN + cl + 1u], n + 1u < params.n);
        } else if (n + 1u < params.n) {
            var y = extra; // an odd row's last word in the tile reaches column n0 + CBN
            if (cl + 1u < CBN) {
                y = c_tile[r * CBN + cl + 1u];
            }
            store_word(e, x, n, y, n + 1u, true);
        } else if (m + 1u < params.m) {
            store_word(e, x, n, extra, 0u, true); // even row: (m + 1, 0)
        } else {
            store_word(e, x, n, 0.0, 0u, false);
        }
    }
}
