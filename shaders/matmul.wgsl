// Matrix products: C = op(A) @ op(B) (+ bias row) (+ old C), f32 accumulation.
//
// op(A) is (M, K): A is stored (M, K) row-major, or (K, M) when TRANS_A (read in place,
// never copied). op(B) is (K, N): B is stored (K, N), or (N, K) when TRANS_B. So a Linear
// layer's forward X W^T, input gradient dY W and weight gradient dY^T X are one dispatch
// each. C is (M, N), written through the prelude store helpers (16-bit stores round to
// nearest even; overflow becomes inf and raises found_inf).
//
// Output words: a 16-bit C is stored two elements to a u32 word, and one invocation must
// write a whole word. Word w holds the flat elements 2w and 2w + 1. When N is even every
// word lies inside a row at an even column. When N is odd, words of odd rows start at odd
// columns, and the word holding an even row's last element (m, N - 1) also holds the next
// row's first element (m + 1, 0). Both kernels write exactly the words whose first
// element falls in their tile; the rare second half that lies outside the tile (only for
// odd N) is computed by `dot_direct` straight from global memory. f32 outputs take the
// same path (store2 writes the same two elements), so one body serves every dtype.

struct Params {
    m: u32,     // rows of op(A) and C
    n: u32,     // columns of op(B) and C
    k: u32,     // inner dimension
    flags: u32, // FLAG_BIAS | FLAG_ACCUMULATE
}

const FLAG_BIAS: u32 = 1u;       // add bias[n] to every row
const FLAG_ACCUMULATE: u32 = 2u; // C += product (C is f32)

// Layouts are pipeline constants, so the compiler drops the untaken branches.
override TRANS_A: u32 = 0u; // 1: A is stored (K, M)
override TRANS_B: u32 = 0u; // 1: B is stored (N, K)

// Flat index of op(A)[m, k] in A's storage.
fn a_index(m: u32, k: u32) -> u32 {
    if (TRANS_A != 0u) {
        return k * params.m + m;
    }
    return m * params.k + k;
}

// Flat index of op(B)[k, n] in B's storage.
fn b_index(k: u32, n: u32) -> u32 {
    if (TRANS_B != 0u) {
        return n * params.k + k;
    }
    return k * params.n + n;
}

// One element of the product straight from global memory (K loads of each operand).
// Only for the second half of an output word that lies outside the invocation's tile,
// which happens only when N is odd: at most one element per row of a tile.
fn dot_direct(m: u32, n: u32) -> f32 {
    var s = 0.0;
    for (var k = 0u; k < params.k; k += 1u) {
        s = fma(load_a(a_index(m, k)), load_b(b_index(k, n)), s);
    }
    return s;
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

// Elements (row, col .. col + 3) of a (rows, cols) row-major matrix stored in `a`, with
// zeros outside it. col is a multiple of 4; one vec4 load when the row is 4-aligned.
fn fetch4_a(row: u32, col: u32, rows: u32, cols: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row >= rows || col >= cols) {
        return v;
    }
    let base = row * cols + col;
    if ((cols & 3u) == 0u) {
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
    let base = row * cols + col;
    if ((cols & 3u) == 0u) {
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
// a: (M, K) or (K, M) if TRANS_A, any dtype
// b: (K, N) or (N, K) if TRANS_B, any dtype
// c: (M, N) any dtype (f32 when accumulating)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// A workgroup of WG_M x WG_N invocations computes a BM x BN tile of C (BM = WG_M * TM,
// BN = WG_N * TN). Each step stages a BM x BK slice of op(A) and a BK x BN slice of op(B)
// into workgroup memory, converted to f32 once (vec4 loads where the rows are 4-aligned,
// zeros past the edges, so ragged M, N, K need no other care). Each invocation then
// accumulates a TM x TN register tile: rows ty + i * WG_M (strided: neighbours read one
// broadcast value of the A slice) and column pairs 2 * (tx + j * WG_N) (one pair per
// output word).
//
// What limits it: f32 FMAs from workgroup memory, one A and one B value loaded per
// TM / TN FMAs; no tensor cores, no double buffering. On a big GPU it reaches a few
// percent of the f16 peak; the cooperative-matrix kernel is the fast f16 path.

override WG_M: u32 = 16u; // invocations along M (even: all rows of an invocation share a parity)
override WG_N: u32 = 16u; // invocations along N
override TM: u32 = 4u;    // rows per invocation, 1 ..= 8
override TN: u32 = 4u;    // columns per invocation, even, 2 ..= 8
override BK: u32 = 16u;   // K per staged slice, a multiple of 4
override BM: u32 = WG_M * TM;
override BN: u32 = WG_N * TN;
// Staged columns of op(B): one more than BN because odd rows (odd N) start their words
// one column later, rounded up to whole groups of 4.
override BNS: u32 = BN + 4u;
override WG: u32 = WG_M * WG_N;

var<workgroup> a_tile: array<f32, BK * BM>;  // op(A) slice, [k][m]
var<workgroup> b_tile: array<f32, BK * BNS>; // op(B) slice, [k][n]

// Stages op(A)[m0 .. m0 + BM, k0 .. k0 + BK] into a_tile, reading along A's stored rows.
fn stage_a(m0: u32, k0: u32, li: u32) {
    if (TRANS_A == 0u) {
        let groups_per_row = BK / 4u;
        for (var g = li; g < BM * groups_per_row; g += WG) {
            let r = g / groups_per_row;
            let kq = 4u * (g % groups_per_row);
            let v = fetch4_a(m0 + r, k0 + kq, params.m, params.k);
            for (var e = 0u; e < 4u; e += 1u) {
                a_tile[(kq + e) * BM + r] = v[e];
            }
        }
    } else {
        let groups_per_row = BM / 4u;
        for (var g = li; g < BK * groups_per_row; g += WG) {
            let kr = g / groups_per_row;
            let mq = 4u * (g % groups_per_row);
            let v = fetch4_a(k0 + kr, m0 + mq, params.k, params.m);
            for (var e = 0u; e < 4u; e += 1u) {
                a_tile[kr * BM + mq + e] = v[e];
            }
        }
    }
}

// Stages op(B)[k0 .. k0 + BK, n0 .. n0 + BNS] into b_tile.
fn stage_b(n0: u32, k0: u32, li: u32) {
    if (TRANS_B == 0u) {
        let groups_per_row = BNS / 4u;
        for (var g = li; g < BK * groups_per_row; g += WG) {
            let kr = g / groups_per_row;
            let nq = 4u * (g % groups_per_row);
            let v = fetch4_b(k0 + kr, n0 + nq, params.k, params.n);
            for (var e = 0u; e < 4u; e += 1u) {
                b_tile[kr * BNS + nq + e] = v[e];
            }
        }
    } else {
        let groups_per_row = BK / 4u;
        for (var g = li; g < BNS * groups_per_row; g += WG) {
            let col = g / groups_per_row;
            let kq = 4u * (g % groups_per_row);
            let v = fetch4_b(n0 + col, k0 + kq, params.n, params.k);
            for (var e = 0u; e < 4u; e += 1u) {
                b_tile[(kq + e) * BNS + col] = v[e];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let tx = li % WG_N;
    let ty = li / WG_N;
    let m0 = wg_id.y * BM;
    let n0 = wg_id.x * BN;
    // With odd N, odd rows' words start at odd columns: shift this invocation's columns.
    let shift = select(0u, 1u, (params.n & 1u) == 1u && (ty & 1u) == 1u);

    var acc: array<f32, 64>; // [i * 8 + j], TM x TN used
    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        stage_a(m0, k0, li);
        stage_b(n0, k0, li);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 1u) {
            for (var i = 0u; i < TM; i += 1u) {
                ra[i] = a_tile[kk * BM + ty + i * WG_M];
            }
            for (var j = 0u; j < TN; j += 2u) {
                let col = kk * BNS + shift + 2u * tx + j * WG_N;
                rb[j] = b_tile[col];
                rb[j + 1u] = b_tile[col + 1u];
            }
            for (var i = 0u; i < TM; i += 1u) {
                for (var j = 0u; j < TN; j += 1u) {
                    acc[i * 8u + j] = fma(ra[i], rb[j], acc[i * 8u + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i += 1u) {
        let m = m0 + ty + i * WG_M;
        if (m >= params.m) {
            break;
        }
        for (var j = 0u; j < TN; j += 2u) {
            let n = n0 + shift + 2u * tx + j * WG_N;
            if (n >= params.n) {
                break;
            }
            let e = m * params.n + n;
            let x = acc[i * 8u + j];
            if (n + 1u < params.n) {
                store_word(e, x, n, acc[i * 8u + j + 1u], n + 1u, true);
            } else if (m + 1u < params.m) {
                // Even row, odd N: the word's second half is the next row's column 0.
                store_word(e, x, n, dot_direct(m + 1u, 0u), 0u, true);
            } else {
                store_word(e, x, n, 0.0, 0u, false);
            }
        }
    }
}

//!kernel coop
// Cooperative-matrix kernel (native adapters with 16x16x16 f16 x f16 -> f32 matrices).
// a: (M, K) or (K, M) if TRANS_A, f16
// b: (K, N) or (N, K) if TRANS_B, f16
// c: (M, N) any dtype (f32 when accumulating)
// bias: (N) f32 (a dummy unless FLAG_BIAS)
// found_inf: (1) flag raised by an overflowing 16-bit store
//
// A workgroup of SG_M x SG_N subgroups (SG invocations each: the adapter's largest
// subgroup size) computes a CBM x CBN tile of C; each subgroup owns a 32 x 32 block held
// as 2 x 2 f32 accumulator fragments. Each step copies a CBM x CBK slice of op(A) and a
// CBK x CBN slice of op(B) into workgroup memory as f16, in A's and B's own layouts
// (zeros past the edges, so any M, N, K works), and the subgroups multiply 16 x 16
// fragments loaded from there (coopLoadT for row-major slices, coopLoad for transposed
// ones). At the end each fragment goes through workgroup memory (f32) so the epilogue
// (bias, accumulate, 16-bit rounding, output words) is shared with the tiled kernel.
//
// If the driver runs smaller subgroups than SG, the extra subgroups repeat a block's
// work (subgroup_id modulo the block count) and store identical values: correct, slower.
//
// What limits it: scalar f16 copies into workgroup memory (no vector or asynchronous
// copies in WGSL), no double buffering, and one fragment load per multiply-add; the
// tiles are pipeline constants to tune per GPU.
//
// naga 30's SPIR-V writer needs every coopLoad/coopStore index and stride bound to a
// `let` (an inline expression such as `&c_tile[r * n + c]` panics: "not cached").

override SG: u32 = 32u;   // largest subgroup size of the adapter
override SG_M: u32 = 2u;  // subgroups along M
override SG_N: u32 = 2u;  // subgroups along N
override CBK: u32 = 32u;  // K per staged slice, a multiple of 16
override CBM: u32 = SG_M * 32u;
override CBN: u32 = SG_N * 32u;
override CWG: u32 = SG * SG_M * SG_N;
// Row strides of the staged slices, in f16: 8 more than the row (16 bytes) to spread
// rows over memory banks while keeping every row 16-byte aligned.
override A_LD: u32 = (1u - TRANS_A) * (CBK + 8u) + TRANS_A * (CBM + 8u);
override B_LD: u32 = (1u - TRANS_B) * (CBN + 8u) + TRANS_B * (CBK + 8u);
override A_ROWS: u32 = (1u - TRANS_A) * CBM + TRANS_A * CBK;
override B_ROWS: u32 = (1u - TRANS_B) * CBK + TRANS_B * CBN;

var<workgroup> a_slice: array<f16, A_ROWS * A_LD>; // A's layout: [m][k], or [k][m] if TRANS_A
var<workgroup> b_slice: array<f16, B_ROWS * B_LD>; // B's layout: [k][n], or [n][k] if TRANS_B
var<workgroup> c_tile: array<f32, CBM * CBN>;      // accumulators, [m][n]

// Copies stored rows row0 .. row0 + A_ROWS, columns col0 .. (slice width) of A into
// a_slice, zeros outside A (rows x cols).
fn copy_a(row0: u32, col0: u32, rows: u32, cols: u32, li: u32) {
    let width = A_LD - 8u;
    for (var i = li; i < A_ROWS * width; i += CWG) {
        let r = i / width;
        let j = i % width;
        var v = f16(0.0);
        if (row0 + r < rows && col0 + j < cols) {
            v = a[(row0 + r) * cols + col0 + j];
        }
        a_slice[r * A_LD + j] = v;
    }
}

fn copy_b(row0: u32, col0: u32, rows: u32, cols: u32, li: u32) {
    let width = B_LD - 8u;
    for (var i = li; i < B_ROWS * width; i += CWG) {
        let r = i / width;
        let j = i % width;
        var v = f16(0.0);
        if (row0 + r < rows && col0 + j < cols) {
            v = b[(row0 + r) * cols + col0 + j];
        }
        b_slice[r * B_LD + j] = v;
    }
}

// Fragment (rows m .. m + 16, columns k .. k + 16) of op(A) from a_slice (tile-local).
fn frag_a(m: u32, k: u32) -> coop_mat16x16<f16, A> {
    let ld = A_LD;
    if (TRANS_A != 0u) {
        let at = k * A_LD + m;
        return coopLoad<coop_mat16x16<f16, A>>(&a_slice[at], ld);
    }
    let at = m * A_LD + k;
    return coopLoadT<coop_mat16x16<f16, A>>(&a_slice[at], ld);
}

// Fragment (rows k .. k + 16, columns n .. n + 16) of op(B) from b_slice (tile-local).
fn frag_b(k: u32, n: u32) -> coop_mat16x16<f16, B> {
    let ld = B_LD;
    if (TRANS_B != 0u) {
        let at = n * B_LD + k;
        return coopLoad<coop_mat16x16<f16, B>>(&b_slice[at], ld);
    }
    let at = k * B_LD + n;
    return coopLoadT<coop_mat16x16<f16, B>>(&b_slice[at], ld);
}

@compute @workgroup_size(CWG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg_id: u32) {
    let m0 = wg_id.y * CBM;
    let n0 = wg_id.x * CBN;
    let block = sg_id % (SG_M * SG_N);
    let bm = (block / SG_N) * 32u; // this subgroup's block, tile-local
    let bn = (block % SG_N) * 32u;

    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    // Control flow stays uniform across the workgroup (cooperative operations need it).
    for (var k0 = 0u; k0 < params.k; k0 += CBK) {
        if (TRANS_A != 0u) {
            copy_a(k0, m0, params.k, params.m, li);
        } else {
            copy_a(m0, k0, params.m, params.k, li);
        }
        if (TRANS_B != 0u) {
            copy_b(n0, k0, params.n, params.k, li);
        } else {
            copy_b(k0, n0, params.k, params.n, li);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < CBK; kk += 16u) {
            let a0 = frag_a(bm, kk);
            let a1 = frag_a(bm + 16u, kk);
            let b0 = frag_b(kk, bn);
            let b1 = frag_b(kk, bn + 16u);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        workgroupBarrier();
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
    let odd_n = (params.n & 1u) == 1u;
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
        let e = m * params.n + n;
        if (n + 1u < params.n) {
            var y = 0.0;
            if (cl + 1u < CBN) {
                y = c_tile[r * CBN + cl + 1u];
            } else {
                y = dot_direct(m, n + 1u); // odd row: its last word reaches the next tile
            }
            store_word(e, x, n, y, n + 1u, true);
        } else if (m + 1u < params.m) {
            store_word(e, x, n, dot_direct(m + 1u, 0u), 0u, true);
        } else {
            store_word(e, x, n, 0.0, 0u, false);
        }
    }
}
