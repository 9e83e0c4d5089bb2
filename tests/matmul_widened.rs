//! f16 products through an f32 scratch and an epilogue (`widened+...` plans,
//! src/ops/matmul/widen.rs), forced with `MatmulKernel::WidenedF16` so every adapter runs
//! the whole path (lavapipe: the tiled kernel into the scratch, then the epilogue; an
//! adapter with cooperative matrices: the fragment-copy kernel), in one chunk and in
//! several (a lowered `MatmulTuning::wide_scratch_elems`): against an f64 reference, bit
//! for bit against the tiled kernel where that is the kernel inside, a shared scratch,
//! and typed errors.

mod common;

use common::{gpu, gpus_for_f16, rel_err, rng, tol};
use halfgrad::amp::OverflowFlag;
use halfgrad::ops::matmul::{
    matmul_with, plan_for, widened_scratch_len, MatmulArgs, MatmulKernel, MatmulOptions,
    MatmulPlan, MatmulTuning, MatrixLayout,
};
use halfgrad::{DType, Error, Gpu, Tensor};
use rand::Rng;

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Odd-but-aligned sizes, a ragged one, and one tall enough for ragged chunks.
const SHAPES: [(usize, usize, usize); 4] = [(40, 24, 56), (7, 33, 13), (136, 8, 72), (200, 18, 24)];

/// Stored shapes of A and B for (M, N, K) and the transposes.
fn stored((m, n, k): (usize, usize, usize), (ta, tb): (bool, bool)) -> ([usize; 2], [usize; 2]) {
    (
        if ta { [k, m] } else { [m, k] },
        if tb { [n, k] } else { [k, n] },
    )
}

/// f16-exact values uniform in [-2, 2].
fn f16_values(r: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| DType::F16.round(r.random_range(-2.0f32..=2.0)))
        .collect()
}

/// f64 reference of op(A) op(B) (+ bias) (+ old C), rounded to C's dtype for a 16-bit C.
#[allow(clippy::too_many_arguments)]
fn reference(
    (a, b): (&[f32], &[f32]),
    (m, n, k): (usize, usize, usize),
    (ta, tb): (bool, bool),
    bias: Option<&[f32]>,
    old: Option<&[f32]>,
    c_dtype: DType,
) -> Vec<f64> {
    let at = |i: usize, p: usize| f64::from(if ta { a[p * m + i] } else { a[i * k + p] });
    let bt = |p: usize, j: usize| f64::from(if tb { b[j * k + p] } else { b[p * n + j] });
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            s += bias.map_or(0.0, |v| f64::from(v[j]));
            s += old.map_or(0.0, |v| f64::from(v[i * n + j]));
            out[i * n + j] = if c_dtype == DType::F32 {
                s
            } else {
                f64::from(c_dtype.round(s as f32))
            };
        }
    }
    out
}

struct Case<'a> {
    vals: (&'a [f32], &'a [f32]),
    mnk: (usize, usize, usize),
    trans: (bool, bool),
    c_dtype: DType,
    bias: Option<&'a [f32]>,
    /// C starts as this and accumulates (else it is poisoned with NaN).
    old: Option<&'a [f32]>,
    kernel: MatmulKernel,
    /// The scratch's chunk limit in f32 elements.
    chunk_elems: usize,
}

struct Run {
    out: Vec<f32>,
    plan: MatmulPlan,
    flag: bool,
}

fn run(g: &Gpu, c: &Case) -> Run {
    let (m, n, _) = c.mnk;
    let (a_shape, b_shape) = stored(c.mnk, c.trans);
    let a = Tensor::from_f32(g, &a_shape, c.vals.0, DType::F16).unwrap();
    let b = Tensor::from_f32(g, &b_shape, c.vals.1, DType::F16).unwrap();
    let out = match c.old {
        Some(old) => Tensor::from_f32(g, &[m, n], old, c.c_dtype).unwrap(),
        None => Tensor::full(g, &[m, n], c.c_dtype, f32::NAN).unwrap(),
    };
    let bias = c
        .bias
        .map(|v| Tensor::from_f32(g, &[n], v, DType::F32).unwrap());
    let flag = OverflowFlag::new(g).unwrap();
    let args = MatmulArgs {
        bias: bias.as_ref(),
        found_inf: Some(&flag),
        opts: MatmulOptions {
            trans_a: c.trans.0,
            trans_b: c.trans.1,
            accumulate: c.old.is_some(),
            kernel: c.kernel,
        },
        tuning: MatmulTuning {
            wide_scratch_elems: c.chunk_elems,
            ..MatmulTuning::default()
        },
        ..MatmulArgs::new(&a, &b, &out, c.mnk)
    };
    let plan = plan_for(g, &args).unwrap();
    let d = matmul_with(g, &args).unwrap_or_else(|e| panic!("{:?} {:?}: {e}", c.mnk, c.trans));
    g.run_all(&d).unwrap();
    Run {
        out: out.to_f32_vec().unwrap(),
        plan,
        flag: flag.is_raised_blocking(g).unwrap(),
    }
}

/// C's dtype, the bias, and the old C (accumulate) of one case.
type CDtypeBiasOld<'a> = (DType, Option<&'a [f32]>, Option<&'a [f32]>);

/// Chunk limits: one chunk (the default) and a few rows a chunk (a ragged last chunk).
fn chunk_limits(n: usize) -> [usize; 2] {
    [MatmulTuning::default().wide_scratch_elems, n]
}

#[test]
fn widened_products_match_f64_reference() {
    let mut r = rng(21);
    let mut runs = 0;
    for (path, g) in gpus_for_f16() {
        for &mnk in &SHAPES {
            let (m, n, k) = mnk;
            for trans in LAYOUTS {
                let a = f16_values(&mut r, m * k);
                let b = f16_values(&mut r, k * n);
                let bias: Vec<f32> = (0..n).map(|_| r.random_range(-4.0..=4.0)).collect();
                let old: Vec<f32> = (0..m * n).map(|_| r.random_range(-4.0..=4.0)).collect();
                for chunk_elems in chunk_limits(n) {
                    let mut cases: Vec<CDtypeBiasOld> = DType::ALL
                        .iter()
                        .flat_map(|&d| [(d, None), (d, Some(&bias[..]))])
                        .map(|(d, b)| (d, b, None))
                        .collect();
                    cases.push((DType::F32, Some(&bias), Some(&old)));
                    cases.push((DType::F32, None, Some(&old)));
                    for (c_dtype, bias, old) in cases {
                        let case = Case {
                            vals: (&a, &b),
                            mnk,
                            trans,
                            c_dtype,
                            bias,
                            old,
                            kernel: MatmulKernel::WidenedF16,
                            chunk_elems,
                        };
                        let got = run(g, &case);
                        let what = format!(
                            "{path} {mnk:?} {trans:?} -> {c_dtype}, bias {}, accumulate {}, chunk {chunk_elems}",
                            bias.is_some(),
                            old.is_some()
                        );
                        let MatmulPlan::Widened { chunk_rows, .. } = got.plan else {
                            panic!("{what}: {}", got.plan.name());
                        };
                        if chunk_elems == n && m >= 136 {
                            assert!(chunk_rows < m, "{what}: one chunk of {chunk_rows} rows");
                        }
                        let want = reference((&a, &b), mnk, trans, bias, old, c_dtype);
                        let err = rel_err(&got.out, &want);
                        assert!(err <= tol(c_dtype), "{what}: {err:.3e}");
                        assert!(!got.flag, "{what}: found_inf raised");
                        runs += 1;
                    }
                }
            }
        }
    }
    println!("{runs} widened products checked");
}

/// The epilogue adds the bias (then the old C) to the f32 accumulator and rounds once,
/// as the single-kernel epilogues do, so where the f16 product is the tiled kernel (or the
/// small kernel, which sums in its order) the
/// widened path equals the tiled kernel bit for bit, in one chunk or several (a chunk's
/// rows sum over the same K slices). With cooperative matrices: skipped.
#[test]
fn widened_tiled_equals_the_tiled_kernel_bit_for_bit() {
    let mut r = rng(22);
    let mut checked = 0;
    for (path, g) in gpus_for_f16() {
        for &mnk in &SHAPES {
            let (m, n, k) = mnk;
            for trans in LAYOUTS {
                let a = f16_values(&mut r, m * k);
                let b = f16_values(&mut r, k * n);
                let bias: Vec<f32> = (0..n).map(|_| r.random_range(-4.0..=4.0)).collect();
                let old: Vec<f32> = (0..m * n).map(|_| r.random_range(-4.0..=4.0)).collect();
                for chunk_elems in chunk_limits(n) {
                    for (c_dtype, bias, old) in [
                        (DType::F16, Some(&bias[..]), None),
                        (DType::BF16, None, None),
                        (DType::F32, Some(&bias[..]), Some(&old[..])),
                    ] {
                        let case = |kernel| Case {
                            vals: (&a, &b),
                            mnk,
                            trans,
                            c_dtype,
                            bias,
                            old,
                            kernel,
                            chunk_elems,
                        };
                        let widened = run(g, &case(MatmulKernel::WidenedF16));
                        // The small kernel (software adapters) sums in the tiled order too.
                        if !["widened+tiled", "widened+small"].contains(&widened.plan.name()) {
                            eprintln!(
                                "skipping: {} (not the tiled kernel inside)",
                                widened.plan.name()
                            );
                            return;
                        }
                        let tiled = run(g, &case(MatmulKernel::Tiled));
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&widened.out),
                            bits(&tiled.out),
                            "{path} {mnk:?} {trans:?} -> {c_dtype}, chunk {chunk_elems}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    println!("{checked} widened products equal the tiled kernel");
}

/// Products that share one scratch (as a graph's do) each get their own result, and a
/// 16-bit overflow in the epilogue raises found_inf.
#[test]
fn widened_products_share_a_scratch_and_flag_overflow() {
    let g = gpu();
    let mut r = rng(23);
    let (m, n, k) = (48, 16, 40);
    let a = f16_values(&mut r, m * k);
    let b = f16_values(&mut r, k * n);
    let ta = Tensor::from_f32(g, &[m, k], &a, DType::F16).unwrap();
    let tb = Tensor::from_f32(g, &[k, n], &b, DType::F16).unwrap();
    let opts = MatmulOptions {
        kernel: MatmulKernel::WidenedF16,
        ..MatmulOptions::default()
    };
    let c1 = Tensor::full(g, &[m, n], DType::F16, f32::NAN).unwrap();
    let c2 = Tensor::full(g, &[m / 2, n], DType::BF16, f32::NAN).unwrap();
    let a2 = Tensor::from_f32(g, &[m / 2, k], &a[..m / 2 * k], DType::F16).unwrap();
    let args1 = MatmulArgs::matrices(&ta, &tb, &c1, &opts).unwrap();
    let args2 = MatmulArgs::matrices(&a2, &tb, &c2, &opts).unwrap();
    let need1 = widened_scratch_len(g, &args1).unwrap().unwrap();
    let need2 = widened_scratch_len(g, &args2).unwrap().unwrap();
    assert_eq!((need1, need2), (m * n, m / 2 * n));
    let scratch = Tensor::full(g, &[need1.max(need2)], DType::F32, f32::NAN).unwrap();
    let mut d = matmul_with(
        g,
        &MatmulArgs {
            wide_scratch: Some(&scratch),
            ..args1
        },
    )
    .unwrap();
    d.extend(
        matmul_with(
            g,
            &MatmulArgs {
                wide_scratch: Some(&scratch),
                ..args2
            },
        )
        .unwrap(),
    );
    g.run_all(&d).unwrap();
    let want1 = reference((&a, &b), (m, n, k), (false, false), None, None, DType::F16);
    let want2 = reference(
        (&a[..m / 2 * k], &b),
        (m / 2, n, k),
        (false, false),
        None,
        None,
        DType::BF16,
    );
    assert!(rel_err(&c1.to_f32_vec().unwrap(), &want1) <= tol(DType::F16));
    assert!(rel_err(&c2.to_f32_vec().unwrap(), &want2) <= tol(DType::BF16));

    // A scratch that is too small is refused, naming what it needs.
    let small = Tensor::zeros(g, &[need1 - 1], DType::F32).unwrap();
    let err = matmul_with(
        g,
        &MatmulArgs {
            wide_scratch: Some(&small),
            ..args1
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");

    // f16 overflow: 300 * 300 summed 40 times passes 65504.
    let big = vec![300.0f32; m * k];
    let case = Case {
        vals: (&big, &big[..k * n]),
        mnk: (m, n, k),
        trans: (false, false),
        c_dtype: DType::F16,
        bias: None,
        old: None,
        kernel: MatmulKernel::WidenedF16,
        chunk_elems: n,
    };
    assert!(
        run(g, &case).flag,
        "an overflowing f16 store raises found_inf"
    );
}

#[test]
fn widened_refuses_what_it_cannot_run() {
    let g = gpu();
    let opts = MatmulOptions {
        kernel: MatmulKernel::WidenedF16,
        ..MatmulOptions::default()
    };
    // bf16 operands
    let a = Tensor::zeros(g, &[8, 8], DType::BF16).unwrap();
    let c = Tensor::zeros(g, &[8, 8], DType::F16).unwrap();
    let err = matmul_with(g, &MatmulArgs::matrices(&a, &a, &c, &opts).unwrap()).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    // a batch
    let a = Tensor::zeros(g, &[2, 8, 8], DType::F16).unwrap();
    let c = Tensor::zeros(g, &[2, 8, 8], DType::F16).unwrap();
    let dense = MatrixLayout::dense_batch(8, 8, 2);
    let err = matmul_with(
        g,
        &MatmulArgs {
            a_layout: dense,
            b_layout: dense,
            c_layout: dense,
            batch: (1, 2),
            opts,
            ..MatmulArgs::new(&a, &a, &c, (8, 8, 8))
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // Auto never widens on an adapter without cooperative matrices.
    if g.caps().cooperative_matrix.is_none() {
        let a = Tensor::zeros(g, &[64, 64], DType::F16).unwrap();
        let c = Tensor::zeros(g, &[64, 64], DType::F16).unwrap();
        let args = MatmulArgs::matrices(&a, &a, &c, &MatmulOptions::default()).unwrap();
        assert_eq!(widened_scratch_len(g, &args).unwrap(), None);
    }
}

/// Runs the CLI with `HALFGRAD_MATMUL` set as given and parses its `--json` stdout.
fn cli_json(matmul_env: Option<&str>, args: &[&str]) -> serde_json::Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_halfgrad"));
    cmd.args(args).env_remove("HALFGRAD_MATMUL");
    if let Some(v) = matmul_env {
        cmd.env("HALFGRAD_MATMUL", v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "halfgrad {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `HALFGRAD_MATMUL=widened` sends every 16-bit-output product of a training run through
/// the graph's shared scratch (forward and input gradients of the MLP and of the GPT's
/// linear layers); where the kernel inside is the tiled one the run is bit-identical to
/// the default (f16: losses, accuracy, grad norm), and the memory report counts the
/// scratch once.
#[test]
fn widened_training_runs_equal_the_default_bit_for_bit() {
    let mlp = ["train", "--steps", "150", "--json"];
    let base = cli_json(None, &mlp);
    let wide = cli_json(Some("widened"), &mlp);
    for key in ["eval_loss", "eval_correct", "grad_norm", "loss_scale"] {
        assert_eq!(base[key], wide[key], "{key}");
    }
    let grads = |v: &serde_json::Value| v["memory"]["activation_grads"].as_u64().unwrap();
    if grads(&wide) == grads(&base) {
        eprintln!("skipping the rest: the adapter's Auto plan already widens");
        return;
    }
    // The digits MLP's largest 16-bit product output: 64 rows x 128 f32.
    assert_eq!(grads(&wide) - grads(&base), 64 * 128 * 4);
    let gpt = [
        "gpt",
        "train",
        "--steps",
        "3",
        "--eval-every",
        "0",
        "--sample-tokens",
        "0",
        "--json",
    ];
    let base = cli_json(None, &gpt);
    let wide = cli_json(Some("widened"), &gpt);
    for key in ["train_loss", "val_loss", "grad_norm"] {
        assert_eq!(base[key], wide[key], "{key}");
    }
}
