//! Batched strided matrix products against an f64 CPU reference: every operand dtype and
//! both f16 paths, every transpose pair, batches of 1, 3 and 12 (one and two levels),
//! odd shapes, leading dimensions wider than the matrix, element offsets, accumulate into
//! f32, 16-bit outputs, C poisoned with NaN and checked untouched outside its views, the
//! attention layouts on a fused QKV tensor, the coop kernel batched, typed errors.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, rounded, tol};
use halfgrad::ops::matmul::{
    chosen_kernel, matmul_with, plan_for, MatmulArgs, MatmulKernel, MatmulOptions, MatmulPlan,
    MatmulTuning, MatrixLayout, TiledTile,
};
use halfgrad::{DType, Error, Gpu, Tensor};

/// One operand: its tensor's length and the layout of its matrices in it.
#[derive(Debug, Clone, Copy)]
struct Operand {
    dtype: DType,
    layout: MatrixLayout,
    len: usize,
}

impl Operand {
    /// Matrices stored `rows x cols` with rows `cols + pad` apart, batch gaps, an offset
    /// and a tail: every gap is `gap` elements (even gaps keep 16-bit C word-aligned).
    fn padded(
        dtype: DType,
        (rows, cols): (usize, usize),
        (outer, inner): (usize, usize),
        gap: usize,
    ) -> Operand {
        let ld = cols + gap;
        let inner_stride = rows * ld + gap;
        let outer_stride = inner * inner_stride + gap;
        let offset = gap;
        let len = offset
            + (outer - 1) * outer_stride
            + (inner - 1) * inner_stride
            + (rows - 1) * ld
            + cols
            + gap;
        Operand {
            dtype,
            layout: MatrixLayout {
                offset,
                ld,
                outer_stride,
                inner_stride,
            },
            len,
        }
    }

    /// Dense matrices one after another from element 0.
    fn dense(
        dtype: DType,
        (rows, cols): (usize, usize),
        (outer, inner): (usize, usize),
    ) -> Operand {
        Operand {
            dtype,
            layout: MatrixLayout::dense_batch(rows, cols, inner),
            len: outer * inner * rows * cols,
        }
    }

    /// Element index of stored (r, c) of batch (o, i).
    fn at(&self, (o, i): (usize, usize), r: usize, c: usize, cols: usize) -> usize {
        let l = &self.layout;
        let ld = if l.ld == 0 { cols } else { l.ld };
        l.offset + o * l.outer_stride + i * l.inner_stride + r * ld + c
    }
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    mnk: (usize, usize, usize),
    batch: (usize, usize),
    trans: (bool, bool),
    a: Operand,
    b: Operand,
    c: Operand,
    /// A and B are one tensor (a's dtype and length), as Q and K in a fused QKV.
    same_ab: bool,
    accumulate: bool,
    kernel: MatmulKernel,
    tuning: MatmulTuning,
}

impl Spec {
    fn new(
        mnk: (usize, usize, usize),
        batch: (usize, usize),
        trans: (bool, bool),
        dtypes: (DType, DType, DType),
        gap: usize,
    ) -> Spec {
        let (m, n, k) = mnk;
        let a_stored = if trans.0 { (k, m) } else { (m, k) };
        let b_stored = if trans.1 { (n, k) } else { (k, n) };
        let make = |dt, rc| {
            if gap == 0 {
                Operand::dense(dt, rc, batch)
            } else {
                Operand::padded(dt, rc, batch, gap)
            }
        };
        Spec {
            mnk,
            batch,
            trans,
            a: make(dtypes.0, a_stored),
            b: make(dtypes.1, b_stored),
            c: make(dtypes.2, (m, n)),
            same_ab: false,
            accumulate: false,
            kernel: MatmulKernel::Tiled,
            tuning: MatmulTuning::default(),
        }
    }
}

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Runs the product on random data with C poisoned (NaN, or random old values when
/// accumulating); checks that every element outside C's views kept its value and returns
/// ||C - ref|| / ||ref|| over the views.
fn run(g: &Gpu, s: &Spec, seed: u64) -> f64 {
    let (m, n, k) = s.mnk;
    let mut r = rng(seed);
    let a_vals = rounded(&random_vec(&mut r, s.a.len, 1.0), s.a.dtype);
    let b_vals = if s.same_ab {
        a_vals.clone()
    } else {
        rounded(&random_vec(&mut r, s.b.len, 1.0), s.b.dtype)
    };
    let c_old = if s.accumulate {
        random_vec(&mut r, s.c.len, 1.0)
    } else {
        vec![f32::NAN; s.c.len]
    };
    let a = Tensor::from_f32(g, &[s.a.len], &a_vals, s.a.dtype).unwrap();
    let b_own = (!s.same_ab).then(|| Tensor::from_f32(g, &[s.b.len], &b_vals, s.b.dtype).unwrap());
    let b = b_own.as_ref().unwrap_or(&a);
    let c = Tensor::from_f32(g, &[s.c.len], &c_old, s.c.dtype).unwrap();
    let args = MatmulArgs {
        a_layout: s.a.layout,
        b_layout: s.b.layout,
        c_layout: s.c.layout,
        batch: s.batch,
        opts: MatmulOptions {
            trans_a: s.trans.0,
            trans_b: s.trans.1,
            accumulate: s.accumulate,
            kernel: s.kernel,
        },
        tuning: s.tuning,
        ..MatmulArgs::new(&a, b, &c, s.mnk)
    };
    let d = matmul_with(g, &args).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    g.run_all(&d).unwrap();
    let out = c.to_f32_vec().unwrap();

    let (a_cols, b_cols) = (if s.trans.0 { m } else { k }, if s.trans.1 { k } else { n });
    let mut inside = vec![false; s.c.len];
    let mut got = Vec::new();
    let mut reference = Vec::new();
    for o in 0..s.batch.0 {
        for i in 0..s.batch.1 {
            for row in 0..m {
                for col in 0..n {
                    let mut sum = 0.0f64;
                    for p in 0..k {
                        let ai = if s.trans.0 {
                            s.a.at((o, i), p, row, a_cols)
                        } else {
                            s.a.at((o, i), row, p, a_cols)
                        };
                        let bi = if s.trans.1 {
                            s.b.at((o, i), col, p, b_cols)
                        } else {
                            s.b.at((o, i), p, col, b_cols)
                        };
                        sum += f64::from(a_vals[ai]) * f64::from(b_vals[bi]);
                    }
                    let ci = s.c.at((o, i), row, col, n);
                    assert!(!inside[ci], "{s:?}: C's views overlap at {ci}");
                    inside[ci] = true;
                    if s.accumulate {
                        sum += f64::from(s.c.dtype.round(c_old[ci]));
                    }
                    if s.c.dtype != DType::F32 {
                        sum = f64::from(s.c.dtype.round(sum as f32));
                    }
                    got.push(out[ci]);
                    reference.push(sum);
                }
            }
        }
    }
    for (e, (&was, &now)) in c_old.iter().zip(&out).enumerate() {
        if !inside[e] {
            let was = s.c.dtype.round(was);
            assert!(
                was.to_bits() == now.to_bits() || (was.is_nan() && now.is_nan()),
                "{s:?}: element {e} outside C's views changed from {was} to {now}"
            );
        }
    }
    rel_err(&got, &reference)
}

fn check(g: &Gpu, s: &Spec, seed: u64) {
    let err = run(g, s, seed);
    let limit = tol(s.a.dtype).max(tol(s.b.dtype)).max(tol(s.c.dtype));
    assert!(
        err <= limit,
        "{s:?}: relative error {err:.3e} > {limit:.1e}"
    );
}

/// Odd shapes (M, N, K) cycling through 1, 7 and 33.
const SHAPES: [(usize, usize, usize); 3] = [(1, 7, 33), (7, 33, 1), (33, 1, 7)];
/// Batches of 1, 3 and 12 (as 3 x 4: two levels).
const BATCHES: [(usize, usize); 3] = [(1, 1), (1, 3), (3, 4)];

#[test]
fn every_dtype_and_transpose_batched_strided_matches_f64() {
    let mut runs = 0u64;
    for (path, g) in gpus_for_f16() {
        let dtypes: &[DType] = if path == "packed" {
            &[DType::F32, DType::F16, DType::BF16]
        } else {
            &[DType::F16] // native f16 reads; the other dtypes do not depend on the path
        };
        for &dt in dtypes {
            for (t, &trans) in TRANSPOSES.iter().enumerate() {
                for (bi, &batch) in BATCHES.iter().enumerate() {
                    let shape = SHAPES[(t + bi) % SHAPES.len()];
                    // Padded views (wider rows, offsets, gaps) and dense batches.
                    let gap = [3, 0, 5][bi];
                    let spec = Spec::new(shape, batch, trans, (dt, dt, DType::F32), gap);
                    check(g, &spec, runs);
                    runs += 1;
                }
            }
        }
    }
    println!("{runs} batched products checked");
}

#[test]
fn mixed_operands_and_16_bit_outputs() {
    for (path, g) in gpus_for_f16() {
        println!("path {path}");
        for (s, &(a, b, c)) in [
            (DType::F16, DType::F16, DType::F16),
            (DType::BF16, DType::F32, DType::BF16),
            (DType::F32, DType::F16, DType::F16),
            (DType::F16, DType::BF16, DType::F32),
        ]
        .iter()
        .enumerate()
        {
            let trans = TRANSPOSES[s];
            // Strided 16-bit C: even N and even gaps (ld, offsets, strides); odd M and K.
            check(
                g,
                &Spec::new((7, 34, 33), (2, 3), trans, (a, b, c), 2),
                10 + s as u64,
            );
            check(
                g,
                &Spec::new((3, 2, 5), (1, 3), trans, (a, b, c), 0),
                20 + s as u64,
            );
            // Odd N in dense matrices of an even element count: words straddle rows
            // inside each matrix, never between matrices.
            check(
                g,
                &Spec::new((6, 5, 3), (2, 3), trans, (a, b, c), 0),
                30 + s as u64,
            );
            check(
                g,
                &Spec::new((2, 33, 7), (1, 3), trans, (a, b, c), 0),
                35 + s as u64,
            );
        }
    }
}

/// The tiled_fast kernel on batched strided views: odd N into f32 C with odd gaps, even N
/// into every output dtype with even gaps (16-bit words never straddle), both f16 paths.
#[test]
fn fast_kernel_batched_strided_matches_f64() {
    let tuning = MatmulTuning {
        tiled: TiledTile::Fast,
        ..MatmulTuning::default()
    };
    const EVEN_N: [(usize, usize, usize); 3] = [(7, 34, 33), (33, 2, 7), (1, 8, 5)];
    let mut runs = 0u64;
    for (path, g) in gpus_for_f16() {
        let dtypes: &[DType] = if path == "packed" {
            &DType::ALL
        } else {
            &[DType::F16]
        };
        for &dt in dtypes {
            for (t, &trans) in TRANSPOSES.iter().enumerate() {
                for (bi, &batch) in BATCHES.iter().enumerate() {
                    let odd = Spec {
                        tuning,
                        ..Spec::new(
                            SHAPES[(t + bi) % 3],
                            batch,
                            trans,
                            (dt, dt, DType::F32),
                            [3, 0, 5][bi],
                        )
                    };
                    check(g, &odd, 500 + runs);
                    let c = DType::ALL[(t + bi) % 3];
                    let even = Spec {
                        tuning,
                        ..Spec::new(
                            EVEN_N[(t + bi) % 3],
                            batch,
                            trans,
                            (dt, dt, c),
                            [2, 0, 4][bi],
                        )
                    };
                    check(g, &even, 600 + runs);
                    runs += 1;
                }
            }
        }
        // More than one tile each way, and accumulating.
        let big = Spec {
            tuning,
            accumulate: true,
            ..Spec::new(
                (130, 132, 9),
                (1, 2),
                (false, true),
                (DType::F16, DType::BF16, DType::F32),
                2,
            )
        };
        check(g, &big, 700);
    }
    println!("{runs} batched tiled_fast products checked");
}

#[test]
fn accumulate_into_f32_batched() {
    let g = gpu();
    for (t, &trans) in TRANSPOSES.iter().enumerate() {
        for dt in DType::ALL {
            let spec = Spec {
                accumulate: true,
                ..Spec::new(SHAPES[t % 3], (3, 4), trans, (dt, dt, DType::F32), 1 + t)
            };
            check(g, &spec, 40 + t as u64);
        }
    }
}

/// GPT-2 attention on a fused `qkv: (B, T, 3C)` with H heads of width hd: scores
/// `S[b,h] = Q[b,h] K[b,h]^T`, `Y[b,h] = P[b,h] V[b,h]` written into `y: (B, T, C)`, and
/// the backward products dQ = dS K, dK = dS^T Q, dV = P^T dY, dP = dY V^T.
///
/// T = 5 and 6: two 16-bit elements share a word, so a batch of dense 16-bit (T, T)
/// outputs (dP) needs an even T * T: 16-bit with T = 6, f32 with T = 5.
#[test]
fn attention_layouts_on_fused_qkv() {
    for t in [5, 6] {
        attention_layouts(t);
    }
}

fn attention_layouts(t: usize) {
    let (bsz, heads, hd) = (2, 3, 4);
    let c = heads * hd;
    let qkv_len = bsz * t * 3 * c;
    let batch = (bsz, heads);
    // Head h of batch b in the fused activation: part 0 (Q), 1 (K), 2 (V).
    let head = |dt, part: usize| Operand {
        dtype: dt,
        layout: MatrixLayout {
            offset: part * c,
            ld: 3 * c,
            outer_stride: t * 3 * c,
            inner_stride: hd,
        },
        len: qkv_len,
    };
    // Head h of batch b in a (B, T, C) tensor (y, dY).
    let merged = |dt| Operand {
        dtype: dt,
        layout: MatrixLayout {
            offset: 0,
            ld: c,
            outer_stride: t * c,
            inner_stride: hd,
        },
        len: bsz * t * c,
    };
    // (B, H, T, T) scores.
    let scores = |dt| Operand::dense(dt, (t, t), batch);
    for (path, g) in gpus_for_f16() {
        for dt in if path == "packed" {
            DType::ALL.to_vec()
        } else {
            vec![DType::F16]
        } {
            let spec = |mnk, trans, a, b, c, same_ab| Spec {
                mnk,
                batch,
                trans,
                a,
                b,
                c,
                same_ab,
                accumulate: false,
                kernel: MatmulKernel::Tiled,
                tuning: MatmulTuning::default(),
            };
            let cases = [
                // S = Q K^T: (T, T), K = hd, both operands in the one qkv tensor.
                (
                    "S = Q K^T",
                    spec(
                        (t, t, hd),
                        (false, true),
                        head(dt, 0),
                        head(dt, 1),
                        scores(DType::F32),
                        true,
                    ),
                ),
                // Y = P V into y at b*T*C + h*hd, ld C (a 16-bit output).
                (
                    "Y = P V",
                    spec(
                        (t, hd, t),
                        (false, false),
                        scores(dt),
                        head(dt, 2),
                        merged(dt),
                        false,
                    ),
                ),
                (
                    "dQ = dS K",
                    spec(
                        (t, hd, t),
                        (false, false),
                        scores(dt),
                        head(dt, 1),
                        merged(DType::F32),
                        false,
                    ),
                ),
                (
                    "dK = dS^T Q",
                    spec(
                        (t, hd, t),
                        (true, false),
                        scores(dt),
                        head(dt, 0),
                        merged(dt),
                        false,
                    ),
                ),
                (
                    "dV = P^T dY",
                    spec(
                        (t, hd, t),
                        (true, false),
                        scores(dt),
                        merged(dt),
                        merged(DType::F32),
                        false,
                    ),
                ),
                (
                    "dP = dY V^T",
                    spec(
                        (t, t, hd),
                        (false, true),
                        merged(dt),
                        head(dt, 2),
                        scores(if t.is_multiple_of(2) { dt } else { DType::F32 }),
                        false,
                    ),
                ),
            ];
            for (i, (what, s)) in cases.iter().enumerate() {
                let err = run(g, s, 70 + i as u64);
                let limit = tol(s.a.dtype).max(tol(s.b.dtype)).max(tol(s.c.dtype));
                assert!(
                    err <= limit,
                    "T {t} {path} {dt} {what}: relative error {err:.3e} > {limit:.1e}"
                );
            }
        }
    }
}

#[test]
fn coop_kernel_batched_matches_f64() {
    let g = gpu();
    let forced = MatmulOptions {
        kernel: MatmulKernel::Coop,
        ..MatmulOptions::default()
    };
    if let Err(e) = chosen_kernel(g, DType::F16, DType::F16, &forced) {
        eprintln!(
            "skipping the coop kernel: {e} (adapter {})",
            g.adapter().name
        );
        return;
    }
    let f16 = DType::F16;
    let mut runs = 0u64;
    for (t, &trans) in TRANSPOSES.iter().enumerate() {
        // Aligned views (direct fragment loads: gap 8) and unaligned ones (staged: gap 3),
        // shapes that are and are not whole 32 x 64 tiles, f32 and f16 outputs.
        for (mnk, gap, c) in [
            ((64, 64, 64), 8, DType::F32),
            ((64, 128, 48), 8, DType::F16),
            ((33, 70, 17), 3, DType::F32),
            ((40, 34, 24), 2, DType::F16),
        ] {
            let spec = Spec {
                kernel: MatmulKernel::Coop,
                ..Spec::new(mnk, (2, 3), trans, (f16, f16, c), gap)
            };
            check(g, &spec, 100 + runs);
            runs += 1;
        }
        let spec = Spec {
            kernel: MatmulKernel::Coop,
            accumulate: true,
            ..Spec::new((32, 64, 32), (1, 3), trans, (f16, f16, DType::F32), 0)
        };
        check(g, &spec, 200 + t as u64);
    }
    // The staged tile kernel is for one contiguous product only: a batch of whole tiles
    // plans the fragment-copy kernel (16-byte-aligned views), unless HALFGRAD_COOP picks
    // the staged or direct kernel, which leaves batches on the general coop kernel.
    let a = Tensor::zeros(g, &[3 * 128 * 128], f16).unwrap();
    let c = Tensor::zeros(g, &[3 * 128 * 128], DType::F32).unwrap();
    let args = MatmulArgs {
        a_layout: MatrixLayout::dense_batch(128, 128, 3),
        b_layout: MatrixLayout::dense_batch(128, 128, 3),
        c_layout: MatrixLayout::dense_batch(128, 128, 3),
        batch: (1, 3),
        opts: forced,
        ..MatmulArgs::new(&a, &a, &c, (128, 128, 128))
    };
    let env = std::env::var("HALFGRAD_COOP").unwrap_or_default();
    let copied = matches!(
        env.trim().to_ascii_lowercase().as_str(),
        "" | "auto" | "copied"
    );
    let plan = plan_for(g, &args).unwrap();
    if copied {
        assert!(matches!(plan, MatmulPlan::CoopCopied(_)), "{plan:?}");
    } else {
        assert!(matches!(plan, MatmulPlan::Coop { .. }), "{plan:?}");
    }
}

#[test]
fn batched_views_typed_errors() {
    let g = gpu();
    let a = Tensor::zeros(g, &[100], DType::F32).unwrap();
    let c = Tensor::zeros(g, &[100], DType::F32).unwrap();
    let c16 = Tensor::zeros(g, &[100], DType::F16).unwrap();
    let labels = Tensor::from_u32(g, &[100], &[0; 100]).unwrap();
    let bias = Tensor::zeros(g, &[3], DType::F32).unwrap();
    let base = MatmulArgs {
        batch: (2, 2),
        a_layout: MatrixLayout::dense_batch(3, 4, 2),
        b_layout: MatrixLayout::dense_batch(4, 3, 2),
        c_layout: MatrixLayout::dense_batch(3, 3, 2),
        ..MatmulArgs::new(&a, &a, &c, (3, 3, 4))
    };
    assert!(matmul_with(g, &base).is_ok());
    let err = |args: MatmulArgs| matmul_with(g, &args).unwrap_err();
    let shape = |e: Error| assert!(matches!(e, Error::ShapeMismatch { .. }), "{e:?}");
    let invalid = |e: Error| assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let dtype = |e: Error| assert!(matches!(e, Error::DTypeMismatch { .. }), "{e:?}");
    let empty = |e: Error| assert!(matches!(e, Error::Empty { .. }), "{e:?}");

    // Views past the end: by one element, and by an offset that overflows usize.
    let past = |offset| MatrixLayout {
        offset,
        ..MatrixLayout::dense_batch(3, 4, 2)
    };
    shape(err(MatmulArgs {
        a_layout: past(100 - 48 + 1),
        ..base
    }));
    assert!(matmul_with(
        g,
        &MatmulArgs {
            a_layout: past(100 - 48),
            ..base
        }
    )
    .is_ok());
    shape(err(MatmulArgs {
        a_layout: past(usize::MAX),
        ..base
    }));
    shape(err(MatmulArgs {
        c_layout: MatrixLayout {
            outer_stride: usize::MAX / 2,
            ..base.c_layout
        },
        ..base
    }));
    // Leading dimension below the stored width (A stored 3 x 4).
    invalid(err(MatmulArgs {
        a_layout: MatrixLayout {
            ld: 3,
            ..base.a_layout
        },
        ..base
    }));
    // Zero batch, zero dimension.
    empty(err(MatmulArgs {
        batch: (0, 2),
        ..base
    }));
    empty(err(MatmulArgs {
        batch: (2, 0),
        ..base
    }));
    empty(err(MatmulArgs { m: 0, ..base }));
    // Dtypes: a U32 operand or output, accumulating into a 16-bit C.
    dtype(err(MatmulArgs { a: &labels, ..base }));
    dtype(err(MatmulArgs { c: &labels, ..base }));
    dtype(err(MatmulArgs {
        c: &c16,
        opts: MatmulOptions {
            accumulate: true,
            ..MatmulOptions::default()
        },
        ..base
    }));
    // Bias with a batch.
    invalid(err(MatmulArgs {
        bias: Some(&bias),
        ..base
    }));
    // C batches that would overwrite one another.
    invalid(err(MatmulArgs {
        c_layout: MatrixLayout {
            inner_stride: 0,
            ..base.c_layout
        },
        ..base
    }));
    // A 16-bit strided C with odd N (two elements share a word).
    invalid(err(MatmulArgs { c: &c16, ..base }));
    let even_n = MatmulArgs {
        c: &c16,
        n: 2,
        b_layout: MatrixLayout::dense_batch(4, 2, 2),
        c_layout: MatrixLayout::dense_batch(3, 2, 2),
        ..base
    };
    assert!(matmul_with(g, &even_n).is_ok());
    invalid(err(MatmulArgs {
        c_layout: MatrixLayout {
            offset: 1,
            ..even_n.c_layout
        },
        ..even_n
    }));
    invalid(err(MatmulArgs {
        c_layout: MatrixLayout {
            ld: 3,
            ..even_n.c_layout
        },
        ..even_n
    }));
}
