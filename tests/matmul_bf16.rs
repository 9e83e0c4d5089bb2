//! BF16 products on the f16 kernels through a power-of-two rescale (`rescaled+...`
//! plans, src/ops/matmul/rescale.rs), forced with `MatmulKernel::RescaledF16` so every
//! adapter runs the whole path (lavapipe: exponents, scaled f16 copies, the f16 tiled
//! kernel, the epilogue; an adapter with cooperative matrices: the same with coop):
//! against an f64 reference, the per-element error bound on data spanning 1e-30..1e30,
//! NaN / inf propagation, overflow, the plan `Auto` picks, and typed errors.

mod common;

use common::{gpu, gpus_for_f16, rel_err, rng, tol};
use halfgrad::amp::OverflowFlag;
use halfgrad::ops::matmul::{
    matmul_with, plan_for, MatmulArgs, MatmulKernel, MatmulOptions, MatmulPlan, MatrixLayout,
};
use halfgrad::{DType, Error, Gpu, Tensor};
use rand::Rng;

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Stored shapes of A and B for (M, N, K) and the transposes.
fn stored((m, n, k): (usize, usize, usize), (ta, tb): (bool, bool)) -> ([usize; 2], [usize; 2]) {
    (
        if ta { [k, m] } else { [m, k] },
        if tb { [n, k] } else { [k, n] },
    )
}

/// op(A)[i, p] and op(B)[p, j] of stored host values.
struct Ops<'a> {
    a: &'a [f32],
    b: &'a [f32],
    mnk: (usize, usize, usize),
    trans: (bool, bool),
}

impl Ops<'_> {
    fn a(&self, i: usize, p: usize) -> f64 {
        let (m, _, k) = self.mnk;
        f64::from(if self.trans.0 {
            self.a[p * m + i]
        } else {
            self.a[i * k + p]
        })
    }
    fn b(&self, p: usize, j: usize) -> f64 {
        let (_, n, k) = self.mnk;
        f64::from(if self.trans.1 {
            self.b[j * k + p]
        } else {
            self.b[p * n + j]
        })
    }
}

struct Run {
    out: Vec<f32>,
    plan: MatmulPlan,
    flag: bool,
}

/// Runs one product of bf16 host values (already bf16-exact) into a C of `c_dtype`
/// (poisoned with NaN unless `c_old` is given: then C starts as c_old and accumulates).
#[allow(clippy::too_many_arguments)]
fn run(
    g: &Gpu,
    (a_vals, b_vals): (&[f32], &[f32]),
    mnk: (usize, usize, usize),
    trans: (bool, bool),
    c_dtype: DType,
    bias: Option<&[f32]>,
    c_old: Option<&[f32]>,
    kernel: MatmulKernel,
) -> Run {
    let (m, n, _) = mnk;
    let (a_shape, b_shape) = stored(mnk, trans);
    let a = Tensor::from_f32(g, &a_shape, a_vals, DType::BF16).unwrap();
    let b = Tensor::from_f32(g, &b_shape, b_vals, DType::BF16).unwrap();
    let c = match c_old {
        Some(old) => Tensor::from_f32(g, &[m, n], old, c_dtype).unwrap(),
        None => Tensor::full(g, &[m, n], c_dtype, f32::NAN).unwrap(),
    };
    let bias = bias.map(|v| Tensor::from_f32(g, &[n], v, DType::F32).unwrap());
    let flag = OverflowFlag::new(g).unwrap();
    let args = MatmulArgs {
        bias: bias.as_ref(),
        found_inf: Some(&flag),
        opts: MatmulOptions {
            trans_a: trans.0,
            trans_b: trans.1,
            accumulate: c_old.is_some(),
            kernel,
        },
        ..MatmulArgs::new(&a, &b, &c, mnk)
    };
    let plan = plan_for(g, &args).unwrap();
    let d = matmul_with(g, &args).unwrap_or_else(|e| panic!("{mnk:?} {trans:?}: {e}"));
    g.run_all(&d).unwrap();
    Run {
        out: c.to_f32_vec().unwrap(),
        plan,
        flag: flag.is_raised_blocking(g).unwrap(),
    }
}

/// `n` bf16-exact values uniform in [-1, 1] times 2^(e_line) per line (line = index /
/// `per_line` or index % `lines` as `line_of` says): magnitudes that differ by line.
fn bf16_values(
    r: &mut impl Rng,
    n: usize,
    line_of: impl Fn(usize) -> usize,
    scales: &[f32],
) -> Vec<f32> {
    (0..n)
        .map(|i| DType::BF16.round(r.random_range(-1.0f32..=1.0) * scales[line_of(i)]))
        .collect()
}

/// Random powers of two 2^[lo, hi], one a line.
fn line_scales(r: &mut impl Rng, lines: usize, (lo, hi): (i32, i32)) -> Vec<f32> {
    (0..lines)
        .map(|_| 2f32.powi(r.random_range(lo..=hi)))
        .collect()
}

/// Random op(A) and op(B) with row scales of op(A) and column scales of op(B), stored.
fn operands(seed: u64, mnk: (usize, usize, usize), trans: (bool, bool)) -> (Vec<f32>, Vec<f32>) {
    let (m, n, k) = mnk;
    let mut r = rng(seed);
    let rows = line_scales(&mut r, m, (-8, 4));
    let cols = line_scales(&mut r, n, (-8, 4));
    // Stored A is (M, K) or (K, M): the row of op(A) is i / K or i % M.
    let a = if trans.0 {
        bf16_values(&mut r, m * k, |i| i % m, &rows)
    } else {
        bf16_values(&mut r, m * k, |i| i / k, &rows)
    };
    let b = if trans.1 {
        bf16_values(&mut r, k * n, |i| i / k, &cols)
    } else {
        bf16_values(&mut r, k * n, |i| i % n, &cols)
    };
    (a, b)
}

/// f64 reference of C (+ bias) (+ old C), rounded to C's dtype for a 16-bit C.
fn reference(ops: &Ops, bias: Option<&[f32]>, c_old: Option<&[f32]>, c_dtype: DType) -> Vec<f64> {
    let (m, n, k) = ops.mnk;
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s: f64 = (0..k).map(|p| ops.a(i, p) * ops.b(p, j)).sum();
            s += bias.map_or(0.0, |b| f64::from(b[j]));
            s += c_old.map_or(0.0, |c| f64::from(c[i * n + j]));
            out[i * n + j] = if c_dtype == DType::F32 {
                s
            } else {
                f64::from(c_dtype.round(s as f32))
            };
        }
    }
    out
}

/// Odd-but-aligned sizes (stored rows multiples of 8 in every layout) and one ragged.
const SHAPES: [(usize, usize, usize); 4] = [(40, 24, 56), (136, 8, 72), (8, 16, 24), (7, 33, 13)];

#[test]
fn rescaled_products_match_f64_reference() {
    let mut runs = 0;
    for (path, g) in gpus_for_f16() {
        for (s, &mnk) in SHAPES.iter().enumerate() {
            for trans in LAYOUTS {
                let (a, b) = operands(100 * s as u64 + runs, mnk, trans);
                let ops = Ops {
                    a: &a,
                    b: &b,
                    mnk,
                    trans,
                };
                for c_dtype in DType::ALL {
                    let r = run(
                        g,
                        (&a, &b),
                        mnk,
                        trans,
                        c_dtype,
                        None,
                        None,
                        MatmulKernel::RescaledF16,
                    );
                    assert!(r.plan.name().starts_with("rescaled+"), "{}", r.plan.name());
                    let err = rel_err(&r.out, &reference(&ops, None, None, c_dtype));
                    assert!(
                        err <= tol(c_dtype),
                        "{path} {mnk:?} {trans:?} -> {c_dtype}: relative error {err:.3e}"
                    );
                    assert!(
                        !r.flag,
                        "{path} {mnk:?} {trans:?} -> {c_dtype}: found_inf raised"
                    );
                    runs += 1;
                }
            }
        }
    }
    println!("{runs} rescaled products checked");
}

#[test]
fn rescaled_bias_and_accumulate_match_f64_reference() {
    let g = gpu();
    let mut r = rng(5);
    for (s, &mnk) in SHAPES.iter().enumerate() {
        let (m, n, _) = mnk;
        for trans in LAYOUTS {
            let (a, b) = operands(7 + s as u64, mnk, trans);
            let ops = Ops {
                a: &a,
                b: &b,
                mnk,
                trans,
            };
            let bias: Vec<f32> = (0..n).map(|_| r.random_range(-4.0..=4.0)).collect();
            let old: Vec<f32> = (0..m * n).map(|_| r.random_range(-4.0..=4.0)).collect();
            for c_dtype in DType::ALL {
                let out = run(
                    g,
                    (&a, &b),
                    mnk,
                    trans,
                    c_dtype,
                    Some(&bias),
                    None,
                    MatmulKernel::RescaledF16,
                )
                .out;
                let err = rel_err(&out, &reference(&ops, Some(&bias), None, c_dtype));
                assert!(
                    err <= tol(c_dtype),
                    "bias {mnk:?} {trans:?} -> {c_dtype}: {err:.3e}"
                );
            }
            for with_bias in [false, true] {
                let bias = with_bias.then_some(&bias[..]);
                let out = run(
                    g,
                    (&a, &b),
                    mnk,
                    trans,
                    DType::F32,
                    bias,
                    Some(&old),
                    MatmulKernel::RescaledF16,
                )
                .out;
                let err = rel_err(&out, &reference(&ops, bias, Some(&old), DType::F32));
                assert!(
                    err <= tol(DType::F32),
                    "accumulate {mnk:?} {trans:?} bias {with_bias}: {err:.3e}"
                );
            }
        }
    }
}

/// Scaling by powers of two commutes with f32 rounding, so where the f16 product is the
/// tiled kernel (adapters without matrix units) and nothing leaves f32's normal range,
/// the rescaled path equals the tiled bf16 kernel bit for bit: same tile, same summation
/// order, same bias and accumulate order. (With cooperative matrices the order differs:
/// skipped there.)
#[test]
fn rescaled_tiled_equals_the_tiled_kernel_bit_for_bit() {
    let mut r = rng(9);
    let mut checked = 0;
    for (path, g) in gpus_for_f16() {
        for (s, &mnk) in SHAPES.iter().enumerate() {
            let (m, n, _) = mnk;
            for trans in LAYOUTS {
                let (a, b) = operands(40 + s as u64, mnk, trans);
                let bias: Vec<f32> = (0..n).map(|_| r.random_range(-4.0..=4.0)).collect();
                let old: Vec<f32> = (0..m * n).map(|_| r.random_range(-4.0..=4.0)).collect();
                for (c_dtype, bias, old) in [
                    (DType::F32, None, None),
                    (DType::F16, Some(&bias[..]), None),
                    (DType::BF16, Some(&bias[..]), None),
                    (DType::F32, Some(&bias[..]), Some(&old[..])),
                ] {
                    let go = |kernel| run(g, (&a, &b), mnk, trans, c_dtype, bias, old, kernel);
                    let rescaled = go(MatmulKernel::RescaledF16);
                    if rescaled.plan.name() != "rescaled+tiled" {
                        eprintln!(
                            "skipping: {} (not the tiled kernel inside)",
                            rescaled.plan.name()
                        );
                        return;
                    }
                    let tiled = go(MatmulKernel::Tiled);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&rescaled.out),
                        bits(&tiled.out),
                        "{path} {mnk:?} {trans:?} -> {c_dtype}, bias {}, accumulate {}",
                        bias.is_some(),
                        old.is_some()
                    );
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} products equal bit for bit");
}

/// Lines longer than one exponents tile (by row 1024 elements, by column 32 rows) and
/// line counts that leave partial tiles (odd counts, more than 256 columns), on aligned
/// (multiple-of-8) and unaligned rows: each line's largest value, 2^20 above the rest,
/// sits at a random position (the first line's in its last element, the last tile's
/// last octet), so a maximum the exponents pass missed would overflow the line's f16
/// copy and show as inf in C.
#[test]
fn rescaled_long_lines_and_partial_tiles_keep_every_line_maximum() {
    let mut checked = 0;
    for (path, g) in gpus_for_f16() {
        for (s, &mnk) in [(11, 264, 1096), (9, 261, 1100)].iter().enumerate() {
            let (m, n, k) = mnk;
            for trans in LAYOUTS {
                let (mut a, mut b) = operands(70 + s as u64, mnk, trans);
                let mut r = rng(80 + s as u64);
                let mut spot = |line: usize| {
                    if line == 0 {
                        k - 1
                    } else {
                        r.random_range(0..k)
                    }
                };
                let at = |i: usize, p: usize| if trans.0 { p * m + i } else { i * k + p };
                let bt = |p: usize, j: usize| if trans.1 { j * k + p } else { p * n + j };
                for i in 0..m {
                    let top = (0..k).map(|p| a[at(i, p)].abs()).fold(0.0, f32::max);
                    a[at(i, spot(i))] = DType::BF16.round(-top * 2f32.powi(20));
                }
                for j in 0..n {
                    let top = (0..k).map(|p| b[bt(p, j)].abs()).fold(0.0, f32::max);
                    b[bt(spot(j), j)] = DType::BF16.round(top * 2f32.powi(20));
                }
                let ops = Ops {
                    a: &a,
                    b: &b,
                    mnk,
                    trans,
                };
                let rescaled = run(
                    g,
                    (&a, &b),
                    mnk,
                    trans,
                    DType::F32,
                    None,
                    None,
                    MatmulKernel::RescaledF16,
                );
                assert!(
                    rescaled.out.iter().all(|x| x.is_finite()),
                    "{path} {mnk:?} {trans:?}"
                );
                let err = rel_err(&rescaled.out, &reference(&ops, None, None, DType::F32));
                assert!(
                    err <= tol(DType::F32),
                    "{path} {mnk:?} {trans:?}: relative error {err:.3e}"
                );
                checked += 1;
            }
        }
    }
    println!("{checked} long-line products checked");
}

/// The scale exponent the GPU picks for a line whose largest finite magnitude is `top`
/// (mirrors `scale_exponent` in shaders/matmul_rescale.wgsl).
fn scale_exponent(top: f32) -> i32 {
    if top == 0.0 {
        return 0;
    }
    let biased = (top.to_bits() >> 23) as i32;
    (biased - 127 - 15).clamp(-127, 112)
}

fn line_max(values: impl Iterator<Item = f64>) -> f32 {
    values
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs())) as f32
}

/// The per-element bound of docs/ARCHITECTURE.md ("BF16 on the f16 matrix units"): an
/// element of op(A)'s row i is off by at most alpha_i = 2^(ea_i - 14) + 2^-126 after the
/// scaled conversion (the subnormals of f16 rounded or even flushed by the product
/// kernel, a subnormal f32 input flushed), likewise beta_j for op(B)'s column j, so
/// |dC_ij| <= sum_k (|a_ik| beta_j + alpha_i |b_kj| + alpha_i beta_j)
///           + gamma sum_k |a_ik| |b_kj| (f32 accumulation, gamma = K 2^-22, room for
///             matrix units that round less carefully than IEEE)
///           + |C_ij| 2^-24 + 2^-125 (the f32 store and the epilogue's subnormals).
fn bounds(ops: &Ops) -> Vec<f64> {
    let (m, n, k) = ops.mnk;
    let alpha: Vec<f64> = (0..m)
        .map(|i| {
            2f64.powi(scale_exponent(line_max((0..k).map(|p| ops.a(i, p)))) - 14) + 2f64.powi(-126)
        })
        .collect();
    let beta: Vec<f64> = (0..n)
        .map(|j| {
            2f64.powi(scale_exponent(line_max((0..k).map(|p| ops.b(p, j)))) - 14) + 2f64.powi(-126)
        })
        .collect();
    let gamma = k as f64 * 2f64.powi(-22);
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut conv, mut abs, mut exact) = (0.0, 0.0, 0.0);
            for p in 0..k {
                let (a, b) = (ops.a(i, p), ops.b(p, j));
                conv += a.abs() * beta[j] + alpha[i] * b.abs() + alpha[i] * beta[j];
                abs += (a * b).abs();
                exact += a * b;
            }
            out[i * n + j] = conv + gamma * abs + exact.abs() * 2f64.powi(-24) + 2f64.powi(-125);
        }
    }
    out
}

/// bf16 values spanning 10^[lo, hi] by line: each line's own window of decades inside
/// [lo, hi] (so line scales differ), magnitudes mixed along the line, 10% zeros, both
/// signs; the first line holds 10^lo and 10^hi themselves.
fn spanning(seed: u64, lines: usize, len: usize, (lo, hi): (f64, f64)) -> Vec<Vec<f32>> {
    let mut r = rng(seed);
    (0..lines)
        .map(|l| {
            let (a, b) = (r.random_range(lo..=hi), r.random_range(lo..=hi));
            let (wlo, whi) = if l == 0 {
                (lo, hi)
            } else {
                (a.min(b), a.max(b))
            };
            (0..len)
                .map(|p| {
                    let decade = match (l, p) {
                        (0, 0) => hi,
                        (0, 1) => lo,
                        _ => r.random_range(wlo..=whi),
                    };
                    let sign = if r.random_bool(0.5) { 1.0 } else { -1.0 };
                    let zero = p > 1 && r.random_bool(0.1);
                    if zero {
                        0.0
                    } else {
                        DType::BF16.round((sign * 10f64.powf(decade)) as f32)
                    }
                })
                .collect()
        })
        .collect()
}

/// Stores lines of op(A) (rows) / op(B) (columns) in the operand's stored layout.
fn store_a(rows: &[Vec<f32>], (m, k): (usize, usize), trans: bool) -> Vec<f32> {
    let mut v = vec![0.0; m * k];
    for i in 0..m {
        for p in 0..k {
            v[if trans { p * m + i } else { i * k + p }] = rows[i][p];
        }
    }
    v
}

fn store_b(cols: &[Vec<f32>], (k, n): (usize, usize), trans: bool) -> Vec<f32> {
    let mut v = vec![0.0; k * n];
    for j in 0..n {
        for p in 0..k {
            v[if trans { j * k + p } else { p * n + j }] = cols[j][p];
        }
    }
    v
}

/// How many elements of a product computed from converted operands (`conv_a`,
/// `conv_b`: op(A) and op(B) elements as a conversion would leave them) break the bound.
fn violations(ops: &Ops, bound: &[f64], conv: impl Fn(f64, bool) -> f64) -> (usize, usize) {
    let (m, n, k) = ops.mnk;
    let (mut finite, mut any) = (0, 0);
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k).map(|p| ops.a(i, p) * ops.b(p, j)).sum();
            let approx: f64 = (0..k)
                .map(|p| conv(ops.a(i, p), true) * conv(ops.b(p, j), false))
                .sum();
            let err = (approx - exact).abs();
            // NaN (inf - inf, inf x 0) breaks the bound too.
            if err.is_nan() || err > bound[i * n + j] {
                any += 1;
                if approx.is_finite() {
                    finite += 1;
                }
            }
        }
    }
    (any, finite)
}

/// The error bound, proven element by element on data spanning 1e-30..1e30 within rows
/// and columns (products kept inside f32's range: one operand's decades reach 1e30, the
/// other's 1e6), in every layout; and shown to mean something: converting the same bf16
/// operands to f16 without the rescale (overflow to inf past 65504, small values lost),
/// or with one scale for the whole tensor, breaks it.
#[test]
fn rescaled_error_bound_holds_from_1e_minus_30_to_1e30() {
    let (m, n, k) = (40, 24, 56);
    for (path, g) in gpus_for_f16() {
        for (case, trans) in LAYOUTS.into_iter().enumerate() {
            // Alternate which operand spans the full range.
            let (a_range, b_range) = if case % 2 == 0 {
                ((-30.0, 30.0), (-30.0, 6.0))
            } else {
                ((-30.0, 6.0), (-30.0, 30.0))
            };
            let rows = spanning(11 + case as u64, m, k, a_range);
            let cols = spanning(23 + case as u64, n, k, b_range);
            let a = store_a(&rows, (m, k), trans.0);
            let b = store_b(&cols, (k, n), trans.1);
            let ops = Ops {
                a: &a,
                b: &b,
                mnk: (m, n, k),
                trans,
            };
            let bound = bounds(&ops);
            let r = run(
                g,
                (&a, &b),
                (m, n, k),
                trans,
                DType::F32,
                None,
                None,
                MatmulKernel::RescaledF16,
            );
            let exact = reference(&ops, None, None, DType::F32);
            let mut worst = 0.0f64;
            for (e, (&out, &want)) in r.out.iter().zip(&exact).enumerate() {
                let err = (f64::from(out) - want).abs();
                assert!(
                    err <= bound[e],
                    "{path} {trans:?} C[{}, {}] = {out:e}, f64 {want:e}: error {err:e} > bound {:e}",
                    e / n,
                    e % n,
                    bound[e]
                );
                if want != 0.0 {
                    worst = worst.max(err / bound[e]);
                }
            }
            println!("{path} {trans:?}: largest error / bound {worst:.3e}");

            // Plain f16 conversion: what a product on the f16 units would see without
            // the rescale.
            let plain = |x: f64, _: bool| half::f16::from_f64(x).to_f64();
            let (any, finite) = violations(&ops, &bound, plain);
            assert!(
                any > 0 && finite > 0,
                "{trans:?}: plain f16 conversion breaks the bound in {any} elements ({finite} finite)"
            );
            // One power-of-two scale per tensor (its largest magnitude into [2^15, 2^16)).
            let tensor_scale =
                |v: &[f32]| 2f64.powi(scale_exponent(line_max(v.iter().map(|&x| f64::from(x)))));
            let (sa, sb) = (tensor_scale(&a), tensor_scale(&b));
            let per_tensor = |x: f64, is_a: bool| {
                let s = if is_a { sa } else { sb };
                half::f16::from_f64(x / s).to_f64() * s
            };
            let (any_t, _) = violations(&ops, &bound, per_tensor);
            assert!(any_t > 0, "{trans:?}: a per-tensor scale kept the bound");
            println!("{trans:?}: plain f16 breaks {any} elements ({finite} finite), one scale a tensor {any_t}");
        }
    }
}

/// A NaN in A gives NaN in its row of C, an inf gives inf (or NaN where signs meet or it
/// meets a zero), exactly where the tiled kernel gives them; a bf16 C that overflows
/// raises found_inf.
#[test]
fn rescaled_nan_and_inf_propagate_like_the_tiled_kernel() {
    let g = gpu();
    let mnk = (16, 24, 40);
    let (m, n, k) = mnk;
    for trans in LAYOUTS {
        let (mut a, mut b) = operands(3, mnk, trans);
        let at = |i: usize, p: usize| if trans.0 { p * m + i } else { i * k + p };
        let bt = |p: usize, j: usize| if trans.1 { j * k + p } else { p * n + j };
        a[at(1, 3)] = f32::NAN;
        a[at(4, 0)] = f32::INFINITY;
        a[at(6, 5)] = f32::NEG_INFINITY;
        a[at(6, 9)] = f32::INFINITY;
        b[bt(7, 2)] = f32::INFINITY;
        b[bt(0, 5)] = 0.0; // inf (row 4) x 0 = NaN in column 5
        let kind = |x: f32| {
            if x.is_nan() {
                "nan"
            } else if x == f32::INFINITY {
                "+inf"
            } else if x == f32::NEG_INFINITY {
                "-inf"
            } else {
                "finite"
            }
        };
        for c_dtype in DType::ALL {
            let rescaled = run(
                g,
                (&a, &b),
                mnk,
                trans,
                c_dtype,
                None,
                None,
                MatmulKernel::RescaledF16,
            );
            let tiled = run(
                g,
                (&a, &b),
                mnk,
                trans,
                c_dtype,
                None,
                None,
                MatmulKernel::Tiled,
            );
            for e in 0..m * n {
                assert_eq!(
                    kind(rescaled.out[e]),
                    kind(tiled.out[e]),
                    "{trans:?} -> {c_dtype}: C[{}, {}] rescaled {} tiled {}",
                    e / n,
                    e % n,
                    rescaled.out[e],
                    tiled.out[e]
                );
            }
            assert!(rescaled.out[n..2 * n].iter().all(|x| x.is_nan()), "NaN row");
            assert_eq!(
                rescaled.flag, tiled.flag,
                "{trans:?} -> {c_dtype}: found_inf"
            );
            assert_eq!(rescaled.flag, c_dtype != DType::F32);
        }
    }
    // A bf16 C past bf16's range: inf and found_inf, like the tiled kernel.
    let (a, b) = (
        vec![DType::BF16.round(1e30); 8 * 16],
        vec![DType::BF16.round(1e10); 16 * 8],
    );
    let r = run(
        g,
        (&a, &b),
        (8, 8, 16),
        (false, false),
        DType::BF16,
        None,
        None,
        MatmulKernel::RescaledF16,
    );
    assert!(
        r.flag && r.out.iter().all(|&x| x == f32::INFINITY),
        "{:?}",
        r.out
    );
}

#[test]
fn auto_picks_the_rescaled_path_only_where_the_f16_units_take_it() {
    let g = gpu();
    let a = Tensor::zeros(g, &[40, 56], DType::BF16).unwrap();
    let b = Tensor::zeros(g, &[56, 24], DType::BF16).unwrap();
    let c = Tensor::zeros(g, &[40, 24], DType::F32).unwrap();
    let args = MatmulArgs::new(&a, &b, &c, (40, 24, 56));
    let auto = plan_for(g, &args).unwrap();
    let coop = g.caps().cooperative_matrix == Some((16, 16, 16)) && g.caps().shader_f16;
    if std::env::var("HALFGRAD_MATMUL").is_err() {
        if coop {
            assert!(auto.name().starts_with("rescaled+coop"), "{}", auto.name());
        } else {
            // No matrix units: bf16 keeps the portable kernels (training results
            // unchanged): tiled, or on software adapters the small kernel, which adds in
            // the tiled kernel's order (tests/matmul_small.rs checks the bits).
            assert!(
                matches!(auto, MatmulPlan::Tiled(_) | MatmulPlan::Small(_)),
                "{auto:?}"
            );
        }
        // A stored row that is not a multiple of 8 elements: tiled under Auto.
        let a7 = Tensor::zeros(g, &[40, 7], DType::BF16).unwrap();
        let b7 = Tensor::zeros(g, &[7, 24], DType::BF16).unwrap();
        let ragged = plan_for(g, &MatmulArgs::new(&a7, &b7, &c, (40, 24, 7))).unwrap();
        assert_eq!(ragged.name(), "tiled");
    }
    let forced = MatmulOptions {
        kernel: MatmulKernel::RescaledF16,
        ..Default::default()
    };
    let plan = plan_for(
        g,
        &MatmulArgs {
            opts: forced,
            ..args
        },
    )
    .unwrap();
    // (40 x 24 is no whole coop tile: the general coop kernel.)
    assert_eq!(
        plan.name(),
        if coop {
            "rescaled+coop"
        } else {
            "rescaled+tiled"
        }
    );
    assert!(matches!(plan, MatmulPlan::Rescaled { .. }));
    let dispatches = matmul_with(
        g,
        &MatmulArgs {
            opts: forced,
            ..args
        },
    )
    .unwrap();
    assert_eq!(dispatches.len(), 6);
}

#[test]
fn forced_rescaled_path_refuses_what_it_cannot_run() {
    let g = gpu();
    let forced = MatmulOptions {
        kernel: MatmulKernel::RescaledF16,
        ..Default::default()
    };
    let a = Tensor::zeros(g, &[2 * 8 * 16], DType::BF16).unwrap();
    let b = Tensor::zeros(g, &[2 * 16 * 8], DType::BF16).unwrap();
    let c = Tensor::zeros(g, &[2 * 8 * 8], DType::F32).unwrap();
    // f16 (or mixed) operands.
    let h = Tensor::zeros(g, &[8, 16], DType::F16).unwrap();
    let b1 = Tensor::zeros(g, &[16, 8], DType::BF16).unwrap();
    let c1 = Tensor::zeros(g, &[8, 8], DType::F32).unwrap();
    let mixed = MatmulArgs {
        opts: forced,
        ..MatmulArgs::new(&h, &b1, &c1, (8, 8, 16))
    };
    assert!(matches!(
        matmul_with(g, &mixed),
        Err(Error::DTypeMismatch { .. })
    ));
    // A batch of two.
    let batched = MatmulArgs {
        a_layout: MatrixLayout::dense_batch(8, 16, 2),
        b_layout: MatrixLayout::dense_batch(16, 8, 2),
        c_layout: MatrixLayout::dense_batch(8, 8, 2),
        batch: (1, 2),
        opts: forced,
        ..MatmulArgs::new(&a, &b, &c, (8, 8, 16))
    };
    assert!(matches!(
        matmul_with(g, &batched),
        Err(Error::InvalidArgument(_))
    ));
    // A C that does not fill its tensor (the first of two matrices).
    let strided = MatmulArgs {
        opts: forced,
        ..MatmulArgs::new(&a, &b, &c, (8, 8, 16))
    };
    assert!(matches!(
        matmul_with(g, &strided),
        Err(Error::InvalidArgument(_))
    ));
}
