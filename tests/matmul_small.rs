//! The software adapters' product kernel (`matmul_small/small`) against an f64 CPU
//! reference: every operand and output dtype, every layout, ragged M and N inside its
//! 8 x 8 blocks, several workgroup columns, bias, accumulate, batches of strided views,
//! both f16 storage paths; the same bits as the tiled kernel; `Auto` picks it on software
//! adapters; typed errors where it cannot run.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, rounded, tol};
use halfgrad::ops::matmul::{
    matmul_tuned, matmul_with, plan_for, MatmulArgs, MatmulKernel, MatmulOptions, MatmulTuning,
    MatrixLayout, TiledTile,
};
use halfgrad::{DType, Error, Gpu, Tensor};

/// The small kernel forced.
fn small() -> MatmulTuning {
    MatmulTuning {
        tiled: TiledTile::SmallKernel,
        ..MatmulTuning::default()
    }
}

/// (M, N, K) with K a multiple of 8: ragged M and N inside a block, N not a multiple of
/// 8, two workgroup columns (65 blocks of 8 columns), long K. Few workgroup widths: each
/// is a pipeline, and lavapipe compiles each in about a second.
const SHAPES: [(usize, usize, usize); 3] = [(13, 24, 40), (24, 10, 264), (3, 520, 8)];

/// (A, B, C) dtypes: each dtype in each place, mixed operands.
const DTYPES: [(DType, DType, DType); 5] = [
    (DType::F16, DType::F16, DType::F32),
    (DType::F16, DType::F16, DType::F16),
    (DType::BF16, DType::BF16, DType::BF16),
    (DType::F32, DType::F32, DType::F32),
    (DType::F16, DType::BF16, DType::F16),
];

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Whether the small kernel can run the product: 8-element rows of the stored operands,
/// K a multiple of 8, whole output words.
fn fits((m, n, k): (usize, usize, usize), (trans_a, trans_b): (bool, bool), c: DType) -> bool {
    let a_cols = if trans_a { m } else { k };
    let b_cols = if trans_b { k } else { n };
    k % 8 == 0 && a_cols % 8 == 0 && b_cols % 8 == 0 && (c == DType::F32 || n % 2 == 0)
}

struct Case {
    shape: (usize, usize, usize),
    layout: (bool, bool),
    dtypes: (DType, DType, DType),
    bias: bool,
    accumulate: bool,
}

/// Runs one product with the small kernel forced (after checking the plan names it) on
/// random data, the output poisoned with NaN first; returns the relative error against
/// the f64 reference of the operands as rounded to their dtypes.
fn run(g: &Gpu, case: &Case, seed: u64) -> f64 {
    let (m, n, k) = case.shape;
    let (trans_a, trans_b) = case.layout;
    let (da, db, dc) = case.dtypes;
    let mut r = rng(seed);
    let a_vals = rounded(&random_vec(&mut r, m * k, 1.0), da);
    let b_vals = rounded(&random_vec(&mut r, k * n, 1.0), db);
    let bias_vals = random_vec(&mut r, n, 1.0);
    let c_old = rounded(&random_vec(&mut r, m * n, 1.0), dc);
    let a_shape = if trans_a { [k, m] } else { [m, k] };
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    let a = Tensor::from_f32(g, &a_shape, &a_vals, da).unwrap();
    let b = Tensor::from_f32(g, &b_shape, &b_vals, db).unwrap();
    let bias = Tensor::from_f32(g, &[n], &bias_vals, DType::F32).unwrap();
    let c = if case.accumulate {
        Tensor::from_f32(g, &[m, n], &c_old, dc).unwrap()
    } else {
        Tensor::full(g, &[m, n], dc, f32::NAN).unwrap()
    };
    let opts = MatmulOptions {
        trans_a,
        trans_b,
        accumulate: case.accumulate,
        kernel: MatmulKernel::Auto,
    };
    let args = MatmulArgs {
        bias: case.bias.then_some(&bias),
        tuning: small(),
        ..MatmulArgs::matrices(&a, &b, &c, &opts).unwrap()
    };
    assert_eq!(plan_for(g, &args).unwrap().name(), "small");
    let d = matmul_with(g, &args).unwrap();
    g.run_all(&d).unwrap();
    let out = c.to_f32_vec().unwrap();

    let a_at = |i: usize, p: usize| {
        f64::from(if trans_a {
            a_vals[p * m + i]
        } else {
            a_vals[i * k + p]
        })
    };
    let b_at = |p: usize, j: usize| {
        f64::from(if trans_b {
            b_vals[j * k + p]
        } else {
            b_vals[p * n + j]
        })
    };
    let mut reference = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s: f64 = (0..k).map(|p| a_at(i, p) * b_at(p, j)).sum();
            if case.bias {
                s += f64::from(bias_vals[j]);
            }
            if case.accumulate {
                s += f64::from(c_old[i * n + j]);
            }
            reference[i * n + j] = if dc == DType::F32 {
                s
            } else {
                f64::from(dc.round(s as f32))
            };
        }
    }
    rel_err(&out, &reference)
}

fn check(g: &Gpu, case: &Case, seed: u64) {
    let err = run(g, case, seed);
    let (da, db, dc) = case.dtypes;
    let limit = tol(da).max(tol(db)).max(tol(dc));
    assert!(
        err <= limit,
        "{:?} {:?} {:?} bias {} acc {}: relative error {err:.3e} > {limit:.1e}",
        case.shape,
        case.layout,
        case.dtypes,
        case.bias,
        case.accumulate
    );
}

#[test]
fn small_every_dtype_layout_and_output_matches_f64_reference() {
    let mut runs = 0u64;
    for (path, g) in gpus_for_f16() {
        for &shape in &SHAPES {
            for layout in LAYOUTS {
                for dtypes in DTYPES {
                    if !fits(shape, layout, dtypes.2) {
                        continue;
                    }
                    let case = Case {
                        shape,
                        layout,
                        dtypes,
                        bias: runs % 3 == 1,
                        accumulate: dtypes.2 == DType::F32 && runs % 3 == 2,
                    };
                    check(g, &case, runs);
                    runs += 1;
                }
            }
        }
        println!("path {path}: {runs} products so far");
    }
    assert!(runs >= 40, "only {runs} products fit the small kernel");
}

/// The small kernel adds each element's products in the tiled kernel's order: the same
/// bits, for every layout and a 16-bit output (rounded once, so equal sums round alike).
#[test]
fn small_gives_the_tiled_kernels_bits() {
    for (path, g) in gpus_for_f16() {
        for (s, layout) in LAYOUTS.into_iter().enumerate() {
            for dc in [DType::F32, DType::F16] {
                let (m, n, k) = (24, 40, 72);
                let mut r = rng(77 + s as u64);
                let a_shape = if layout.0 { [k, m] } else { [m, k] };
                let b_shape = if layout.1 { [n, k] } else { [k, n] };
                let a = Tensor::from_f32(g, &a_shape, &random_vec(&mut r, m * k, 1.0), DType::F16)
                    .unwrap();
                let b = Tensor::from_f32(g, &b_shape, &random_vec(&mut r, k * n, 1.0), DType::F16)
                    .unwrap();
                let bits = |kernel: MatmulKernel, tuning: MatmulTuning| {
                    let c = Tensor::full(g, &[m, n], dc, f32::NAN).unwrap();
                    let opts = MatmulOptions {
                        trans_a: layout.0,
                        trans_b: layout.1,
                        accumulate: false,
                        kernel,
                    };
                    let d = matmul_tuned(g, &a, &b, &c, None, None, &opts, &tuning).unwrap();
                    g.run_all(&d).unwrap();
                    c.to_f32_vec()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>()
                };
                let tiled = MatmulTuning {
                    tiled: TiledTile::Small,
                    ..MatmulTuning::default()
                };
                assert_eq!(
                    bits(MatmulKernel::Auto, small()),
                    bits(MatmulKernel::Tiled, tiled),
                    "{path} {layout:?} {dc}"
                );
            }
        }
    }
}

/// A batch of strided views (offsets, leading dimensions and strides multiples of 8).
#[test]
fn small_batched_strided_views_match_reference() {
    let g = gpu();
    let (m, n, k) = (9, 16, 24);
    let (outer, inner) = (2, 3);
    let (lda, ldb, ldc) = (k + 8, n + 16, n + 8);
    let a_layout = MatrixLayout {
        offset: 8,
        ld: lda,
        outer_stride: inner * m * lda + 16,
        inner_stride: m * lda,
    };
    let b_layout = MatrixLayout {
        offset: 16,
        ld: ldb,
        outer_stride: inner * k * ldb,
        inner_stride: k * ldb,
    };
    let c_layout = MatrixLayout {
        offset: 8,
        ld: ldc,
        outer_stride: inner * m * ldc,
        inner_stride: m * ldc,
    };
    let a_len = 8 + outer * (inner * m * lda + 16);
    let b_len = 16 + outer * inner * k * ldb;
    let c_len = 8 + outer * inner * m * ldc;
    let mut r = rng(5);
    let a_vals = rounded(&random_vec(&mut r, a_len, 1.0), DType::F16);
    let b_vals = rounded(&random_vec(&mut r, b_len, 1.0), DType::BF16);
    let a = Tensor::from_f32(g, &[a_len], &a_vals, DType::F16).unwrap();
    let b = Tensor::from_f32(g, &[b_len], &b_vals, DType::BF16).unwrap();
    let c = Tensor::full(g, &[c_len], DType::F32, f32::NAN).unwrap();
    let args = MatmulArgs {
        a_layout,
        b_layout,
        c_layout,
        batch: (outer, inner),
        tuning: small(),
        ..MatmulArgs::new(&a, &b, &c, (m, n, k))
    };
    assert_eq!(plan_for(g, &args).unwrap().name(), "small");
    g.run_all(&matmul_with(g, &args).unwrap()).unwrap();
    let out = c.to_f32_vec().unwrap();
    let (mut got, mut reference) = (Vec::new(), Vec::new());
    for o in 0..outer {
        for i in 0..inner {
            let at = |l: &MatrixLayout| l.offset + o * l.outer_stride + i * l.inner_stride;
            let (a0, b0, c0) = (at(&a_layout), at(&b_layout), at(&c_layout));
            for row in 0..m {
                for col in 0..n {
                    let s: f64 = (0..k)
                        .map(|p| {
                            f64::from(a_vals[a0 + row * lda + p])
                                * f64::from(b_vals[b0 + p * ldb + col])
                        })
                        .sum();
                    reference.push(s);
                    got.push(out[c0 + row * ldc + col]);
                }
            }
        }
    }
    let err = rel_err(&got, &reference);
    assert!(err <= tol(DType::BF16), "relative error {err:.3e}");
    // Elements between the views stay poisoned: nothing was written outside C's matrices.
    assert!(out[..8].iter().all(|x| x.is_nan()));
}

#[test]
fn auto_takes_small_on_software_adapters_and_tiled_elsewhere() {
    let g = gpu();
    let a = Tensor::zeros(g, &[64, 64], DType::F16).unwrap();
    let b = Tensor::zeros(g, &[256, 64], DType::F16).unwrap();
    let c = Tensor::zeros(g, &[64, 256], DType::F16).unwrap();
    let opts = MatmulOptions {
        trans_b: true,
        ..MatmulOptions::default()
    };
    let args = MatmulArgs::matrices(&a, &b, &c, &opts).unwrap();
    let name = plan_for(g, &args).unwrap().name();
    let software = g.adapter().device_type == "Cpu";
    if std::env::var_os("HALFGRAD_TILED").is_none() && std::env::var_os("HALFGRAD_MATMUL").is_none()
    {
        if software {
            assert_eq!(name, "small");
        } else {
            assert_ne!(name, "small");
        }
    }
    // A forced tiled kernel stays tiled; K = 10 (not whole 16-byte words) falls back.
    let tiled = MatmulOptions {
        kernel: MatmulKernel::Tiled,
        ..opts
    };
    let args = MatmulArgs::matrices(&a, &b, &c, &tiled).unwrap();
    assert_eq!(plan_for(g, &args).unwrap().name(), "tiled");
    let a10 = Tensor::zeros(g, &[64, 10], DType::F16).unwrap();
    let b10 = Tensor::zeros(g, &[10, 256], DType::F16).unwrap();
    let args = MatmulArgs::matrices(&a10, &b10, &c, &MatmulOptions::default()).unwrap();
    assert_ne!(plan_for(g, &args).unwrap().name(), "small");
}

#[test]
fn forced_small_on_a_shape_it_cannot_run_is_a_typed_error() {
    let g = gpu();
    let bad = [
        ((8, 8, 10), (false, false), DType::F32), // K not a multiple of 8
        ((8, 7, 8), (false, true), DType::F16),   // odd N, 16-bit C
        ((6, 8, 8), (true, false), DType::F32),   // A stored (K, M) with M = 6
        ((8, 12, 8), (false, false), DType::F32), // B stored (K, N) with N = 12
    ];
    for ((m, n, k), (trans_a, trans_b), dc) in bad {
        let a_shape = if trans_a { [k, m] } else { [m, k] };
        let b_shape = if trans_b { [n, k] } else { [k, n] };
        let a = Tensor::zeros(g, &a_shape, DType::F16).unwrap();
        let b = Tensor::zeros(g, &b_shape, DType::F16).unwrap();
        let c = Tensor::zeros(g, &[m, n], dc).unwrap();
        let opts = MatmulOptions {
            trans_a,
            trans_b,
            ..MatmulOptions::default()
        };
        let err = matmul_tuned(g, &a, &b, &c, None, None, &opts, &small()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)),
            "{m} x {n} x {k}: {err:?}"
        );
    }
}
